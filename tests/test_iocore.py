"""The I/O core (socktools.core.loop) on real loopback sockets.

In the spirit of trio's ``testing/_check_streams.py``: one behaviour suite that
every connected-pair factory must pass — an AF_UNIX socketpair, a loopback TCP
pair, a loopback TCP pair with tiny SO_SNDBUF/SO_RCVBUF (set before connect, so
the window is tiny too), and an IPv6 ``::1`` pair.  Side ``a`` of each pair is
adopted by the :class:`Loop` under test; side ``b`` (the "peer") is a plain
socket, either driven by the same loop through ``add_reader`` (single-threaded
and deterministic) or by a helper thread when it must block.

Every loop run is bounded by a timeout, and the module carries a pytest-timeout
backstop, so no test can hang.  Nothing here measures speed: "no busy loop" is
checked by counting ``select()`` calls, not by timing.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import re
import resource
import select
import selectors
import socket
import struct
import threading
import time
from typing import Callable, Optional

import pytest

from socktools.core.loop import READ_SIZE, Connection, Loop, Protocol

pytestmark = pytest.mark.timeout(60)

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

#: Generous bound for one loop run that is expected to finish much sooner.
RUN_LIMIT = 10.0
#: SO_SNDBUF/SO_RCVBUF for the "tiny buffers" pair (the kernel doubles it).
TINY = 4096
#: tcp_info.tcpi_state of a socket whose SYN is unanswered (linux/tcp_states.h).
TCP_SYN_SENT = 2


# ----------------------------------------------------------------- helpers

def _count_polls(lp: Loop) -> Loop:
    """Count the loop's poll calls (= loop iterations), to prove it sleeps when it should."""
    poller = lp._poller
    real = poller.poll
    lp.polls = 0  # type: ignore[attr-defined]

    def poll(timeout):
        lp.polls += 1  # type: ignore[attr-defined]
        return real(timeout)

    poller.poll = poll
    return lp


class Recorder(Protocol):
    """Records every callback in order; optionally closes on EOF like the default."""

    def __init__(self, close_on_eof: bool = True) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.exc: Optional[BaseException] = None
        self.close_on_eof = close_on_eof

    def connection_made(self, conn: Connection) -> None:
        self.calls.append("made")

    def data_received(self, conn: Connection, data: bytes) -> None:
        self.calls.append("data")
        self.data += data

    def eof_received(self, conn: Connection) -> None:
        self.calls.append("eof")
        if self.close_on_eof:
            conn.close()

    def write_drained(self, conn: Connection) -> None:
        self.calls.append("drained")

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.calls.append("lost")
        self.exc = exc

    @property
    def lost(self) -> bool:
        return "lost" in self.calls

    def batch_form(self, conns: list, datas: list) -> None:
        """``data_batch`` when the ``loop`` fixture turns the batch path on: same calls, per pair."""
        for conn, data in zip(conns, datas):
            self.data_received(conn, data)


class Echo(Recorder):
    """Echoes every byte back (a bystander that must keep working)."""

    def data_received(self, conn: Connection, data: bytes) -> None:
        super().data_received(conn, data)
        conn.write(data)

    def batch_form(self, conns: list, datas: list) -> None:
        for conn, data in zip(conns, datas):
            Recorder.data_received(self, conn, data)
        conns[0].loop.write_batch(conns, datas)


class Peer:
    """The far end of a pair: a plain nonblocking socket driven by the same loop.

    ``read_sizes`` is cycled for successive ``recv()`` sizes, so ``(1,)`` makes
    a peer that reads one byte at a time.  Each readiness callback reads until
    ``BlockingIOError``.
    """

    def __init__(self, loop: Loop, sock: socket.socket, read_sizes=(READ_SIZE,)) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.sock = sock
        self.received = bytearray()
        self.reads = 0
        self.eof = False
        self.error: Optional[OSError] = None
        self._sizes = itertools.cycle(read_sizes)
        self.reading = False

    def start_reading(self) -> "Peer":
        if not self.reading:
            self.loop.add_reader(self.sock, self._on_readable)
            self.reading = True
        return self

    def stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sock)
            self.reading = False

    def _on_readable(self) -> None:
        recv, sizes = self.sock.recv, self._sizes
        while True:
            try:
                data = recv(next(sizes))
            except BlockingIOError:
                return
            except OSError as exc:
                self.error = exc
                self.stop_reading()
                return
            if not data:
                self.eof = True
                self.stop_reading()
                return
            self.received += data
            self.reads += 1


def run_until(loop: Loop, cond: Callable[[], bool], what: str, timeout: float = RUN_LIMIT) -> None:
    """Run the loop until ``cond()``; fail (never hang) if it does not happen in time."""
    loop.run(until=cond, timeout=timeout)
    assert cond(), f"gave up after {timeout}s waiting for: {what}"


def interest(loop: Loop, conn: Connection) -> int:
    """The events really watched for ``conn``'s fd, as selectors bits (0 = unregistered).

    Asked of the selector itself, or for epoll of the kernel (``/proc/self/fdinfo``
    of the epoll fd lists every registered fd with its event mask), never of the
    connection's own bookkeeping.
    """
    poller = loop._poller
    sel = getattr(poller, "selector", None)
    if sel is not None:
        try:
            return sel.get_key(conn.fd).events
        except KeyError:
            return 0
    with open(f"/proc/self/fdinfo/{poller._ep.fileno()}") as f:
        for line in f:
            m = re.match(r"tfd:\s*(\d+)\s+events:\s*([0-9a-fA-F]+)", line)
            if m and int(m.group(1)) == conn.fd:
                ev = int(m.group(2), 16)
                return (READ if ev & select.EPOLLIN else 0) | (WRITE if ev & select.EPOLLOUT else 0)
    return 0


def polls_during(loop: Loop, seconds: float) -> int:
    """Run the loop for ``seconds`` and return how many times it polled."""
    before = loop.polls  # type: ignore[attr-defined]
    loop.run(timeout=seconds)
    n = loop.polls - before  # type: ignore[attr-defined]
    assert n >= 1, "the poll counter is not wired to the loop any more"
    return n


def assert_same_bytes(got: bytes, want: bytes) -> None:
    """Compare big buffers without a multi-megabyte diff: report the first difference."""
    if got == want:
        return
    n = min(len(got), len(want))
    first = next((i for i in range(n) if got[i] != want[i]), n)
    raise AssertionError(f"got {len(got)} bytes, want {len(want)}; first difference at offset {first}")


def write_until_buffered(conn: Connection, extra: int = 256 * 1024, seed: int = 0) -> bytes:
    """Write until the kernel refuses more (our out-buffer holds data), then ``extra``
    bytes on top; return everything written.

    How much the kernel takes differs wildly between pairs (a few KiB with tiny
    buffers, ~4 MiB on an autotuned loopback TCP socket), so fill, don't guess.
    """
    rnd = random.Random(seed)
    written = bytearray()
    while conn.pending == 0:
        assert len(written) < 64 * 1024 * 1024, "the kernel never refused: not a socket?"
        block = rnd.randbytes(65536)
        conn.write(block)
        written += block
    block = rnd.randbytes(extra)
    conn.write(block)
    return bytes(written + block)


def payload(n: int, seed: int = 0) -> bytes:
    """Non-repeating bytes, so reordering or duplication cannot go unnoticed."""
    return random.Random(seed).randbytes(n)


# ----------------------------------------------------------------- pair factories

def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _tcp_pair(family: int, host: str, bufsize: Optional[int] = None):
    listener = socket.socket(family, socket.SOCK_STREAM)
    client = socket.socket(family, socket.SOCK_STREAM)
    try:
        if bufsize:
            # Before listen()/connect(): the window scale is fixed at the handshake,
            # and accepted sockets inherit the listener's buffer sizes.
            for s in (listener, client):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        listener.bind((host, 0))
        listener.listen(1)
        client.settimeout(5)
        client.connect(listener.getsockname()[:2])
        listener.settimeout(5)
        server, _ = listener.accept()
    except BaseException:
        client.close()
        raise
    finally:
        listener.close()
    client.settimeout(None)
    server.settimeout(None)
    return client, server


def _socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def _tcp():
    return _tcp_pair(socket.AF_INET, "127.0.0.1")


def _tcp_tiny():
    return _tcp_pair(socket.AF_INET, "127.0.0.1", TINY)


def _tcp6():
    if not _ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    return _tcp_pair(socket.AF_INET6, "::1")


PAIRS = {"socketpair": _socketpair, "tcp": _tcp, "tcp-tiny-buffers": _tcp_tiny, "tcp6": _tcp6}
TCP_KINDS = ("tcp", "tcp-tiny-buffers", "tcp6")


class PairMaker:
    """``make_pair()`` -> (a, b), connected; every socket is closed at teardown."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sockets: list[socket.socket] = []

    def __call__(self):
        a, b = PAIRS[self.kind]()
        self.sockets += [a, b]
        return a, b

    @property
    def is_tcp(self) -> bool:
        return self.kind in TCP_KINDS


@pytest.fixture(params=list(PAIRS))
def make_pair(request):
    maker = PairMaker(request.param)
    yield maker
    for s in maker.sockets:
        s.close()


POLLERS = ["epoll", "selectors"] if hasattr(select, "epoll") else ["selectors"]


@pytest.fixture(params=POLLERS + ["epoll+batch" if "epoll" in POLLERS else "selectors+batch"])
def loop(request, monkeypatch):
    """The default loop (epoll used directly on Linux), the ``selectors`` fallback,
    and the default loop with the test protocols' batch path (``data_batch``) on."""
    if request.param.endswith("+batch"):
        monkeypatch.setattr(Recorder, "data_batch", Recorder.batch_form)
        monkeypatch.setattr(Echo, "data_batch", Echo.batch_form)
    lp = Loop(selectors.DefaultSelector()) if request.param.startswith("selectors") else Loop()
    lp.batch_on = request.param.endswith("+batch")  # type: ignore[attr-defined]
    yield _count_polls(lp)
    lp.close()


@pytest.fixture
def default_loop():
    """Just the default loop, for slow tests whose subject is not the poller."""
    lp = Loop()
    yield _count_polls(lp)
    lp.close()


@pytest.fixture
def closed_port():
    """A loopback TCP port that is bound but not listening: connecting is refused.

    Keeping it bound for the test means nothing else can start listening there.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()
    s.close()


# ================================================================= the behaviour suite
# Every test below taking ``make_pair`` runs once per pair factory.

def test_small_write_goes_straight_to_the_kernel(make_pair, loop):
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    assert rec.calls == ["made"]
    assert interest(loop, conn) == READ

    conn.write(b"hello")
    # The kernel took it all: nothing buffered, EVENT_WRITE never registered.
    assert conn.pending == 0
    assert conn.bytes_out == 5
    assert interest(loop, conn) == READ
    peer = Peer(loop, b).start_reading()
    run_until(loop, lambda: len(peer.received) == 5, "peer receives 5 bytes")
    assert peer.received == b"hello"
    assert "drained" not in rec.calls  # nothing was ever buffered, so nothing drained


def test_write_interest_only_while_output_is_pending(make_pair, loop):
    """Partial sends are buffered, and write interest is registered exactly while
    output is pending: on from the first refused byte, off again once drained."""
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    assert interest(loop, conn) == READ
    data = write_until_buffered(conn)
    assert conn.pending > 0 and conn.bytes_out + conn.pending == len(data)
    assert interest(loop, conn) == READ | WRITE

    # A reader mixing 1-byte reads with big ones: the writer sees every kind of partial send.
    peer = Peer(loop, b, read_sizes=(1, 1, 7, 1, 65536)).start_reading()
    seen_pending = []

    def done() -> bool:
        if conn.pending:
            seen_pending.append(interest(loop, conn))
        return len(peer.received) >= len(data)

    run_until(loop, done, "peer reads everything")
    assert_same_bytes(bytes(peer.received), data)
    assert seen_pending and set(seen_pending) == {READ | WRITE}
    assert conn.pending == 0 and conn.bytes_out == len(data)
    assert interest(loop, conn) == READ
    assert rec.calls.count("drained") == 1
    assert not rec.lost


def test_one_byte_reads_get_everything_in_order(make_pair, loop):
    a, b = make_pair()
    data = payload(128 * 1024, seed=8)
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    for i in range(0, len(data), 10_000):
        conn.write(data[i:i + 10_000])
    peer = Peer(loop, b, read_sizes=(1,)).start_reading()
    run_until(loop, lambda: len(peer.received) >= len(data), "peer reads everything one byte at a time")
    assert_same_bytes(bytes(peer.received), data)
    assert peer.reads == len(data)  # really one byte per recv()
    assert conn.pending == 0 and interest(loop, conn) == READ


def test_megabytes_through_tiny_buffers_with_one_byte_reads():
    """The hard case in full: tiny socket buffers on both ends, a peer that reads one
    byte per recv(), and megabytes to push through (on the default poller)."""
    a, b = _tcp_tiny()
    lp = _count_polls(Loop())
    try:
        data = payload(2 * 1024 * 1024, seed=9)
        rec = Recorder()
        conn = lp.add_connection(a, rec)
        conn.write(data)
        assert conn.pending > len(data) - 64 * 1024  # the kernel took only a sliver
        peer = Peer(lp, b, read_sizes=(1,)).start_reading()
        run_until(lp, lambda: len(peer.received) >= len(data), "2 MiB read one byte at a time",
                  timeout=40)
        assert_same_bytes(bytes(peer.received), data)
        assert peer.reads == len(data)
        assert rec.calls.count("drained") == 1 and interest(lp, conn) == READ
    finally:
        lp.close()
        a.close()
        b.close()


def test_several_megabytes_arrive_intact_and_in_order(make_pair, loop):
    """Many writes, some buffered behind others, some issued from write_drained()."""
    a, b = make_pair()
    data = payload(4 * 1024 * 1024, seed=1)
    rnd = random.Random(2)
    chunks, pos = [], 0
    while pos < len(data):
        n = rnd.choice((1, 7, 100, 4096, 65535, 300_000))
        chunks.append(data[pos:pos + n])
        pos += n
    half = len(chunks) // 2
    next_chunk = half

    class Producer(Recorder):
        """Flow-controlled: writes until the kernel refuses, resumes when drained."""

        def write_drained(self, conn: Connection) -> None:
            super().write_drained(conn)
            pump(conn)

    def pump(conn: Connection) -> None:
        nonlocal next_chunk
        while next_chunk < len(chunks) and conn.pending == 0:
            conn.write(chunks[next_chunk])
            next_chunk += 1
        if next_chunk == len(chunks):
            conn.close()  # flushes what is still buffered first

    rec = Producer()
    conn = loop.add_connection(a, rec)
    for chunk in chunks[:half]:  # queued behind one another without waiting
        conn.write(chunk)
    pump(conn)
    # The peer mixes 1-byte reads with bigger ones, so the writer sees every kind
    # of partial send.
    peer = Peer(loop, b, read_sizes=(1, 1, 3, 1, 4096, 1, 65536)).start_reading()
    run_until(loop, lambda: peer.eof, "peer sees EOF after the last chunk")
    assert_same_bytes(bytes(peer.received), data)
    assert rec.lost and rec.exc is None
    assert conn.bytes_out == len(data)


def test_peer_one_byte_sends_arrive_intact(make_pair, loop):
    a, b = make_pair()
    data = payload(8 * 1024, seed=3)
    rec = Recorder()
    loop.add_connection(a, rec)
    b.settimeout(RUN_LIMIT)
    if make_pair.is_tcp:
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one segment per byte

    def send_bytewise() -> None:
        for i in range(len(data)):
            b.sendall(data[i:i + 1])
        b.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send_bytewise, daemon=True)
    sender.start()
    try:
        run_until(loop, lambda: rec.lost, "EOF after the last byte")
    finally:
        sender.join(RUN_LIMIT)
    assert_same_bytes(bytes(rec.data), data)
    assert rec.calls[-2:] == ["eof", "lost"] and rec.exc is None
    assert rec.calls.count("data") > 1  # it really came in pieces


def test_no_busy_loop_while_blocked_or_idle(make_pair, loop):
    """EVENT_WRITE is registered only while output is pending: a full buffer or an
    idle connection leaves the loop asleep in select()."""
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    data = write_until_buffered(conn)
    stuck = conn.pending
    assert stuck > 0 and interest(loop, conn) == READ | WRITE

    # The peer does not read: once the last window opening is used up the socket
    # stays unwritable, and the loop must sleep rather than spin on write interest.
    loop.run(timeout=0.05)
    n = polls_during(loop, 0.1)
    assert n <= 3, f"{n} polls in 0.1 s while blocked on a full buffer"
    assert 0 < conn.pending <= stuck

    peer = Peer(loop, b).start_reading()
    run_until(loop, lambda: conn.pending == 0 and len(peer.received) == len(data), "drain")
    assert interest(loop, conn) == READ
    assert rec.calls.count("drained") == 1

    # Idle: one connection and one peer registered for reading, nothing happening.
    n = polls_during(loop, 0.1)
    assert n <= 3, f"{n} polls in 0.1 s while idle"


def test_close_flushes_the_out_buffer_first(make_pair, loop):
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    data = write_until_buffered(conn, seed=4)
    conn.close()
    # Not closed yet: it is flushing, and no longer reading.
    assert not conn.closed and not rec.lost
    assert interest(loop, conn) == WRITE
    conn.write(b"too late")  # ignored once closing
    assert conn.fd in loop.connections

    peer = Peer(loop, b, read_sizes=(1, 4096)).start_reading()
    run_until(loop, lambda: peer.eof and rec.lost, "flush, then EOF at the peer")
    assert_same_bytes(bytes(peer.received), data)
    assert conn.closed and rec.exc is None and rec.calls.count("lost") == 1
    assert conn.fd not in loop.connections and interest(loop, conn) == 0


def test_close_with_nothing_pending_is_immediate(make_pair, loop):
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    conn.close()
    assert conn.closed and rec.calls == ["made", "lost"] and rec.exc is None
    assert interest(loop, conn) == 0 and not loop.connections
    conn.close()  # idempotent
    assert rec.calls.count("lost") == 1
    b.settimeout(RUN_LIMIT)
    assert b.recv(1) == b""


@pytest.mark.parametrize("close_on_eof", [True, False], ids=["eof-closes", "eof-ignored"])
def test_shutdown_write_sends_fin_after_flush_and_keeps_reading(make_pair, loop, close_on_eof):
    a, b = make_pair()
    rec = Recorder(close_on_eof=close_on_eof)
    conn = loop.add_connection(a, rec)
    data = write_until_buffered(conn, seed=5)
    conn.shutdown_write()
    assert conn.pending > 0 and not conn.closed
    conn.write(b"after shutdown")  # ignored: the write side is finished

    peer = Peer(loop, b, read_sizes=(1, 65536)).start_reading()
    run_until(loop, lambda: peer.eof, "peer sees FIN after all the data")
    assert_same_bytes(bytes(peer.received), data)
    assert not conn.closed and rec.calls.count("drained") == 1
    assert interest(loop, conn) == READ  # still reading

    # The peer can still talk to us after our FIN.
    b.send(b"reply after your FIN")
    run_until(loop, lambda: rec.data == b"reply after your FIN", "reply after FIN")
    assert not conn.closed
    b.shutdown(socket.SHUT_WR)
    # Both directions done: the connection ends cleanly whether or not the
    # protocol closes it itself.
    run_until(loop, lambda: rec.lost, "clean close after both FINs")
    assert rec.exc is None and conn.failed_in is None
    assert rec.calls[-2:] == ["eof", "lost"]


def test_eof_received_then_answer_and_close(make_pair, loop):
    """Echo's half-close rule: on EOF, flush what is owed, then close."""
    a, b = make_pair()

    class Answer(Recorder):
        def eof_received(self, conn: Connection) -> None:
            self.calls.append("eof")
            conn.write(b"answer to " + bytes(self.data))
            conn.close()

    rec = Answer()
    conn = loop.add_connection(a, rec)
    b.sendall(b"question")
    b.shutdown(socket.SHUT_WR)
    peer = Peer(loop, b).start_reading()
    run_until(loop, lambda: peer.eof and rec.lost, "answer, then EOF")
    assert peer.received == b"answer to question"
    assert conn.eof and rec.exc is None
    assert rec.calls == ["made", "data", "eof", "lost"]
    conn.resume_reading()  # no-op after EOF, must not re-register a closed fd
    assert interest(loop, conn) == 0


def test_default_protocol_closes_on_eof(make_pair, loop):
    a, b = make_pair()
    lost = []

    class Minimal(Protocol):
        def connection_lost(self, conn, exc):
            lost.append(exc)

    loop.add_connection(a, Minimal())
    b.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: lost, "default eof_received closes")
    assert lost == [None]
    b.settimeout(RUN_LIMIT)
    assert b.recv(1) == b""


def _bystander(make_pair, loop):
    """An echo connection on the same loop that must not notice anyone else's trouble."""
    a, b = make_pair()
    rec = Echo()
    conn = loop.add_connection(a, rec)
    peer = Peer(loop, b).start_reading()
    b.send(b"before")
    run_until(loop, lambda: peer.received == b"before", "bystander echo (before)")
    return conn, rec, peer, b


def _bystander_still_fine(loop, conn, rec, peer, b) -> None:
    b.send(b" after")
    run_until(loop, lambda: peer.received == b"before after", "bystander echo (after)")
    assert not conn.closed and not rec.lost and interest(loop, conn) == READ


def test_reset_while_reading_ends_only_that_connection(make_pair, loop):
    """The peer closes with our data unread: recv() fails with ECONNRESET."""
    bystander = _bystander(make_pair, loop)
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    conn.write(b"you will never read this")
    b.settimeout(RUN_LIMIT)
    b.recv(1, socket.MSG_PEEK)  # it has arrived in b's receive queue...
    b.close()                    # ...so closing b resets the connection
    run_until(loop, lambda: rec.lost, "connection_lost after the reset")
    assert isinstance(rec.exc, ConnectionResetError), rec.exc
    assert rec.exc.errno == errno.ECONNRESET
    assert conn.failed_in == "recv"
    assert conn.closed and conn.fd not in loop.connections and interest(loop, conn) == 0
    assert rec.calls.count("lost") == 1
    _bystander_still_fine(loop, *bystander)


class Buggy(Recorder):
    """A protocol with a bug: raises on a given callback (data by default)."""

    def __init__(self, where: str = "data") -> None:
        super().__init__()
        self.where = where

    def connection_made(self, conn: Connection) -> None:
        super().connection_made(conn)
        if self.where == "made":
            raise RuntimeError("bug in connection_made")

    def data_received(self, conn: Connection, data: bytes) -> None:
        super().data_received(conn, data)
        if self.where == "data" and b"boom" in data:
            raise ZeroDivisionError("bug in data_received")

    def write_drained(self, conn: Connection) -> None:
        super().write_drained(conn)
        if self.where == "drained":
            raise KeyError("bug in write_drained")


@pytest.mark.parametrize("where", ["made", "data", "drained"])
def test_a_protocol_bug_ends_only_that_connection(make_pair, loop, caplog, where):
    """An exception escaping a callback is logged and aborts that connection; the loop runs on."""
    bystander = _bystander(make_pair, loop)
    a, b = make_pair()
    rec = Buggy(where)
    with caplog.at_level("ERROR", logger="socktools.core.loop"):
        conn = loop.add_connection(a, rec)
        if where == "data":
            b.send(b"boom")
        elif where == "drained":
            write_until_buffered(conn)
            Peer(loop, b).start_reading()
        run_until(loop, lambda: rec.lost, "the buggy connection is closed")
    assert conn.closed and conn.failed_in == "internal"
    assert type(rec.exc) is {"made": RuntimeError, "data": ZeroDivisionError, "drained": KeyError}[where]
    assert rec.calls.count("lost") == 1
    assert any("Buggy raised" in r.getMessage() and r.exc_info for r in caplog.records)
    _bystander_still_fine(loop, *bystander)


def test_reset_while_sending_ends_only_that_connection(make_pair, loop):
    """Output is pending when the peer goes away: send() fails.

    TCP: the peer closes with SO_LINGER 0, sending RST -> ECONNRESET.
    AF_UNIX has no RST: a vanished peer reports EPIPE on send (BrokenPipeError).
    """
    bystander = _bystander(make_pair, loop)
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    write_until_buffered(conn)
    assert interest(loop, conn) & WRITE
    if make_pair.is_tcp:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()
    run_until(loop, lambda: rec.lost, "connection_lost after the peer vanished")
    assert conn.failed_in == "send"
    if make_pair.is_tcp:
        assert isinstance(rec.exc, ConnectionResetError), rec.exc
    else:
        assert isinstance(rec.exc, (ConnectionResetError, BrokenPipeError)), rec.exc
    assert conn.closed and conn.pending == 0 and conn.fd not in loop.connections
    _bystander_still_fine(loop, *bystander)


def test_abort_drops_pending_data_now(make_pair, loop):
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    data = write_until_buffered(conn)
    why = RuntimeError("test abort")
    conn.abort(why)
    assert conn.closed and rec.exc is why and conn.pending == 0
    assert conn.failed_in is None  # an abort is our decision, not an I/O failure
    assert conn.fd not in loop.connections and interest(loop, conn) == 0
    conn.write(b"x")
    conn.abort()
    conn.close()
    assert rec.calls.count("lost") == 1
    # The peer sees the stream end short of what was written (EOF or reset).
    peer = Peer(loop, b).start_reading()
    run_until(loop, lambda: peer.eof or peer.error, "peer sees the end")
    assert len(peer.received) < len(data)


def test_pause_and_resume_reading(make_pair, loop):
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    conn.pause_reading()
    assert interest(loop, conn) == 0  # nothing to watch at all
    b.sendall(b"held back")
    n = polls_during(loop, 0.1)
    assert rec.data == b"" and n <= 3  # asleep, not spinning on the unread data

    conn.resume_reading()
    assert interest(loop, conn) == READ
    run_until(loop, lambda: rec.data == b"held back", "data after resume")

    # Pausing from inside data_received stops further deliveries at once.
    class PauseAfterEach(Recorder):
        def data_received(self, conn, data):
            super().data_received(conn, data)
            conn.pause_reading()

    a2, b2 = make_pair()
    rec2 = PauseAfterEach()
    conn2 = loop.add_connection(a2, rec2)
    b2.sendall(b"one")
    run_until(loop, lambda: rec2.data == b"one", "first chunk")
    b2.sendall(b"two")
    loop.run(timeout=0.05)
    assert rec2.data == b"one"
    conn2.resume_reading()
    run_until(loop, lambda: rec2.data == b"onetwo", "second chunk after resume")
    assert not rec.lost and not rec2.lost


def test_paused_reading_pushes_back_on_the_sender(make_pair, loop):
    """While paused, the kernel buffers fill and the sender is blocked; resuming
    delivers every byte."""
    a, b = make_pair()
    rec = Recorder()
    conn = loop.add_connection(a, rec)
    conn.pause_reading()
    b.setblocking(False)
    sent = bytearray()
    block = payload(65536, seed=6)
    with pytest.raises(BlockingIOError):
        for _ in range(1000):  # 64 MiB: far more than any loopback buffer holds
            n = b.send(block)
            sent += block[:n]
    assert 0 < len(sent) < 64 * 1024 * 1024
    conn.resume_reading()
    run_until(loop, lambda: len(rec.data) >= len(sent), "everything the sender got in")
    assert_same_bytes(bytes(rec.data), bytes(sent))


def test_counters_add_up(make_pair, loop):
    a, b = make_pair()
    rec = Echo()
    conn = loop.add_connection(a, rec)
    peer = Peer(loop, b).start_reading()
    data = payload(300_000, seed=7)
    sent = 0
    while sent < len(data):  # as much as the peer's buffer takes, then let the echo catch up
        try:
            sent += b.send(data[sent:sent + 65536])
        except BlockingIOError:
            pass
        run_until(loop, lambda: len(peer.received) >= sent, "echo catches up")
    assert_same_bytes(bytes(peer.received), data)
    assert loop.byte_totals() == (len(data), len(data))
    if not loop.batch_on:  # the batch path counts per loop only
        assert conn.bytes_in == conn.bytes_out == len(data)


# ================================================================= connecting

@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_open_connection_buffers_writes_until_connected(loop, family):
    if family == "ipv6" and not _ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    fam, host = (socket.AF_INET, "127.0.0.1") if family == "ipv4" else (socket.AF_INET6, "::1")
    listener = socket.socket(fam, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(8)
    listener.setblocking(False)
    server_side = []

    def on_accept() -> None:
        sock, addr = listener.accept()
        server_side.append(loop.add_connection(sock, Echo(), addr))

    loop.add_reader(listener, on_accept)
    set_up = []

    def setup(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_up.append(sock)

    rec = Recorder()
    try:
        conn = loop.open_connection(listener.getsockname()[:2], rec, family=fam,
                                    source=(host, 0), setup=setup)
        assert conn.connecting and rec.calls == []
        conn.write(b"early bird")  # before the connect completed: buffered
        assert conn.pending == 10
        assert set_up == [conn.sock] and conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        run_until(loop, lambda: rec.data == b"early bird", "echo of the early write")
        assert rec.calls[0] == "made" and not conn.connecting
        assert conn.peer == listener.getsockname()[:2]
        assert conn.sock.getsockname()[0] == host
        conn.close()
        run_until(loop, lambda: server_side and server_side[0].closed, "server side closes on EOF")
        assert rec.exc is None
    finally:
        loop.remove_reader(listener)
        listener.close()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_connect_refused(loop, family):
    if family == "ipv6" and not _ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    fam, host = (socket.AF_INET, "127.0.0.1") if family == "ipv4" else (socket.AF_INET6, "::1")
    with socket.socket(fam, socket.SOCK_STREAM) as bound:  # bound, never listening
        bound.bind((host, 0))
        rec = Recorder()
        conn = loop.open_connection(bound.getsockname()[:2], rec, family=fam)
        run_until(loop, lambda: rec.lost, "the refusal")
    assert isinstance(rec.exc, ConnectionRefusedError), rec.exc
    assert rec.exc.errno == errno.ECONNREFUSED
    assert conn.failed_in == "connect"
    assert rec.calls == ["lost"]  # never "made"
    assert conn.closed and not loop.connections and interest(loop, conn) == 0


def test_connect_error_reported_at_once_is_still_a_connection_lost(loop, tmp_path):
    """AF_UNIX connect fails synchronously (no such path): same report, no exception."""
    rec = Recorder()
    conn = loop.open_connection(str(tmp_path / "nobody-listens-here"), rec, family=socket.AF_UNIX)
    assert rec.calls == ["lost"] and isinstance(rec.exc, FileNotFoundError)
    assert conn.failed_in == "connect" and conn.closed and not loop.connections


def test_one_refused_connect_does_not_disturb_others(make_pair, loop, closed_port):
    bystander = _bystander(make_pair, loop)
    rec = Recorder()
    loop.open_connection(closed_port, rec)
    run_until(loop, lambda: rec.lost, "the refusal")
    assert isinstance(rec.exc, ConnectionRefusedError)
    _bystander_still_fine(loop, *bystander)


def test_shutdown_write_while_still_connecting(default_loop):
    """A half-close asked for before the handshake finished must wait for it.

    The listener's accept queue is full, so our SYN is dropped and the socket
    stays in SYN_SENT until the kernel retries (about 1 s).  shutdown(SHUT_WR)
    on a SYN_SENT socket would abort the connect, so the FIN must be deferred.
    """
    loop = default_loop
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    accepted: list[socket.socket] = []
    try:
        # Fill the accept queue (backlog 0 still admits one on Linux; add margin).
        for _ in range(3):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(address)
            fillers.append(f)
        time.sleep(0.05)
        rec = Recorder(close_on_eof=True)
        conn = loop.open_connection(address, rec)
        if hasattr(socket, "TCP_INFO"):  # prove the premise: the handshake is stuck
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_SYN_SENT
        conn.shutdown_write()
        assert not conn.closed
        # Make room: accept everything queued, including our retried SYN later.
        listener.setblocking(False)

        def on_accept() -> None:
            try:
                accepted.append(listener.accept()[0])
            except BlockingIOError:
                pass

        loop.add_reader(listener, on_accept)
        mine = []

        def ours() -> bool:
            if rec.lost:
                return True
            for s in accepted:
                if s.getpeername() == conn.sock.getsockname() and s not in mine:
                    mine.append(s)
            return bool(mine)

        run_until(loop, ours, "our connection is accepted")
        assert not rec.lost, f"the early shutdown_write() killed the connect: {rec.exc!r}"
        server = mine[0]
        server.settimeout(RUN_LIMIT)
        assert server.recv(1) == b""  # our FIN arrived after the handshake
        server.sendall(b"still reading")
        server.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: rec.lost, "clean end")
        assert rec.data == b"still reading" and rec.exc is None
        assert rec.calls[0] == "made"
    finally:
        loop.remove_reader(listener)
        listener.close()
        for s in fillers:
            s.close()
        for s in accepted:
            s.close()


def test_socket_failure_raises_with_phase(loop, closed_port):
    """socket() itself failing (EMFILE) raises at once: there is no connection yet."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    info = None
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    try:
        try:  # take every free descriptor below the new limit
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        with pytest.raises(OSError) as info:
            loop.open_connection(closed_port, Recorder())
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert info.value.errno == errno.EMFILE
    assert info.value.phase == "socket"
    assert not loop.connections


# ================================================================= timers and the loop

def test_timers_fire_in_time_order_and_cancel(loop):
    fired = []
    loop.call_later(0.06, lambda: fired.append("c"))
    loop.call_later(0.02, lambda: fired.append("a"))
    loop.call_later(0.04, lambda: fired.append("b"))
    cancelled = loop.call_later(0.03, lambda: fired.append("cancelled"))
    same_time = loop.clock() + 0.05
    loop.call_at(same_time, lambda: fired.append("tie-1"))
    loop.call_at(same_time, lambda: fired.append("tie-2"))  # ties keep scheduling order
    cancelled.cancel()

    def chain() -> None:
        fired.append("chain-1")
        loop.call_later(0, lambda: fired.append("chain-2"))

    loop.call_later(0.07, chain)
    start = loop.clock()
    run_until(loop, lambda: len(fired) == 7, "all timers")
    loop.run(timeout=0.05)  # and nothing more fires
    assert fired == ["a", "b", "tie-1", "tie-2", "c", "chain-1", "chain-2"]
    assert loop.clock() - start >= 0.07


def test_timer_fires_while_connections_are_idle_and_stop_ends_run(make_pair, loop):
    a, b = make_pair()
    loop.add_connection(a, Recorder())
    fired = []

    def stop() -> None:
        fired.append(loop.now)
        loop.stop()

    loop.call_later(0.05, stop)
    loop.run(timeout=RUN_LIMIT)  # would block on the idle connection without the timer
    assert len(fired) == 1
    assert loop.clock() - fired[0] < RUN_LIMIT / 2


def test_run_without_anything_to_wait_for_returns():
    """No fd, no timeout: run() returns once the last timer has fired (the
    module's pytest-timeout catches a hang)."""
    lp = Loop()
    fired = []
    try:
        lp.run()  # nothing at all
        lp.call_later(0.01, lambda: fired.append(1))
        lp.run()
        assert fired == [1]
    finally:
        lp.close()


def test_loop_close_aborts_every_connection(make_pair):
    lp = Loop()
    recs = []
    for _ in range(3):
        a, b = make_pair()
        rec = Recorder()
        lp.add_connection(a, rec)
        recs.append((rec, b))
    lp.close()
    for rec, b in recs:
        assert rec.calls == ["made", "lost"] and rec.exc is None
        b.settimeout(RUN_LIMIT)
        try:
            assert b.recv(1) == b""
        except ConnectionResetError:
            pass
    assert not lp.connections


# ================================================================= idle timeouts

@pytest.mark.parametrize("batch", [False, True], ids=["per-event", "batch"])
def test_idle_timeout_closes_only_idle_connections(make_pair, default_loop, monkeypatch, batch):
    """One silent connection, one the peer keeps talking to, one that keeps writing."""
    loop = default_loop
    if batch:  # the batch path stamps no per-connection clock: the sweep must still know
        monkeypatch.setattr(Recorder, "data_batch", Recorder.batch_form)
    timeout = 0.3
    silent_a, _silent_b = make_pair()
    talked_a, talked_b = make_pair()
    writer_a, writer_b = make_pair()
    silent, talked, writer = Recorder(), Recorder(), Recorder()
    c_silent = loop.add_connection(silent_a, silent)
    c_talked = loop.add_connection(talked_a, talked)
    c_writer = loop.add_connection(writer_a, writer)
    Peer(loop, writer_b).start_reading()
    idle_closed = []
    loop.on_idle_close = idle_closed.append
    loop.set_idle_timeout(timeout)

    def activity() -> None:
        talked_b.send(b".")
        c_writer.write(b"tick")
        loop.call_later(0.02, activity)

    started = loop.clock()
    loop.call_later(0.02, activity)
    run_until(loop, lambda: silent.lost, "the silent connection is closed", timeout=5 * timeout + 2)
    loop.run(timeout=timeout)  # a while longer: the busy ones must survive it
    names = {c_silent: "silent", c_talked: "talked-to", c_writer: "writing"}
    assert [names[c] for c in idle_closed] == ["silent"]
    assert isinstance(silent.exc, TimeoutError) and c_silent.failed_in is None
    assert loop.clock() - started >= timeout
    assert not talked.lost and not c_talked.closed
    assert not writer.lost and not c_writer.closed, "a connection that keeps sending is not idle"
    loop.set_idle_timeout(None)


def test_new_connection_is_not_idle_however_late_it_arrives():
    """A connection added long after the loop last ran is fresh, not stale."""
    lp = Loop()
    try:
        lp.set_idle_timeout(0.2)
        time.sleep(0.3)  # e.g. a long connect phase before the loop runs
        a, b = _socketpair()
        rec = Recorder()
        lp.add_connection(a, rec)
        lp.run(timeout=0.1)
        assert not rec.lost, f"closed as idle right after it was made: {rec.exc!r}"
        run_until(lp, lambda: rec.lost, "closed once really idle", timeout=2)
        assert isinstance(rec.exc, TimeoutError)
    finally:
        lp.close()
        b.close()


# ================================================================= the batch path
# The suite above runs with the batch path on (the ``loop`` fixture's "+batch"
# variant), one connection at a time.  These put many connections in one poll.

class BatchEcho(Echo):
    """Echo through ``data_batch``/``write_batch``; remembers the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def data_batch(self, conns: list, datas: list) -> None:
        self.batches.append(len(conns))
        for conn, data in zip(conns, datas):
            Recorder.data_received(self, conn, data)
        conns[0].loop.write_batch(conns, datas)


def _tcp_pairs(n: int) -> list:
    pairs = [_tcp() for _ in range(n)]
    for a, b in pairs:
        b.setblocking(False)
    return pairs


def _close_all(pairs) -> None:
    for a, b in pairs:
        a.close()
        b.close()


def _send_all_then_run(loop: Loop, peers: list, msgs: list, want: Callable[[], bool], what: str) -> None:
    """Every peer sends before the loop runs again, so one poll finds them all ready."""
    for peer, msg in zip(peers, msgs):
        peer.sock.sendall(msg)
    run_until(loop, want, what)


def test_batch_serves_many_connections_each_its_own_bytes(default_loop):
    loop = default_loop
    pairs = _tcp_pairs(40)
    try:
        proto = BatchEcho()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        assert all(loop._batch.get(c.fd) is c for c in conns), "steady connections join the batch"
        expected = [bytearray() for _ in peers]
        for rnd in range(20):
            msgs = [payload(64 + 37 * i + rnd, seed=1000 * rnd + i) for i in range(len(peers))]
            for exp, msg in zip(expected, msgs):
                exp += msg
            _send_all_then_run(loop, peers, msgs, lambda: all(len(p.received) == len(e) for p, e in
                                                               zip(peers, expected)), f"round {rnd} echoed")
        for peer, exp in zip(peers, expected):
            assert_same_bytes(bytes(peer.received), bytes(exp))
        assert max(proto.batches) > 1, "no poll delivered more than one connection"
        total = sum(len(e) for e in expected)
        assert loop.byte_totals() == (total, total)
        assert proto.calls.count("data") == sum(proto.batches)
    finally:
        _close_all(pairs)


def test_batch_eof_and_reset_take_the_per_connection_path(default_loop):
    """In one poll: a half-close, a reset, and data on the rest."""
    loop = default_loop
    pairs = _tcp_pairs(8)
    try:
        recs = [BatchEcho() for _ in pairs]
        conns = [loop.add_connection(b, rec) for (a, b), rec in zip(pairs, recs)]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        _send_all_then_run(loop, peers, [b"warm"] * len(peers),
                           lambda: all(len(p.received) == 4 for p in peers), "warm-up echoed")
        pairs[0][0].shutdown(socket.SHUT_WR)
        pairs[1][0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peers[1].stop_reading()
        pairs[1][0].close()
        for peer in peers[2:]:
            peer.sock.sendall(b"after")
        run_until(loop, lambda: recs[0].lost and recs[1].lost and all(
            len(p.received) == 9 for p in peers[2:]), "EOF, reset and echoes handled")
        assert recs[0].calls[-2:] == ["eof", "lost"] and recs[0].exc is None
        assert isinstance(recs[1].exc, ConnectionResetError) and conns[1].failed_in == "recv"
        assert all(not rec.lost for rec in recs[2:])
        assert all(bytes(p.received) == b"warmafter" for p in peers[2:])
        assert conns[0].fd not in loop._batch and conns[1].fd not in loop._batch
    finally:
        _close_all(pairs)


def test_batch_partial_write_buffers_then_rejoins():
    """A peer that stops reading: the write falls short, the rest is buffered per
    connection (the batch is left), and once flushed the connection rejoins."""
    lp = Loop()
    a, b = _tcp_pair(socket.AF_INET, "127.0.0.1", TINY)
    other_a, other_b = _tcp()
    try:
        proto = BatchEcho()
        conn = lp.add_connection(b, proto)
        other = lp.add_connection(other_b, proto)
        a.setblocking(False)
        sent = bytearray()
        chunk = payload(2048, seed=3)
        while conn.pending == 0:  # the peer never reads: its window and our buffer fill
            try:
                n = a.send(chunk)
                sent += chunk[:n]
            except BlockingIOError:
                pass
            other_a.sendall(b"x")
            lp.run(timeout=0.01)
        assert lp._batch.get(conn.fd) is None, "a buffering connection is not in the batch"
        assert lp._batch.get(other.fd) is other
        peer = Peer(lp, a).start_reading()
        run_until(lp, lambda: conn.pending == 0 and lp._batch.get(conn.fd) is conn,
                  "flushed and back in the batch")
        run_until(lp, lambda: len(peer.received) == len(sent), "everything echoed")
        assert_same_bytes(bytes(peer.received), bytes(sent))
    finally:
        lp.close()
        for s in (a, other_a):
            s.close()


def test_write_batch_skips_a_connection_closed_in_between(default_loop):
    """data_batch aborts one connection and a new socket reuses its fd number at
    once: write_batch must neither write to the closed one nor to the newcomer."""
    loop = default_loop
    pairs = _tcp_pairs(6)

    class Closer(BatchEcho):
        victim = newcomer = None
        reused = False
        spare: list = []

        def data_batch(self, conns: list, datas: list) -> None:
            self.batches.append(len(conns))
            if self.victim is None:
                self.victim, freed = conns[0], conns[0].fd
                self.victim.abort()
                while len(self.spare) < 1000:  # new fds take the lowest free numbers
                    x, y = socket.socketpair()
                    self.spare += [x, y]
                    if freed in (x.fileno(), y.fileno()):  # connected: a stray write would arrive
                        self.newcomer = x if x.fileno() == freed else y
                        self.reused = True
                        break
            conns[0].loop.write_batch(conns, datas)

    proto = Closer()
    try:
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        for peer in peers:
            peer.sock.sendall(b"ping")
        run_until(loop, lambda: proto.victim is not None and all(
            p.received == b"ping" for p, c in zip(peers, conns) if c is not proto.victim), "the others answered")
        assert proto.reused, "the scenario needs the fd number reused at once"
        victim_peer = peers[conns.index(proto.victim)]
        run_until(loop, lambda: victim_peer.eof or victim_peer.error is not None, "the victim's peer sees the close")
        assert victim_peer.received == b""
        stray = proto.spare[-1] if proto.newcomer is proto.spare[-2] else proto.spare[-2]
        with pytest.raises(BlockingIOError):  # nothing was written to the newcomer
            stray.recv(1, socket.MSG_DONTWAIT)
    finally:
        for sock in proto.spare:
            sock.close()
        _close_all(pairs)


def test_set_protocol_moves_a_connection_between_the_paths(default_loop):
    loop = default_loop
    a, b = _socketpair()
    try:
        plain, batched = Echo(), BatchEcho()
        conn = loop.add_connection(b, plain)
        assert conn.fd not in loop._batch
        conn.set_protocol(batched)
        assert loop._batch.get(conn.fd) is conn
        peer = Peer(loop, a).start_reading()
        a.sendall(b"one")
        run_until(loop, lambda: peer.received == b"one", "echo through the batch")
        assert batched.batches == [1] and plain.calls == ["made"]
        conn.set_protocol(plain)
        assert conn.fd not in loop._batch and not loop._batch_protocols
        a.sendall(b"two")
        run_until(loop, lambda: peer.received == b"onetwo", "echo per event")
        assert plain.calls == ["made", "data"] and batched.batches == [1]
    finally:
        a.close()
        b.close()


def test_batch_spurious_readiness_keeps_the_others_aligned(default_loop, monkeypatch):
    """A read that finds nothing (EAGAIN) drops out of the batch; every other
    connection's answer still goes to its own peer, and the skipped data is
    served on the next poll."""
    import socktools.core.loop as iocore
    loop = default_loop
    pairs = _tcp_pairs(5)
    try:
        proto = BatchEcho()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        victim = conns[1].fd
        real_read, skipped = iocore._read, []

        def read(fd, n):
            if fd == victim and not skipped:
                skipped.append(fd)
                raise BlockingIOError(errno.EAGAIN, "pretend nothing was there")
            return real_read(fd, n)

        monkeypatch.setattr(iocore, "_read", read)
        msgs = [bytes([65 + i]) * (10 + i) for i in range(len(peers))]
        _send_all_then_run(loop, peers, msgs, lambda: all(p.received == m for p, m in zip(peers, msgs)),
                           "every peer gets its own echo")
        assert skipped == [victim] and max(proto.batches) > 1
        assert not proto.lost and not any(c.closed for c in conns)
    finally:
        _close_all(pairs)


def test_a_bug_in_data_batch_ends_that_batch_only(default_loop, caplog):
    loop = default_loop
    pairs = _tcp_pairs(5)
    by_a, by_b = _socketpair()
    try:
        class Broken(BatchEcho):
            def data_batch(self, conns: list, datas: list) -> None:
                raise ValueError("bug in data_batch")

        proto = Broken()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        bystander = Echo()  # per-event path, same loop
        by_conn = loop.add_connection(by_b, bystander)
        by_peer = Peer(loop, by_a).start_reading()
        with caplog.at_level("ERROR", logger="socktools.core.loop"):
            for a, b in pairs:
                a.sendall(b"x")
            run_until(loop, lambda: all(c.closed for c in conns), "the batch's connections closed")
        assert {c.failed_in for c in conns} == {"internal"}
        assert isinstance(proto.exc, ValueError) and proto.calls.count("lost") == len(conns)
        assert any("Broken raised ValueError" in r.getMessage() for r in caplog.records)
        by_a.sendall(b"still here")
        run_until(loop, lambda: by_peer.received == b"still here", "the bystander echoes")
        assert not by_conn.closed
    finally:
        _close_all(pairs)
        by_a.close()
        by_b.close()

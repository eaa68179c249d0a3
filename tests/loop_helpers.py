"""Shared pieces of the I/O core's tests (tests/test_loop*.py, tests/test_pollers.py).

The pair factories, the test protocols and the ``make_pair`` / ``loop``
fixtures: in the spirit of trio's ``testing/_check_streams.py``, every
connected-pair factory must pass the same behaviour suite.
"""

from __future__ import annotations

import itertools
import random
import re
import select
import selectors
import socket
from typing import Callable, Optional

import pytest

from socktools.core.loop import READ_SIZE, Connection, Loop, Protocol
from tests.conftest import skip_without_ipv6

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


# ----------------------------------------------------------------- pair factories

# ----------------------------------------------------------------- pair factories

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
    skip_without_ipv6()
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



@pytest.fixture(params=POLLERS)
def plain_loop(request):
    """The default loop and the ``selectors`` fallback, nothing patched."""
    lp = Loop() if request.param == "epoll" else Loop(selectors.DefaultSelector())
    yield lp
    lp.close()


class Collect(Protocol):
    def __init__(self) -> None:
        self.data: list = []
        self.lost: list = []
        self.ctx_seen: list = []

    def data_received(self, conn: Connection, data: bytes) -> None:
        self.data.append(data)

    def connection_lost(self, conn: Connection, exc) -> None:
        self.ctx_seen.append(conn.ctx)
        self.lost.append(exc)



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
import random
import socket
import struct
import threading

import pytest

from socktools.core.loop import Connection, Loop, Protocol
from tests.loop_helpers import (_bystander, _bystander_still_fine, Collect, Echo, Peer, READ, RUN_LIMIT,
                               Recorder, WRITE, _count_polls, _tcp_pair, _tcp_tiny, assert_same_bytes, interest,
                               payload, polls_during, run_until, write_until_buffered)
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

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


class ClosesOnBye(Recorder):
    """Closes the connection itself once the peer's farewell has arrived."""

    def data_received(self, conn, data) -> None:
        super().data_received(conn, data)
        if self.data.endswith(b"bye"):
            conn.close()


@pytest.mark.parametrize("protocol", [Recorder, ClosesOnBye])
def test_what_a_resetting_peer_said_before_the_reset_is_delivered(protocol):
    """The peer answers, then closes with our next bytes unread (RST), as a server that
    announced its close does: a send then fails, yet its answer is still in the kernel's
    receive queue -- delivered before the connection ends, and a protocol that closes on it
    ends the connection cleanly."""
    lp = Loop()
    a, b = _tcp_pair(socket.AF_INET, "127.0.0.1")
    try:
        rec = protocol()
        rec.close_on_eof = False
        conn = lp.add_connection(a, rec)
        b.sendall(b"answer, bye")
        conn.write(b"ping")                              # unread by the peer when it closes
        assert wait_until(lambda: _queued(b) == 4, 5)
        b.close()                                        # unread data: the kernel sends RST
        assert wait_until(lambda: _reset_seen(a), 5)
        conn.write(b"more")                              # ECONNRESET (or EPIPE)
        assert conn.closed and bytes(rec.data) == b"answer, bye"
        assert rec.calls.index("data") < rec.calls.index("lost")
        if protocol is ClosesOnBye:
            assert rec.exc is None and conn.failed_in is None
        else:
            assert isinstance(rec.exc, (ConnectionResetError, BrokenPipeError)) and conn.failed_in == "send"
    finally:
        a.close()
        lp.close()


def _queued(sock) -> int:
    """Bytes in ``sock``'s receive queue (FIONREAD)."""
    import fcntl
    import termios
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def _reset_seen(sock) -> bool:
    """The RST arrived: TCP_INFO's state is CLOSE (7) (the read queue is untouched)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return info[0] == 7


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



def test_read_size_bounds_each_recv(plain_loop):
    a, peer = socket.socketpair()
    proto = Collect()
    conn = plain_loop.add_connection(a, proto)
    conn.read_size = 3
    peer.send(b"abcdefgh")
    plain_loop.run(until=lambda: sum(map(len, proto.data)) == 8, timeout=5)
    assert proto.data == [b"abc", b"def", b"gh"]
    peer.close()

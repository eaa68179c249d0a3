"""The I/O core connecting out: open_connection, refused and failed connects, phases."""

from __future__ import annotations

import errno
import os
import resource
import socket
import time

import pytest

from tests.conftest import skip_without_ipv6
from tests.loop_helpers import (_bystander, _bystander_still_fine, Collect, Echo, RUN_LIMIT, Recorder,
                               TCP_SYN_SENT, interest, run_until)

pytestmark = pytest.mark.timeout(60)

# ================================================================= connecting

@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_open_connection_buffers_writes_until_connected(loop, family):
    if family == "ipv6":
        skip_without_ipv6()
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
    if family == "ipv6":
        skip_without_ipv6()
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



def test_open_connection_ctx_is_set_even_for_an_immediate_failure(plain_loop, tmp_path):
    """An AF_UNIX connect to a missing path fails inside connect() itself."""
    proto = Collect()
    marker = object()
    conn = plain_loop.open_connection(str(tmp_path / "nobody"), proto, family=socket.AF_UNIX, ctx=marker)
    assert conn.closed and conn.failed_in == "connect"
    assert proto.ctx_seen == [marker]
    assert isinstance(proto.lost[0], OSError)

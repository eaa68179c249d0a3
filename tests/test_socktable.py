"""socktable and `socktools sockets`: real loopback sockets, checked as the kernel reports them."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

import pytest
from click.testing import CliRunner

from socktools.kernel import socktable
from socktools.cli import main
from tests.conftest import skip_without_ipv6
from socktools.kernel.socktable import SocketTableUnavailable, find_socket, normalize_state, read_sockets

SOURCES = ["netlink", "proc"]


def _need(source):
    try:
        socktable.resolve_source(source)
    except SocketTableUnavailable as exc:
        pytest.skip(f"{source} socket table not available here: {exc}")


def _settle(check, what, deadline=5.0):
    """Loopback delivery and ACKs happen in softirq context: wait until the kernel agrees."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result or time.monotonic() > end:
            assert result, what
            return result
        time.sleep(0.01)


@pytest.fixture
def scene():
    """A listener (backlog 5) with one connection accepted and one waiting in its accept queue;
    the accepted server side has 1000 unread bytes, the client side 300."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    port = lsock.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = lsock.accept()
    waiting = socket.create_connection(("127.0.0.1", port))   # never accepted
    client.sendall(b"x" * 1000)
    server.sendall(b"y" * 300)
    yield {"port": port, "listener": lsock, "client": client, "server": server, "waiting": waiting}
    for s in (client, server, waiting, lsock):
        s.close()


def _by_tuple(entries):
    return {(e.local, e.remote): e for e in entries}


def _ours(entries, scene):
    """Only the scene's own sockets: other programs' TIME-WAIT sockets may share the port number."""
    port = scene["port"]
    tuples = {(("127.0.0.1", port), ("0.0.0.0", 0))}
    for name in ("client", "server", "waiting"):
        sock = scene[name]
        tuples |= {(sock.getsockname(), sock.getpeername()), (sock.getpeername(), sock.getsockname())}
    return [e for e in entries if (e.local, e.remote) in tuples]


@pytest.mark.parametrize("source", SOURCES)
def test_finds_listener_and_queues(scene, source):
    _need(source)
    port = scene["port"]
    client, server = scene["client"], scene["server"]

    def ready():
        t = _by_tuple(read_sockets(port=port, source=source))
        srv = t.get((server.getsockname(), server.getpeername()))
        cli = t.get((client.getsockname(), client.getpeername()))
        lst = t.get((("127.0.0.1", port), ("0.0.0.0", 0)))
        if srv and cli and lst and srv.recv_q == 1000 and cli.recv_q == 300 and lst.recv_q == 1:
            return srv, cli, lst
        return None

    srv, cli, lst = _settle(ready, "queues never reached 1000/300/1")
    assert lst.state == "LISTEN" and lst.listening and lst.proto == "tcp"
    # ss semantics: Recv-Q = accept queue, Send-Q = backlog; /proc does not export the backlog.
    assert lst.accept_queue == (1, 5 if source == "netlink" else None)
    assert srv.state == cli.state == "ESTABLISHED"
    assert srv.send_q == 0 and cli.send_q == 0      # loopback ACKs at once
    assert srv.uid == cli.uid == os.geteuid()
    assert srv.inode and cli.inode and lst.inode
    # The connection still in the accept queue belongs to no file yet: inode 0, like ss shows.
    waiting = scene["waiting"]
    queued = _by_tuple(read_sockets(port=port, source=source))[(waiting.getpeername(), waiting.getsockname())]
    assert queued.inode == 0


def test_netlink_and_proc_agree(scene):
    _need("netlink")
    _need("proc")
    port = scene["port"]

    def key(e):
        return (e.proto, e.local, e.remote, e.state, e.recv_q, e.inode, e.uid,
                None if e.listening else e.send_q)

    def same():
        a = sorted(map(key, _ours(read_sockets(port=port, source="netlink"), scene)))
        b = sorted(map(key, _ours(read_sockets(port=port, source="proc"), scene)))
        return a == b and len(a) == 5 and a
    _settle(same, "netlink and /proc disagree about the test's sockets")


@pytest.mark.parametrize("source", SOURCES)
def test_send_q_and_recv_q_add_up_when_the_receiver_does_not_read(source):
    """Fill a connection whose receiver never reads: every byte the sender's kernel accepted is
    either in the receiver's Recv-Q or in the sender's Send-Q."""
    _need(source)
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]
        sender = socket.socket()
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sender.connect(("127.0.0.1", port))
        receiver, _ = lsock.accept()
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        with sender, receiver:
            sender.setblocking(False)
            sent = 0
            chunk = b"z" * 4096
            for _ in range(10_000):       # bounded; stops at the first EAGAIN
                try:
                    sent += sender.send(chunk)
                except BlockingIOError:
                    break
            else:
                pytest.fail("send() never blocked")

            def balanced():
                s = find_socket(sender.getsockname(), sender.getpeername(), source=source)
                r = find_socket(receiver.getsockname(), receiver.getpeername(), source=source)
                # Where the bytes sit (sender's Send-Q or receiver's Recv-Q) depends on the
                # receive window at that instant; that they all sit somewhere does not.
                return s and r and r.recv_q > 0 and s.send_q + r.recv_q == sent and (s, r)
            s, r = _settle(balanced, f"Send-Q + Recv-Q never equalled the {sent} bytes sent")
            assert s.state == r.state == "ESTABLISHED"


def test_find_socket_exact_tuple_with_tcp_info(scene):
    client, server = scene["client"], scene["server"]
    e = find_socket(client.getsockname(), client.getpeername())
    assert e is not None and e.local == client.getsockname() and e.remote == client.getpeername()
    back = find_socket(server.getsockname(), server.getpeername())
    assert back is not None and back.local == e.remote and back.remote == e.local
    if socktable.resolve_source() == "netlink":
        assert e.tcp_info is not None and e.tcp_info["snd_mss"] > 0
        assert e.tcp_info.state_name == "ESTAB"
        _settle(lambda: (find_socket(server.getsockname(), server.getpeername()).tcp_info["bytes_received"]
                         == 1000), "tcp_info bytes_received != 1000")
        assert json.dumps(e.to_dict())      # JSON-ready, tcp_info included
    # A 4-tuple that does not exist (the listener's port from an unused client port).
    assert find_socket(("127.0.0.1", scene["port"]), ("127.0.0.1", 9)) is None


@pytest.mark.parametrize("source", SOURCES)
def test_ipv6_listener(source):
    _need(source)
    skip_without_ipv6()
    with socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=3) as lsock:
        port = lsock.getsockname()[1]
        (e,) = read_sockets(port=port, listening=True, source=source)
        assert e.proto == "tcp6" and e.local == ("::1", port) and e.remote == ("::", 0)
        assert e.accept_queue == (0, 3 if source == "netlink" else None)


def test_filters_and_processes(scene):
    port = scene["port"]
    listeners = read_sockets(port=port, listening=True)
    assert [e.state for e in listeners] == ["LISTEN"]
    assert read_sockets(port=port, state="listen") == listeners
    estab = read_sockets(port=port, state=["estab"])
    assert {e.state for e in estab} == {"ESTABLISHED"} and len(_ours(estab, scene)) == 4
    assert all(e.state == "TIME-WAIT" for e in read_sockets(port=port, state="time-wait"))
    with_pids = _ours(read_sockets(port=port, processes=True), scene)
    mine = [e for e in with_pids if e.inode]
    assert mine and all((os.getpid(), _comm()) in e.pids for e in mine)
    assert all(e.pids == () for e in read_sockets(port=port))   # only when asked


def _comm():
    with open("/proc/self/comm") as f:
        return f.read().strip()


def test_normalize_state():
    assert normalize_state("estab") == "ESTABLISHED"
    assert normalize_state("time_wait") == "TIME-WAIT"
    assert normalize_state("Close-Wait") == "CLOSE-WAIT"
    with pytest.raises(ValueError, match="unknown TCP state 'nope'"):
        normalize_state("nope")


def test_proc_address_decoding():
    # /proc prints the address as host-order 32-bit words: build the line the way the kernel does.
    word = struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0]
    assert socktable.proc.proc_addr(f"{word:08X}:1F90", socket.AF_INET) == ("127.0.0.1", 8080)
    raw = socket.inet_pton(socket.AF_INET6, "::1")
    words = "".join(f"{w:08X}" for w in struct.unpack("=4I", raw))
    assert socktable.proc.proc_addr(f"{words}:0050", socket.AF_INET6) == ("::1", 80)


def test_refuses_clearly_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(SocketTableUnavailable, match="needs Linux"):
        read_sockets()
    result = CliRunner().invoke(main, ["sockets"])
    assert result.exit_code == 3
    assert result.output.strip().startswith("socktools: reading the socket table needs Linux")
    assert "Traceback" not in result.output


def test_cli_table_and_json(scene):
    port = scene["port"]
    runner = CliRunner()
    _settle(lambda: any(e.recv_q == 1000 for e in read_sockets(port=port)), "data never arrived")
    result = runner.invoke(main, ["sockets", "--port", str(port), "--processes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer",
                                "Address:Port", "Process"]
    listen = next(line for line in lines if line.startswith("LISTEN"))
    assert listen.split()[:5] == ["LISTEN", "1", "5" if socktable.resolve_source() == "netlink" else "-",
                                  f"127.0.0.1:{port}", "0.0.0.0:*"]   # told apart from [::]:*, as ss does
    assert any(line.split()[:2] == ["ESTABLISHED", "1000"] for line in lines)
    assert "accept()" in result.output

    result = runner.invoke(main, ["sockets", "--port", str(port), "--json", "--source", "proc"])
    doc = json.loads(result.output)
    assert doc["source"] == "proc"
    states = sorted(s["state"] for s in doc["sockets"] if s["state"] != "TIME-WAIT")
    assert states == ["ESTABLISHED"] * 4 + ["LISTEN"]


def test_cli_bad_state_is_a_usage_error():
    result = CliRunner().invoke(main, ["sockets", "--state", "bogus"])
    assert result.exit_code == 2
    assert "--state" in result.output and "unknown TCP state" in result.output

"""`socktools serve` end to end: real processes, real loopback sockets."""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from socktools import protocol, reference
from tests.conftest import alive, server_recv_queues, skip_without_ipv6, socktools_cmd, wait_until

VECTOR_SEARCH_REQ = (b'\x00g{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
                     b'"content-length": 41}{"action": "search", "value": "morpheus"}')
VECTOR_SEARCH_RESP = (b'\x00g{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
                      b'"content-length": 43}{"result": "Follow the white rabbit. \xf0\x9f\x90\xb0"}')
VECTOR_BINARY_REQ = (b'\x00\x7f{"byteorder": "little", "content-type": "binary/custom-client-binary-type", '
                     b'"content-encoding": "binary", "content-length": 11}binaryhello')
VECTOR_BINARY_RESP = (b'\x00\x7f{"byteorder": "little", "content-type": "binary/custom-server-binary-type", '
                      b'"content-encoding": "binary", "content-length": 37}First 10 bytes of request: binaryhell')

little_endian_only = pytest.mark.skipif(sys.byteorder != "little",
                                        reason="SPEC test vectors were captured on a little-endian host")


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def read_message(sock: socket.socket, timeout: float = 5.0) -> protocol.Message:
    sock.settimeout(timeout)
    dec = protocol.Decoder()
    while True:
        dec.receive_data(sock.recv(65536))
        ev = dec.next_event()
        if isinstance(ev, protocol.Message):
            return ev
        assert ev is protocol.NEED_DATA, ev


def frame(header: bytes, content: bytes = b"") -> bytes:
    return struct.pack("!H", len(header)) + header + content


def hdr(**kw) -> bytes:
    base = {"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8",
            "content-length": 2}
    for k, v in kw.items():
        k = k.replace("_", "-")
        if v is ...:
            base.pop(k)
        else:
            base[k] = v
    return json.dumps(base).encode()


# --------------------------------------------------------------------- framed mode

@little_endian_only
@pytest.mark.parametrize("request_bytes,response_bytes", [
    (VECTOR_SEARCH_REQ, VECTOR_SEARCH_RESP), (VECTOR_BINARY_REQ, VECTOR_BINARY_RESP)],
    ids=["search-morpheus", "binary-hello"])
def test_framed_wire_bytes_equal_spec_vectors(start_server, request_bytes, response_bytes):
    srv = start_server("--mode", "framed")
    with socket.create_connection(srv.address) as s:
        s.sendall(request_bytes)
        assert recv_all(s) == response_bytes  # and the server closed: one request per connection


def test_request_cli_prints_the_answer(start_server):
    srv = start_server("--mode", "framed")
    out = subprocess.run(socktools_cmd("request", "--port", str(srv.port), "search", "morpheus"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Follow the white rabbit. \U0001f430\n"


@little_endian_only
def test_request_show_bytes_is_the_wire_trace(start_server):
    srv = start_server("--mode", "framed")
    out = subprocess.run(socktools_cmd("request", "--port", str(srv.port), "binary", "hello", "--show-bytes"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert repr(VECTOR_BINARY_REQ) in out.stdout
    assert repr(VECTOR_BINARY_RESP) in out.stdout
    assert out.stdout.rstrip().endswith("First 10 bytes of request: binaryhell")


MALFORMED = {
    "bad-json": frame(b'{"byteorder": '),
    "bad-utf8": frame(b'{"a": "\xff\xfe"}'),
    "empty-header": b"\x00\x00" + b"{}",
    "header-array": frame(b"[1, 2, 3]"),
    "header-string": frame(b'"text"'),
    "header-number": frame(b"42"),
    "missing-byteorder": frame(hdr(byteorder=...), b"{}"),
    "missing-content-length": frame(hdr(content_length=...), b"{}"),
    "missing-content-type": frame(hdr(content_type=...), b"{}"),
    "missing-content-encoding": frame(hdr(content_encoding=...), b"{}"),
    "length-negative": frame(hdr(content_length=-1)),
    "length-string": frame(hdr(content_length="2"), b"{}"),
    "length-float": frame(hdr(content_length=2.0), b"{}"),
    "length-huge": frame(hdr(content_length=10 ** 12)),
    "content-not-json": frame(hdr(content_length=3), b"{x}"),
    "content-not-object": frame(hdr(content_length=2), b"[]"),
    "unknown-encoding": frame(hdr(content_encoding="klingon"), b"{}"),
}
EXPECTED_KIND = {
    "bad-json": "bad-json", "bad-utf8": "bad-utf8", "empty-header": "empty-header",
    "header-array": "header-not-object", "header-string": "header-not-object",
    "header-number": "header-not-object", "length-negative": "bad-content-length",
    "length-string": "bad-content-length", "length-float": "bad-content-length",
    "length-huge": "content-too-large", "content-not-json": "bad-content",
    "content-not-object": "bad-content", "unknown-encoding": "bad-content-encoding",
}


def test_malformed_frames_get_an_error_reply_and_close_while_a_good_client_carries_on(start_server):
    srv = start_server("--mode", "framed", json_events=True)
    # A good client holds a keep-alive connection open across all the bad ones.
    good = socket.create_connection(srv.address)
    good.sendall(reference.make_request("search", "ring", keep_alive=True))
    assert read_message(good).value == {"result": "In the caves beneath the Misty Mountains. \U0001f48d"}
    for name, bad_bytes in MALFORMED.items():
        with socket.create_connection(srv.address) as bad:
            bad.sendall(bad_bytes)
            reply = recv_all(bad)  # the server must close after replying
            dec = protocol.Decoder()
            dec.receive_data(reply)
            msg = dec.next_event()
            assert isinstance(msg, protocol.Message), (name, reply)
            assert set(msg.value) == {"error"} and msg.value["error"], (name, msg.value)
        # The good connection is still served after every bad one.
        good.sendall(reference.make_request("search", "morpheus", keep_alive=True))
        assert read_message(good).value["result"] == "Follow the white rabbit. \U0001f430", name
    good.close()
    rc, out, err = srv.stop()
    assert rc == 0, err
    summary = srv.final_summary()
    assert sum(summary["protocol_errors"].values()) == len(MALFORMED)
    assert summary["protocol_errors"]["missing-key"] == 4
    for name, kind in EXPECTED_KIND.items():
        assert summary["protocol_errors"].get(kind), (name, kind, summary["protocol_errors"])
    assert summary["requests"] == 1 + len(MALFORMED)
    assert "protocol error from 127.0.0.1:" in err  # the log line names the peer


def test_truncated_frame_at_eof_is_reported(start_server):
    srv = start_server("--mode", "framed", json_events=True)
    with socket.create_connection(srv.address) as s:
        s.sendall(reference.make_request("search", "morpheus")[:50])
        s.shutdown(socket.SHUT_WR)  # half-close mid-message: the outgoing direction still works
        msg = read_message(s)
        assert "closed mid-message" in msg.value["error"]
    srv.stop()
    assert srv.final_summary()["protocol_errors"] == {"truncated": 1}


def test_content_length_cap_is_checked_as_soon_as_the_header_arrives(start_server):
    srv = start_server("--mode", "framed", "--max-content", "1000")
    with socket.create_connection(srv.address) as s:
        s.sendall(frame(hdr(content_length=1001)))  # header only; no content sent at all
        msg = read_message(s)
        assert "exceeds the limit of 1000 bytes" in msg.value["error"]


def test_keep_alive_pipelined_requests_are_answered_in_order(start_server):
    srv = start_server("--mode", "framed", json_events=True)
    values = ["morpheus", "ring", "\U0001f436", "nobody"]
    with socket.create_connection(srv.address) as s:
        s.sendall(b"".join(reference.make_request("search", v, keep_alive=True) for v in values))
        s.sendall(reference.make_request("binary", "hello"))  # no keep-alive: last one
        stream = recv_all(s)
    dec = protocol.Decoder()
    dec.receive_data(stream)
    dec.receive_data(b"")
    got = []
    while (ev := dec.next_event()) is not protocol.CLOSED:
        got.append(ev)
    assert [m.value["result"] for m in got[:4]] == [
        reference.SEARCH_TABLE["morpheus"], reference.SEARCH_TABLE["ring"],
        reference.SEARCH_TABLE["\U0001f436"], "No match for 'nobody'."]
    assert all(m.keep_alive for m in got[:4])
    assert got[4].content == b"First 10 bytes of request: binaryhell"
    srv.stop()
    assert srv.final_summary()["requests"] == 5


def test_ipv6_loopback(start_server):
    skip_without_ipv6()
    srv = start_server("--mode", "framed", "--host", "::1")
    assert "listening on [::1]:" in srv.first_line
    out = subprocess.run(socktools_cmd("request", "--host", "::1", "--port", str(srv.port), "search", "ring"),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == reference.SEARCH_TABLE["ring"]


# --------------------------------------------------------------------- echo and sink

def test_echo_half_close_flushes_what_is_owed_then_closes(start_server):
    srv = start_server("--mode", "echo")
    payload = os.urandom(3 * 1024 * 1024)
    with socket.create_connection(srv.address) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s, timeout=20) == payload


def test_echo_pushes_back_on_a_client_that_never_reads(start_server):
    """The client only sends: the echoes pile up until the server stops reading (its
    out-buffer past the high-water mark), so the client's sends stall with a bounded amount
    in flight; then it reads, and every byte comes back in order."""
    srv = start_server("--mode", "echo")
    with socket.create_connection(srv.address) as s:
        s.setblocking(False)
        sent = bytearray()
        chunk = os.urandom(65536)
        stalled_since = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(sent) < 64 * 1024 * 1024:
            try:
                sent += chunk[:s.send(chunk)]
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.01)
        assert stalled_since is not None, "the server kept reading from a client that never reads"
        assert len(sent) < 64 * 1024 * 1024, "pushed back only after a runaway amount"
        s.setblocking(True)
        s.settimeout(20)
        got = bytearray()
        while len(got) < len(sent):
            got += s.recv(1 << 20)
        assert got == sent
        s.sendall(b"still echoing")  # reading resumed once the backlog drained
        want = len(b"still echoing")
        tail = b""
        while len(tail) < want:
            tail += s.recv(want - len(tail))
        assert tail == b"still echoing"


def test_sink_never_reads_until_sigusr1(start_server):
    srv = start_server("--mode", "sink", "--rcvbuf", "4096", json_events=True)
    with socket.create_connection(srv.address) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(100_000):
                sent += s.send(b"x" * 4096)
        assert 0 < sent < 10 * 1024 * 1024
        # The kernel completes the handshake and queues our bytes without the server's loop;
        # SIGUSR1 means something only once that loop runs (it accepts us: accept queue 0).
        assert wait_until(lambda: _accept_queue(srv.port) == 0, timeout=10), "server never accepted"
        os.kill(srv.pid, signal.SIGUSR1)  # now it reads: the socket becomes writable again
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_WRITE)
        assert sel.select(timeout=10), "socket never became writable after SIGUSR1"
        sel.close()
        # Wait on the kernel, not the clock: every byte left our send queue (SIOCOUTQ 0: acked)
        # and the server read them all from its receive queue (Recv-Q 0 in /proc/net/tcp).
        # Only then may we close: a drain closes an idle sink connection without reading more.
        client_port = s.getsockname()[1]
        assert wait_until(lambda: _outq(s) == 0 and _server_recv_q(srv.port, client_port) == 0,
                          timeout=10), (_outq(s), _server_recv_q(srv.port, client_port))
    srv.stop()
    assert srv.final_summary()["bytes_in"] == sent


def _outq(sock: socket.socket) -> int:
    import fcntl
    import struct
    from socktools.kernel.tcpinfo import SIOCOUTQ
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]


def _accept_queue(port: int):
    """Connections waiting in the accept queue of the listener on ``port`` (LISTEN Recv-Q)."""
    for fields in _proc_net_tcp():
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            return int(fields[4].split(":")[1], 16)
    return None


def _proc_net_tcp():
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            for line in f:
                yield line.split()


def _server_recv_q(server_port: int, client_port: int):
    """Recv-Q of the server's end of one loopback connection, read from /proc/net/tcp{,6}."""
    for fields in _proc_net_tcp():
        if (int(fields[1].rsplit(":", 1)[1], 16) == server_port
                and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
            return int(fields[4].split(":")[1], 16)
    return None


# --------------------------------------------------------------------- workers and signals

def _established_inodes(port: int) -> set:
    """Inodes of the ESTABLISHED TCP sockets whose local port is ``port`` (from /proc/net)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _connections_held(pid: int, port: int) -> int:
    """Accepted connections on ``port`` that process ``pid`` holds.

    Counted by socket inode rather than as "socket fds now minus before", so the
    sockets a worker opens for itself while starting (its signal wakeup pair)
    cannot be mistaken for connections, whenever the test happens to look.
    """
    inodes = _established_inodes(port)
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += link.startswith("socket:[") and link[8:-1] in inodes
    return n


def test_two_workers_1000_echo_clients_then_sigterm(start_server):
    srv = start_server("--mode", "echo", "--workers", "2", json_events=True)
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    workers = srv.worker_pids()
    clients = []
    for i in range(1000):
        c = socket.create_connection(srv.address)
        clients.append(c)
    for i, c in enumerate(clients):
        c.sendall(b"ping %04d" % i)
    for i, c in enumerate(clients):
        c.settimeout(10)
        assert c.recv(64) == b"ping %04d" % i
    held = {pid: _connections_held(pid, srv.port) for pid in workers}
    assert sum(held.values()) == 1000, held
    assert min(held.values()) >= 200, f"connections not spread across workers: {held}"
    for c in clients:
        c.close()
    rc, out, err = srv.stop(signal.SIGTERM)
    assert rc == 0, err
    assert not any(alive(pid) for pid in workers), "a worker outlived the server"
    summary = srv.final_summary()
    assert summary["accepted"] == summary["closed"] == 1000
    assert summary["bytes_in"] == summary["bytes_out"] == 1000 * 9
    assert summary["open"] == 0 and summary["worker_restarts"] == 0


def test_a_dead_worker_is_reported_and_replaced(start_server):
    srv = start_server("--mode", "framed", "--workers", "2", json_events=True)
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    victim = srv.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids())
    for _ in range(20):  # both the survivor and the replacement answer
        with socket.create_connection(srv.address) as s:
            s.sendall(reference.make_request("search", "morpheus"))
            assert read_message(s).value["result"] == reference.SEARCH_TABLE["morpheus"]
    workers = srv.worker_pids()
    rc, out, err = srv.stop()
    assert rc == 0
    exits = [json.loads(l) for l in out.splitlines() if '"worker-exit"' in l]
    assert exits and exits[0]["how"] == "killed by signal 9" and exits[0]["restarting"]
    assert srv.final_summary()["worker_restarts"] == 1
    assert not any(alive(pid) for pid in workers)


def test_second_signal_forces_a_stop_while_draining(start_server):
    srv = start_server("--mode", "framed", "--drain-timeout", "60", json_events=True)
    s = socket.create_connection(srv.address)
    s.sendall(reference.make_request("search", "morpheus")[:20])  # mid-message: keeps the drain busy
    assert wait_until(lambda: server_recv_queues(srv.port) == 0), "the server never read the 20 bytes"
    srv.proc.send_signal(signal.SIGINT)
    assert srv.wait_for_log("draining 1 connection(s)"), srv.log_seen
    assert srv.proc.poll() is None, "first signal should drain, not stop, while a request is in flight"
    rc, out, err = srv.stop(signal.SIGINT, timeout=10)
    assert rc == 0
    s.close()


def test_sigkilled_supervisor_leaves_no_orphan(start_server):
    srv = start_server("--mode", "echo", "--workers", "2")
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    workers = srv.worker_pids()
    srv.stop(signal.SIGKILL)
    assert wait_until(lambda: not any(alive(p) for p in workers), timeout=10), "orphaned workers"


def test_address_in_use_is_a_clear_error(start_server):
    srv = start_server("--mode", "echo")
    out = subprocess.run(socktools_cmd("serve", "--port", str(srv.port)), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert "EADDRINUSE" in out.stderr and f"127.0.0.1:{srv.port}" in out.stderr
    assert "Traceback" not in out.stderr


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_at_accept_pauses_without_spinning_then_resumes(start_server):
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    srv = start_server("--mode", "echo", preexec_fn=low_fd_limit)
    clients = [socket.create_connection(srv.address) for _ in range(60)]  # more than 40 fds
    for c in clients:
        c.sendall(b"hi")
    time.sleep(0.5)
    cpu_before = _cpu_seconds(srv.pid)
    time.sleep(1.0)
    spent = _cpu_seconds(srv.pid) - cpu_before
    assert spent < 0.5, f"server spun the CPU while out of fds: {spent:.2f}s in 1s"
    for c in clients[:30]:  # free fds: the waiting clients get served
        c.close()
    for c in clients[30:]:
        c.settimeout(10)
        assert c.recv(16) == b"hi"
        c.close()
    rc, out, err = srv.stop()
    assert rc == 0
    assert "accept paused" in err and "EMFILE" in err


def test_idle_timeout_closes_idle_connections(start_server):
    srv = start_server("--mode", "echo", "--idle-timeout", "300ms", json_events=True)
    with socket.create_connection(srv.address) as s:
        s.settimeout(5)
        assert s.recv(16) == b""  # closed by the server after ~0.3 s of silence
    srv.stop()
    assert srv.final_summary()["idle_closed"] == 1


def test_max_conns_makes_extra_clients_wait_in_the_backlog(start_server):
    srv = start_server("--mode", "echo", "--max-conns", "2")
    a, b, c = (socket.create_connection(srv.address) for _ in range(3))
    for s in (a, b, c):
        s.sendall(b"x")
        s.settimeout(0.5)
    assert a.recv(1) == b"x" and b.recv(1) == b"x"
    with pytest.raises(socket.timeout):
        c.recv(1)  # accepted by the kernel, not yet by the server
    a.close()
    c.settimeout(5)
    assert c.recv(1) == b"x"
    b.close()
    c.close()


def test_binding_all_interfaces_warns():
    # No connection is made: the server is stopped as soon as it reports listening.
    proc = subprocess.Popen(socktools_cmd("serve", "--host", "0.0.0.0", "--port", "0"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert "binds every interface" in err

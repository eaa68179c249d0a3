"""sniff on real loopback traffic: needs root (or CAP_NET_RAW), as live capture does."""

from __future__ import annotations

import json
import struct
import shutil
import socket
import subprocess
import threading

import pytest

from socktools import reference
from socktools.capture import SniffConfig, Sniffer
from socktools.capture.reassembly import MessageEvent
from tests.conftest import after_second_fin, can_capture, socktools_cmd
from tests.livesniff import LiveSniff
from tests.threadserver import answer_framed


pytestmark = pytest.mark.skipif(
    not can_capture(),
    reason="live capture needs root or CAP_NET_RAW (packet sockets); the -r tests cover the rest")

SEARCH_REPLY = reference.SEARCH_TABLE["morpheus"]


def listener(rcvbuf: int = 0) -> socket.socket:
    srv = socket.socket()
    if rcvbuf:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    return srv


def framed_exchange(srv: socket.socket) -> None:
    """One framed request/response over plain sockets, closed like the reference peers."""
    def serve():
        conn, _ = srv.accept()
        with conn:
            answer_framed(conn)
    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(srv.getsockname(), timeout=5) as c:
        c.sendall(reference.make_request("search", "morpheus"))
        while c.recv(4096):
            pass
    t.join(5)


def capture(port: int, action, until, *, timeout: float = 8.0, **cfg):
    """Open a capture, run ``action`` in a thread, read until ``until(records)``; -> (records, summary)."""
    sn = Sniffer(SniffConfig(port=port, timeout=timeout, **cfg)).open()
    records = []
    worker = threading.Thread(target=action)
    worker.start()
    try:
        for batch in sn.batches():
            records += batch
            if until(records):
                break
    finally:
        worker.join(10)
        summary = sn.close()
    return records, summary


def exchange_done(records) -> bool:
    fins = [i for i, r in enumerate(records) if "FIN" in r.flags]
    return len(fins) >= 2 and len(records) > fins[1] and records[-1].flags == ("ACK",) \
        and records[-1].number > records[fins[1]].number


def messages(records):
    return [e for r in records for e in r.events if isinstance(e, MessageEvent)]


@pytest.mark.parametrize("backend", ["ring", "socket"])
def test_framed_exchange_handshake_messages_fin_each_packet_once(tmp_path, backend):
    srv = listener()
    port = srv.getsockname()[1]
    pcap = tmp_path / "live.pcap"
    with srv:
        records, summary = capture(port, lambda: framed_exchange(srv), exchange_done, write=str(pcap),
                                   backend=backend)
    assert summary.backend == backend
    flags = [r.flags for r in records]
    assert flags[:3] == [("SYN",), ("SYN", "ACK"), ("ACK",)], flags
    assert records[1].options and "MSS" in records[1].options
    client = (records[0].src, records[0].sport)
    fin_senders = {(r.src, r.sport) for r in records if "FIN" in r.flags}
    assert len(fin_senders) == 2 and client in fin_senders
    req, resp = messages(records)
    assert (req.role, req.index, resp.role, resp.index) == ("request", 1, "response", 1)
    assert req.content_preview == '{"action": "search", "value": "morpheus"}'
    assert req.header["content-type"] == "text/json" and req.segments == 1
    assert SEARCH_REPLY in resp.content_preview
    # each packet once: loopback's outgoing copies are not shown, nothing is repeated
    keys = [(r.src, r.sport, r.seq, r.ack, r.flags, r.length, r.window) for r in records]
    assert len(keys) == len(set(keys))
    assert summary.kernel_dropped == 0 and summary.kernel_received == summary.captured == len(records)
    (conn,) = summary.connections
    assert (conn.state, conn.requests, conn.responses) == ("closed", 1, 1)
    assert conn.handshake_rtt is not None and conn.handshake_rtt > 0

    # the pcap reads back with the same view; tshark opens it too
    again = [r for b in Sniffer(SniffConfig(read=str(pcap))).open().batches() for r in b]
    assert [m[:4] + m[5:] for m in messages(again)] == [m[:4] + m[5:] for m in messages(records)]
    assert [(r.flags, r.seq, r.ack, r.length) for r in again] == \
        [(r.flags, r.seq, r.ack, r.length) for r in records]
    if shutil.which("tshark"):
        res = subprocess.run(["tshark", "-r", str(pcap)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) == len(records)
        assert "[SYN]" in res.stdout and "[FIN, ACK]" in res.stdout


def stall(srv: socket.socket, done: threading.Event, hold: float = 5.0) -> None:
    """A client fills a receiver that does not read (tiny buffers) and waits, then both close."""
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.connect(srv.getsockname())
        conn, _ = srv.accept()
        with conn:
            c.setblocking(False)
            try:
                while True:
                    c.send(b"z" * 1024)
            except BlockingIOError:
                pass
            done.wait(hold)


def _has(records, mark) -> bool:
    return any(mark in r.marks for r in records)


def _until(mark: str, done: threading.Event):
    def until(records):
        if _has(records, mark):
            done.set()
            return True
        return False
    return until


def test_zero_window_is_marked_during_a_stall():
    srv = listener(rcvbuf=4096)
    port = srv.getsockname()[1]
    done = threading.Event()
    with srv:
        records, summary = capture(port, lambda: stall(srv, done), _until("ZeroWindowProbe", done))
    assert _has(records, "ZeroWindow") and _has(records, "Window Full")
    assert _has(records, "ZeroWindowProbe")
    first_zero = next(r for r in records if "ZeroWindow" in r.marks)
    assert first_zero.window == 0 and first_zero.length == 0
    assert summary.connections[0].zero_windows >= 1


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed (apt-get install tshark)")
def test_tshark_agrees_on_zero_window(tmp_path):
    srv = listener(rcvbuf=4096)
    port = srv.getsockname()[1]
    pcap = tmp_path / "zw.pcap"
    done = threading.Event()
    with srv:
        records, _ = capture(port, lambda: stall(srv, done), _until("ZeroWindow", done),
                             write=str(pcap))
    res = subprocess.run(["tshark", "-r", str(pcap), "-Y", "tcp.analysis.zero_window"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    ours = sum(1 for r in records if "ZeroWindow" in r.marks)
    assert len(res.stdout.splitlines()) == ours >= 1


def test_cli_around_socktools_request_then_ctrl_c(start_server):
    srv = start_server("--mode", "framed")
    with LiveSniff("--port", str(srv.port)) as sniff:
        assert "Capturing on 'lo' (filter: tcp port" in sniff.first
        req = subprocess.run(socktools_cmd("request", "search", "morpheus", "--port", str(srv.port)),
                             capture_output=True, text=True, timeout=30)
        assert req.returncode == 0 and SEARCH_REPLY in req.stdout
        sniff.stop(after_second_fin, timeout=10)
    out = sniff.out
    assert sniff.returncode == 0, out
    assert "[SYN] Seq=0" in out and "[SYN, ACK] Seq=0 Ack=1" in out
    assert "request #1: text/json" in out and SEARCH_REPLY in out and "response #1" in out
    assert out.count("[FIN, ACK]") == 2
    assert "(stopped)" in out and "0 dropped" in out and "closed" in out


def test_cli_count_stops_by_itself_and_writes_pcap(tmp_path):
    srv = listener()
    port = srv.getsockname()[1]
    pcap = tmp_path / "three.pcap"
    sniff = subprocess.Popen(socktools_cmd("sniff", "--port", str(port), "--count", "3", "--json",
                                           "-w", str(pcap)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert '"event": "capturing"' in sniff.stderr.readline()
        with srv:
            framed_exchange(srv)
        out, err = sniff.communicate(timeout=20)
    finally:
        if sniff.poll() is None:
            sniff.kill()
            sniff.wait()
    assert sniff.returncode == 0, err
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert [o.get("flags") for o in objs[:3]] == [["SYN"], ["SYN", "ACK"], ["ACK"]]
    assert objs[-1]["event"] == "summary" and objs[-1]["stopped_by"] == "count"
    assert objs[-1]["written"] == 3 and pcap.stat().st_size > 24


def test_real_stall_against_a_sink_is_marked(start_server):
    srv = start_server("--mode", "sink", "--rcvbuf", "4096")
    done = threading.Event()

    def run_stall():
        subprocess.run(socktools_cmd("stall", "--port", str(srv.port), "--sndbuf", "4096",
                                     "--settle", "0.3", "-q"),
                       capture_output=True, timeout=30)
        done.set()
    records, _ = capture(srv.port, run_stall, lambda rs: done.is_set() or _has(rs, "ZeroWindowProbe"))
    assert _has(records, "ZeroWindow") and _has(records, "Window Full")


def test_the_default_backend_is_the_tpacket_v3_ring_and_any_is_cooked(tmp_path):
    srv = listener()
    port = srv.getsockname()[1]
    pcap = tmp_path / "any.pcap"
    with srv:
        records, summary = capture(port, lambda: framed_exchange(srv), exchange_done,
                                   iface="any", write=str(pcap))
    assert summary.backend == "ring" and summary.linktype == "Linux cooked v2"
    assert summary.kernel_dropped == 0 and summary.captured == len(records)
    # each packet once (loopback's outgoing copies left out), on lo, with the messages decoded
    keys = [(r.src, r.sport, r.seq, r.ack, r.flags, r.length) for r in records]
    assert len(keys) == len(set(keys))
    assert {struct.unpack("!I", r.frame[4:8])[0] for r in records} == {socket.if_nametoindex("lo")}
    assert [m.role for m in messages(records)] == ["request", "response"]
    if shutil.which("tshark"):
        res = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "sll.ifindex",
                              "-e", "tcp.len"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) == len(records)


def test_cli_show_prints_scapys_layers_for_a_live_request(start_server):
    pytest.importorskip("scapy", reason="scapy is not installed (pip install scapy)")
    srv = start_server("--mode", "framed")
    sniff = subprocess.Popen(socktools_cmd("sniff", "--port", str(srv.port), "--count", "4",
                                           "--show", "4"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Capturing on 'lo'" in sniff.stderr.readline()
        req = subprocess.run(socktools_cmd("request", "search", "morpheus", "--port", str(srv.port)),
                             capture_output=True, text=True, timeout=30)
        assert req.returncode == 0
        out, err = sniff.communicate(timeout=30)
    finally:
        if sniff.poll() is None:
            sniff.kill()
            sniff.wait()
    assert sniff.returncode == 0, err
    assert "request #1: text/json" in out
    # packet 4 (the request) dissected by scapy, with socktools' own layer on the port
    assert out.count("###[ Ethernet ]###") == 1
    for layer in ("###[ IP ]###", "###[ TCP ]###", "###[ socktools framed message ]###"):
        assert layer in out, out
    assert '"content-type": "text/json"' in out and "morpheus" in out


def burst(srv: socket.socket, writes: int) -> None:
    """``writes`` small segments (TCP_NODELAY) to ``srv``, read to the end by a thread; returns
    once the server has read every byte and both sides closed: a bounded burst, all sent."""
    size = 10
    got = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            n = 0
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                n += len(chunk)
            got.append(n)
    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(srv.getsockname(), timeout=5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(writes):
            c.sendall(b"x" * size)
    t.join(10)
    assert got == [writes * size]


@pytest.mark.parametrize("backend", ["ring", "socket"])
def test_timeout_drains_what_is_already_captured_and_counts_it(backend):
    """--timeout fires with the whole burst still unread (the capture never read before
    the deadline): what the kernel took for the filter is shown, none is left behind."""
    with listener() as srv:
        port = srv.getsockname()[1]
        sn = Sniffer(SniffConfig(port=port, timeout=1e-9, backend=backend)).open()
        try:
            burst(srv, 3000)               # sent, read and closed before the capture reads
            records = [r for batch in sn.batches() for r in batch]
        finally:
            summary = sn.close()
    assert summary.stopped_by == "timeout"
    assert summary.kernel_dropped == 0
    # every packet the kernel accepted for the filter was read out of the ring and shown
    assert summary.undrained == 0
    assert summary.captured == len(records) == summary.kernel_received
    payload = sum(r.length for r in records)
    assert payload == 3000 * 10               # the whole burst
    assert any("FIN" in r.flags for r in records)   # the server read the client's FIN


def test_packets_left_unread_at_the_end_are_counted_and_said():
    """Ctrl-C with the burst still in the ring: the summary says how many were not shown."""
    from socktools.cli.sniff import _Output
    with listener() as srv:
        sn = Sniffer(SniffConfig(port=srv.getsockname()[1], backend="ring")).open()
        try:
            burst(srv, 200)
        finally:
            summary = sn.close(interrupted=True)
    assert summary.captured == 0 and summary.kernel_received > 0
    assert summary.undrained == summary.kernel_received - summary.kernel_dropped
    text = _Output(as_json=False, quiet=False).summary_text(summary)
    assert f"{summary.undrained:,} packets the kernel took were still unread in the TPACKET_V3 " \
           f"ring when the capture stopped: not shown" in text


def test_decode_auto_shows_a_real_redis_conversation(tmp_path):
    """The issue's case on a real redis-server: a 27-byte SET, +OK, under the default --decode."""
    from tests.peers import Redis
    request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"

    def talk():
        with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as c:
            c.sendall(request)
            assert c.recv(64) == b"+OK\r\n"

    def both_fins(records):
        return sum(1 for r in records if "FIN" in r.flags) >= 2 and records[-1].flags == ("ACK",)

    with Redis(tmp_path) as peer:
        records, _ = capture(peer.port, talk, both_fins)
    msgs = [e for r in records for e in r.events if isinstance(e, MessageEvent)]
    assert [(m.role, m.content_type, m.content_preview, m.wire_size) for m in msgs] == [
        ("request", "redis", "['SET', 'k', 'v']", 27), ("response", "redis", "OK", 5)]

"""The scapy layer for the framed protocol, and sniff's scapy paths (--show, --backend scapy)."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from socktools import protocol, reference
from socktools.capture import dissect as d
from socktools.capture.pcap import PcapWriter
from tests.conftest import can_capture

pytest.importorskip("scapy", reason="scapy is not installed (pip install scapy)")

A = socket.inet_aton("127.0.0.1")


def _frame(sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 512, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, A, A) + tcp
    return b"\x00" * 12 + b"\x08\x00" + ip


def _decoder_messages(stream: bytes):
    dec = protocol.Decoder(16 << 20)
    dec.receive_data(stream)
    out = []
    while isinstance(ev := dec.next_event(), protocol.Message):
        out.append(ev)
    return out


def _scapy_messages(path: str, port: int):
    from scapy.sessions import TCPSession
    from scapy.sendrecv import sniff
    from socktools.capture.scapy_layer import Framed, bind
    bind(port)
    pkts = sniff(offline=path, session=TCPSession, quiet=True)
    out = []
    for p in pkts:
        layer = p.getlayer(Framed)
        while layer is not None:        # several messages in one segment are stacked
            out.append(layer)
            layer = layer.payload.getlayer(Framed) if layer.payload else None
    return out


def test_layer_reassembles_split_and_packed_messages_like_the_decoder(tmp_path):
    port, cport = 40001, 50001
    big = reference.make_request("binary", "x" * 100_000) if hasattr(reference, "make_request") else None
    big = big or protocol.encode_message(b"x" * 100_000, "binary/custom", "binary")
    small = [protocol.encode_json({"action": "search", "value": v}) for v in ("a", "morpheus")]
    stream = big + small[0] + small[1]
    # segments: the big message in three pieces, the last piece also carrying both small ones
    cuts = [0, 32_000, 65_000, len(stream)]
    path = tmp_path / "split.pcap"
    w = PcapWriter(str(path), d.LINKTYPE_ETHERNET)
    ts, seq = 1_700_000_000_000_000_000, 1000
    for flags, payload in [(d.SYN, b"")]:
        f = _frame(cport, port, seq, 0, flags, payload)
        w.write(ts, f, len(f))
    seq += 1
    for a, b in zip(cuts, cuts[1:]):
        ts += 1000
        f = _frame(cport, port, seq + a, 1, d.PSH | d.ACK, stream[a:b])
        w.write(ts, f, len(f))
    w.close()

    ours = _scapy_messages(str(path), port)
    expected = _decoder_messages(stream)
    assert len(expected) == 3
    assert [m.message() for m in ours] == expected
    assert [2 + m.hdrlen + len(m.content) for m in ours] == [m.wire_size for m in expected]
    assert ours[0].header_dict()["content-length"] == len(expected[0].content)


def test_layer_builds_what_the_decoder_reads_and_shows_fields():
    from socktools.capture.scapy_layer import Framed
    wire = protocol.encode_json({"action": "search", "value": "morpheus"})
    pkt = Framed(wire)
    assert bytes(pkt) == wire
    assert pkt.hdrlen == len(pkt.header) and pkt.message().value == {"action": "search",
                                                                      "value": "morpheus"}
    built = Framed(header=pkt.header, content=pkt.content)
    assert bytes(built) == wire                      # hdrlen filled in
    shown = pkt.show(dump=True)
    assert "hdrlen" in shown and '"content-type": "text/json"' in shown
    assert "Framed text/json" in pkt.summary()


def test_not_framed_bytes_come_back_raw():
    from scapy.packet import Raw
    from socktools.capture.scapy_layer import Framed
    got = Framed.tcp_reassemble(b"GET / HTTP/1.1\r\n\r\n", {}, {})
    assert isinstance(got, Raw)
    meta: dict = {}
    wire = protocol.encode_json({"a": 1})
    assert Framed.tcp_reassemble(wire[:-3], meta, {}) is None and meta["tcp_min_len"] == len(wire)


# ------------------------------------------------------------------ live
live = pytest.mark.skipif(not can_capture(),
                          reason="live capture needs root or CAP_NET_RAW (packet sockets)")


def big_exchange(srv: socket.socket, size: int = 100_000) -> bytes:
    """A client sends one ~100 KB framed request; the server reads it and closes."""
    req = protocol.encode_message(b"y" * size, "binary/custom-client-binary-type", "binary")

    def serve():
        conn, _ = srv.accept()
        with conn:
            dec = protocol.Decoder(1 << 20)
            while True:
                data = conn.recv(65536)
                dec.receive_data(data)
                if not data or isinstance(dec.next_event(), protocol.Message):
                    return
    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(srv.getsockname(), timeout=5) as c:
        c.sendall(req)
        while c.recv(4096):
            pass
    t.join(5)
    return req


@live
def test_live_100kb_request_captured_by_sniff_reassembles_in_scapy(tmp_path):
    from socktools.capture import SniffConfig, Sniffer
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pcap = tmp_path / "big.pcap"
    sent = []
    sn = Sniffer(SniffConfig(port=port, timeout=10, write=str(pcap))).open()
    worker = threading.Thread(target=lambda: sent.append(big_exchange(srv)))
    worker.start()
    records = []
    try:
        for batch in sn.batches():
            records += batch
            if sum("FIN" in r.flags for r in records) >= 2 and records[-1].flags == ("ACK",):
                break
    finally:
        worker.join(10)
        sn.close()
        srv.close()
    data_packets = [r for r in records if r.length and r.sport != port]
    assert len(data_packets) >= 2, "the request should span several segments on loopback"
    ours = _scapy_messages(str(pcap), port)
    assert [m.message() for m in ours] == _decoder_messages(sent[0])
    assert 2 + ours[0].hdrlen + len(ours[0].content) == len(sent[0]) > max(
        r.length for r in data_packets)


def _collect(sn, out, done):
    for batch in sn.batches():
        out += batch
        if done(out):
            return


@live
def test_scapy_backend_sees_the_same_view_as_the_default_backend_packet_for_packet():
    from socktools.capture import SniffConfig, Sniffer
    from socktools.capture.reassembly import MessageEvent

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def done(records):
        return sum("FIN" in r.flags for r in records) >= 2 and records[-1].flags == ("ACK",)

    ring = Sniffer(SniffConfig(port=port, timeout=10)).open()
    scapy = Sniffer(SniffConfig(port=port, timeout=10, backend="scapy")).open()
    got_ring: list = []
    got_scapy: list = []
    readers = [threading.Thread(target=_collect, args=(ring, got_ring, done)),
               threading.Thread(target=_collect, args=(scapy, got_scapy, done))]
    for t in readers:
        t.start()
    try:
        big_exchange(srv, 20_000)          # a handshake, a request over segments, the close
    finally:
        for t in readers:
            t.join(15)
        s_ring, s_scapy = ring.close(), scapy.close()
        srv.close()
    assert (s_ring.backend, s_scapy.backend) == ("ring", "scapy")

    def view(records):
        return [(r.number, r.src, r.sport, r.dst, r.dport, r.flags, r.seq, r.ack, r.window,
                 r.length, r.marks, r.tsval, r.tsecr, r.frame,
                 [(e.role, e.index, e.wire_size, e.segments) for e in r.events
                  if isinstance(e, MessageEvent)]) for r in records]
    assert len(got_ring) >= 7 and done(got_ring)
    assert view(got_scapy) == view(got_ring)
    assert s_scapy.kernel_dropped == 0 and s_scapy.captured == s_ring.captured
    # both are the kernel's stamps: the ring's is taken as the packet is copied into the
    # ring, the socket's as it is received, microseconds apart (never Python's read time)
    diffs = [a.ts_ns - b.ts_ns for a, b in zip(got_ring, got_scapy)]
    assert all(abs(x) < 1_000_000 for x in diffs), diffs

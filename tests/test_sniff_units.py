"""sniff without sockets: dissector, BPF programs and interpreter, pcap I/O, reassembly, marks."""

from __future__ import annotations

import ctypes.util
import json
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socktools import protocol, reference
from socktools.capture import bpf, dissect as d
from socktools.capture.common import CaptureFileError, FilterError, LibpcapMissing
from socktools.capture.pcap import PcapWriter, open_capture
from socktools.capture.reassembly import MessageEvent, StreamDecoder, preview_bytes
from socktools.capture.session import SniffConfig, Sniffer
from socktools.capture.tracker import Tracker

A = socket.inet_aton("127.0.0.1")
B = socket.inet_aton("127.0.0.2")
A6 = socket.inet_pton(socket.AF_INET6, "::1")
FIN, SYN, RST, PSH, ACK = d.FIN, d.SYN, d.RST, d.PSH, d.ACK


# ------------------------------------------------------------------ frame builder
def tcp_header(sport, dport, seq, ack, flags, window, options=b""):
    options += b"\x00" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options


def ipv4(src, dst, l4, proto=6, frag=0):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, frag, 64, proto, 0, src, dst) + l4


def ipv6(src, dst, l4, nxt=6):
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nxt, 64, src, dst) + l4


def ether(l3, ethertype=0x0800):
    return b"\x00" * 12 + struct.pack("!H", ethertype) + l3


def frame(sport, dport, seq=1, ack=1, flags=ACK, window=512, payload=b"", options=b"",
          src=A, dst=A, v6=False):
    seg = tcp_header(sport, dport, seq, ack, flags, window, options) + payload
    if v6:
        return ether(ipv6(src, dst, seg), 0x86DD)
    return ether(ipv4(src, dst, seg))


SYN_OPTS = bytes([2, 4, 0xFF, 0xD7, 4, 2, 1, 3, 3, 7])   # MSS 65495, SACK_PERM, NOP, WS 7


# --------------------------------------------------------------------- dissector
def test_dissect_ipv4_syn_with_options():
    seg = d.dissect(frame(40000, 65432, seq=1000, ack=0, flags=SYN, window=65495,
                          options=SYN_OPTS), d.LINKTYPE_ETHERNET)
    assert isinstance(seg, d.Segment)
    assert (seg.sport, seg.dport, seg.seq, seg.flags, seg.window) == (40000, 65432, 1000, SYN, 65495)
    assert seg.options == {"MSS": 65495, "SACK_PERM": True, "WS": 128}
    assert d.flag_names(SYN | ACK) == ("SYN", "ACK")
    assert d.flag_names(FIN | PSH | ACK) == ("FIN", "PSH", "ACK")


def test_dissect_payload_length_comes_from_ip_not_from_ethernet_padding():
    raw = frame(1, 2, payload=b"") + b"\x00" * 6          # padded to the 60-byte minimum
    seg = d.dissect(raw, d.LINKTYPE_ETHERNET)
    assert seg.payload_len == 0 and seg.payload == b""
    seg = d.dissect(frame(1, 2, payload=b"hello"), d.LINKTYPE_ETHERNET)
    assert (seg.payload_len, seg.payload) == (5, b"hello")


def test_dissect_ipv6_vlan_raw_sll_and_bsd_loopback():
    seg = d.dissect(frame(5, 6, payload=b"x", src=A6, dst=A6, v6=True), d.LINKTYPE_ETHERNET)
    assert seg.ip_version == 6 and d.format_ip(seg.src) == "::1" and seg.payload == b"x"
    inner = ipv4(A, B, tcp_header(7, 8, 1, 1, ACK, 9) + b"yz")
    vlan = b"\x00" * 12 + struct.pack("!HHH", 0x8100, 5, 0x0800) + inner
    assert d.dissect(vlan, d.LINKTYPE_ETHERNET).payload == b"yz"
    assert d.dissect(inner, d.LINKTYPE_RAW).dport == 8
    sll = struct.pack("!HHH8sH", 0, 772, 6, b"", 0x0800) + inner
    assert d.dissect(sll, d.LINKTYPE_LINUX_SLL).sport == 7
    null = struct.pack("<I", 2) + inner
    assert d.dissect(null, d.LINKTYPE_NULL).sport == 7


def test_dissect_non_tcp_is_described_cheaply():
    udp = ether(ipv4(A, B, struct.pack("!HHHH", 5353, 53, 8 + 4, 0) + b"abcd", proto=17))
    pkt = d.dissect(udp, d.LINKTYPE_ETHERNET)
    assert isinstance(pkt, d.Datagram) and (pkt.sport, pkt.dport, pkt.length) == (5353, 53, 4)
    assert pkt.payload == b"abcd" and (pkt.src, pkt.dst) == (A, B)
    later_fragment = ether(ipv4(A, B, b"\x00" * 16, frag=100))
    assert "fragment" in d.dissect(later_fragment, d.LINKTYPE_ETHERNET).info
    assert d.dissect(b"\x00" * 10, d.LINKTYPE_ETHERNET).info == "truncated frame"
    cut = frame(1, 2)[:14 + 20 + 10]
    assert d.dissect(cut, d.LINKTYPE_ETHERNET).info == "TCP header not captured"


# --------------------------------------------------------------------------- BPF
PORT = 65432


def _cases(linktype=d.LINKTYPE_ETHERNET):
    """(frame, should_match 'tcp port PORT') pairs."""
    wrap = (lambda f: f[14:]) if linktype == d.LINKTYPE_RAW else (lambda f: f)
    udp = ether(ipv4(A, A, struct.pack("!HHHH", PORT, PORT, 8, 0), proto=17))
    return [
        (wrap(frame(40000, PORT)), True),
        (wrap(frame(PORT, 40000)), True),
        (wrap(frame(40000, PORT, v6=True, src=A6, dst=A6)), True),
        (wrap(frame(PORT, 1, v6=True, src=A6, dst=A6)), True),
        (wrap(frame(40000, PORT + 1)), False),
        (wrap(frame(40000, 1, v6=True, src=A6, dst=A6)), False),
        (wrap(udp), False),
        (wrap(ether(ipv4(A, A, tcp_header(40000, PORT, 1, 1, ACK, 1), frag=3))), False),
        (wrap(frame(40000, PORT))[:20], False),        # truncated: out-of-bounds load rejects
    ]


@pytest.mark.parametrize("linktype", [d.LINKTYPE_ETHERNET, d.LINKTYPE_RAW])
def test_builtin_port_filter_matches_tcp_port_semantics(linktype):
    prog = bpf.tcp_port_program(PORT, linktype)
    for raw, expected in _cases(linktype):
        assert bool(bpf.run(prog, raw)) is expected, (raw.hex(), expected)
    assert bpf.run(prog, _cases(linktype)[0][0]) == 262144   # snap length on accept


def test_drop_outgoing_prefix_rejects_only_outgoing_copies():
    prog = bpf.drop_outgoing(bpf.accept_all())
    raw = frame(1, 2)
    assert bpf.run(prog, raw, pkttype=0) and not bpf.run(prog, raw, pkttype=bpf.PACKET_OUTGOING)


def test_pack_is_struct_sock_filter():
    packed = bpf.pack(bpf.accept_all(96))
    assert packed == struct.pack("HBBI", 0x06, 0, 0, 96) and len(packed) == 8


def test_libpcap_missing_is_reported_with_the_package(monkeypatch):
    from socktools.capture import _scapy

    def no_libpcap(expression, linktype):
        raise ImportError("libpcap is not available. Cannot compile filter !")
    monkeypatch.setattr(_scapy, "compile_expression", no_libpcap)
    with pytest.raises(LibpcapMissing) as info:
        bpf.build(port=None, expression="tcp port 80", linktype=d.LINKTYPE_ETHERNET)
    assert "libpcap0.8" in str(info.value) and "--port" in str(info.value)
    # --port never needs it
    assert bpf.build(port=80, expression=None, linktype=d.LINKTYPE_ETHERNET)[1] == "tcp port 80"


needs_libpcap = pytest.mark.skipif(not ctypes.util.find_library("pcap"),
                                   reason="libpcap not installed (apt-get install libpcap0.8)")


@needs_libpcap
def test_builtin_port_filter_is_what_libpcap_compiles():
    ours = bpf.tcp_port_program(PORT, d.LINKTYPE_ETHERNET)
    theirs = bpf.compile_expression(f"tcp port {PORT}", d.LINKTYPE_ETHERNET)
    assert ours == theirs


@needs_libpcap
def test_interpreter_runs_libpcap_programs():
    syn = frame(40000, 80, flags=SYN, options=SYN_OPTS)
    data = frame(40000, 80, payload=b"x" * 200)
    udp = ether(ipv4(A, A, struct.pack("!HHHH", 1, 53, 8, 0), proto=17))
    cases = {
        "tcp[tcpflags] & tcp-syn != 0": (syn, data),
        "greater 200": (data, syn),
        "udp port 53 or icmp": (udp, data),
        "ip6 or (tcp and dst port 80 and len > 100)": (data, syn),
        "not tcp": (udp, syn),
    }
    for expr, (hit, miss) in cases.items():
        prog = bpf.compile_expression(expr, d.LINKTYPE_ETHERNET)
        assert bpf.run(prog, hit) and not bpf.run(prog, miss), expr


@needs_libpcap
def test_bad_expression_is_a_filter_error():
    with pytest.raises(FilterError, match="bad --filter"):
        bpf.compile_expression("tcp prot 80", d.LINKTYPE_ETHERNET)


# -------------------------------------------------------------------------- pcap
def test_pcap_round_trip(tmp_path):
    path = tmp_path / "a.pcap"
    w = PcapWriter(str(path), d.LINKTYPE_ETHERNET)
    frames = [frame(1, 2, payload=bytes([i]) * i) for i in range(5)]
    for i, f in enumerate(frames):
        w.write(1_700_000_000_123_456_789 + i * 1000, f, len(f))
    w.close()
    raw = path.read_bytes()
    assert raw[:4] == struct.pack("<I", 0xA1B23C4D) and struct.unpack("<I", raw[20:24])[0] == 1
    cap = open_capture(str(path))
    got = list(cap.records())
    cap.close()
    assert [g[1] for g in got] == frames
    assert got[0][0] == 1_700_000_000_123_456_789     # nanosecond pcap keeps the kernel's stamp
    assert {g[3] for g in got} == {d.LINKTYPE_ETHERNET}
    assert cap.format == "pcap" and cap.linktype == d.LINKTYPE_ETHERNET


def test_read_big_endian_nanosecond_pcap_and_cut_short_file(tmp_path):
    f = frame(1, 2, payload=b"abc")
    body = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    body += struct.pack(">IIII", 10, 5, len(f), len(f)) + f
    body += struct.pack(">IIII", 11, 0, len(f), len(f)) + f[:7]       # cut mid-packet
    path = tmp_path / "be.pcap"
    path.write_bytes(body)
    cap = open_capture(str(path))
    assert list(cap.records()) == [(10_000_000_005, f, len(f), 1)]
    assert cap.truncated and cap.count == 1
    cap.close()


def _pcapng_block(kind, body):
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def test_read_pcapng(tmp_path):
    f = frame(1, 2, payload=b"ng")
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _pcapng_block(1, struct.pack("<HHI", 1, 0, 65535)
                        + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0))  # ns resolution
    ts = 1_700_000_000_000_000_123
    epb = _pcapng_block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    path = tmp_path / "a.pcapng"
    path.write_bytes(shb + idb + epb)
    cap = open_capture(str(path))
    assert cap.format == "pcapng" and list(cap.records()) == [(ts, f, len(f), 1)]
    assert cap.truncated is None
    cap.close()


def test_bad_capture_files_say_why(tmp_path):
    (tmp_path / "x").write_bytes(b"not a capture file at all")
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng"):
        open_capture(str(tmp_path / "x"))
    (tmp_path / "wifi.pcap").write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 127))
    with pytest.raises(CaptureFileError, match="link type 127"):
        open_capture(str(tmp_path / "wifi.pcap"))
    with pytest.raises(CaptureFileError, match="cannot read"):
        open_capture(str(tmp_path / "missing.pcap"))


# ------------------------------------------------------------------- reassembly
REQ = reference.make_request("search", "morpheus")
RESP = protocol.encode_json({"result": "Follow the white rabbit. \U0001f430"})


def test_message_split_reordered_and_retransmitted_is_decoded_once():
    s = StreamDecoder("auto", "request")
    a, b, c = REQ[:50], REQ[50:100], REQ[100:]
    assert s.feed(100, c, 3) == []            # early: held
    assert s.feed(0, a, 1) == []
    assert s.feed(0, a, 4) == []              # retransmission: ignored
    events = s.feed(40, REQ[40:100], 2)       # overlaps what we had, fills the gap
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, MessageEvent) and ev.role == "request" and ev.index == 1
    assert ev.header["content-length"] == 41 and ev.content_type == "text/json"
    assert ev.content_preview == '{"action": "search", "value": "morpheus"}'
    assert (ev.segments, ev.first_packet, ev.wire_size) == (3, 1, len(REQ))
    assert s.finish(5) == []


def test_byte_at_a_time_and_two_messages_in_one_segment():
    s = StreamDecoder("framed", "response")
    events = []
    for i, byte in enumerate(RESP):
        events += s.feed(i, bytes([byte]), i + 1)
    assert len(events) == 1 and events[0].segments == len(RESP)
    two = s.feed(len(RESP), RESP + RESP, 999)
    assert [e.index for e in two] == [2, 3] and all(e.segments == 1 for e in two)


def test_auto_falls_back_to_raw_preview_at_stream_start():
    s = StreamDecoder("auto", "request")
    mid_tls = b"\x17\x03\x03 TLS mid-stream, not a protocol auto decodes"
    events = s.feed(0, mid_tls, 1)
    assert [e.kind for e in events] == ["not-framed"] and s.showing_raw
    assert s.feed(len(mid_tls), b"more", 2) == []
    assert preview_bytes(b"GET / HTTP/1.1\r\n\x00") == (
        "47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a  GET / HTTP/1.1..…")
    # a proto-header that passes the first look but a header that is not JSON
    s = StreamDecoder("auto", "request")
    events = s.feed(0, b"\x00\x05{abcd", 1)
    assert events[0].kind == "not-framed" and "JSON" in events[0].text


def test_framed_mode_reports_errors_and_mid_stream_breakage():
    s = StreamDecoder("framed", "request")
    events = s.feed(0, b"\x00\x05{abcd", 1)
    assert events[0].kind == "decode-error" and s.showing_raw
    s = StreamDecoder("auto", "request")
    events = s.feed(0, REQ + b"\x00\x02[]", 1)
    assert isinstance(events[0], MessageEvent)
    assert events[1].kind == "decode-error" and "after 1 message" in events[1].text


def test_fin_mid_message_and_gaps_are_notes():
    s = StreamDecoder("auto", "request")
    s.feed(0, REQ, 1)
    s.feed(len(REQ), REQ[:20], 2)
    (note,) = s.finish(3)
    assert note.kind == "truncated" and "mid-message" in note.text
    s = StreamDecoder("auto", "request", max_pending=100)
    s.feed(0, REQ[:10], 1)
    (note,) = s.feed(50, b"x" * 200, 2)
    assert note.kind == "gap" and "missing 40 bytes at offset 10" in note.text
    assert not s.decoding
    assert StreamDecoder("none", "request").feed(0, REQ, 1) == []


# ---------------------------------------------------------------------- tracker
class Conv:
    """Builds segments of one client/server conversation with absolute seq numbers."""

    def __init__(self, tracker=None, cport=40000, sport=PORT, cisn=1000, sisn=5000):
        self.t = tracker or Tracker()
        self.cport, self.sport = cport, sport
        self.seq = {"c": cisn, "s": sisn}
        self.n = 0
        self.ts = 1_000_000_000
        self.records = []

    def send(self, who, flags=ACK, payload=b"", window=512, seq=None, options=b"", dt_us=10):
        other = "s" if who == "c" else "c"
        src, dst = (self.cport, self.sport) if who == "c" else (self.sport, self.cport)
        s = self.seq[who] if seq is None else seq
        raw = frame(src, dst, seq=s, ack=self.seq[other] if flags & ACK else 0, flags=flags,
                    window=window, payload=payload, options=options)
        if seq is None:
            self.seq[who] = (s + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        self.n += 1
        self.ts += dt_us * 1000
        rec = self.t.process(self.n, self.ts, 1_000_000_000, d.dissect(raw, d.LINKTYPE_ETHERNET))
        self.records.append(rec)
        return rec

    def handshake(self, c_ws=b"", s_ws=b"", s_window=65483):
        self.send("c", SYN, window=65495, options=c_ws)
        self.send("s", SYN | ACK, window=s_window, options=s_ws)
        return self.send("c", ACK)


def test_framed_exchange_relative_numbers_messages_and_summary():
    c = Conv()
    c.handshake()
    req = c.send("c", PSH | ACK, REQ)
    c.send("s", ACK)
    resp = c.send("s", PSH | ACK, RESP)
    c.send("c", ACK)
    c.send("s", FIN | ACK)
    c.send("c", FIN | ACK)
    last = c.send("s", ACK)
    r = c.records
    assert [(x.seq, x.ack) for x in r[:3]] == [(0, None), (0, 1), (1, 1)]
    assert r[0].flags == ("SYN",) and r[1].flags == ("SYN", "ACK")
    assert (req.seq, req.ack, req.length) == (1, 1, len(REQ))
    assert req.events[0].role == "request" and resp.events[0].role == "response"
    assert '"Follow the white rabbit. 🐰"' in resp.events[0].content_preview
    assert (last.seq, last.ack) == (len(RESP) + 2, len(REQ) + 2)
    assert all(not x.marks for x in r), [x.marks for x in r]
    (s,) = c.t.summaries()
    assert (s.client, s.server) == ("127.0.0.1:40000", f"127.0.0.1:{PORT}")
    assert (s.packets_c2s, s.packets_s2c, s.bytes_c2s, s.bytes_s2c) == (5, 5, len(REQ), len(RESP))
    assert s.handshake_rtt == pytest.approx(20e-6) and s.state == "closed"
    assert (s.requests, s.responses, s.resets, s.zero_windows) == (1, 1, 0, 0)


def test_window_scaling_applies_only_when_both_sides_offered_it():
    c = Conv()
    third = c.handshake(c_ws=bytes([1, 3, 3, 10]), s_ws=bytes([1, 3, 3, 7]))
    assert third.window == 512 * 1024
    assert c.send("s", ACK, window=100).window == 100 * 128
    c = Conv()
    assert c.handshake(c_ws=bytes([1, 3, 3, 10])).window == 512


def test_zero_window_sequence_is_marked():
    c = Conv()
    c.handshake(s_window=3000)
    first = c.send("c", ACK, b"x" * 1000)
    c.send("s", ACK, window=2000)
    full = c.send("c", ACK, b"x" * 2000)
    zero = c.send("s", ACK, window=0)
    probe = c.send("c", ACK, seq=(c.seq["c"] - 1) & 0xFFFFFFFF)      # Linux: empty, seq - 1
    probe_ack = c.send("s", ACK, window=0)
    probe1 = c.send("c", ACK, b"y")                                   # RFC: one new byte
    c.send("s", ACK, window=0)                                        # took the byte, still full
    update = c.send("s", ACK, window=4000)
    assert first.marks == ()
    assert "Window Full" in full.marks
    assert zero.marks == ("ZeroWindow",)
    assert probe.marks == ("ZeroWindowProbe",)
    assert probe_ack.marks == ("ZeroWindow", "ZeroWindowProbeAck")
    assert probe1.marks == ("ZeroWindowProbe",)
    assert update.marks == ("Window Update",)
    # the real data that follows a one-byte probe restarts at the probe's byte: not a retransmission
    after = c.send("c", ACK, b"yzz", seq=(c.seq["c"] - 1) & 0xFFFFFFFF)
    assert "Retransmission" not in after.marks
    (s,) = c.t.summaries()
    assert s.zero_windows == 3 and s.retransmissions == 0


def test_retransmission_dup_ack_keepalive_and_reset():
    c = Conv()
    c.handshake()
    data = c.send("c", PSH | ACK, b"a" * 100)
    again = c.send("c", PSH | ACK, b"a" * 100, seq=1000 + data.seq)   # same absolute seq
    assert again.marks == ("Retransmission",) and again.seq == data.seq
    ack1 = c.send("s", ACK)
    dup = c.send("s", ACK)
    assert ack1.marks == () and dup.marks == ("Dup ACK",)
    ka = c.send("c", ACK, seq=(c.seq["c"] - 1) & 0xFFFFFFFF)
    assert ka.marks == ("Keep-Alive",)
    assert c.send("s", ACK).marks == ("Keep-Alive ACK",)
    rst = c.send("s", RST | ACK)
    assert rst.marks == ("RST",)
    (s,) = c.t.summaries()
    assert (s.resets, s.retransmissions, s.state) == (1, 1, "reset")


def test_sequence_wraparound_and_mid_stream_start():
    c = Conv(cisn=0xFFFFFFF0)
    c.handshake()
    rec = c.send("c", PSH | ACK, REQ)
    assert rec.seq == 1 and rec.events and rec.events[0].index == 1
    assert c.send("s", ACK).ack == len(REQ) + 1
    # capture started mid-connection: first byte seen is Seq=1, no decoding surprises
    late = Conv(cport=40001, cisn=777)
    rec = late.send("c", PSH | ACK, REQ)
    assert (rec.seq, rec.ack) == (1, 1) and rec.events[0].role == "request"


def test_port_reuse_after_close_is_a_new_connection():
    t = Tracker()
    c = Conv(t)
    c.handshake()
    c.send("c", FIN | ACK)
    c.send("s", FIN | ACK)
    c.send("c", ACK)
    c2 = Conv(t, cisn=99999)
    c2.n = c.n
    assert c2.send("c", SYN).conn == 2
    assert [s.id for s in t.summaries()] == [1, 2]


# ------------------------------------------------------------- session on files
def _write_conversation(path, port=PORT):
    c = Conv(sport=port)
    frames = []
    w = PcapWriter(str(path), d.LINKTYPE_ETHERNET)
    steps = [("c", SYN, b""), ("s", SYN | ACK, b""), ("c", ACK, b""), ("c", PSH | ACK, REQ),
             ("s", PSH | ACK, RESP), ("c", FIN | ACK, b""), ("s", FIN | ACK, b""), ("c", ACK, b"")]
    ts = 1_700_000_000_000_000_000
    for who, flags, payload in steps:
        other = "s" if who == "c" else "c"
        src, dst = (c.cport, c.sport) if who == "c" else (c.sport, c.cport)
        f = frame(src, dst, seq=c.seq[who], ack=c.seq[other] if flags & ACK else 0, flags=flags,
                  payload=payload)
        c.seq[who] += len(payload) + (1 if flags & (SYN | FIN) else 0)
        ts += 50_000
        w.write(ts, f, len(f))
        frames.append(f)
    w.close()
    return frames


def _run(config):
    sn = Sniffer(config).open()
    records = [r for batch in sn.batches() for r in batch]
    return records, sn.close()


def test_sniffer_reads_a_file_with_filters(tmp_path):
    path = tmp_path / "conv.pcap"
    _write_conversation(path)
    records, summary = _run(SniffConfig(read=str(path)))
    assert len(records) == 8 and summary.captured == 8 and summary.stopped_by == "end-of-file"
    decoded = [e for r in records for e in r.events]
    assert [(e.role, e.index) for e in decoded] == [("request", 1), ("response", 1)]
    assert summary.kernel_dropped is None and not summary.live
    assert records[1].time == pytest.approx(50e-6)
    assert _run(SniffConfig(read=str(path), port=PORT + 1))[0] == []
    assert len(_run(SniffConfig(read=str(path), port=PORT, count=3))[0]) == 3
    # -r and -w together: a filtered copy
    out = tmp_path / "copy.pcap"
    _, summary = _run(SniffConfig(read=str(path), write=str(out), decode="none"))
    assert summary.written == 8
    assert [r[1] for r in open_capture(str(out)).records()] == \
        [r[1] for r in open_capture(str(path)).records()]


# ------------------------------------------------------------------------- CLI
def _cli(*args):
    from click.testing import CliRunner
    from socktools.cli import main
    return CliRunner().invoke(main, ["sniff", *args])


def test_cli_help_and_usage_errors(tmp_path):
    res = _cli("--help")
    assert res.exit_code == 0 and "socktools sniff --port 65432" in res.output
    res = _cli("--port", "1", "--filter", "tcp")
    assert res.exit_code == 2 and "--port or --filter" in res.output
    res = _cli("-r", "x.pcap", "--iface", "eth0")
    assert res.exit_code == 2 and "--iface" in res.output
    res = _cli("-r", str(tmp_path / "a.pcap"), "-w", str(tmp_path / "a.pcap"))
    assert res.exit_code == 2 and "overwrite" in res.output
    res = _cli("--decode", "hex")
    assert res.exit_code == 2 and "--decode" in res.output
    res = _cli("--count", "0")
    assert res.exit_code == 2 and "--count" in res.output


def test_cli_without_privilege_says_what_is_missing(monkeypatch):
    from socktools.capture import live

    def refuse(*args, **kw):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(live.socket, "socket", refuse)
    res = _cli("--port", "65432", "--count", "1")
    assert res.exit_code == 3
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("socktools: ")
    assert "CAP_NET_RAW" in lines[0] and "-r" in lines[0] and "root" in lines[0]


def test_cli_reads_a_file_as_lines_and_json(tmp_path):
    path = tmp_path / "conv.pcap"
    _write_conversation(path)
    res = _cli("-r", str(path))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:2] == ["1", "0.000000"]
    assert "[SYN] Seq=0 Win=512 Len=0" in lines[0]
    assert any("request #1: text/json, 146 bytes in 1 segment" in ln for ln in lines)
    assert any('content {"result": "Follow the white rabbit. 🐰"}' in ln for ln in lines)
    assert any(ln.startswith("--- 8 packets read from") for ln in lines)
    assert any("closed" in ln and "1/1" in ln for ln in lines)
    res = _cli("-r", str(path), "--json")
    objs = [json.loads(ln) for ln in res.output.splitlines()]
    assert [o["event"] for o in objs] == ["packet"] * 8 + ["summary"]
    assert objs[3]["decoded"][0]["header"]["content-type"] == "text/json"
    assert objs[-1]["connections"][0]["messages"] == {"requests": 1, "responses": 1}
    res = _cli("-r", str(path), "--decode", "raw")
    assert "| 00 67 7b 22" in res.output
    res = _cli("-r", str(path), "-q")
    assert res.output.startswith("--- 8 packets read")


def test_packets_we_cannot_describe_go_to_scapy_lazily():
    arp = b"\xff" * 6 + b"\x02" * 6 + struct.pack("!H", 0x0806) + struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\x02" * 6, A, b"\x00" * 6, B)
    pkt = d.dissect(arp, d.LINKTYPE_ETHERNET)
    assert pkt.proto == "ARP" and pkt.info == ""
    assert "ARP who has 127.0.0.2 says 127.0.0.1" in d.describe_other(pkt)


def test_sniff_help_does_not_import_scapy():
    import subprocess
    import sys
    code = ("import sys; from click.testing import CliRunner; from socktools.cli import main; "
            "r = CliRunner().invoke(main, ['sniff', '--help']); "
            "assert r.exit_code == 0; print(any(m.startswith('scapy') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_tracker_memory_is_bounded_by_forgetting_finished_connections():
    t = Tracker(max_connections=8)
    for i in range(20):
        c = Conv(t, cport=41000 + i)
        c.handshake()
        c.send("c", FIN | ACK)
        c.send("s", FIN | ACK)
    summaries = t.summaries()
    assert len(summaries) <= 8 and t.forgotten + len(summaries) == 20
    assert summaries[-1].id == 20 and len(t._table) == 2 * len(summaries)


def test_port_filter_on_a_bsd_loopback_file(tmp_path):
    path = tmp_path / "lo0.pcap"
    w = PcapWriter(str(path), d.LINKTYPE_NULL)
    for sport, dport in ((40000, PORT), (40000, 80), (PORT, 40000)):
        f = struct.pack("<I", 2) + frame(sport, dport)[14:]
        w.write(1_000_000_000, f, len(f))
    w.close()
    records, summary = _run(SniffConfig(read=str(path), port=PORT))
    assert [(r.sport, r.dport) for r in records] == [(40000, PORT), (PORT, 40000)]
    assert summary.filter == f"tcp port {PORT}"


@given(near=st.integers(0, 2**40), delta=st.integers(-(2**31) + 1, 2**31 - 1))
def test_unwrap_finds_the_64_bit_offset_nearest_the_expected_one(near, delta):
    """The one unwrap (tracker and fast lane): a 32-bit offset within 2 GiB of ``near``."""
    from socktools.capture.tracker import UNWRAP_FROM, unwrap
    true = near + delta
    if true < 0:
        return
    assert unwrap(true & 0xFFFFFFFF, near) == true
    if near < UNWRAP_FROM and true < 2**32:
        assert unwrap(true & 0xFFFFFFFF, near) == true & 0xFFFFFFFF    # the callers' shortcut

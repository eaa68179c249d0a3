"""sniff's fast lane prints exactly what the general path prints, and keeps the same state.

The reference is the general path: ``Sniffer.batches()`` (dissect, track, one
record per packet) rendered by ``TextView.render``.  The lane (``Sniffer.rendered``)
must give the same bytes, the same summary and the same written file, for a
capture that has every shape the lane must hand over (SYN, FIN, RST, zero
windows, probes, retransmissions, dup ACKs, keep-alives, framed messages
split over segments, IPv6, SACK options, non-TCP packets on the same ports,
time going backwards, frames cut by the snap length) between the plain ACKs
it takes itself.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

import pytest

from socktools import protocol, reference
from socktools.capture import dissect as d
from socktools.capture.fastlane import FastLane
from socktools.capture.lines import TextView
from socktools.capture.pcap import PcapWriter, open_capture
from socktools.capture.session import SniffConfig, Sniffer

A = socket.inet_aton("127.0.0.1")
B = socket.inet_aton("127.0.0.2")
A6 = socket.inet_pton(socket.AF_INET6, "::1")
FIN, SYN, RST, PSH, ACK = d.FIN, d.SYN, d.RST, d.PSH, d.ACK
PORT = 65432
REQ = reference.make_request("search", "morpheus")
RESP = protocol.encode_json({"result": "Follow the white rabbit. 🐰"})


def _ts_option(tsval, tsecr):
    return bytes([1, 1, 8, 10]) + struct.pack("!II", tsval, tsecr)


class Capture:
    """Frames of several conversations, written to a pcap in the order they are made."""

    def __init__(self):
        self.frames = []                  # (ts_ns, frame)
        self.ts = 1_700_000_000_123_456_789
        self.tick = 0

    def add(self, frame, dt_ns=7_919):
        self.ts += dt_ns
        self.frames.append((self.ts, frame))

    def write(self, path, snaplen=262144):
        w = PcapWriter(str(path), d.LINKTYPE_ETHERNET, snaplen)
        for ts, f in self.frames:
            w.write(ts, f[:snaplen], len(f))
        w.close()
        return path


class Conv:
    """One TCP conversation; ``send`` adds a segment with absolute seq/ack numbers."""

    def __init__(self, cap, cport, sport=PORT, cisn=1000, sisn=5000, src=A, dst=A, v6=False,
                 stamps=True):
        self.cap, self.v6, self.stamps = cap, v6, stamps
        self.ends = {"c": (src, cport), "s": (dst, sport)}
        self.seq = {"c": cisn, "s": sisn}

    def send(self, who, flags=ACK, payload=b"", window=512, seq=None, options=None, dt_ns=7_919,
             cut=None):
        other = "s" if who == "c" else "c"
        (src, sp), (dst, dp) = self.ends[who], self.ends[other]
        s = self.seq[who] if seq is None else seq
        if options is None:
            cap = self.cap
            cap.tick += 1
            options = _ts_option(1_500_000_000 + cap.tick, 2_500_000_000 + cap.tick) \
                if self.stamps else b""
        options += b"\x00" * (-len(options) % 4)
        tcp = struct.pack("!HHIIBBHHH", sp, dp, s, self.seq[other] if flags & ACK else 0,
                          ((20 + len(options)) // 4) << 4, flags, window, 0, 0) + options + payload
        if self.v6:
            l3 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst) + tcp
            frame = b"\x00" * 12 + b"\x86\xdd" + l3
        else:
            l3 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst) + tcp
            frame = b"\x00" * 12 + b"\x08\x00" + l3
        if seq is None:
            self.seq[who] = (s + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        self.cap.add(frame[:cut] if cut else frame, dt_ns)

    def handshake(self, c_ws=b"", s_ws=b"", s_window=65483):
        self.send("c", SYN, window=65495, options=bytes([2, 4, 0xFF, 0xD7, 4, 2]) + c_ws)
        self.send("s", SYN | ACK, window=s_window, options=bytes([2, 4, 0xFF, 0xD7, 4, 2]) + s_ws)
        self.send("c", ACK)


def busy_capture():
    cap = Capture()
    # 1: the framed protocol, requests split over three segments, window scaling
    c = Conv(cap, 40001)
    c.handshake(c_ws=bytes([1, 3, 3, 7]), s_ws=bytes([1, 3, 3, 7]))
    for _ in range(3):
        c.send("c", PSH | ACK, REQ[:30])
        c.send("c", PSH | ACK, REQ[30:90])
        c.send("s", ACK)
        c.send("c", PSH | ACK, REQ[90:])
        c.send("s", ACK)
        c.send("s", PSH | ACK, RESP)
        c.send("c", ACK)
    # 2: a raw stream (not framed, nor any protocol auto tries: a control byte rules out
    # line): previews of 16, 17 and more bytes, plain ACKs
    r = Conv(cap, 40002, sport=8080, cisn=0xFFFFFF00)              # wraps past 2**32
    r.handshake()
    for size in (16, 17, 16, 40, 17, 1, 300, 64, 64, 64):
        r.send("c", PSH | ACK, b"\x16ET /" + b"x" * (size - 5) if size > 5 else b"\x16")
        r.send("s", ACK)
    r.send("s", PSH | ACK, b"HTTP/1.1 200 OK\r\n" * 40)
    r.send("c", ACK)
    # 1 again, interleaved: zero window, probes, window full, update
    c.send("c", ACK, b"x" * 1000)
    c.send("s", ACK, window=3)                                       # 3 * 128 bytes
    c.send("c", ACK, b"x" * 384)                                     # fills it
    c.send("s", ACK, window=0)
    c.send("c", ACK, seq=(c.seq["c"] - 1) & 0xFFFFFFFF)             # Linux probe
    c.send("s", ACK, window=0)
    c.send("c", ACK, b"y")                                           # RFC probe
    c.send("s", ACK, window=0)
    c.send("s", ACK, window=400)                                     # window update
    c.send("s", ACK, window=0)
    c.send("c", ACK, b"w")                                           # RFC probe, at once
    c.send("s", ACK, window=400)
    c.send("c", ACK, b"yzz", seq=(c.seq["c"] - 1) & 0xFFFFFFFF)     # restarts at the probe
    c.send("s", ACK)
    # 3: retransmission, dup ACK, keep-alive and its ACK, SACK options, then RST
    k = Conv(cap, 40003)
    k.handshake()
    k.send("s", SYN | ACK, seq=5000, window=65483)                   # SYN-ACK again
    k.send("c", PSH | ACK, b"a" * 100)
    k.send("c", PSH | ACK, b"a" * 100, seq=(k.seq["c"] - 100) & 0xFFFFFFFF)
    k.send("s", ACK)
    k.send("s", ACK)                                                 # dup
    k.send("s", ACK, options=bytes([1, 1, 5, 10]) + struct.pack("!II", 1, 2))  # SACK block
    k.send("c", ACK, seq=(k.seq["c"] - 1) & 0xFFFFFFFF)             # keep-alive
    k.send("s", ACK)                                                 # keep-alive ACK
    k.send("c", PSH | ACK, b"b" * 50, dt_ns=-3_000_000)              # time goes backwards
    k.send("s", ACK)
    k.send("c", PSH | ACK, b"c" * 500, cut=90)                       # cut by the snap length
    k.send("s", ACK)
    k.send("c", PSH | ACK, b"1")                                     # one byte, in order,
    k.send("s", ACK, window=1000)
    k.send("c", ACK, seq=(k.seq["c"] - 1) & 0xFFFFFFFF)             # then a keep-alive
    k.send("s", ACK, window=1000)
    k.send("s", RST | ACK)
    k.send("c", PSH | ACK, b"late")                                  # after the reset
    # a UDP datagram and an ICMP error between the same addresses and ports as conv 1
    # (its payload looks like the rest of a TCP header: only the protocol field tells)
    body = b"abcd\x50\x10\xff\xff" + b"\x00" * 40
    udp = struct.pack("!HHHH", 40001, PORT, 8 + len(body), 0) + body
    udp_frame = b"\x00" * 12 + b"\x08\x00" + struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, A, A) + udp
    cap.add(udp_frame)
    # 4: mid-stream (no SYN), no time stamps
    m = Conv(cap, 40004, cisn=777, sisn=99, stamps=False)
    for jump in (0, 0, 0x7FFF0000, 0, 0x7FFF0000, 0, 0x7FFF0000, 0, 0):
        m.seq["c"] = (m.seq["c"] + jump) & 0xFFFFFFFF          # past 2 GiB, then past 4 GiB
        m.send("c", PSH | ACK, b"z" * 64)
        m.send("s", ACK)
    m.send("s", ACK, window=0)
    m.send("c", PSH | ACK, b"!")                                     # a probe, mid-stream
    m.send("s", ACK, window=512)
    # 6: the SYN-ACK was not captured
    x = Conv(cap, 40006)
    x.send("c", SYN, window=65495)
    x.seq["s"] += 1
    x.send("c", ACK)
    x.send("c", PSH | ACK, b"abc")
    x.send("s", ACK)
    x.send("s", SYN | ACK, seq=x.seq["s"] + 50, window=65483)       # a confused peer
    # 5: IPv6, all through the general path
    v = Conv(cap, 40005, src=A6, dst=A6, v6=True)
    v.handshake()
    v.send("c", PSH | ACK, REQ)
    v.send("s", ACK)
    # 1 and 2 close; 1's ports are reused by a new connection
    for conv in (c, r):
        conv.send("c", FIN | ACK)
        conv.send("s", FIN | ACK)
        conv.send("c", ACK)
    again = Conv(cap, 40001, cisn=0x400000)
    again.handshake()
    again.send("c", PSH | ACK, REQ)
    again.send("s", ACK)
    again.send("s", PSH | ACK, RESP)
    again.send("c", ACK)
    # a long plain stretch: what a flood looks like
    again.send("s", ACK, window=65535)
    for n in range(200):
        again.send("c", PSH | ACK, b"q" * 64, dt_ns=5_003)
        if n % 3 == 0:
            again.send("s", ACK, window=65535)
        if n == 100:
            cap.add(udp_frame)
            # UDP whose bytes where TCP's seq would be are the next seq of this connection
            # (length, checksum), and whose payload reads as ACK, window 65535
            nxt = again.seq["c"]
            body = b"abcd\x50\x10\xff\xff" + bytes((nxt >> 16) - 16)
            fake = struct.pack("!HHHH", 40001, PORT, nxt >> 16, nxt & 0xFFFF) + body
            cap.add(b"\x00" * 12 + b"\x08\x00" + struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(fake), 0, 0, 64, 17, 0, A, A) + fake)
            # a later IPv4 fragment whose bytes read as this connection's next segment
            seq = again.seq["c"]
            again.send("c", PSH | ACK, b"f" * 64)
            again.seq["c"] = seq
            ts, frag = cap.frames.pop()
            cap.add(frag[:20] + b"\x00\x10" + frag[22:])
    # FIN and RST that acknowledge new data (not Dup ACK shaped)
    again.send("s", PSH | ACK, b"bye")
    again.send("c", FIN | ACK)
    again.send("s", PSH | ACK, b"more")
    again.send("c", RST | ACK)
    return cap


@pytest.fixture(scope="module")
def busy_pcap(tmp_path_factory):
    return busy_capture().write(tmp_path_factory.mktemp("lane") / "busy.pcap")


def _settle(summary):
    return dataclasses.replace(summary, elapsed=0.0)


def _state(sn):
    """What the tracker keeps per direction: the lane must leave it as the tracker would."""
    return [(h.base, h.next, h.win, h.ack, h.packets, h.bytes, h.messages, h.fin, h.settled,
             h.zwp_rel, h.last_zwp, h.last_keepalive, None if h.stream is None else
             (h.stream.state, h.stream.next, h.stream.count))
            for c in sn.tracker._conns for h in c.halves]


def general(path, view_args=None, **cfg):
    """The reference: every packet a record, rendered."""
    sn = Sniffer(SniffConfig(read=str(path), **cfg)).open()
    view = TextView(**(view_args or {}))
    lines = [ln for batch in sn.batches() for rec in batch for ln in view.render(rec)]
    general.state = _state(sn)
    return lines, _settle(sn.close())


def lane(path, view_args=None, quiet=False, **cfg):
    sn = Sniffer(SniffConfig(read=str(path), **cfg)).open()
    view = TextView(**(view_args or {}))
    taken = {"general": 0}
    one = sn.one

    def counting_one(*args):
        taken["general"] += 1
        return one(*args)
    sn.one = counting_one
    text = b"".join(sn.rendered(view, quiet=quiet)).decode(view.encoding)
    lane.state = _state(sn)
    summary = _settle(sn.close())
    return text.splitlines(), summary, summary.captured - taken["general"]


@pytest.mark.parametrize("decode", ["auto", "framed", "raw", "none", "http", "redis", "line"])
@pytest.mark.parametrize("time_format", ["r", "d", "e", "ad"])
def test_the_lane_prints_what_the_general_path_prints(busy_pcap, decode, time_format):
    if decode == "http":
        pytest.importorskip("httptools", reason="sniff --decode http needs httptools (pip install httptools)")
    view = {"time_format": time_format}
    want, want_summary = general(busy_pcap, view, decode=decode)
    got, got_summary, fast = lane(busy_pcap, view, decode=decode)
    assert got == want
    assert got_summary == want_summary
    assert lane.state == general.state
    assert fast > 150, "the lane took too few packets for this test to mean anything"


def test_the_capture_has_every_shape_the_lane_hands_over(busy_pcap):
    lines, summary = general(busy_pcap)
    text = "\n".join(lines)
    for mark in ("[ZeroWindow]", "[ZeroWindowProbe]", "[ZeroWindowProbeAck]", "[Window Full]",
                 "[Window Update]", "[Retransmission]", "[Dup ACK]", "[Keep-Alive]",
                 "[Keep-Alive ACK]", "[RST]", "[SYN]", "[FIN, ACK]", "UDP ", "::1",
                 "request #3: text/json", "3 segments from packet", "response #1", "| 16 45 54",
                 "…", "TSval=", "Seq=6442", "Ack=6442"):
        assert mark in text, mark
    assert "Seq=" in text and "-0.00" in text                      # time went backwards
    assert len(summary.connections) == 7


def test_quiet_tracks_the_same(busy_pcap):
    _, want = general(busy_pcap)
    got, summary, _ = lane(busy_pcap, quiet=True)
    assert got == [] and summary == want and lane.state == general.state


def test_written_file_and_counts_match(busy_pcap, tmp_path):
    _, want = general(busy_pcap, write=str(tmp_path / "a.pcapng"))
    _, got, _ = lane(busy_pcap, write=str(tmp_path / "b.pcapng"))
    assert dataclasses.replace(got, write_path=None) == dataclasses.replace(want, write_path=None)
    assert (tmp_path / "a.pcapng").read_bytes() == (tmp_path / "b.pcapng").read_bytes()


def test_count_stops_at_the_same_packet(busy_pcap):
    for count in (1, 2, 37, 120):
        want, want_summary = general(busy_pcap, count=count)
        got, got_summary, _ = lane(busy_pcap, count=count)
        assert got == want and got_summary == want_summary
        assert got_summary.captured == count and got_summary.stopped_by == "count"


def test_hex_and_show_take_the_general_path(busy_pcap):
    view = {"hexdump": True}
    want, _ = general(busy_pcap, view)
    got, _, fast = lane(busy_pcap, view)
    assert got == want and fast == 0


def test_a_lane_with_an_ascii_arrow(busy_pcap):
    view = {"arrow": "->", "hook": "\\_"}
    want, _ = general(busy_pcap, view)
    got, _, _ = lane(busy_pcap, view)
    assert got == want and "127.0.0.1:40001 -> 127.0.0.1:65432" in got[0]


def test_file_batches_are_the_records(busy_pcap):
    cap = open_capture(str(busy_pcap))
    batched = [rec for batch in cap.batches() for rec in batch]
    assert batched == list(open_capture(str(busy_pcap)).records())
    assert cap.count == len(batched) == len(busy_capture().frames)


def test_lane_is_off_for_show():
    from socktools.capture.render import parse_selection
    sn = Sniffer(SniffConfig(read="unused"))
    assert not FastLane(sn, TextView(show=parse_selection("3"))).enabled
    assert FastLane(sn, TextView()).enabled


def test_a_message_completed_by_a_segment_without_time_stamps(tmp_path):
    """A capture without the TCP time stamp option (not Linux, or a synthesized file): the
    lane completing a message with such a segment must render it, not stop on its tsecr."""
    from click.testing import CliRunner

    from socktools.cli import main
    from tests.test_sniff_files import CPORT, T0, ether, ip_tcp, pcap_ns
    frames = [(T0 + 1000, ether(ip_tcp(CPORT, PORT, 100, 0, SYN))),
              (T0 + 2000, ether(ip_tcp(PORT, CPORT, 900, 101, SYN | ACK))),
              (T0 + 3000, ether(ip_tcp(CPORT, PORT, 101, 901, PSH | ACK, REQ[:5]))),
              (T0 + 4000, ether(ip_tcp(CPORT, PORT, 106, 901, PSH | ACK, REQ[5:])))]
    path = tmp_path / "nots.pcap"
    path.write_bytes(pcap_ns(frames))
    res = CliRunner().invoke(main, ["sniff", "-r", str(path)])
    assert res.exit_code == 0, repr(res.exception)
    assert "request #1: text/json, %d bytes in 2 segments from packet 3" % len(REQ) in res.output

"""sniff's view: time columns, TSval/TSecr, ICMP in words, hex dumps, --show (scapy)."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from click.testing import CliRunner

from socktools.capture import dissect as d
from socktools.capture.icmp import describe_icmp, describe_icmpv6
from socktools.capture.pcap import PcapWriter
from socktools.capture.render import Clock, hexdump, parse_selection
from socktools.capture.tracker import PacketRecord
from socktools.cli import main

A = socket.inet_aton("127.0.0.1")
B = socket.inet_aton("127.0.0.9")
A6 = socket.inet_pton(socket.AF_INET6, "::1")


def ipv4(src, dst, l4, proto):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, src, dst) + l4


def ipv6(src, dst, l4, nxt):
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), nxt, 64, src, dst) + l4


def ether(l3, kind=0x0800):
    return b"\x00" * 12 + struct.pack("!H", kind) + l3


def icmp(kind, code, rest=b"\x00" * 4, body=b""):
    return struct.pack("!BBH", kind, code, 0) + rest + body


def udp_quote(dport):
    return ipv4(A, B, struct.pack("!HHHH", 5353, dport, 8, 0), 17)


def describe(frame_):
    return d.dissect(frame_, d.LINKTYPE_ETHERNET)


# ------------------------------------------------------------------ ICMP in words
@pytest.mark.parametrize("kind,code,rest,body,words", [
    (8, 0, struct.pack("!HH", 0x1c2d, 7), b"", "echo request id=0x1c2d seq=7"),
    (0, 0, struct.pack("!HH", 0x1c2d, 7), b"", "echo reply id=0x1c2d seq=7"),
    (3, 0, b"\0" * 4, udp_quote(9), "destination network unreachable (udp 127.0.0.9:9)"),
    (3, 1, b"\0" * 4, udp_quote(9), "destination host unreachable (udp 127.0.0.9:9)"),
    (3, 2, b"\0" * 4, b"", "destination protocol unreachable"),
    (3, 3, b"\0" * 4, udp_quote(53), "destination port unreachable (udp 127.0.0.9:53)"),
    (3, 4, struct.pack("!HH", 0, 1400), b"", "fragmentation needed (next-hop MTU 1400)"),
    (11, 0, b"\0" * 4, udp_quote(33434), "time exceeded: time to live exceeded in transit (udp 127.0.0.9:33434)"),
    (11, 1, b"\0" * 4, b"", "time exceeded: fragment reassembly time exceeded"),
    (3, 13, b"\0" * 4, b"", "communication administratively prohibited"),
    (42, 3, b"\0" * 4, b"", "ICMP type 42, code 3"),
    (3, 10, b"\0" * 4, b"", "host administratively prohibited"),
])
def test_icmp_types_in_words(kind, code, rest, body, words):
    pkt = describe(ether(ipv4(A, A, icmp(kind, code, rest, body), 1)))
    assert (pkt.proto, pkt.info) == ("ICMP", words)
    assert describe_icmp(icmp(kind, code, rest, body), 0) == words


@pytest.mark.parametrize("kind,code,rest,words", [
    (128, 0, struct.pack("!HH", 1, 2), "echo request id=0x0001 seq=2"),
    (129, 0, struct.pack("!HH", 1, 2), "echo reply id=0x0001 seq=2"),
    (1, 4, b"\0" * 4, "destination port unreachable"),
    (1, 0, b"\0" * 4, "no route to destination"),
    (2, 0, struct.pack("!I", 1280), "packet too big (MTU 1280)"),
    (3, 0, b"\0" * 4, "time exceeded: hop limit exceeded in transit"),
    (135, 0, b"\0" * 4 + A6, "neighbor solicitation for ::1"),
])
def test_icmpv6_types_in_words(kind, code, rest, words):
    pkt = describe(ether(ipv6(A6, A6, icmp(kind, code, rest), 58), 0x86DD))
    assert (pkt.proto, pkt.info) == ("ICMPv6", words)
    assert describe_icmpv6(icmp(kind, code, rest), 0) == words


# ------------------------------------------------------------------ TSval/TSecr
def tcp(flags, options=b"", payload=b""):
    options += b"\x00" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 45000, 1, 1, doff << 4, flags, 512, 0, 0) + options + payload


def test_tsval_tsecr_on_every_segment_and_in_syn_options():
    ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)
    seg = describe(ether(ipv4(A, A, tcp(d.ACK, ts, b"hi"), 6)))
    assert (seg.tsval, seg.tsecr, seg.payload) == (123456, 654321, b"hi")
    syn_opts = bytes([2, 4, 0xFF, 0xD7, 4, 2, 8, 10]) + struct.pack("!II", 7, 0) + bytes([1, 3, 3, 7])
    syn = describe(ether(ipv4(A, A, tcp(d.SYN, syn_opts), 6)))
    assert (syn.tsval, syn.tsecr) == (7, 0)
    assert syn.options == {"MSS": 65495, "SACK_PERM": True, "WS": 128}
    plain = describe(ether(ipv4(A, A, tcp(d.ACK), 6)))
    assert plain.tsval is None


# ------------------------------------------------------------------ time columns, hex
def rec(number, ts_ns, t0):
    return PacketRecord(number, (ts_ns - t0) / 1e9, ts_ns, "UDP", "", None, "", None, (), None,
                        None, None, 0, (), None)


def test_time_formats_relative_delta_absolute_epoch():
    t0 = 1_700_000_000_000_000_000
    recs = [rec(1, t0, t0), rec(2, t0 + 1_500_000, t0), rec(3, t0 + 4_000_123, t0)]
    assert [Clock("r")(r) for r in recs] == ["   0.000000", "   0.001500", "   0.004000"]
    delta = Clock("d")
    assert [delta(r) for r in recs] == ["   0.000000", "   0.001500", "   0.002500"]
    assert Clock("e")(recs[2]) == "1700000000.004000123"
    local = time.localtime(1_700_000_000)
    assert Clock("a")(recs[2]) == time.strftime("%H:%M:%S", local) + ".004000123"
    assert Clock("ad")(recs[0]) == time.strftime("%Y-%m-%d %H:%M:%S", local) + ".000000000"
    with pytest.raises(ValueError):
        Clock("x")


def test_hexdump_is_offset_hex_and_ascii():
    lines = hexdump(bytes(range(0x41, 0x41 + 20)))
    assert lines == ["0000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP",
                     "0010  51 52 53 54                                       QRST"]


def test_show_selection():
    sel = parse_selection("5,9-12")
    assert [n for n in range(1, 15) if n in sel] == [5, 9, 10, 11, 12] and sel.last == 12
    assert 99 in parse_selection("all")
    for bad in ("x", "0", "5-3", "1,,2"):
        with pytest.raises(ValueError):
            parse_selection(bad)


# ------------------------------------------------------------------ through the CLI
@pytest.fixture
def mixed_pcap(tmp_path):
    """An ICMP port unreachable, a TCP segment with time stamps, an echo request."""
    path = tmp_path / "mixed.pcap"
    w = PcapWriter(str(path), d.LINKTYPE_ETHERNET)
    ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 111, 222)
    frames = [ether(ipv4(A, A, icmp(3, 3, b"\0" * 4, udp_quote(9)), 1)),
              ether(ipv4(A, A, tcp(d.PSH | d.ACK, ts, b"hello"), 6)),
              ether(ipv4(A, A, icmp(8, 0, struct.pack("!HH", 9, 1)), 1))]
    t = 1_700_000_000_000_000_000
    for i, f in enumerate(frames):
        w.write(t + i * 2_000_000, f, len(f))
    w.close()
    return path


def test_cli_view_options(mixed_pcap):
    run = CliRunner().invoke
    res = run(main, ["sniff", "-r", str(mixed_pcap), "--time", "d", "-X"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.output
    assert "ICMP destination port unreachable (udp 127.0.0.9:9)" in out
    assert "ICMP echo request id=0x0009 seq=1" in out
    assert "TSval=111 TSecr=222" in out
    assert "   0.002000 " in out                                  # delta column
    assert "68 65 6c 6c 6f" in out and "hello" in out             # hex dump of the payload
    res = run(main, ["sniff", "-r", str(mixed_pcap), "--time", "z"])
    assert res.exit_code == 2 and "--time" in res.output


def test_cli_show_prints_scapys_layers_for_chosen_packets(mixed_pcap):
    pytest.importorskip("scapy", reason="scapy is not installed (pip install scapy)")
    res = CliRunner().invoke(main, ["sniff", "-r", str(mixed_pcap), "--show", "2-3"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.output
    assert out.count("###[ Ethernet ]###") == 2 and out.count("###[ IP ]###") == 2
    assert "###[ TCP ]###" in out and "('Timestamp', (111, 222))" in out
    assert "###[ ICMP ]###" in out and "echo-request" in out
    assert "dest-unreach" not in out                             # packet 1 was not chosen
    res = CliRunner().invoke(main, ["sniff", "-r", str(mixed_pcap), "--show", "x"])
    assert res.exit_code == 2 and "--show" in res.output


def test_records_carry_frame_and_linktype_for_scapy(mixed_pcap):
    pytest.importorskip("scapy", reason="scapy is not installed (pip install scapy)")
    from socktools.capture import SniffConfig, Sniffer
    sn = Sniffer(SniffConfig(read=str(mixed_pcap))).open()
    recs = [r for b in sn.batches() for r in b]
    sn.close()
    assert all(r.linktype == d.LINKTYPE_ETHERNET and r.frame for r in recs)
    pkt = recs[1].to_scapy()
    assert pkt["TCP"].load == b"hello" and bytes(pkt) == recs[1].frame


def test_reading_writing_and_viewing_a_file_does_not_import_scapy(mixed_pcap, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "o.pcapng"
    code = ("import sys; from click.testing import CliRunner; from socktools.cli import main; "
            f"r = CliRunner().invoke(main, ['sniff', '-r', {str(mixed_pcap)!r}, '-w', {str(out)!r}, '--json']); "
            "assert r.exit_code == 0, r.output; "
            f"r = CliRunner().invoke(main, ['sniff', '-r', {str(mixed_pcap)!r}, '-X', '--time', 'a']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.startswith('scapy')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_summary_without_kernel_counters_says_so():
    from socktools.capture.session import CaptureSummary
    from socktools.cli.sniff import _Output
    s = CaptureSummary(source="lo0", live=True, linktype="BSD loopback", filter="", captured=3,
                       kernel_received=None, kernel_dropped=None, buffer_bytes=None, written=None,
                       write_path=None, duration=0.1, elapsed=1.0, stopped_by="count", non_tcp=3,
                       connections=(), backend="scapy")
    text = _Output(as_json=False, quiet=False).summary_text(s)
    assert "drop counts not available, scapy backend" in text


def test_the_fast_ipv4_tcp_path_agrees_with_the_general_one():
    ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 1, 2)
    syn_opts = bytes([2, 4, 0xFF, 0xD7, 4, 2, 8, 10]) + struct.pack("!II", 7, 0) + bytes([1, 3, 3, 7])
    frames = [ether(ipv4(A, B, tcp(d.ACK, ts, b"payload"), 6)),
              ether(ipv4(A, B, tcp(d.SYN, syn_opts), 6)),
              ether(ipv4(A, B, tcp(d.PSH | d.ACK, b"", b"x" * 100), 6)),
              ether(ipv4(A, B, tcp(d.ACK, ts), 6))[:60],               # options cut by snaplen
              ether(ipv4(A, B, tcp(d.ACK, ts, b"abc"), 6)) + b"\0" * 6]  # Ethernet padding
    for f in frames:
        assert d._fast_ipv4_tcp(f) == d._l3(f, 14, 0x0800, 1) or d._fast_ipv4_tcp(f) is None
        assert d.dissect(f, 1) == d._l3(f, 14, 0x0800, 1)
    frag = bytearray(frames[0])
    frag[20:22] = struct.pack("!H", 0x0010)                           # a later fragment
    assert d._fast_ipv4_tcp(bytes(frag)) is None
    assert d.dissect(bytes(frag), 1).proto == "IPv4"


def test_every_truncation_of_a_frame_dissects_without_raising():
    ts = bytes([1, 1, 8, 10]) + struct.pack("!II", 1, 2)
    frames = [ether(ipv4(A, B, tcp(d.ACK, ts, b"payload"), 6)),
              ether(ipv4(A, B, tcp(d.SYN, bytes([2, 4, 0xFF, 0xD7, 3, 3, 7, 0])), 6)),
              ether(ipv4(A, A, icmp(3, 3, b"\0" * 4, udp_quote(9)), 1)),
              ether(ipv6(A6, A6, icmp(2, 0, struct.pack("!I", 1280)), 58), 0x86DD),
              ether(ipv6(A6, A6, tcp(d.ACK, ts, b"v6"), 6), 0x86DD)]
    for f in frames:
        for cut in range(len(f) + 1):
            d.dissect(f[:cut], d.LINKTYPE_ETHERNET)
            d.dissect(f[14:cut], d.LINKTYPE_RAW)


@pytest.mark.parametrize("args", [["--json", "-X"], ["--json", "--show", "1"], ["-q", "--time", "a"]])
def test_text_view_options_with_json_or_quiet_are_a_usage_error(mixed_pcap, args):
    from click.testing import CliRunner
    from socktools.cli import main
    r = CliRunner().invoke(main, ["sniff", "-r", str(mixed_pcap), *args])
    assert r.exit_code == 2 and "shapes the text view" in r.output and "Traceback" not in r.output
    named = {"-X": "--hex", "--show": "--show", "--time": "--time"}
    assert next(named[a] for a in args if a in named) in r.output

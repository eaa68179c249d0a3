"""sniff -r against broken capture files, generated here byte by byte, under every display option.

Each case is a file and what sniff must do with it:

- ``bad=(offset, words)``: the FILE is malformed.  sniff may show (and write) the packets
  before the bad point, then ends with exactly one line on stderr naming the file, the byte
  offset of the structure that is wrong, and what is wrong; exit 1.
- ``bad=None``: the file is valid, if unusual (an empty capture, an unknown block type the
  pcapng spec says to skip, a packet whose IP or TCP header is nonsense — the FILE is fine,
  the packet is shown as what it is, as tcpdump and tshark do): exit 0, nothing on stderr.
- ``pcap_out``: valid, but a packet's time stamp cannot be held by a pcap file (32-bit seconds:
  after 2106-02-07): ``-w x.pcap`` is refused with one line naming the output file and the
  packet; ``-w x.pcapng`` holds it.

The sweep runs in-process through click's CliRunner (the real command's exit codes are
checked by two subprocess runs at the end).
"""

from __future__ import annotations

import os
import struct
import subprocess
import tracemalloc

import pytest

from tests.conftest import socktools_cmd
from click.testing import CliRunner

from socktools.capture import dissect as d
from socktools.cli import main
from tests.test_sniff_files import CPORT, PORT, T0, conversation, ether, ip_tcp

MAX_U64 = (1 << 64) - 1


# ----------------------------------------------------------------- builders
def pcap_file(records, *, linktype=d.LINKTYPE_ETHERNET, magic=0xA1B23C4D, order="<"):
    """``records``: (sec, frac, caplen, wirelen, data) -> (bytes, [offset of each record])."""
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)
    offsets = []
    for sec, frac, caplen, wirelen, data in records:
        offsets.append(len(out))
        out += struct.pack(order + "IIII", sec, frac, caplen, wirelen) + data
    return out, offsets


def conv_records(n=None):
    recs = []
    for ts, p in conversation()[:n]:
        f = ether(p)
        recs.append((ts // 10**9, ts % 10**9, len(f), len(f), f))
    return recs


def blk(kind, body, *, total=None, trailer=None):
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", kind, length if total is None else total) + body + \
        struct.pack("<I", length if trailer is None else trailer)


SHB = blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype=d.LINKTYPE_ETHERNET, tsresol=9):
    opts = b"" if tsresol is None else struct.pack("<HHB3x", 9, 1, tsresol)
    return blk(1, struct.pack("<HHI", linktype, 0, 262144) + opts + struct.pack("<HH", 0, 0))


def epb(frame, ticks=T0, ifid=0, caplen=None, wirelen=None):
    return blk(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                              len(frame) if caplen is None else caplen,
                              len(frame) if wirelen is None else wirelen) + frame)


def conv_epbs(n=None):
    return b"".join(epb(ether(p), ts) for ts, p in conversation()[:n])


HEAD = SHB + idb()                       # a section with one Ethernet interface, ns stamps
GOOD = HEAD + conv_epbs()
SYNF = ether(ip_tcp(CPORT, PORT, 1000, 0, d.SYN))


def with_ip(vihl=0x45, doff=5, total=None, payload=b"hello"):
    """An Ethernet/IPv4/TCP frame with chosen IHL, TCP data offset and IP total length."""
    tcp = struct.pack("!HHIIBBHHH", CPORT, PORT, 1, 1, doff << 4, d.PSH | d.ACK, 512, 0, 0) + \
        payload
    tot = 20 + len(tcp) if total is None else total
    return ether(struct.pack("!BBHHHBBH4s4s", vihl, 0, tot, 0, 0, 64, 6, 0,
                             b"\x7f\0\0\1", b"\x7f\0\0\1") + tcp)


# ----------------------------------------------------------------- the cases
CASES: dict = {}


def case(name, data, bad=None, pcap_out=False):
    CASES[name] = (data, bad, pcap_out)


def _pcap_cases():
    whole, offs = pcap_file(conv_records())
    case("pcap-empty", b"", (0, "empty"))
    case("pcap-3-bytes", b"\xd4\xc3\xb2", (0, "too short"))
    case("pcap-bad-magic", b"\x00" * 24 + whole[24:], (0, "magic"))
    case("pcap-header-cut", whole[:10], (0, "header"))
    case("pcap-header-only", whole[:24])
    case("pcap-unknown-linktype", pcap_file(conv_records(), linktype=147)[0], (20, "link type 147"))
    case("pcap-record-header-cut", whole[:24 + 10], (24, "cut short"))
    case("pcap-record-data-cut", whole[:offs[3] + 30], (offs[3], "cut short"))
    recs = conv_records()
    recs[3] = recs[3][:2] + (len(recs[3][4]), 10, recs[3][4])
    case("pcap-caplen-over-len", pcap_file(recs)[0], (offs[3], "captured length"))
    recs = conv_records()
    recs[2] = recs[2][:2] + (0xFFFFFFF0, 0xFFFFFFF0, recs[2][4])
    case("pcap-caplen-4g", pcap_file(recs)[0], (offs[2], "captured length"))
    recs = conv_records()
    recs[1] = recs[1][:2] + (0, 60, b"")
    case("pcap-zero-length-packet", pcap_file(recs)[0])
    case("pcap-max-timestamp", pcap_file([(0xFFFFFFFF, 999_999_999, len(SYNF), len(SYNF), SYNF)])[0])
    case("pcap-zero-timestamp", pcap_file([(0, 0, len(SYNF), len(SYNF), SYNF)])[0])
    case("pcap-big-endian-us", pcap_file(
        [(r[0], r[1] // 1000) + r[2:] for r in conv_records()], magic=0xA1B2C3D4, order=">")[0])
    for name, frame in [("ihl-too-small", with_ip(vihl=0x42)), ("ihl-zero", with_ip(vihl=0x40)),
                        ("ihl-too-big", with_ip(vihl=0x4F)),
                        ("tcp-doff-beyond-packet", with_ip(doff=15)),
                        ("tcp-doff-too-small", with_ip(doff=2)),
                        ("ip-total-beyond-frame", with_ip(total=4000)),
                        ("ip-total-too-small", with_ip(total=8)),
                        ("ether-5-bytes", b"\x00" * 5), ("ip-version-9", with_ip(vihl=0x95))]:
        case(f"pcap-{name}", pcap_file([(1, 0, len(frame), len(frame), frame)] + conv_records(4))[0])
    raw = ip_tcp(CPORT, PORT, 1, 1, d.ACK)
    case("pcap-raw-ip-garbage", pcap_file([(1, 0, 3, 3, b"\xff\xff\xff"),
                                           (1, 1, len(raw), len(raw), raw)],
                                          linktype=d.LINKTYPE_RAW)[0])


def _pcapng_cases():
    n_head = len(HEAD)
    case("ng-shb-cut-8", SHB[:8], (0, "cut short"))
    case("ng-shb-cut-20", SHB[:20], (0, "cut short"))
    bad_bom = SHB[:8] + b"\x11\x22\x33\x44" + SHB[12:]
    case("ng-shb-bad-bom", bad_bom + idb() + conv_epbs(), (0, "byte-order"))
    case("ng-shb-len-not-x4", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1), total=30),
         (0, "multiple of 4"))
    case("ng-shb-len-small", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1), total=16),
         (0, "length 16"))
    case("ng-shb-len-4g", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1),
                              total=0xFFFFFFFC), (0, "length"))
    case("ng-shb-len-past-eof", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1),
                                    total=4096), (0, "cut short"))
    case("ng-shb-trailer-mismatch", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1),
                                        trailer=32) + idb() + conv_epbs(), (0, "trailing length"))
    case("ng-shb-version-2", blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)) + idb()
         + conv_epbs(), (0, "version"))
    case("ng-shb-only", SHB, (len(SHB), "no interface description"))
    case("ng-epb-before-idb", SHB + conv_epbs(), (len(SHB), "before any interface"))
    case("ng-idb-empty", SHB + blk(1, b"") + conv_epbs(), (len(SHB), "interface description"))
    case("ng-idb-4-bytes", SHB + blk(1, b"\x01\x00\x00\x00") + conv_epbs(),
         (len(SHB), "interface description"))
    case("ng-idb-empty-second", HEAD + conv_epbs(3) + blk(1, b"") + conv_epbs(),
         (n_head + len(conv_epbs(3)), "interface description"))
    case("ng-idb-unknown-linktype", SHB + idb(linktype=147) + conv_epbs(), (len(SHB), "link type 147"))
    opt_over = blk(1, struct.pack("<HHI", 1, 0, 262144) + struct.pack("<HH", 9, 1))
    case("ng-idb-option-past-block", SHB + opt_over + conv_epbs(), (len(SHB), "option"))
    opt_long = blk(1, struct.pack("<HHI", 1, 0, 262144) + struct.pack("<HHB3x", 2, 200, 65))
    case("ng-idb-option-length-past-block", SHB + opt_long + conv_epbs(), (len(SHB), "option"))
    secs = SHB + idb(tsresol=0)
    two = epb(SYNF, 1_700_000_000) + epb(SYNF, 1_700_000_001)         # seconds as ticks
    case("ng-tsresol-0-max-ticks", secs + two + epb(SYNF, MAX_U64), (len(secs) + len(two), "time stamp"))
    us = SHB + idb(tsresol=None)
    case("ng-default-res-max-ticks", us + epb(SYNF, MAX_U64), (len(us), "time stamp"))
    pow2 = SHB + idb(tsresol=0x80)                          # 2^-0 s: seconds again
    case("ng-tsresol-2pow-max", pow2 + epb(SYNF, MAX_U64), (len(pow2), "time stamp"))
    case("ng-ns-max-ticks", HEAD + epb(SYNF, MAX_U64), pcap_out=True)   # 2554: pcapng holds it
    case("ng-ns-after-2106", HEAD + epb(SYNF, (1 << 32) * 10**9), pcap_out=True)
    case("ng-tsresol-odd", SHB + idb(tsresol=0x7F) + conv_epbs())     # 10^-127 s ticks: all 0
    case("ng-tsresol-zero-length", SHB + blk(1, struct.pack("<HHI", 1, 0, 262144)
                                             + struct.pack("<HH", 9, 0) + struct.pack("<HH", 0, 0))
         + epb(SYNF, T0 // 1000) + epb(SYNF, T0 // 1000 + 1))     # microsecond ticks (default)
    after = n_head + len(conv_epbs(3))
    for name, total, words in [("zero", 0, "length 0"), ("8", 8, "length 8"),
                               ("not-x4", 30, "multiple of 4"), ("4g", 0xFFFFFFFC, "length"),
                               ("past-eof", 4096, "cut short")]:
        case(f"ng-block-len-{name}", HEAD + conv_epbs(3) + epb(SYNF)[:4] + struct.pack("<I", total)
             + epb(SYNF)[8:], (after, words))
    case("ng-epb-trailer-mismatch", HEAD + conv_epbs(3) + blk(6, epb(SYNF)[8:-4], trailer=4000)
         + conv_epbs(), (after, "trailing length"))
    case("ng-epb-short-body", HEAD + conv_epbs(3) + blk(6, b"\0" * 8), (after, "packet block"))
    case("ng-epb-caplen-past-block", HEAD + conv_epbs(3) + epb(SYNF, caplen=400),
         (after, "captured length"))
    case("ng-epb-caplen-over-len", HEAD + conv_epbs(3) + epb(SYNF, wirelen=10),
         (after, "captured length"))
    case("ng-epb-unknown-interface", HEAD + conv_epbs(3) + epb(SYNF, ifid=7),
         (after, "interface 7"))
    case("ng-spb-before-idb", SHB + blk(3, struct.pack("<I", len(SYNF)) + SYNF),
         (len(SHB), "before any interface"))
    case("ng-spb-short", HEAD + blk(3, b""), (n_head, "packet block"))
    case("ng-spb-ok", HEAD + blk(3, struct.pack("<I", len(SYNF)) + SYNF))
    case("ng-spb-len-past-block", HEAD + blk(3, struct.pack("<I", 5000) + SYNF))  # cut by snaplen
    case("ng-unknown-block-type", HEAD + blk(0x0BAD, b"whatever") + conv_epbs())
    case("ng-isb-and-nrb", HEAD + blk(4, b"\0" * 4) + conv_epbs() + blk(5, b"\0" * 16))
    case("ng-cut-in-block-header", GOOD + b"\x06\0\0\0", (len(GOOD), "cut short"))
    last_ts, last = conversation()[-1]
    case("ng-cut-in-packet", GOOD[:-10], (len(GOOD) - len(epb(ether(last), last_ts)), "cut short"))
    case("ng-second-section-forgets-interfaces", GOOD + SHB + conv_epbs(1), (len(GOOD) + len(SHB), "interface 0"))
    be_shb = struct.pack(">II", 0x0A0D0D0A, 28) + struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1) + \
        struct.pack(">I", 28)
    frame = SYNF
    be_idb = struct.pack(">II", 1, 20) + struct.pack(">HHI", 1, 0, 262144) + struct.pack(">I", 20)
    body = struct.pack(">IIIII", 0, 0, 5, len(frame), len(frame)) + frame + b"\0" * (-len(frame) % 4)
    be_epb = struct.pack(">II", 6, len(body) + 12) + body + struct.pack(">I", len(body) + 12)
    case("ng-big-endian-second-section", GOOD + be_shb + be_idb + be_epb)
    case("ng-zero-length-packet", HEAD + epb(b"") + conv_epbs())
    case("ng-raw-ip-garbage", SHB + idb(linktype=d.LINKTYPE_RAW) + epb(b"\x60" * 7) + epb(b"\x45"))
    for name, frame in [("ihl-too-small", with_ip(vihl=0x41)), ("tcp-doff-beyond-packet", with_ip(doff=14)),
                        ("ip-total-zero", with_ip(total=0))]:
        case(f"ng-{name}", HEAD + epb(frame) + conv_epbs())


_pcap_cases()
_pcapng_cases()

#: Every display option (and both outputs) each file is read under.
OPTION_SETS = [
    [], ["--time", "ad", "--hex", "--show"], ["--time", "a"], ["--time", "d"], ["--time", "e"],
    ["--json"], ["--quiet"], ["--decode", "framed"], ["--decode", "raw"], ["--decode", "none"],
    ["--decode", "redis"], ["--decode", "http", "--hex"], ["--decode", "line", "--show", "1-3"],
    ["-w", "OUT.pcap"], ["-w", "OUT.pcapng", "--json"], ["-w", "OUT.pcapng", "--quiet"],
]


def test_the_sweep_is_as_wide_as_promised():
    assert len(CASES) >= 50
    assert sum(1 for _, bad, _ in CASES.values() if bad) >= 35


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_capture_ends_in_one_line_naming_file_offset_and_reason(tmp_path, name):
    data, bad, pcap_out = CASES[name]
    path = tmp_path / f"{name}.{'pcapng' if name.startswith('ng-') else 'pcap'}"
    path.write_bytes(data)
    runner = CliRunner()
    for opts in OPTION_SETS:
        out = None
        args = []
        for a in opts:
            if a.startswith("OUT."):
                out = tmp_path / ("out." + a.split(".")[1])
                a = str(out)
            args.append(a)
        res = runner.invoke(main, ["sniff", "-r", str(path), *args])
        where = f"{name} with {opts}: exit {res.exit_code}\n{res.stdout[-2000:]}\n{res.stderr}"
        assert res.exception is None or isinstance(res.exception, SystemExit), \
            where + "".join(__import__("traceback").format_exception(res.exception))
        err = res.stderr.splitlines()
        if bad:
            offset, words = bad
            assert res.exit_code == 1, where
            assert len(err) == 1, where
            line = err[0]
            assert line.startswith(f"socktools: {path}: "), where
            assert f"at byte {offset}:" in line, where
            assert words in line, where
        elif pcap_out and out is not None and out.suffix == ".pcap":
            assert res.exit_code == 1 and len(err) == 1, where
            assert str(out) in err[0] and "packet 1" in err[0] and ".pcapng" in err[0], where
        else:
            assert res.exit_code == 0 and err == [], where
        if out is not None and out.exists():
            out.unlink()


def test_a_4_gib_block_length_allocates_nothing_near_it(tmp_path):
    """The bound is pcapng._MAX_BLOCK (64 MiB); a claimed 4 GiB is refused before any read."""
    from socktools.capture import pcapng
    data, _, _ = CASES["ng-block-len-4g"]
    path = tmp_path / "huge.pcapng"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        res = CliRunner().invoke(main, ["sniff", "-r", str(path), "-q"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.exit_code == 1 and "at byte" in res.stderr
    assert peak < pcapng._MAX_BLOCK // 4, peak


def test_the_real_command_exits_1_on_a_malformed_file_and_0_on_an_unusual_one(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, code in [("ng-idb-empty", 1), ("ng-tsresol-0-max-ticks", 1), ("ng-unknown-block-type", 0)]:
        path = tmp_path / f"{name}.pcapng"
        path.write_bytes(CASES[name][0])
        res = subprocess.run(socktools_cmd("sniff", "-r", str(path), "--time", "ad"),
                             capture_output=True, text=True, cwd=root, timeout=60)
        assert res.returncode == code, res.stderr
        assert "Traceback" not in res.stderr
        assert len(res.stderr.splitlines()) == code, res.stderr


@pytest.mark.parametrize("name,words", [
    ("pcap-ihl-too-small", "bad IPv4 header length 8"), ("pcap-ihl-zero", "bad IPv4 header length 0"),
    ("pcap-ihl-too-big", "IPv4 header length 60 runs past"), ("pcap-ip-version-9", "IP version 9"),
    ("pcap-tcp-doff-beyond-packet", "TCP header length 60 runs past"),
    ("pcap-tcp-doff-too-small", "bad TCP header length 8"),
    ("ng-ihl-too-small", "bad IPv4 header length 4"),
    ("ng-tcp-doff-beyond-packet", "TCP header length 56 runs past")])
def test_a_malformed_packet_in_a_valid_file_is_shown_as_malformed(tmp_path, name, words):
    path = tmp_path / "x.pcap"
    path.write_bytes(CASES[name][0])
    res = CliRunner().invoke(main, ["sniff", "-r", str(path)])
    assert res.exit_code == 0
    first = res.stdout.splitlines()[0]
    assert "malformed" in first and words in first, first
    assert "None" not in first

"""sniff's capture files: nanosecond pcap, pcapng (comments, mixed link types), cut files, safe -w.

All through ``-r`` (no privilege needed): the files are built here byte by byte.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess

import pytest
from click.testing import CliRunner

from socktools import protocol, reference
from socktools.capture import dissect as d
from socktools.capture.pcap import open_capture
from socktools.cli import main

A = socket.inet_aton("127.0.0.1")
PORT, CPORT = 45000, 40000
T0 = 1_700_000_000_123_456_789          # nanoseconds: not a whole microsecond
REQ = reference.make_request("search", "morpheus")
RESP = protocol.encode_json({"result": "Follow the white rabbit."})
FIN, SYN, PSH, ACK = d.FIN, d.SYN, d.PSH, d.ACK


def ip_tcp(sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 512, 0, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, A, A) + tcp


def ether(l3):
    return b"\x00" * 12 + b"\x08\x00" + l3


def conversation(sport=CPORT, port=PORT, step_ns=1_001):
    """(ts_ns, IP packet) for a framed exchange: handshake, request, response, FINs."""
    seq = {"c": 1000, "s": 5000}
    steps = [("c", SYN, b""), ("s", SYN | ACK, b""), ("c", ACK, b""), ("c", PSH | ACK, REQ),
             ("s", PSH | ACK, RESP), ("c", FIN | ACK, b""), ("s", FIN | ACK, b""), ("c", ACK, b"")]
    out, ts = [], T0
    for who, flags, payload in steps:
        other = "s" if who == "c" else "c"
        src, dst = (sport, port) if who == "c" else (port, sport)
        out.append((ts, ip_tcp(src, dst, seq[who], seq[other] if flags & ACK else 0, flags,
                               payload)))
        seq[who] += len(payload) + (1 if flags & (SYN | FIN) else 0)
        ts += step_ns
    return out


def pcap_ns(packets, linktype=d.LINKTYPE_ETHERNET) -> bytes:
    body = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype)
    for ts, f in packets:
        sec, ns = divmod(ts, 1_000_000_000)
        body += struct.pack("<IIII", sec, ns, len(f), len(f)) + f
    return body


def block(kind, body):
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def pcapng(interfaces, packets) -> bytes:
    """``interfaces``: link types; ``packets``: (ifid, ts_ns, frame); nanosecond resolution."""
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for lt in interfaces:
        out += block(1, struct.pack("<HHI", lt, 0, 262144) + struct.pack("<HHB3x", 9, 1, 9)
                     + struct.pack("<HH", 0, 0))
    for ifid, ts, f in packets:
        out += block(6, struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    return out


def run(*args):
    return CliRunner().invoke(main, ["sniff", *args], catch_exceptions=False)


@pytest.fixture
def conv_pcap(tmp_path):
    path = tmp_path / "conv.pcap"
    path.write_bytes(pcap_ns([(ts, ether(p)) for ts, p in conversation()]))
    return path


# ------------------------------------------------------------ truncated files
@pytest.mark.parametrize("cut", [7, 16 + 20, 30])
def test_truncated_pcap_prints_the_count_and_exits_1(tmp_path, conv_pcap, cut):
    whole = conv_pcap.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[:-cut])              # the last packet (an 54-byte ACK) loses its tail
    res = run("-r", str(path))
    assert res.exit_code == 1, res.output
    assert "truncated capture file" in res.stderr and "read 7 complete packets" in res.stderr
    assert "7 packets read from" in res.stdout   # what was there is still shown
    assert run("-r", str(conv_pcap)).exit_code == 0


def test_truncated_pcapng_prints_the_count_and_exits_1(tmp_path):
    data = pcapng([1], [(0, ts, ether(p)) for ts, p in conversation()])
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-10])
    res = run("-r", str(path), "--json")
    assert res.exit_code == 1
    assert "read 7 complete packets" in res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["truncated"] and summary["read_packets"] == 7


# ------------------------------------------------------------ -w is safe
def test_write_refuses_a_symlink_and_leaves_its_target_alone(tmp_path, conv_pcap):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "x.pcap"
    link.symlink_to(victim)
    res = run("-r", str(conv_pcap), "-w", str(link))
    assert res.exit_code == 1
    assert "symbolic link" in res.stderr and str(link) in res.stderr
    assert victim.read_text() == "precious\n" and link.is_symlink()


def test_write_refuses_the_file_being_read_under_another_name(tmp_path, conv_pcap):
    original = conv_pcap.read_bytes()
    alias = tmp_path / "alias.pcap"
    os.link(conv_pcap, alias)                    # same inode, different name
    res = run("-r", str(conv_pcap), "-w", str(alias))
    assert res.exit_code == 2, res.output
    assert "the file being read" in res.stderr
    sym = tmp_path / "sym.pcap"
    sym.symlink_to(conv_pcap)
    res = run("-r", str(conv_pcap), "-w", str(sym))
    assert res.exit_code == 1 and "symbolic link" in res.stderr
    assert conv_pcap.read_bytes() == original
    # /dev/null (a device: nothing to truncate), a plain new file, and an existing
    # regular file are written as before
    assert run("-r", str(conv_pcap), "-w", os.devnull, "-q").exit_code == 0
    out = tmp_path / "copy.pcap"
    out.write_bytes(b"old content that is longer than nothing" * 100)
    assert run("-r", str(conv_pcap), "-w", str(out), "-q").exit_code == 0
    assert out.read_bytes() == original


# ------------------------------------------------------------ nanosecond pcap
def test_nanosecond_pcap_round_trips_through_w_and_r(tmp_path, conv_pcap):
    out = tmp_path / "out.pcap"
    assert run("-r", str(conv_pcap), "-w", str(out), "-q").exit_code == 0
    assert out.read_bytes()[:4] == struct.pack("<I", 0xA1B23C4D)
    stamps = [ts for ts, _ in conversation()]
    cap = open_capture(str(out))
    assert [r[0] for r in cap.records()] == stamps
    cap.close()
    objs = [json.loads(ln) for ln in run("-r", str(out), "--json").stdout.splitlines()]
    assert [o["ts_ns"] for o in objs if o["event"] == "packet"] == stamps
    if shutil.which("tshark"):
        res = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert [ln.replace(".", "") for ln in res.stdout.split()] == [str(s) for s in stamps]


# ------------------------------------------------------------ pcapng
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed (apt-get install tshark)")
def test_pcapng_output_carries_decoded_messages_as_comments_tshark_shows(tmp_path, conv_pcap):
    out = tmp_path / "x.pcapng"
    res = run("-r", str(conv_pcap), "-w", str(out), "-q")
    assert res.exit_code == 0 and "wrote 8 packets" in res.stdout
    tshark = subprocess.run(["tshark", "-r", str(out), "-V"], capture_output=True, text=True,
                            timeout=60)
    assert tshark.returncode == 0, tshark.stderr
    assert "socktools: request #1: text/json" in tshark.stdout
    assert "socktools: response #1: text/json" in tshark.stdout
    assert '"value": "morpheus"' in tshark.stdout
    fields = subprocess.run(["tshark", "-r", str(out), "-Y", "frame.comment", "-T", "fields",
                             "-e", "frame.number", "-e", "frame.time_epoch"],
                            capture_output=True, text=True, timeout=60)
    rows = [ln.split("\t") for ln in fields.stdout.splitlines()]
    assert [r[0] for r in rows] == ["4", "5"]                  # the packets that completed them
    stamps = [ts for ts, _ in conversation()]
    assert rows[0][1].replace(".", "") == str(stamps[3])      # nanoseconds kept
    # and sniff reads its own pcapng back with the same view
    again = run("-r", str(out))
    assert again.exit_code == 0 and "request #1: text/json" in again.stdout


def test_pcapng_with_interfaces_of_different_link_types(tmp_path):
    eth = [(0, ts, ether(p)) for ts, p in conversation()]
    raw = [(1, ts + 500, p) for ts, p in conversation(sport=CPORT + 1)]
    cooked = [(2, ts + 700, struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 0, 6, b"\0" * 8) + p)
              for ts, p in conversation(sport=CPORT + 2, port=PORT + 1)]
    merged = sorted(eth + raw + cooked, key=lambda x: x[1])
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(pcapng([d.LINKTYPE_ETHERNET, d.LINKTYPE_RAW, d.LINKTYPE_LINUX_SLL2], merged))
    res = run("-r", str(path), "--json")
    assert res.exit_code == 0, res.output
    objs = [json.loads(ln) for ln in res.stdout.splitlines()]
    summary = objs[-1]
    assert summary["captured"] == 24 and len(summary["connections"]) == 3
    assert all(c["messages"] == {"requests": 1, "responses": 1} for c in summary["connections"])
    # --port applies to every link type with the program built for it
    res = run("-r", str(path), "--port", str(PORT), "-q", "--json")
    assert json.loads(res.stdout.splitlines()[-1])["captured"] == 16
    # a pcap cannot hold two link types: say so, suggest pcapng; pcapng output keeps them
    res = run("-r", str(path), "-w", str(tmp_path / "one.pcap"), "-q")
    assert res.exit_code == 1 and "write .pcapng" in res.stderr
    out = tmp_path / "copy.pcapng"
    assert run("-r", str(path), "-w", str(out), "-q").exit_code == 0
    cap = open_capture(str(out))
    assert [(r[0], r[1], r[3]) for r in cap.records()] == [
        (ts, f, (d.LINKTYPE_ETHERNET, d.LINKTYPE_RAW, d.LINKTYPE_LINUX_SLL2)[i])
        for i, ts, f in merged]
    cap.close()

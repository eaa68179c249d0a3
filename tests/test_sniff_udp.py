"""sniff sees UDP and reads flood's datagrams: which went out, which came back, which never did.

Three depths: the matching (``capture/datagrams.py``) fed lists of datagrams, no sockets;
crafted capture files read with ``-r`` (the lines, the summary, ``--json``, malformed UDP);
and a live capture of ``flood --udp`` against an echo whose tiny receive buffer makes the
kernel drop (root only): the seqs the capture saw unanswered are flood's lost datagrams.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import struct
import subprocess
import threading

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from socktools.capture import bpf, dissect as d
from socktools.capture.datagrams import MAX_LISTED, DatagramTracker
from socktools.capture.events import DatagramEvent, Note
from socktools.cli import main
from socktools.wire import datagram as dg
from tests.conftest import can_capture, socktools_cmd
from tests.livesniff import LiveSniff
from tests.test_sniff_files import CPORT, PORT, T0, conversation, ether, pcap_ns
from tests.test_sniff_malformed import OPTION_SETS

A = socket.inet_aton("127.0.0.1")
A6 = socket.inet_pton(socket.AF_INET6, "::1")
CLIENT, SERVER = (A, 40000), (A, 9000)
US = 1_000


# ------------------------------------------------------------------ builders
def udp_ip(sport, dport, payload, *, src=A, dst=A, ulen=None, total=None):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload) if ulen is None else ulen, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) if total is None else total, 0, 0,
                       64, 17, 0, src, dst) + udp


def udp6(sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, A6, A6) + udp


def flood_exchange(lost=(), *, sock=0, n=6, cport=CPORT, step=10 * US, sent_base=123):
    """(ts, IP packet): flood's socket ``sock`` sends seq 0..n-1, the echo answers all but
    ``lost``.  The header's send time is the sender's clock: nothing like the capture's."""
    out, ts = [], T0
    for seq in range(n):
        gram = dg.encode(sock, seq, sent_base + seq, 64)
        out.append((ts, udp_ip(cport, PORT, gram)))
        ts += step
        if seq not in lost:
            out.append((ts, udp_ip(PORT, cport, gram)))
            ts += step
    return out


def feed(tracker, grams):
    """``grams``: (ts, src, dst, payload) -> the events, in order."""
    events = []
    for number, (ts, src, dst, payload) in enumerate(grams, 1):
        evs, _ = tracker.datagram(number, ts, src, dst, len(payload), payload)
        events += evs
    return events


def run(*args):
    return CliRunner().invoke(main, ["sniff", *args])


# ------------------------------------------------------------- sans-I/O
def test_requests_and_replies_match_by_socket_and_seq_with_round_trips_from_capture_times():
    t = DatagramTracker()
    grams = []
    ts = T0
    for seq in range(10):
        gram = dg.encode(0, seq, 5 + seq)        # the sender's clock: 5 ns, 6 ns... not ours
        grams.append((ts, CLIENT, SERVER, gram))
        if seq not in (3, 7):
            grams.append((ts + 40 * US + seq, SERVER, CLIENT, gram))
        ts += 100 * US
    events = feed(t, grams)
    assert all(type(e) is DatagramEvent for e in events)
    replies = [e for e in events if e.role == "reply"]
    assert [e.seq for e in replies] == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [e.rtt_ns for e in replies] == [40 * US + s for s in (0, 1, 2, 4, 5, 6, 8, 9)]
    assert replies[0].request_packet == 1 and replies[1].request_packet == 3
    assert replies[0].text == "flood sock=0 seq=0 reply to #1 RTT=0.040 ms"
    assert [e.text for e in events[:1]] == ["flood sock=0 seq=0"]
    (s,) = t.summaries()
    assert (s.sock, s.client, s.server) == (0, "127.0.0.1:40000", "127.0.0.1:9000")
    assert (s.out, s.replies, s.unanswered, s.unanswered_seqs) == (10, 8, 2, ((3, 3), (7, 7)))
    assert (s.duplicates, s.unmatched_replies, s.first_seq, s.last_seq) == (0, 0, 0, 9)
    assert s.rtt_min == 40e-6 and s.rtt_max == 40.009e-6


def test_sockets_are_told_apart_by_number_and_by_endpoints():
    t = DatagramTracker()
    other = (A, 40001)
    feed(t, [(T0, CLIENT, SERVER, dg.encode(0, 0, 1)), (T0 + 1, CLIENT, SERVER, dg.encode(1, 0, 1)),
             (T0 + 2, other, SERVER, dg.encode(0, 0, 1)), (T0 + 3, SERVER, other, dg.encode(0, 0, 1))])
    got = {(s.client, s.sock): (s.out, s.replies) for s in t.summaries()}
    assert got == {("127.0.0.1:40000", 0): (1, 0), ("127.0.0.1:40000", 1): (1, 0),
                   ("127.0.0.1:40001", 0): (1, 1)}


def test_a_capture_that_starts_with_a_reply_turns_the_sides_round():
    """The first datagram seen is a reply (its request left before the capture started)."""
    t = DatagramTracker()
    g = dg.encode
    events = feed(t, [(T0, SERVER, CLIENT, g(0, 5, 1)), (T0 + 1, SERVER, CLIENT, g(0, 6, 1)),
                      (T0 + 9, CLIENT, SERVER, g(0, 9, 1)), (T0 + 10, SERVER, CLIENT, g(0, 7, 1)),
                      (T0 + 12, SERVER, CLIENT, g(0, 9, 1)), (T0 + 20, CLIENT, SERVER, g(0, 10, 1))])
    assert [e.role for e in events] == ["request", "request", "request", "unmatched-reply", "reply",
                                        "request"]
    (s,) = t.summaries()
    assert (s.client, s.server) == ("127.0.0.1:40000", "127.0.0.1:9000")
    assert (s.out, s.replies, s.unmatched_replies, s.unanswered, s.unanswered_seqs) == \
        (2, 1, 3, 1, ((10, 10),))
    assert t.waiting == 1


def test_turning_round_counts_what_the_first_side_had_given_up_as_replies_too():
    """More replies from before the capture than one socket waits on, then the real client."""
    t = DatagramTracker(max_waiting=2)
    events = feed(t, [(T0 + q, SERVER, CLIENT, dg.encode(0, q, 1)) for q in range(5)] +
                  [(T0 + 10, CLIENT, SERVER, dg.encode(0, 9, 1))])
    assert events[-1].role == "request"
    (s,) = t.summaries()
    assert (s.client, s.out, s.unanswered, s.unanswered_seqs, s.unmatched_replies) == \
        ("127.0.0.1:40000", 1, 1, ((9, 9),), 5)
    assert t.waiting == 1


def test_duplicates_are_counted_not_matched_twice():
    t = DatagramTracker()
    gram = dg.encode(3, 0, 1)
    events = feed(t, [(T0, CLIENT, SERVER, gram), (T0 + 1, CLIENT, SERVER, gram),
                      (T0 + 5, SERVER, CLIENT, gram), (T0 + 6, SERVER, CLIENT, gram)])
    assert [e.role for e in events] == ["request", "duplicate", "reply", "duplicate-reply"]
    assert events[2].rtt_ns == 5 and events[3].text == "flood sock=3 seq=0 reply [Duplicate]"
    (s,) = t.summaries()
    assert (s.out, s.replies, s.duplicates, s.unanswered) == (1, 1, 2, 0)


def test_what_one_socket_waits_for_is_bounded_and_what_it_gave_up_is_still_listed():
    t = DatagramTracker(max_waiting=4)
    feed(t, [(T0 + i, CLIENT, SERVER, dg.encode(0, i, 1)) for i in range(10)])
    assert t.waiting == 4
    (s,) = t.summaries()
    assert (s.out, s.unanswered, s.unanswered_seqs, s.unanswered_unlisted) == (10, 10, ((0, 9),), 0)
    # a reply to a request given up: not matched (its request is no longer held), said so
    events = feed(t, [(T0 + 20, SERVER, CLIENT, dg.encode(0, 1, 1))])
    assert events[0].role == "unmatched-reply"


def test_requests_waiting_over_all_sockets_are_bounded():
    t = DatagramTracker(max_waiting_total=6)
    feed(t, [(T0 + i, (A, 40000 + i % 3), SERVER, dg.encode(i % 3, i, 1)) for i in range(30)])
    assert t.waiting <= 6
    assert sum(s.unanswered for s in t.summaries()) == 30


def test_unanswered_runs_are_listed_up_to_the_bound_then_counted():
    t = DatagramTracker()
    grams = []
    for seq in range(4 * MAX_LISTED):
        grams.append((T0 + seq, CLIENT, SERVER, dg.encode(0, seq, 1)))
        if seq % 2:
            grams.append((T0 + seq, SERVER, CLIENT, dg.encode(0, seq, 1)))
    feed(t, grams)
    (s,) = t.summaries()
    assert s.unanswered == 2 * MAX_LISTED
    assert s.unanswered_seqs == tuple((n, n) for n in range(0, 2 * MAX_LISTED, 2))
    assert len(s.unanswered_seqs) == MAX_LISTED and s.unanswered_unlisted == MAX_LISTED


def test_sockets_followed_are_bounded():
    t = DatagramTracker(max_sockets=2)
    events = feed(t, [(T0, CLIENT, SERVER, dg.encode(n, 0, 1)) for n in range(5)])
    assert [e.role for e in events] == ["request", "request", "untracked", "untracked", "untracked"]
    assert len(t.summaries()) == 2 and t.untracked == 3


@pytest.mark.parametrize("decode,payload,want", [
    ("auto", b"sktU" + b"\0" * 6, ("datagram-cut", True)),
    ("datagram", b"sktU" + b"\0" * 6, ("datagram-cut", True)),
    ("auto", b"\x5a\x17\x01\x00", (None, True)),             # a DNS query: previewed
    ("datagram", b"\x5a\x17\x01\x00", ("not-datagram", True)),
    ("raw", dg.encode(0, 0, 1), (None, True)),
    ("none", dg.encode(0, 0, 1), (None, False)),
    ("framed", dg.encode(0, 0, 1), (None, False)),
])
def test_what_is_not_a_whole_flood_header_is_said_or_previewed(decode, payload, want):
    events, preview = DatagramTracker(decode).datagram(1, T0, CLIENT, SERVER, len(payload), payload)
    kind, previewed = want
    assert [e.kind for e in events if type(e) is Note] == ([kind] if kind else [])
    assert not [e for e in events if type(e) is DatagramEvent]
    assert preview is previewed


def test_a_header_cut_by_the_snap_length_says_so():
    (note,), _ = DatagramTracker().datagram(1, T0, CLIENT, SERVER, 1000, b"sktU\0\0")
    assert "cut by the snap length" in note.text and "24 bytes, 6 here" in note.text


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_unanswered_seqs_are_exactly_the_ones_whose_reply_never_came(data):
    """Any number of sockets, any losses, replies in any order after their requests."""
    socks = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(1, 40))
    lost = {(s, q) for s in range(socks) for q in range(n)
            if data.draw(st.booleans(), label=f"lost {s} {q}")}
    rng = random.Random(data.draw(st.integers(0, 2 ** 32)))
    grams, pending, ts = [], [], T0
    for q in range(n):
        for s in range(socks):
            grams.append((ts, (A, 40000 + s), SERVER, dg.encode(s, q, 1)))
            ts += 1
            if (s, q) not in lost:
                pending.append((s, q))
        rng.shuffle(pending)
        while pending and rng.random() < 0.7:          # some replies now, some later
            s, q = pending.pop()
            grams.append((ts, SERVER, (A, 40000 + s), dg.encode(s, q, 1)))
            ts += 1
    for s, q in pending:
        grams.append((ts, SERVER, (A, 40000 + s), dg.encode(s, q, 1)))
        ts += 1
    t = DatagramTracker()
    feed(t, grams)
    got = set()
    for summ in t.summaries():
        assert summ.out == n and summ.replies + summ.unanswered == n
        assert summ.unanswered_unlisted == 0 or len(summ.unanswered_seqs) == MAX_LISTED
        for a, b in summ.unanswered_seqs:
            got |= {(summ.sock, q) for q in range(a, b + 1)}
        assert summ.unanswered == sum(1 for s, _ in lost if s == summ.sock)
    listed = {x for x in lost if sum(1 for y in lost if y[0] == x[0]) <= MAX_LISTED}
    assert listed <= got <= lost


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 12), st.booleans()),
                max_size=120))
def test_any_order_of_datagrams_keeps_every_count_whole_and_every_table_bounded(steps):
    """Requests and replies in any order and direction, cut headers among them: no error,
    the counts add up, nothing outgrows its bound."""
    t = DatagramTracker(max_sockets=2, max_waiting=3, max_waiting_total=5)
    for number, (forward, sock, seq, cut) in enumerate(steps, 1):
        src, dst = (CLIENT, SERVER) if forward else (SERVER, CLIENT)
        payload = dg.encode(sock, seq, 1, 64)[:10 if cut else 64]
        events, _ = t.datagram(number, T0 + number, src, dst, 64, payload)
        assert len(events) == 1
    socks = t._socks.values()
    assert len(socks) <= 2 and t.waiting == sum(len(s.waiting) for s in socks) <= 5
    for summ in t.summaries():
        assert min(summ.out, summ.replies, summ.unanswered, summ.unmatched_replies) >= 0
        assert summ.replies + summ.unanswered <= summ.out
        assert len(summ.unanswered_seqs) <= MAX_LISTED


# ------------------------------------------------------------ files, -r
@pytest.fixture
def udp_pcap(tmp_path):
    """A flood exchange (seq 2 and 4 unanswered), a DNS-like datagram, and a TCP conversation."""
    packets = flood_exchange(lost=(2, 4))
    packets.append((packets[-1][0] + US, udp_ip(5353, 53, b"\x5a\x17\x01\x00")))
    packets += [(ts + 100 * US, p) for ts, p in conversation()]
    path = tmp_path / "udp.pcap"
    path.write_bytes(pcap_ns([(ts, ether(p)) for ts, p in packets]))
    return path


def test_the_lines_show_each_datagram_and_each_replys_round_trip(udp_pcap):
    res = run("-r", str(udp_pcap))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "    1    0.000000 127.0.0.1 → 127.0.0.1 UDP 40000 → 45000 Len=64 flood sock=0 seq=0"
    assert lines[1] == ("    2    0.000010 127.0.0.1 → 127.0.0.1 UDP 45000 → 40000 Len=64 "
                        "flood sock=0 seq=0 reply to #1 RTT=0.010 ms")
    assert "UDP 5353 → 53 Len=4" in res.stdout and "| 5a 17 01 00" in res.stdout
    assert "[SYN, ACK]" in res.stdout                 # TCP beside it, as before
    summary = res.stdout[res.stdout.index("flood datagrams, per socket"):]
    assert "no reply to seq 2, 4" in summary
    row = next(ln for ln in summary.splitlines() if "127.0.0.1:40000" in ln and "no reply" not in ln)
    assert row.split()[:8] == ["0", "127.0.0.1:40000", "127.0.0.1:45000", "6", "4", "2", "0", "0"]
    assert "2 of 6 requests seen got no reply in the capture" in summary


def test_udp_picks_the_datagrams_and_filters_the_file_as_udp_port(udp_pcap):
    res = run("-r", str(udp_pcap), "--udp", "--port", str(PORT))
    assert res.exit_code == 0, res.output
    assert "filter: udp port 45000" in res.stdout
    assert "[SYN" not in res.stdout and "5353" not in res.stdout
    assert "--- 10 packets read from" in res.stdout
    res = run("-r", str(udp_pcap), "--udp", "-q")
    assert "--- 11 packets read from" in res.stdout and "(filter: udp)" in res.stdout


def test_udp_with_a_filter_is_a_usage_error_naming_both(udp_pcap):
    res = run("-r", str(udp_pcap), "--udp", "--filter", "udp port 53")
    assert res.exit_code == 2 and "--udp" in res.stderr and "--filter" in res.stderr


def test_keylog_with_decode_datagram_is_a_usage_error(udp_pcap, tmp_path):
    keys = tmp_path / "keys.log"
    keys.write_text("")
    res = run("-r", str(udp_pcap), "--decode", "datagram", "--keylog", str(keys))
    assert res.exit_code == 2 and "--keylog" in res.stderr and "--decode datagram" in res.stderr


def test_decode_datagram_says_what_is_not_floods_and_previews_tcp_raw(udp_pcap):
    res = run("-r", str(udp_pcap), "--decode", "datagram")
    assert res.exit_code == 0, res.output
    assert "! not one of flood's datagrams (no sktU header)" in res.stdout
    assert "flood sock=0 seq=5 reply to #" in res.stdout
    assert "request #1" not in res.stdout and "| " in res.stdout.split("[PSH, ACK]")[1]


def test_json_carries_each_datagram_and_the_per_socket_summary(udp_pcap):
    from tests.test_json_schemas import validate
    res = run("-r", str(udp_pcap), "--json")
    assert res.exit_code == 0, res.output
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    for doc in docs:
        validate(doc, "sniff")
    first, second = docs[0], docs[1]
    assert (first["proto"], first["sport"], first["dport"], first["len"]) == ("UDP", CPORT, PORT, 64)
    assert first["decoded"] == [{"type": "datagram", "sock": 0, "seq": 0, "sent_ns": 123,
                                 "role": "request", "rtt": None, "request_packet": None}]
    assert second["decoded"][0]["role"] == "reply" and second["decoded"][0]["rtt"] == 10e-6
    (sock,) = docs[-1]["datagrams"]
    assert sock["unanswered_seqs"] == [[2, 2], [4, 4]] and sock["out"] == 6 and sock["replies"] == 4


def test_a_datagram_over_ipv6_and_pcapng_write_and_read_back(tmp_path):
    gram = dg.encode(7, 0, 1, 100)
    frames = [(T0, ether(udp6(40000, PORT, gram))), (T0 + 5 * US, ether(udp6(PORT, 40000, gram)))]
    frames = [(ts, b"\x00" * 12 + b"\x86\xdd" + f[14:]) for ts, f in frames]
    src = tmp_path / "v6.pcap"
    src.write_bytes(pcap_ns(frames))
    out = tmp_path / "copy.pcapng"
    res = run("-r", str(src), "--udp", "-w", str(out))
    assert res.exit_code == 0, res.output
    assert "UDP 40000 → 45000 Len=100 flood sock=7 seq=0" in res.stdout
    assert "[::1]:40000" in res.stdout and "reply to #1 RTT=0.005 ms" in res.stdout
    again = run("-r", str(out), "--json", "-q")
    (sock,) = json.loads(again.stdout)["datagrams"]
    assert (sock["client"], sock["replies"], sock["unanswered"]) == ("[::1]:40000", 1, 0)
    if shutil.which("tshark"):
        comments = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.comment"],
                                  capture_output=True, text=True, timeout=60)
        assert "socktools: flood sock=7 seq=0 reply to #1" in comments.stdout, comments.stderr


# ------------------------------------------------------ malformed UDP
def _malformed_cases():
    gram = dg.encode(0, 0, 1, 64)
    good = udp_ip(CPORT, PORT, gram)
    return {
        "udp-header-cut": (ether(good)[:14 + 20 + 5], "UDP header not captured"),
        "udp-length-below-8": (ether(udp_ip(CPORT, PORT, gram, ulen=4)), "UDP length 4 is less than its header"),
        "udp-length-past-ip": (ether(udp_ip(CPORT, PORT, gram, ulen=500)), "UDP length 500 runs past the packet"),
        "sktU-header-cut": (ether(udp_ip(CPORT, PORT, gram[:10])), "flood's header needs 24 bytes, 10 here"),
    }


@pytest.mark.parametrize("name", sorted(_malformed_cases()))
def test_malformed_udp_in_a_valid_file_is_shown_for_what_it_is_under_every_option(tmp_path, name):
    frame, words = _malformed_cases()[name]
    packets = [(T0, frame)] + [(ts + US, ether(p)) for ts, p in flood_exchange(n=2)]
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap_ns(packets))
    for opts in OPTION_SETS + [["--udp"], ["--decode", "datagram"], ["--udp", "--json"]]:
        args = [str(tmp_path / ("out." + a.split(".")[1])) if a.startswith("OUT.") else a for a in opts]
        res = run("-r", str(path), *args)
        where = f"{name} with {opts}: exit {res.exit_code}\n{res.stdout[-1500:]}\n{res.stderr}"
        assert res.exception is None or isinstance(res.exception, SystemExit), where
        assert res.exit_code == 0 and res.stderr == "", where
        if not opts or opts == ["--decode", "datagram"]:
            assert words in res.stdout, where
            assert "reply to #" in res.stdout, where      # the datagrams after it still match


def test_a_file_cut_inside_a_datagram_ends_in_one_line_and_keeps_the_summary(tmp_path):
    data = pcap_ns([(ts, ether(p)) for ts, p in flood_exchange(lost=(1,), n=3)])
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-30])
    last = len(data) - (16 + 14 + 20 + 8 + 64)
    res = run("-r", str(path))
    assert res.exit_code == 1
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"socktools: {path}: at byte {last}: cut short") and "read 4 complete" in line
    assert "no reply to seq 1-2" in res.stdout            # (2: its reply is where the file ends)


# ------------------------------------------------------------------ BPF
def _udp_cases():
    gram = dg.encode(0, 0, 1)
    frag = bytearray(ether(udp_ip(CPORT, PORT, gram)))
    frag[20:22] = b"\x00\x10"                                # a later fragment: no ports
    tcp = ether(conversation()[0][1])
    v6 = b"\x00" * 12 + b"\x86\xdd" + udp6(CPORT, PORT, gram)
    return {"v4": ether(udp_ip(CPORT, PORT, gram)), "v4-other-port": ether(udp_ip(CPORT, 1, gram)),
            "v4-later-fragment": bytes(frag), "v6": v6, "tcp": tcp}


def test_the_built_in_udp_programs_mean_udp_and_udp_port():
    cases = _udp_cases()
    port = bpf.port_program(PORT, proto=17)
    assert {k for k, f in cases.items() if bpf.run(port, f)} == {"v4", "v6"}
    anything = bpf.udp_program()
    assert {k for k, f in cases.items() if bpf.run(anything, f)} == \
        {"v4", "v4-other-port", "v4-later-fragment", "v6"}
    assert bpf.build(port=PORT, expression=None, linktype=d.LINKTYPE_ETHERNET, udp=True)[1] == \
        f"udp port {PORT}"
    assert bpf.build(port=None, expression=None, linktype=d.LINKTYPE_ETHERNET, udp=True)[1] == "udp"


@pytest.mark.skipif(not __import__("ctypes.util").util.find_library("pcap"),
                    reason="libpcap not installed (apt-get install libpcap0.8)")
@pytest.mark.parametrize("linktype", [d.LINKTYPE_ETHERNET, d.LINKTYPE_LINUX_SLL, d.LINKTYPE_LINUX_SLL2])
def test_the_built_in_udp_programs_are_what_libpcap_compiles(linktype):
    assert bpf.port_program(PORT, linktype, proto=17) == bpf.compile_expression(f"udp port {PORT}", linktype)
    assert bpf.udp_program(linktype) == bpf.compile_expression("udp", linktype)


# ------------------------------------------------------------------ live
live = pytest.mark.skipif(not can_capture(),
                          reason="live capture needs root or CAP_NET_RAW (packet sockets)")


@live
def test_a_live_capture_of_a_lossy_flood_sees_exactly_the_datagrams_flood_lost(tmp_path):
    """The echo's receive buffer is the kernel's minimum and it reads nothing until the kernel
    has dropped: every datagram dropped there was seen by the capture (it taps loopback
    before the receiving socket) and has no reply."""
    from socktools.capture import SniffConfig, Sniffer
    from tests.udppeers import UdpEcho

    out = tmp_path / "flood.pcapng"
    ran = {}
    marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    marker.bind(("127.0.0.1", 0))

    def flood(port: int) -> None:
        ran["res"] = subprocess.run(socktools_cmd(
            "flood", "--udp", "--json", "--port", str(port), "--conns", "4", "--workers", "1",
            "--rate", "4000", "--duration", "1s", "--size", "200", "--reply-timeout", "2s"),
            capture_output=True, text=True, timeout=60)
        # flood has its replies (or gave them up): every datagram of it passed the capture's
        # tap already; one more datagram, after them, says the capture has them all
        marker.sendto(b"end", ("127.0.0.1", port))

    with UdpEcho(hold=True) as echo, marker:
        sn = Sniffer(SniffConfig(port=echo.port, udp=True, write=str(out), timeout=90)).open()
        worker = threading.Thread(target=flood, args=(echo.port,))
        worker.start()
        try:
            for batch in sn.batches():
                if any(r.sport == marker.getsockname()[1] for r in batch):
                    break
        finally:
            worker.join(90)
            summary = sn.close()
    res = ran["res"]
    assert res.returncode == 0, res.stderr
    grams = json.loads(res.stdout)["datagrams"]
    assert summary.stopped_by != "timeout", "the capture never saw the datagram after flood's"
    assert summary.kernel_dropped == 0
    assert grams["server_drops"] >= 1, grams          # the echo reads nothing until then
    socks = summary.datagrams
    assert len(socks) == 4
    assert sum(s.out for s in socks) == grams["sent"]
    # a reply dropped at flood's own socket (client_drops: 0 on a quiet machine) was captured
    # on its way there: flood lost it, the capture saw it answered
    assert sum(s.replies for s in socks) == grams["answered"] + grams["late"] + grams["client_drops"]
    assert sum(s.unanswered for s in socks) == grams["lost"] - grams["client_drops"] == \
        grams["server_drops"]
    assert all(s.unmatched_replies == 0 and s.duplicates == 0 for s in socks)
    # every packet captured is one of flood's, placed, but the marker (and its echo, if read)
    assert summary.captured - sum(s.out + s.replies for s in socks) in (1, 2)

    # the file, read back: the same summary, socket by socket
    res = subprocess.run(socktools_cmd("sniff", "-r", str(out), "--json", "-q"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    from socktools.capture.view import socket_dict
    assert doc["datagrams"] == [json.loads(json.dumps(socket_dict(s))) for s in socks]
    assert doc["captured"] == summary.captured
    if shutil.which("tshark"):
        shark = subprocess.run(["tshark", "-r", str(out), "-Y", "udp", "-T", "fields", "-e", "udp.length"],
                               capture_output=True, text=True, timeout=120)
        assert shark.returncode == 0, shark.stderr
        lengths = shark.stdout.split()
        assert len(lengths) == summary.captured               # tshark reads every packet
        assert lengths.count("208") == sum(s.out + s.replies for s in socks)   # 200 + 8


@live
def test_ctrl_c_ends_a_live_udp_capture_with_the_per_socket_summary():
    from tests.udppeers import UdpEcho

    with UdpEcho() as echo, LiveSniff("--udp", "--port", str(echo.port)) as sniff:
        assert f"(filter: udp port {echo.port})" in sniff.first
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.connect(("127.0.0.1", echo.port))
            c.settimeout(5)
            for seq in range(3):                     # what one flood socket does, by hand
                c.send(dg.encode(5, seq, 0, 64))
                assert dg.decode(c.recv(100)).seq == seq
            c.send(dg.encode(5, 3, 0, 64))           # and one the echo may or may not answer
        sniff.stop(lambda lines: sum("flood sock=5" in ln for ln in lines) >= 7, timeout=10)
    out = sniff.out
    assert sniff.returncode == 0, out
    assert "flood sock=5 seq=2 reply to #5 RTT=" in out and "(stopped)" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("     5  127.0.0.1:"))
    replies = 4 if "seq=3 reply" in out else 3
    assert row.split()[3:6] == ["4", str(replies), str(4 - replies)], row

"""socktools.kernel.tcpinfo: struct tcp_info layout and parsing (pure), and real-socket reads (Linux)."""

from __future__ import annotations

import socket
import struct
import sys
import time

import pytest
from hypothesis import given, strategies as st

from socktools.kernel import tcpinfo
from socktools.kernel.tcpinfo import OFFSETS, TCP_INFO_FIELDS, parse_tcp_info, struct_size

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="TCP_INFO layout and the queue ioctls are Linux's")


# ------------------------------------------------------------------ layout (pure)
def test_layout_matches_known_kernel_struct_sizes():
    # sizeof(struct tcp_info) at known points of its history (uapi/linux/tcp.h).
    assert struct_size("total_retrans") == 104       # the pre-3.15 struct
    assert OFFSETS["pacing_rate"] == 104             # first u64, 8-aligned
    assert OFFSETS["snd_wnd"] == 228 and struct_size("snd_wnd") == 232      # Linux 5.4
    assert struct_size("rehash") == 240                                      # Linux 6.2
    assert struct_size("total_rto_time") == 248                              # Linux 6.7
    assert struct_size("accecn_opt_seen") == 280                             # Linux 6.18


def _full_buffer(values: dict) -> bytes:
    """A synthetic TCP_INFO buffer with ``values`` at their offsets, zero elsewhere."""
    buf = bytearray(struct_size(TCP_INFO_FIELDS[-1].name))
    codes = {"u8": "B", "bits": "B", "u16": "H", "u32": "I", "u64": "Q"}
    for f in TCP_INFO_FIELDS:
        if f.name in values:
            struct.pack_into("=" + codes[f.ctype], buf, OFFSETS[f.name], values[f.name])
    return bytes(buf)


def test_parse_reads_each_field_at_its_offset():
    buf = _full_buffer({"state": 1, "probes": 3, "backoff": 2, "rtt": 1234, "snd_cwnd": 10,
                        "pacing_rate": 2 ** 40 + 5, "notsent_bytes": 777, "snd_wnd": 0,
                        "rcv_wnd": 65536, "total_rto": 7, "total_rto_time": 99})
    info = parse_tcp_info(buf)
    assert info.missing == ()
    assert info["probes"] == 3 and info["backoff"] == 2
    assert info["rtt"] == 1234 and info["snd_cwnd"] == 10
    assert info["pacing_rate"] == 2 ** 40 + 5
    assert info["notsent_bytes"] == 777 and info["snd_wnd"] == 0 and info["rcv_wnd"] == 65536
    assert info["total_rto"] == 7 and info["total_rto_time"] == 99
    assert info.state_name == "ESTAB" and info.ca_state_name == "Open"


def test_short_buffer_reports_missing_fields_instead_of_guessing():
    full = _full_buffer({"rtt": 50, "snd_wnd": 123})
    info = parse_tcp_info(full[:104])          # what a pre-3.15 kernel returns
    assert info.length == 104
    assert info["rtt"] == 50
    assert info.get("snd_wnd") is None and "snd_wnd" not in info
    assert "pacing_rate" in info.missing and "snd_wnd" in info.missing
    with pytest.raises(KeyError):
        info["snd_wnd"]
    reason = info.unavailable_reason("snd_wnd")
    assert "104 bytes" in reason and "5.4" in reason


@pytest.mark.skipif(sys.byteorder != "little", reason="bitfield order checked for little-endian ABIs")
def test_bitfields_little_endian():
    buf = bytearray(_full_buffer({}))
    buf[6] = 0xA7            # snd_wscale:4 = 7 (low bits), rcv_wscale:4 = 10
    buf[7] = 0b101           # delivery_rate_app_limited:1 = 1, fastopen_client_fail:2 = 2
    info = parse_tcp_info(bytes(buf))
    assert (info["snd_wscale"], info["rcv_wscale"]) == (7, 10)
    assert info["delivery_rate_app_limited"] == 1 and info["fastopen_client_fail"] == 2


@given(st.binary(max_size=320))
def test_any_length_parses_and_accounts_for_every_field(buf):
    info = parse_tcp_info(buf)
    assert info.length == len(buf)
    for f in TCP_INFO_FIELDS:
        end = OFFSETS[f.name] + {"u8": 1, "bits": 1, "u16": 2, "u32": 4, "u64": 8}[f.ctype]
        if f.ctype == "bits":
            continue             # replaced by the derived bitfield names
        assert (f.name in info.values) == (end <= len(buf))
        assert (f.name in info.missing) == (end > len(buf))


def test_unavailable_on_other_platforms(monkeypatch):
    monkeypatch.setattr(tcpinfo, "IS_LINUX", False)
    with socket.socket() as s:
        info, reason = tcpinfo.read_tcp_info(s)
        queues = tcpinfo.read_queues(s)
    assert info is None and "unavailable on this platform" in reason
    assert queues.send_q is None and queues.recv_q is None and queues.unacked is None
    assert "unavailable on this platform" in queues.reason


# ------------------------------------------------------------------ real sockets
@pytest.fixture
def pair():
    """A connected loopback pair whose receiving end never reads."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        client = socket.create_connection(lst.getsockname())
        server, _ = lst.accept()
    with client, server:
        yield client, server


def _proc_queues(local, remote):
    """(tx_queue, rx_queue) of the /proc/net/tcp line for this 4-tuple: an independent route."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if (lport, rport) == (local[1], remote[1]):
            tx, rx = f[4].split(":")
            return int(tx, 16), int(rx, 16)
    raise AssertionError("socket not in /proc/net/tcp")


@linux_only
def test_queues_equal_proc_net_tcp(pair):
    client, server = pair
    client.sendall(b"x" * 1000)
    # The receiver never reads: once the 1000 bytes arrived they stay.  Wait for the ACK so the
    # sender's queue is stable too (loopback delivers within microseconds; bounded poll).
    for _ in range(2000):
        if tcpinfo.read_queues(server).recv_q == 1000 and tcpinfo.read_queues(client).send_q == 0:
            break
        time.sleep(0.001)
    rq = tcpinfo.read_queues(server)
    sq = tcpinfo.read_queues(client)
    assert rq.recv_q == 1000 and sq.send_q == 0 and sq.notsent == 0 and sq.unacked == 0
    assert _proc_queues(server.getsockname(), server.getpeername()) == (rq.send_q, rq.recv_q)
    assert _proc_queues(client.getsockname(), client.getpeername()) == (sq.send_q, sq.recv_q)


@linux_only
def test_tcp_info_of_a_live_connection(pair):
    client, server = pair
    client.sendall(b"y" * 500)
    info, reason = tcpinfo.read_tcp_info(client)
    assert reason == "" and info is not None
    assert info.length >= 104
    assert info.state_name == "ESTAB"
    assert info["snd_mss"] > 0 and info["snd_cwnd"] > 0 and info["rto"] > 0
    if "bytes_acked" in info:                  # Linux 4.1+: includes the SYN's 1
        assert info["bytes_acked"] in (1, 501)


@linux_only
def test_linux_doubles_the_buffer_you_set():
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        bufs = tcpinfo.read_buffers(s)
    assert (bufs.sndbuf, bufs.rcvbuf) == (8192, 8192)

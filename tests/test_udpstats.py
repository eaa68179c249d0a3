"""The kernel's UDP drop counters (kernel.udpstats), read around real datagrams on loopback."""

from __future__ import annotations

import socket
import sys

import pytest

from socktools.kernel import udpstats
from socktools.wire import datagram as dg

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the UDP drop counters are Linux's (SO_MEMINFO, /proc/net/snmp)")


def test_the_machine_counters_are_read_from_proc(tmp_path):
    snmp = tmp_path / "snmp"
    snmp.write_text("Ip: Forwarding\nIp: 1\n"
                    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors "
                    "IgnoredMulti MemErrors\nUdp: 10 1 2 9 2 0 0 0 0\n")
    snmp6 = tmp_path / "snmp6"
    snmp6.write_text("Udp6InDatagrams                 \t5\nUdp6RcvbufErrors 3\nIp6InReceives 100\n")
    got = udpstats.read_counters(str(snmp), str(snmp6))
    assert got["InDatagrams"] == 15 and got["RcvbufErrors"] == 5 and got["OutDatagrams"] == 9


def test_no_udp_rows_means_no_counters(tmp_path):
    (tmp_path / "snmp").write_text("Ip: Forwarding\nIp: 1\n")
    assert udpstats.read_counters(str(tmp_path / "snmp")) is None
    assert udpstats.read_counters(str(tmp_path / "absent")) is None


def test_a_receiver_that_never_reads_drops_and_the_kernel_counts_every_datagram_exactly():
    """Sent = queued at the receiver + dropped by it, to the datagram: loopback loses nothing
    else.  The receive buffer is the smallest the kernel allows, so most are dropped."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)      # the kernel rounds up to its minimum
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        before = udpstats.read_counters()
        drops_before = udpstats.socket_drops(rx)
        assert drops_before == 0
        sent = 500
        for seq in range(sent):
            tx.send(dg.encode(1, seq, 0, 1000))
        rx.setblocking(False)
        queued = 0
        while True:
            try:
                rx.recv(2048)
            except BlockingIOError:
                break
            queued += 1
        drops = udpstats.socket_drops(rx)
        after = udpstats.read_counters()
    finally:
        rx.close()
        tx.close()
    assert queued + drops == sent
    assert drops > sent // 2
    assert after["RcvbufErrors"] - before["RcvbufErrors"] >= drops   # the machine saw at least ours
    split = udpstats.attribute(drops, receiver_drops=drops, before=before, after=after)
    assert (split.receiver_buffer, split.sender_buffer, split.unexplained) == (drops, 0, 0)


@pytest.mark.parametrize("lost,rcv,snd,want", [(10, 4, 3, (4, 3, 3)), (5, 9, 0, (5, 0, 0)), (5, 2, 9, (2, 3, 0)),
                                               (0, 3, 3, (0, 0, 0))])
def test_attribution_never_explains_more_than_was_lost(lost, rcv, snd, want):
    split = udpstats.attribute(lost, receiver_drops=rcv, sender_drops=snd)
    assert (split.receiver_buffer, split.sender_buffer, split.unexplained) == want

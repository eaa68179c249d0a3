"""The fast road of the default table (socktools.sockets.plain) prints what the general one does.

The general road is netlink.inet_parser -> read_sockets' sort and filters -> report.one_shot;
the fast one parses the same reply bytes straight into formatted rows.  Both are fed the same
datagrams (every state, IPv4 and IPv6, 0.0.0.0 vs [::] vs *, queues of every width) and, on
loopback, the same kernel-filtered dump of sockets this test opens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import struct

import pytest

from tests.conftest import socktools_cmd
from test_sockets_units import _inet_msg, _nlmsg, _rta

from socktools import __main__ as entry_point
from socktools.kernel import socktable
from socktools.kernel.socktable import bytecode, entry, netlink
from socktools.kernel.socktable.filters import SocketFilter
from socktools.sockets import plain, report
from socktools.sockets.config import SocketsConfig


def _general(dumps: dict) -> str:
    """What `socktools sockets` renders through the general road for these reply datagrams."""
    got: list = []
    for datagrams in dumps.values():
        parse = netlink.inet_parser(socket.IPPROTO_TCP, extensions=False)   # one per dump
        for data in datagrams:
            netlink.parse_datagram(data, parse, got.append)
    got.sort(key=socktable._inet_key)
    return report.one_shot(got, SocketsConfig(), source="netlink")


def _fast(dumps: dict) -> str:
    c = plain.Collector()
    for family, datagrams in dumps.items():
        c.dump(family)
        done = [c.feed(d) for d in datagrams]
        assert done[-1] is True and not any(done[:-1])
    return plain.render(c.sorted_rows())


def _every_case() -> list:
    v4 = [_inet_msg(state=s, sport=1000 + s % 3, dport=5000 - s, rq=s * 7, wq=s * 1000)
          for s in range(1, 14)]                    # every state, NEW-SYN-RECV and beyond
    v4 += [_inet_msg(state=10, src="0.0.0.0", dst="0.0.0.0", sport=22, dport=0, rq=3, wq=4096),
           _inet_msg(state=7, src="0.0.0.0", dst="0.0.0.0", sport=0, dport=0),
           _inet_msg(state=1, src="10.1.2.3", dst="10.9.9.9", sport=80, dport=0),  # ":0", not ":*"
           _inet_msg(state=1, sport=1001, dport=4999, rq=123456789),             # a tie: kernel order
           _inet_msg(state=99, sport=7)]                                          # STATE-99
    v6 = [_inet_msg(family=socket.AF_INET6, state=10, src="::", dst="::", sport=22, dport=0,
                    attrs=_rta(netlink.INET_DIAG_SKV6ONLY, b"\1")),                # [::]:22
          _inet_msg(family=socket.AF_INET6, state=10, src="::", dst="::", sport=8080, dport=0,
                    attrs=_rta(netlink.INET_DIAG_SKV6ONLY, b"\0")),                # *:8080
          _inet_msg(family=socket.AF_INET6, state=7, src="::", dst="::", sport=0, dport=0,
                    attrs=_rta(5, b"\0\0\0\0") + _rta(netlink.INET_DIAG_SKV6ONLY, b"\0")),  # *:*
          _inet_msg(family=socket.AF_INET6, state=10, src="::", dst="::", sport=9, dport=0),  # no attr
          _inet_msg(family=socket.AF_INET6, state=1, src="::1", dst="::1", sport=1001, dport=4999,
                    attrs=_rta(8, b"\0\0\0\0")),
          _inet_msg(family=socket.AF_INET6, state=6, src="::ffff:127.0.0.1", dst="fe80::1",
                    sport=443, dport=61000)]
    done = _nlmsg(netlink.NLMSG_DONE, b"\0\0\0\0")
    # Two dumps (IPv4 then IPv6), each split over datagrams as the kernel splits a long one.
    return {socket.AF_INET: [b"".join(v4[:5]), b"".join(v4[5:]) + done],
            socket.AF_INET6: [b"".join(v6[:2]), b"".join(v6[2:]) + done]}


def test_fast_road_renders_every_state_and_address_like_the_general_one():
    datagrams = _every_case()
    fast = _fast(datagrams)
    assert fast == _general(datagrams)
    for cell in ("[::]:22 ", "*:8080 ", "*:* ", "[::]:9 ", "0.0.0.0:*", "10.1.2.3:80 ", "10.9.9.9:0",
                 "STATE-99", "NEW-SYN-RECV", "BOUND-INACTIVE", "123456789", "[fe80::1]:61000"):
        assert cell in fast, cell
    assert fast.endswith("\n\n" + plain.LISTEN_NOTE)


def test_fast_road_without_listeners_has_no_note_and_rejects_what_it_does_not_know():
    one = {socket.AF_INET: [_inet_msg(state=1) + _nlmsg(netlink.NLMSG_DONE, b"\0\0\0\0")]}
    assert _fast(one) == _general(one) and "LISTEN rows" not in _fast(one)
    with pytest.raises(plain._Unusual):          # an errno: the general road words it
        plain.Collector().feed(_nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", -2) + b"\0" * 16))
    assert plain.Collector().feed(_inet_msg(state=1)) is False       # no NLMSG_DONE yet


def test_fast_road_uses_the_netlink_modules_numbers():
    assert plain.request(socket.AF_INET6, 0x400, b"\1\2\3\4") == netlink.inet_request(
        socket.AF_INET6, socket.IPPROTO_TCP, states=0x400, bytecode=b"\1\2\3\4")
    assert plain._NAMES[:14] == [entry.STATES.get(i) or f"STATE-{i}" for i in range(14)]
    assert (plain.SOCK_DIAG_BY_FAMILY, plain.NETLINK_SOCK_DIAG, plain.INET_DIAG_SKV6ONLY) == (
        netlink.SOCK_DIAG_BY_FAMILY, netlink.NETLINK_SOCK_DIAG, netlink.INET_DIAG_SKV6ONLY)


@pytest.fixture
def loopback_scene():
    """On one port: a 0.0.0.0 listener, a [::] v6-only one and, on another port, a dual-stack
    [::] one; an accepted IPv4 pair with unread bytes, an IPv6 pair, a TIME-WAIT and a
    CLOSE-WAIT/FIN-WAIT-2 pair."""
    try:
        socktable.resolve_source("netlink")
    except socktable.SocketTableUnavailable as exc:
        pytest.skip(f"netlink socket table not available here: {exc}")
    socks = []
    l4 = socket.create_server(("0.0.0.0", 0))
    port = l4.getsockname()[1]
    socks.append(l4)
    try:
        l6 = socket.socket(socket.AF_INET6)
        l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        l6.bind(("::", port))
        l6.listen()
        socks.append(l6)
        dual = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        socks.append(dual)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    pairs = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        c = socket.create_connection((host, port))
        s = (l4 if family == socket.AF_INET else l6).accept()[0]
        pairs.append((c, s))
        socks += [c, s]
    pairs[0][0].sendall(b"x" * 777)
    tw_c = socket.create_connection(("127.0.0.1", port))
    tw_s = l4.accept()[0]
    tw_c.close()                                        # the closer ends in TIME-WAIT
    tw_s.close()
    half_c = socket.create_connection(("127.0.0.1", port))
    half_s = l4.accept()[0]
    half_c.shutdown(socket.SHUT_WR)                     # FIN-WAIT-2 here, CLOSE-WAIT there
    socks += [half_c, half_s]
    yield port, dual.getsockname()[1]
    for s in socks:
        s.close()


def _both(match: SocketFilter) -> tuple:
    general = report.one_shot(socktable.read_sockets(match=match), SocketsConfig(filter=match),
                              source="netlink")
    got = plain.read(match.kernel_states, bytecode.filter_bytecode(match))
    return plain.render(got.sorted_rows()), general


@pytest.mark.parametrize("make", [
    lambda p, d: SocketFilter(port=p),
    lambda p, d: SocketFilter(sport=p),
    lambda p, d: SocketFilter(states=("connected",), port=p),
    lambda p, d: SocketFilter(states=("listen",), src=(socktable.parse_address(f":{p}"),
                                                        socktable.parse_address(f"[::]:{d}"))),
    lambda p, d: SocketFilter(dst=(socktable.parse_address("127.0.0.0/8"),), dport=p),
], ids=["port", "sport", "connected", "listeners", "dst"])
def test_fast_road_on_loopback_equals_the_general_one_with_kernel_filters(loopback_scene, make):
    port, dual = loopback_scene
    fast, general = _both(make(port, dual))
    if fast != general:                 # a socket of ours changed state between the two reads
        fast, general = _both(make(port, dual))
    assert fast == general
    assert len(fast.splitlines()) >= 2


def test_loopback_table_shows_each_address_kind(loopback_scene):
    port, dual = loopback_scene
    fast, _ = _both(SocketFilter(port=port))
    # (No TIME-WAIT check: a machine at net.ipv4.tcp_max_tw_buckets creates none; the synthetic
    # test above covers that state.)
    assert f"0.0.0.0:{port} " in fast and f"[::]:{port} " in fast
    assert "CLOSE-WAIT" in fast and "FIN-WAIT-2" in fast and f"[::1]:{port}" in fast
    assert any(line.split()[1] == "777" for line in fast.splitlines()[1:] if line)
    listeners, _ = _both(SocketFilter(sport=dual))
    assert f"*:{dual} " in listeners


def test_only_the_bare_command_takes_the_fast_road(monkeypatch):
    monkeypatch.setattr(plain, "table_text", lambda: "TABLE")
    assert entry_point._plain_sockets(["socktools", "sockets"]) == "TABLE\n"
    for argv in (["socktools", "sockets", "-t"], ["socktools", "sockets", "--json"],
                 ["socktools", "ping"], ["socktools"]):
        assert entry_point._plain_sockets(argv) is None
    monkeypatch.setattr(plain, "table_text", lambda: None)
    assert entry_point._plain_sockets(["socktools", "sockets"]) is None


def test_a_sockets_variable_sends_the_bare_command_to_the_switchboard(monkeypatch):
    """SOCKTOOLS_SOCKETS_JSON=1 socktools sockets must print JSON, so the short road steps aside."""
    monkeypatch.setattr(plain, "table_text", lambda: "TABLE")
    monkeypatch.setenv("SOCKTOOLS_SOCKETS_JSON", "1")
    assert entry_point._plain_sockets(["socktools", "sockets"]) is None
    out = subprocess.run(socktools_cmd("sockets"), capture_output=True, text=True,
                         env=dict(os.environ, SOCKTOOLS_SOCKETS_JSON="1"), timeout=60)
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), dict)

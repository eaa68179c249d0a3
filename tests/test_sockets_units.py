"""The sans-I/O parts of `sockets`: netlink bytes, /proc text, filters, rates, summary, rendering.

No socket is opened here: netlink replies are built byte by byte from the kernel's layouts.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.kernel.socktable import bytecode, netlink, proc
from socktools.kernel.socktable.entry import STATE_GROUPS, Owner, SocketEntry, state_mask
from socktools.kernel.socktable.filters import SocketFilter, parse_address
from socktools.kernel.tcpinfo import OFFSETS, parse_tcp_info, struct_size
from socktools.sockets import report
from socktools.errors import OptionError
from socktools.sockets.config import SocketsConfig
from socktools.sockets.results import RateTracker, summarize


# --------------------------------------------------------------------------- netlink bytes
def _nlmsg(mtype: int, payload: bytes) -> bytes:
    msg = struct.pack("=IHHII", 16 + len(payload), mtype, 2, 1, 0) + payload
    return msg + b"\0" * (-len(msg) % 4)


def _rta(atype: int, payload: bytes) -> bytes:
    a = struct.pack("=HH", 4 + len(payload), atype) + payload
    return a + b"\0" * (-len(a) % 4)


def _inet_msg(*, family=socket.AF_INET, state=1, timer=0, retrans=0, src="127.0.0.1", sport=8080,
              dst="127.0.0.2", dport=40000, cookie=(7, 1), expires=0, rq=0, wq=0, uid=1000,
              inode=4242, attrs=b"") -> bytes:
    def raw(a):
        return socket.inet_pton(family, a).ljust(16, b"\0")
    body = (struct.pack("=BBBB", family, state, timer, retrans) + struct.pack("!HH", sport, dport)
            + raw(src) + raw(dst) + struct.pack("=III", 0, *cookie)
            + struct.pack("=IIIII", expires, rq, wq, uid, inode))
    assert len(body) == 72
    return _nlmsg(netlink.SOCK_DIAG_BY_FAMILY, body + attrs)


def _tcp_info(**values) -> bytes:
    buf = bytearray(struct_size("snd_wnd"))
    for name, v in values.items():
        code = {"bytes_acked": "Q", "bytes_received": "Q", "delivery_rate": "Q"}.get(name, "I")
        struct.pack_into("=" + code, buf, OFFSETS[name], v)
    return bytes(buf)


def _parse_all(data: bytes, parse):
    out = []
    try:
        for off, end in netlink.messages(data):
            out.append(parse(data, off, end))
    except netlink.DumpDone:
        out.append("DONE")
    return out


def test_inet_request_layout():
    req = netlink.inet_request(socket.AF_INET6, socket.IPPROTO_UDP, states=1 << 10,
                               ext=netlink.EXT_INFO | netlink.EXT_SKMEMINFO)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags) == (len(req), 20, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP)
    assert len(req) == 16 + 8 + 48                   # nlmsghdr + inet_diag_req_v2
    family, protocol, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, protocol, states) == (socket.AF_INET6, socket.IPPROTO_UDP, 1 << 10)
    assert ext == (1 << 1) | (1 << 6)                # INET_DIAG_INFO=2, SKMEMINFO=7
    ureq = netlink.unix_request()
    assert len(ureq) == 16 + 24
    assert struct.unpack_from("=BBHIIIII", ureq, 16)[5] == 0x01 | 0x04 | 0x10 | 0x40


def test_inet_message_decoding_with_extensions():
    info = _tcp_info(bytes_acked=5001, bytes_received=77, segs_out=12, segs_in=9, rtt=250,
                     snd_cwnd=10)
    skmem = struct.pack("=9I", 1, 131072, 3, 16384, 5, 6, 7, 8, 9)
    data = (_inet_msg(state=1, timer=1, retrans=2, expires=204, rq=5, wq=6, cookie=(7, 1),
                      attrs=_rta(8, b"\0") + _rta(netlink.INET_DIAG_INFO, info)
                      + _rta(netlink.INET_DIAG_SKMEMINFO, skmem))
            + _nlmsg(netlink.NLMSG_DONE, b"\0\0\0\0"))
    e, done = _parse_all(data, netlink.inet_parser(socket.IPPROTO_TCP, extensions=True))
    assert done == "DONE"
    assert (e.proto, e.local, e.remote, e.state) == ("tcp", ("127.0.0.1", 8080),
                                                    ("127.0.0.2", 40000), "ESTABLISHED")
    assert (e.recv_q, e.send_q, e.uid, e.inode, e.cookie) == (5, 6, 1000, 4242, 7 | (1 << 32))
    assert e.tcp_info["bytes_acked"] == 5001 and e.tcp_info["rtt"] == 250
    assert "rcv_wnd" in e.tcp_info.missing           # a 5.4-sized struct: later fields missing
    assert tuple(e.timer) == ("on", 204, 2)          # ss -o: timer:(on,204ms,2)
    assert e.skmem.rcvbuf == 131072 and e.skmem.render().startswith("r1,rb131072,t3,tb16384")


def test_inet_message_without_extensions_skips_attributes_but_reads_v6only():
    parse = netlink.inet_parser(socket.IPPROTO_UDP, extensions=False)
    data = (_inet_msg(family=socket.AF_INET6, state=7, src="::", dst="::", sport=53, dport=0,
                      attrs=_rta(netlink.INET_DIAG_SKV6ONLY, b"\0")
                      + _rta(netlink.INET_DIAG_INFO, b"junk"))
            + _inet_msg(family=socket.AF_INET6, state=7, src="::1", dst="::", sport=5353, dport=0,
                        attrs=_rta(netlink.INET_DIAG_INFO, b"junk")))
    wildcard, one = _parse_all(data, parse)
    assert wildcard.proto == "udp6" and wildcard.state == "UNCONN" and wildcard.v6only is False
    assert wildcard.tcp_info is None and one.v6only is None and one.local == ("::1", 5353)
    assert report.addr(wildcard, "local") == "*:53"          # dual-stack: ss prints '*'
    assert report.addr(wildcard, "remote") == "[::]:*"


def test_fast_walk_equals_message_by_message_parsing():
    """The plain table's inlined loop and the per-message parser agree, across a `[::]` socket
    (which needs its attributes) and the NLMSG_DONE that ends the dump."""
    data = (_inet_msg(sport=1) + _inet_msg(sport=2, state=6, cookie=(9, 0), inode=0)
            + _inet_msg(family=socket.AF_INET6, src="::", dst="::", state=10, sport=3, dport=0,
                        attrs=_rta(netlink.INET_DIAG_SKV6ONLY, b"\1"))
            + _inet_msg(family=socket.AF_INET6, src="::1", dst="::1", sport=4)
            + _nlmsg(netlink.NLMSG_DONE, b"\0\0\0\0"))
    fast, slow = [], []
    parse = netlink.inet_parser(socket.IPPROTO_TCP, extensions=False)
    assert hasattr(parse, "walk")
    assert netlink.parse_datagram(data, parse, fast.append) is True
    assert _parse_all(data, netlink.inet_parser(socket.IPPROTO_TCP, extensions=False)) == slow + [
        *fast, "DONE"]
    assert [e.local[1] for e in fast] == [1, 2, 3, 4] and fast[2].v6only is True
    assert fast[1].state == "TIME-WAIT" and fast[1].cookie == 9 and fast[0].cookie == 7 | (1 << 32)
    assert netlink.parse_datagram(data[:len(data) - 20], parse, []. append) is False   # no DONE yet


def test_netlink_errors_and_malformed_replies():
    err = _nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + b"\0" * 16)
    with pytest.raises(OSError) as info:
        list(netlink.messages(err))
    assert info.value.errno == errno.ENOENT
    with pytest.raises(netlink.DumpDone):               # an ACK (error 0) ends the reply
        list(netlink.messages(_nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)))
    bad = struct.pack("=IHHII", 8, 20, 0, 0, 0)          # shorter than its own header
    with pytest.raises(OSError) as info:
        list(netlink.messages(bad))
    assert info.value.errno == errno.EPROTO


def test_unix_message_decoding():
    def msg(stype, state, ino, attrs):
        return _nlmsg(netlink.SOCK_DIAG_BY_FAMILY,
                      struct.pack("=BBBBIII", socket.AF_UNIX, stype, state, 0, ino, 3, 0) + attrs)
    data = (msg(socket.SOCK_STREAM, 10, 100, _rta(netlink.UNIX_DIAG_NAME, b"/run/app.sock")
                + _rta(netlink.UNIX_DIAG_RQLEN, struct.pack("=II", 2, 128))
                + _rta(netlink.UNIX_DIAG_UID, struct.pack("=I", 33)))
            + msg(socket.SOCK_DGRAM, 7, 101, _rta(netlink.UNIX_DIAG_NAME, b"\0abstract"))
            + msg(socket.SOCK_SEQPACKET, 1, 102, _rta(netlink.UNIX_DIAG_PEER, struct.pack("=I", 103))))
    lst, dgram, seq = _parse_all(data, netlink.parse_unix)
    assert (lst.proto, lst.state, lst.local, lst.recv_q, lst.send_q, lst.uid) == \
        ("u_str", "LISTEN", ("/run/app.sock", 100), 2, 128, 33)
    assert (dgram.proto, dgram.state, dgram.local[0], dgram.uid) == ("u_dgr", "UNCONN", "@abstract", -1)
    assert (seq.proto, seq.remote, seq.local) == ("u_seq", ("*", 103), ("*", 102))
    assert report.addr(lst, "local") == "/run/app.sock 100" and report.addr(seq, "remote") == "* 103"


# --------------------------------------------------------------------------- /proc text
def _hex_addr(host, port, family=socket.AF_INET):
    raw = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def test_proc_inet_text():
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    line = (f"   0: {_hex_addr('127.0.0.1', 8080)} {_hex_addr('0.0.0.0', 0)} 0A 00000000:00000003 "
            f"00:00000000 00000000  1000        0 5555 1 0000000000000000 100 0 0 10 0\n")
    udp = (f"   1: {_hex_addr('::1', 53, socket.AF_INET6)} {_hex_addr('::', 0, socket.AF_INET6)} 07 "
           f"00000000:00000000 00:00000000 00000000     0        0 6666 2 0000000000000000 0\n")
    (lst,) = proc.parse_inet(head + line, "tcp", socket.AF_INET)
    assert (lst.state, lst.local, lst.remote, lst.recv_q, lst.send_q, lst.uid, lst.inode) == \
        ("LISTEN", ("127.0.0.1", 8080), ("0.0.0.0", 0), 3, None, 1000, 5555)
    (u,) = proc.parse_inet(head + udp, "udp6", socket.AF_INET6)
    assert (u.state, u.local) == ("UNCONN", ("::1", 53))
    assert proc.parse_inet(head + line, "tcp", socket.AF_INET, frozenset({1})) == []


def test_proc_unix_text():
    text = ("Num       RefCount Protocol Flags    Type St Inode Path\n"
            "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/a b.sock\n"
            "0000000000000000: 00000002 00000000 00000000 0002 01 12346\n"
            "0000000000000000: 00000003 00000000 00000000 0001 03 12347 @abstract\n")
    a, b, c = proc.parse_unix(text)
    assert (a.proto, a.state, a.local) == ("u_str", "LISTEN", ("/run/a b.sock", 12345))
    assert (b.proto, b.state, b.local) == ("u_dgr", "UNCONN", ("*", 12346))
    assert (c.state, c.local[0]) == ("ESTABLISHED", "@abstract")
    assert [e.inode for e in proc.parse_unix(text, frozenset({10}))] == [12345]


# --------------------------------------------------------------------------- filters
# (The addresses below are data for the filters -- socket table rows, match terms -- never
# connected to: these tests open no socket.)
def _e(state="ESTABLISHED", local=("127.0.0.1", 80), remote=("10.1.2.3", 5000), proto="tcp", **kw):
    return SocketEntry(proto, local, remote, state, 0, 0, kw.pop("inode", 1), 0, **kw)


def test_state_groups_as_ss_defines_them():
    names = {"LISTEN": 10, "CLOSE": 7, "SYN-SENT": 2, "TIME-WAIT": 6, "SYN-RECV": 3}
    assert names["LISTEN"] not in STATE_GROUPS["CONNECTED"] and 7 not in STATE_GROUPS["CONNECTED"]
    assert STATE_GROUPS["SYNCHRONIZED"] == STATE_GROUPS["CONNECTED"] - {2}
    assert state_mask(["bucket"]) == {6, 3, 12}
    assert state_mask(["big"]) | state_mask(["bucket"]) == state_mask(["all"])
    assert state_mask(["estab", "time_wait"]) == {1, 6}
    assert state_mask(["syn-recv"]) == {3, 12}            # request sockets show as SYN-RECV
    with pytest.raises(ValueError, match="or a group: all, connected"):
        state_mask(["bogus"])
    assert SocketFilter(states=("connected",)).kernel_states == sum(1 << n for n in STATE_GROUPS["CONNECTED"])


@pytest.mark.parametrize("text,port,inside,outside", [
    ("127.0.0.1", None, "127.0.0.1", "127.0.0.2"),
    ("10.0.0.0/8", None, "10.200.1.1", "11.0.0.1"),
    ("10.0.0.0/8:5000", 5000, "10.1.2.3", "10.1.2.3"),
    ("[::1]:8080", 8080, "::1", "::2"),
    (":443", 443, "192.0.2.1", None),
    ("127.0.0.0/8", None, "::ffff:127.0.0.9", "::1"),   # an IPv4 peer of a dual-stack socket
])
def test_address_filters(text, port, inside, outside):
    m = parse_address(text)
    assert m.port == port
    assert m.matches(inside, port or 1, {})
    if outside is not None and port is None:
        assert not m.matches(outside, 1, {})
    if port is not None:
        assert not m.matches(inside, port + 1, {})


@pytest.mark.parametrize("bad", ["nonsense", "[::1", "1.2.3.4:99999", "[::1]x"])
def test_bad_address_filters_say_why(bad):
    with pytest.raises(ValueError, match=r"example|port|expected"):
        parse_address(bad)


def test_filter_apply():
    rows = [_e(), _e(local=("127.0.0.1", 81)), _e(remote=("192.0.2.1", 443)),
            _e(proto="u_str", local=("/x", 9), remote=("*", 0))]
    f = SocketFilter(dst=(parse_address("10.0.0.0/8"),), sport=80)
    assert f.apply(rows) == [rows[0]]
    assert SocketFilter(dport=443).apply(rows) == [rows[2]]
    assert SocketFilter(port=81).apply(rows) == [rows[1]]
    assert SocketFilter().apply(rows) == rows                 # no criterion: Unix kept too
    assert SocketFilter(src=(parse_address("127.0.0.1"),)).apply(rows) == rows[:3]


# --------------------------------------------------------------------------- kernel filter bytecode
def _kernel_audit(bc: bytes) -> bool:
    """inet_diag_bc_audit() and valid_cc() of net/ipv4/inet_diag.c, for S_COND/D_COND/JMP."""
    def valid_cc(length, cc):
        off = 0
        while length >= 0:
            if cc > length:
                return False
            if cc == length:
                return True
            yes = bc[off + 1]
            if yes < 4 or yes & 3:
                return False
            length -= yes
            off += yes
        return False
    off, length = 0, len(bc)
    while length > 0:
        code, yes, no = struct.unpack_from("=BBH", bc, off)
        min_len = 4
        if code in (7, 8):
            fam, prefix = bc[off + 4], bc[off + 5]
            min_len = 4 + 8 + {socket.AF_UNSPEC: 0, socket.AF_INET: 4, socket.AF_INET6: 16}[fam]
            if length < min_len or prefix > 8 * (min_len - 12):
                return False
        elif code != 1:
            return False
        if no < min_len or no > length + 4 or no & 3:
            return False
        if no < length and not valid_cc(len(bc), length - no):    # walks from the start
            return False
        if yes < min_len or yes > length + 4 or yes & 3:
            return False
        off += yes
        length -= yes
    return length == 0


def _kernel_run(bc: bytes, e: SocketEntry) -> bool:
    """inet_diag_bc_run() for S_COND/D_COND/JMP, on one entry."""
    off, length = 0, len(bc)
    while length > 0:
        code, yes_jump, no_jump = struct.unpack_from("=BBH", bc, off)
        ok = True
        if code == 1:
            ok = False
        else:
            fam, prefix, port = struct.unpack_from("=BBxxi", bc, off + 4)
            host, eport = e.local if code == 7 else e.remote
            addr = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            efam = socket.AF_INET6 if len(addr) == 16 else socket.AF_INET
            want = bc[off + 12:off + 12 + {0: 0, 2: 4, 10: 16}[fam]]
            bits = lambda raw: int.from_bytes(raw, "big") >> (8 * len(raw) - prefix) if prefix else 0  # noqa: E731
            if port != -1 and port != eport:
                ok = False
            elif fam not in (socket.AF_UNSPEC, efam):
                ok = (efam == socket.AF_INET6 and fam == socket.AF_INET
                      and addr[:12] == b"\0" * 10 + b"\xff\xff" and bits(addr[12:]) == bits(want))
            elif prefix:
                ok = bits(addr) == bits(want)
        off += yes_jump if ok else no_jump
        length -= yes_jump if ok else no_jump
    return length == 0


_HOSTS = ["127.0.0.1", "127.0.0.2", "10.1.2.3", "::1", "::ffff:127.0.0.1", "192.0.2.7"]


@pytest.mark.parametrize("f", [
    SocketFilter(port=80),
    SocketFilter(sport=80, dport=5000),
    SocketFilter(src=(parse_address("127.0.0.0/8"),)),
    SocketFilter(dst=(parse_address("10.0.0.0/8:5000"), parse_address("[::1]"), parse_address(":443"))),
    SocketFilter(src=(parse_address("127.0.0.1"), parse_address("127.0.0.2:81")), port=5000,
                 dst=(parse_address("192.0.2.0/24"), parse_address("10.1.2.3"))),
])
def test_kernel_bytecode_passes_the_audit_and_agrees_with_the_python_filter(f):
    bc = bytecode.filter_bytecode(f)
    assert bc and _kernel_audit(bc)
    entries = [_e(local=(a, lp), remote=(b, rp), proto="tcp6" if ":" in a + b else "tcp")
               for a in _HOSTS for b in _HOSTS for lp in (80, 81, 5000) for rp in (443, 5000, 80)
               if (":" in a) == (":" in b)]
    kept = [e for e in entries if _kernel_run(bc, e)]
    assert kept == f.apply(entries) and 0 < len(kept) < len(entries)


def test_no_filter_no_bytecode_and_the_request_carries_it():
    assert bytecode.filter_bytecode(SocketFilter(states=("listen",))) == b""
    bc = bytecode.filter_bytecode(SocketFilter(sport=22))
    req = netlink.inet_request(socket.AF_INET, socket.IPPROTO_TCP, bytecode=bc)
    alen, atype = struct.unpack_from("=HH", req, 16 + 56)
    assert (alen, atype, req[16 + 56 + 4:]) == (4 + len(bc), netlink.INET_DIAG_REQ_BYTECODE, bc)
    assert struct.unpack_from("=I", req)[0] == len(req)


# --------------------------------------------------------------------------- summary and rates
def _with_counters(e, rx, tx, si=0, so=0, rtt=100):
    info = parse_tcp_info(_tcp_info(bytes_received=rx, bytes_acked=tx, segs_in=si, segs_out=so, rtt=rtt))
    return e._replace(tcp_info=info)


def test_summary_line():
    entries = [_e("LISTEN"), _e("LISTEN"), _e(), _e("TIME-WAIT"), _e("CLOSE-WAIT"), _e("FIN-WAIT-2")]
    s = summarize(entries)
    assert s.render() == "Endpoints: 6  Established: 1  Listening: 2  Time Wait: 1  Close Wait: 1"
    assert s.to_dict()["time_wait"] == 1


def test_rates_new_and_closed():
    a = _e(cookie=1)
    b = _e(cookie=2, local=("127.0.0.1", 81))
    tr = RateTracker()
    first = tr.update(10.0, [_with_counters(a, 0, 1000, 1, 2), _with_counters(b, 0, 0)], read_s=0.01)
    assert first.interval is None and all(r.rate_in is None and r.mark == "" for r in first.rows)
    c = _e(cookie=3, local=("127.0.0.1", 82))
    second = tr.update(10.5, [_with_counters(a, 500, 6000, 11, 22), _with_counters(c, 100, 0)], read_s=0.02)
    assert second.interval == 0.5 and second.previous_read_s == 0.01 and second.read_s == 0.02
    rows = {r.entry.cookie: r for r in second.rows}
    assert (rows[1].rate_in, rows[1].rate_out) == (1000.0, 10000.0)
    assert (rows[1].segs_in_rate, rows[1].segs_out_rate) == (20.0, 40.0)
    assert rows[3].mark == "new" and rows[3].rate_in == 200.0     # born within the interval
    assert rows[2].mark == "closed" and rows[2].rate_in is None
    assert (second.new, second.closed) == (1, 1)
    third = tr.update(11.0, [_with_counters(a, 0, 0)])           # counters went backwards
    assert third.rows[0].rate_in is None and third.closed == 1     # c is gone now


def test_sort_orders():
    a = _with_counters(_e(cookie=1), 10, 10, rtt=900)
    b = _with_counters(_e(cookie=2), 5000, 5000, rtt=100)
    q = _e(cookie=3)._replace(recv_q=70000)
    for key, first in (("bytes", 2), ("rtt", 1), ("queue", 3)):
        tr = RateTracker(key)
        assert tr.update(0.0, [a, b, q]).rows[0].entry.cookie == first, key
    tr = RateTracker("rate")
    tr.update(0.0, [a, b])
    assert tr.update(1.0, [_with_counters(a, 10, 90000), _with_counters(b, 5000, 5001)]).rows[0].entry.cookie == 1


# --------------------------------------------------------------------------- rendering
def test_addresses_are_told_apart():
    v4 = _e("LISTEN", local=("0.0.0.0", 22), remote=("0.0.0.0", 0))
    v6 = _e("LISTEN", local=("::", 22), remote=("::", 0), proto="tcp6", v6only=True)
    assert (report.addr(v4, "local"), report.addr(v4, "remote")) == ("0.0.0.0:22", "0.0.0.0:*")
    assert (report.addr(v6, "local"), report.addr(v6, "remote")) == ("[::]:22", "[::]:*")
    assert report.addr(_e(local=("::1", 80), proto="tcp6"), "local") == "[::1]:80"


def test_table_alignment_and_columns():
    cfg = SocketsConfig(processes=True, info=True)
    e = _with_counters(_e(owners=(Owner(42, "nginx", 6),)), 2048, 1536)
    text = report.table([e], report.columns(cfg, netid=False))
    head, line = text.splitlines()
    assert head.split()[:5] == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port"]
    assert head.index("Recv-Q") + len("Recv-Q") == line.index("0") + 1     # right-aligned
    assert line.endswith("nginx(42,fd=6)") and "1.5k" in line and "2.0k" in line
    assert report.human(None) == "-" and report.human(1023) == "1023" and report.human(1 << 20) == "1.0M"


def test_watch_redraws_in_place_on_a_terminal(monkeypatch):
    from socktools.sockets import run
    reads = iter([[_with_counters(_e(cookie=1), 0, 0)], [_with_counters(_e(cookie=1), 0, 4096)],
                  [_with_counters(_e(cookie=1), 0, 8192)]])
    monkeypatch.setattr(run, "read", lambda config: next(reads))
    now = [100.0]
    config = SocketsConfig(watch=True, count=2, interval=1.0)
    frames = list(run.frames(config, clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s), wall=lambda: 0.0))
    assert [f.at for f in frames] == [101.0, 102.0] and [f.interval for f in frames] == [1.0, 1.0]
    out = [report.render_frame(f, config, tty=True) for f in frames]
    assert all(o.startswith(report.ANSI_HOME_CLEAR + "Endpoints: 1  Established: 1") for o in out)
    assert "4.0k" in out[0] and "4.0k" in out[1]            # 4096 bytes per 1 s, both frames
    piped = report.render_frame(frames[0], config, tty=False)
    assert piped.startswith("Endpoints: 1") and piped.endswith("\n")
    doc = report.frame_document(frames[0], source="proc")
    assert doc["sockets"][0]["rate_out"] == 4096.0 and doc["source"] == "proc"
    assert doc["interval_s"] == 1.0 and doc["summary"]["established"] == 1


def test_config_validation():
    with pytest.raises(OptionError, match="needs --watch") as info:
        SocketsConfig(count=3)
    assert info.value.option == "count"
    with pytest.raises(OptionError, match="at least 0.1s"):
        SocketsConfig(watch=True, interval=0.01)
    assert SocketsConfig(sort="rtt").wants_tcp_info and not SocketsConfig(sort="queue").wants_tcp_info


@pytest.mark.parametrize("args,option", [
    (["--count", "2"], "--count"), (["--watch", "--interval", "1ms"], "--interval"),
    (["--dst", "nope"], "--dst"), (["--state", "bogus"], "--state"),
    (["--listen", "--state", "estab"], "--listen"), (["--sort", "size"], "--sort"),
    (["--sort", "rate"], "--sort"),
])
def test_bad_options_are_usage_errors(args, option):
    result = CliRunner().invoke(main, ["sockets", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output


def test_every_help_example_runs():
    """The examples in `sockets --help` are real: each parses and runs (a watch for one refresh)."""
    runner = CliRunner()
    text = runner.invoke(main, ["sockets", "--help"]).output
    examples = [line.split("#")[0].split()[2:] for line in text.splitlines()
                if line.strip().startswith("socktools sockets")]
    assert len(examples) >= 5
    for args in examples:
        if "--watch" in args:
            args = [a for a in args if a not in ("--count", "3")] + ["--count", "1", "--interval", "0.1s"]
        result = runner.invoke(main, ["sockets", *args])
        assert result.exit_code == 0, (args, result.output)

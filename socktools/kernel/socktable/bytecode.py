"""inet_diag bytecode: the socket filter the kernel runs during a dump, as ss compiles it.

Pure: a :class:`~.filters.SocketFilter` in, bytes out (checked in the tests
against an emulation of the kernel's audit and interpreter).
"""

from __future__ import annotations

import socket
import struct

# inet_diag bytecode (the filter ss compiles from "dst 10.0.0.0/8 sport = :80"): the kernel runs
# it on each socket and only sends those it accepts, so a filtered read of a machine with
# 300,000 sockets costs what the matching ones cost.
INET_DIAG_BC_JMP, INET_DIAG_BC_S_COND, INET_DIAG_BC_D_COND = 1, 7, 8
_BC_OP = struct.Struct("=BBH")                  # code, yes, no (byte offsets to jump by)
_HOSTCOND = struct.Struct("=BBxxi")             # family, prefix_len, pad, port (-1: any)


def filter_bytecode(match) -> bytes:
    """The bytecode for a :class:`~.filters.SocketFilter`'s ports and addresses (b"" if none).

    Each test is a host condition (S_COND / D_COND): a family and prefix
    (AF_UNSPEC/0: any address; an IPv4 prefix also matches v4-mapped IPv6
    peers) and a port (-1: any).  A test that holds falls through to the next
    op, one that fails jumps by ``no``; past the end + 4 is the kernel's
    "reject".  Groups are and-ed; the alternatives of a group (``--src A --src
    B``) are or-ed the way ss compiles ``A or B``: ``[A][JMP][B]``, where A's
    failure lands on B, and A's success on a JMP over B.  (The kernel's audit
    only accepts jump targets it can reach by falling through, hence the JMP.)
    """
    any_host = (socket.AF_UNSPEC, 0, b"")
    groups: list[list[tuple]] = []
    if match.port is not None:
        groups.append([(INET_DIAG_BC_S_COND, *any_host, match.port),
                       (INET_DIAG_BC_D_COND, *any_host, match.port)])
    if match.sport is not None:
        groups.append([(INET_DIAG_BC_S_COND, *any_host, match.sport)])
    if match.dport is not None:
        groups.append([(INET_DIAG_BC_D_COND, *any_host, match.dport)])
    for code, side in ((INET_DIAG_BC_S_COND, match.src), (INET_DIAG_BC_D_COND, match.dst)):
        if side:
            alts = []
            for m in side:
                port = -1 if m.port is None else m.port
                if m.network is None:
                    alts.append((code, *any_host, port))
                else:
                    fam = socket.AF_INET if m.network.version == 4 else socket.AF_INET6
                    alts.append((code, fam, m.network.prefixlen, m.network.network_address.packed,
                                 port))
            groups.append(alts)
    if not groups:
        return b""

    def cond_size(alt) -> int:
        return 4 + 8 + len(alt[3])              # op + hostcond + address

    def group_size(group) -> int:
        return sum(cond_size(a) for a in group) + 4 * (len(group) - 1)     # + the JMPs
    total = sum(group_size(g) for g in groups)
    out, off = bytearray(), 0
    for group in groups:
        end = off + group_size(group)
        for i, (code, fam, prefix, addr, port) in enumerate(group):
            n = cond_size(group[i])
            last = i == len(group) - 1
            no = total - off + 4 if last else n + 4      # reject, or the next alternative
            out += _BC_OP.pack(code, n, no) + _HOSTCOND.pack(fam, prefix, port) + addr
            off += n
            if not last:
                out += _BC_OP.pack(INET_DIAG_BC_JMP, 4, end - off)
                off += 4
    return bytes(out)

"""Classic BPF: programs for the common filters, libpcap for the rest, and an interpreter.

The kernel runs the filter on every packet before it is queued to the
capture socket, so unwanted packets never cost a system call or a Python
object.  ``tcp port P`` (``--port``) and "everything" are built here, by
hand, so the usual case works without libpcap; :func:`tcp_port_program`
emits the same instruction sequence ``tcpdump -d 'tcp port P'`` prints.  Any
other expression (``--filter``) is compiled by libpcap through scapy.

The same programs filter packets read from a file (``-r``): :func:`run` is a
small interpreter for the classic BPF instruction set, so ``--port`` and
``--filter`` mean exactly the same thing live and offline.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence

from socktools.capture import dissect as d
from socktools.capture.common import DEFAULT_SNAPLEN, FilterError, LibpcapMissing, LIBPCAP_PACKAGE

__all__ = ["Insn", "Program", "tcp_port_program", "port_program", "udp_program", "accept_all", "drop_outgoing", "compile_expression",
           "build", "run", "pack", "PACKET_OUTGOING"]

Insn = tuple  # (code, jt, jf, k), as struct sock_filter
Program = list

# Instruction classes, sizes, modes and operations (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X, A = 0x00, 0x08, 0x10
TAX, TXA = 0x00, 0x80

#: Ancillary data: loads at SKF_AD_OFF + n read socket-buffer metadata, not packet bytes.
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
PACKET_OUTGOING = 4

_U32 = 0xFFFFFFFF


def _assemble(items: Sequence) -> Program:
    """Resolve symbolic jump targets: items are (code, jt, jf, k) or a label string."""
    labels, pos = {}, 0
    for item in items:
        if isinstance(item, str):
            labels[item] = pos
        else:
            pos += 1
    out, pc = [], 0
    for item in items:
        if isinstance(item, str):
            continue
        code, jt, jf, k = item
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        out.append((code, jt, jf, k & _U32))
        pc += 1
    return out


def accept_all(snaplen: int = DEFAULT_SNAPLEN) -> Program:
    return [(RET | K, 0, 0, snaplen)]


_TCP, _UDP, _IPV6_FRAGMENT = 6, 17, 44


def tcp_port_program(port: int, linktype: int = d.LINKTYPE_ETHERNET,
                     snaplen: int = DEFAULT_SNAPLEN) -> Program:
    """``tcp port PORT`` for a link type: IPv4 (first fragments only) and IPv6, either port.

    Like libpcap, IPv6 is matched only when TCP is the first next-header
    (no extension headers) — what every TCP stack sends on loopback.
    """
    return port_program(port, linktype, snaplen, proto=_TCP)


def _network(linktype: int) -> tuple:
    """Where the network header starts, and what says which one it is."""
    if linktype == d.LINKTYPE_ETHERNET:
        return 14, ("ethertype", 12)
    if linktype == d.LINKTYPE_LINUX_SLL:
        return 16, ("ethertype", 14)
    if linktype == d.LINKTYPE_LINUX_SLL2:
        return 20, ("ethertype", 0)
    if linktype in (d.LINKTYPE_RAW, 12, 14):
        return 0, ("version", 0)
    raise FilterError(f"sniff has no built-in filter for link type {linktype} "
                      f"({d.LINKTYPE_NAMES.get(linktype, 'unknown')}); use --filter with libpcap")


def udp_program(linktype: int = d.LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN) -> Program:
    """``udp`` (``sniff --udp`` without a port), as libpcap compiles it: IPv4 protocol 17 (every
    fragment), IPv6 next header 17 directly or after a fragment header."""
    net, kind = _network(linktype)
    if kind[0] == "ethertype":
        head = [(LD | H | ABS, 0, 0, kind[1]), (JMP | JEQ | K, 0, "not4", d.ETH_P_IP)]
        is_v6 = (JMP | JEQ | K, 0, "drop", d.ETH_P_IPV6)
    else:
        head = [(LD | B | ABS, 0, 0, net), (ALU | RSH | K, 0, 0, 4), (JMP | JEQ | K, 0, "not4", 4)]
        is_v6 = (JMP | JEQ | K, 0, "drop", 6)
    return _assemble(head + [
        (LD | B | ABS, 0, 0, net + 9),                 # protocol
        (JMP | JEQ | K, "accept", "drop", _UDP),
        "not4",
        is_v6,
        (LD | B | ABS, 0, 0, net + 6),                 # next header
        (JMP | JEQ | K, "accept", 0, _UDP),
        (JMP | JEQ | K, 0, "drop", _IPV6_FRAGMENT),
        (LD | B | ABS, 0, 0, net + 40),                # the fragment header's next header
        (JMP | JEQ | K, "accept", "drop", _UDP),
        "accept",
        (RET | K, 0, 0, snaplen),
        "drop",
        (RET | K, 0, 0, 0),
    ])


def port_program(port: int, linktype: int = d.LINKTYPE_ETHERNET,
                 snaplen: int = DEFAULT_SNAPLEN, *, proto: int = _TCP) -> Program:
    """``tcp port PORT`` (``proto`` 6) or ``udp port PORT`` (17): the same program libpcap
    emits, the protocol number aside."""
    if not 0 <= port <= 65535:
        raise ValueError("port out of range")
    net, kind = _network(linktype)
    if kind[0] == "ethertype":
        head = [(LD | H | ABS, 0, 0, kind[1]), (JMP | JEQ | K, 0, "not6", d.ETH_P_IPV6)]
        is_v4 = (JMP | JEQ | K, 0, "drop", d.ETH_P_IP)
    else:   # raw IP: the version nibble says which
        head = [(LD | B | ABS, 0, 0, net), (ALU | RSH | K, 0, 0, 4), (JMP | JEQ | K, 0, "not6", 6)]
        is_v4 = (JMP | JEQ | K, 0, "drop", 4)
    return _assemble(head + [
        (LD | B | ABS, 0, 0, net + 6),                 # next header
        (JMP | JEQ | K, 0, "drop", proto),
        (LD | H | ABS, 0, 0, net + 40),                # source port
        (JMP | JEQ | K, "accept", 0, port),
        (LD | H | ABS, 0, 0, net + 42),                # destination port
        (JMP | JEQ | K, "accept", "drop", port),
        "not6",
        is_v4,
        (LD | B | ABS, 0, 0, net + 9),                 # protocol
        (JMP | JEQ | K, 0, "drop", proto),
        (LD | H | ABS, 0, 0, net + 6),                 # flags + fragment offset
        (JMP | JSET | K, "drop", 0, 0x1FFF),           # a later fragment has no ports
        (LDX | B | MSH, 0, 0, net),                    # X = IPv4 header length
        (LD | H | IND, 0, 0, net),                     # source port
        (JMP | JEQ | K, "accept", 0, port),
        (LD | H | IND, 0, 0, net + 2),                 # destination port
        (JMP | JEQ | K, "accept", "drop", port),
        "accept",
        (RET | K, 0, 0, snaplen),
        "drop",
        (RET | K, 0, 0, 0),
    ])


def drop_outgoing(program: Program) -> Program:
    """Prefix ``program`` so it rejects the outgoing copy of each packet.

    On loopback every packet is seen twice by a packet socket — once leaving
    (PACKET_OUTGOING) and once arriving — and showing it once is the point.
    Only used when the kernel lacks PACKET_IGNORE_OUTGOING (before 4.20).
    """
    return [(LD | W | ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & _U32),
            (JMP | JEQ | K, 0, 1, PACKET_OUTGOING),
            (RET | K, 0, 0, 0)] + list(program)


def drop_loopback_outgoing(program: Program, lo_ifindex: int) -> Program:
    """Prefix ``program`` so it rejects the outgoing copy of packets on loopback only.

    For ``-i any``: real interfaces' outgoing packets are what this host sent
    and must stay; on ``lo`` the same packet also arrives, so one copy is enough.
    """
    return [(LD | W | ABS, 0, 0, (SKF_AD_OFF + SKF_AD_IFINDEX) & _U32),
            (JMP | JEQ | K, 0, 3, lo_ifindex),
            (LD | W | ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & _U32),
            (JMP | JEQ | K, 0, 1, PACKET_OUTGOING),
            (RET | K, 0, 0, 0)] + list(program)


def reject_all() -> Program:
    return [(RET | K, 0, 0, 0)]


def compile_expression(expression: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> Program:
    """Compile a pcap-filter expression with libpcap (through scapy).

    scapy compiles for a 65,535-byte snap length, one short of a full loopback
    frame (MTU 65536 + 14), so the accept value is set to ``snaplen`` — the
    value libpcap itself would emit for a handle opened with that snap length.
    """
    from socktools.capture import _scapy
    try:
        program = _scapy.compile_expression(expression, linktype)
        return [(RET | K, 0, 0, snaplen) if code == RET | K and k else (code, jt, jf, k)
                for code, jt, jf, k in program]
    except ImportError:
        raise LibpcapMissing(
            f"--filter needs libpcap to compile {expression!r}, and it is not installed "
            f"(Debian/Ubuntu: apt-get install {LIBPCAP_PACKAGE}); --port P works without it") from None
    except ValueError as exc:
        raise FilterError(f"bad --filter: {exc}") from None


def build(*, port: Optional[int], expression: Optional[str], linktype: int,
          snaplen: int = DEFAULT_SNAPLEN, udp: bool = False) -> tuple[Program, str]:
    """The program for the user's filter choice and its text (for the header line);
    ``udp`` (``--udp``): ``udp port P``, or ``udp`` without a port."""
    if expression:
        return compile_expression(expression, linktype, snaplen), expression
    if udp:
        if port is not None:
            return port_program(port, linktype, snaplen, proto=_UDP), f"udp port {port}"
        return udp_program(linktype, snaplen), "udp"
    if port is not None:
        return tcp_port_program(port, linktype, snaplen), f"tcp port {port}"
    return accept_all(snaplen), ""


def pack(program: Program) -> bytes:
    """The program as an array of ``struct sock_filter`` (for SO_ATTACH_FILTER)."""
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def run(program: Program, frame: bytes, pkttype: int = 0) -> int:
    """Run a classic BPF program on ``frame``; returns the accepted length (0 = drop).

    Implements the full classic instruction set, with the ``pkttype``
    ancillary load; an out-of-bounds packet load rejects the packet, as the
    kernel does.
    """
    a = x = 0
    mem = [0] * 16
    pc = 0
    n = len(frame)
    plen = len(program)
    while pc < plen:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls == LD or cls == LDX:
            mode, size = code & 0xE0, code & 0x18
            if mode == IMM:
                val = k
            elif mode == LEN:
                val = n
            elif mode == MEM:
                val = mem[k & 15]
            elif mode == MSH:
                if k >= n:
                    return 0
                val = (frame[k] & 0x0F) * 4
            else:
                off = k if mode == ABS else (x + k) & _U32
                if off >= 0x80000000:   # negative: ancillary data
                    if off == (SKF_AD_OFF + SKF_AD_PKTTYPE) & _U32:
                        val = pkttype
                    else:
                        return 0
                else:
                    width = 4 if size == W else 2 if size == H else 1
                    if off + width > n:
                        return 0
                    val = int.from_bytes(frame[off:off + width], "big")
            if cls == LD:
                a = val
            else:
                x = val
        elif cls == ST:
            mem[k & 15] = a
        elif cls == STX:
            mem[k & 15] = x
        elif cls == ALU:
            op = code & 0xF0
            src = x if code & X else k
            if op == ADD:
                a = (a + src) & _U32
            elif op == SUB:
                a = (a - src) & _U32
            elif op == MUL:
                a = (a * src) & _U32
            elif op == DIV:
                if src == 0:
                    return 0
                a //= src
            elif op == MOD:
                if src == 0:
                    return 0
                a %= src
            elif op == OR:
                a |= src
            elif op == AND:
                a &= src
            elif op == XOR:
                a ^= src
            elif op == LSH:
                a = (a << src) & _U32
            elif op == RSH:
                a >>= src
            elif op == NEG:
                a = (-a) & _U32
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            src = x if code & X else k
            if op == JEQ:
                hit = a == src
            elif op == JGT:
                hit = a > src
            elif op == JGE:
                hit = a >= src
            else:
                hit = bool(a & src)
            pc += jt if hit else jf
        elif cls == RET:
            rv = code & 0x18
            return a if rv == A else x if rv == X else k
        else:  # MISC
            if code & 0xF8 == TXA:
                a = x
            else:
                x = a
    return 0

"""The /proc/net fallback: tcp, tcp6, udp, udp6 and unix, parsed from their text.

Used where netlink is unavailable (a kernel without inet_diag, a sandbox that
refuses the dump).  Same states and queues, except that /proc does not export
a listener's backlog (``send_q`` is ``None``), nor a Unix socket's queues or
peer, nor the extensions (tcp_info, timers, memory).  The parsers take the
file's text, so they are tested without a socket.
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

from .entry import STATES, UNCONN, SocketEntry

INET_FILES = {
    "tcp": (("tcp", "/proc/net/tcp", socket.AF_INET), ("tcp6", "/proc/net/tcp6", socket.AF_INET6)),
    "udp": (("udp", "/proc/net/udp", socket.AF_INET), ("udp6", "/proc/net/udp6", socket.AF_INET6)),
}
UNIX_FILE = "/proc/net/unix"
_SO_ACCEPTCON = 0x10000         # __SO_ACCEPTCON in /proc/net/unix's Flags: a listener
# socket_state (include/uapi/linux/net.h) in its St column.
_UNIX_SS = {1: UNCONN, 2: "SYN-SENT", 3: "ESTABLISHED", 4: "CLOSE"}
_UNIX_TYPES = {1: "u_str", 2: "u_dgr", 5: "u_seq"}


def proc_addr(text: str, family: int) -> tuple[str, int]:
    """``"0100007F:1F90"`` -> ``("127.0.0.1", 8080)``.

    The address is the kernel's in-memory bytes printed as host-order 32-bit
    words, so each word is re-packed in native order.
    """
    hexaddr, hexport = text.split(":")
    raw = b"".join(struct.pack("=I", int(hexaddr[i:i + 8], 16)) for i in range(0, len(hexaddr), 8))
    return socket.inet_ntop(family, raw), int(hexport, 16)


def parse_inet(text: str, proto: str, family: int,
               state_numbers: Optional[frozenset] = None) -> list[SocketEntry]:
    """Entries of one /proc/net/{tcp,tcp6,udp,udp6} file's text (header line included)."""
    out: list[SocketEntry] = []
    udp = proto.startswith("udp")
    names = {**STATES, 7: UNCONN} if udp else STATES
    addrs: dict[str, tuple] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        st = int(f[3], 16)
        if state_numbers is not None and st not in state_numbers:
            continue
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        local = addrs.get(f[1]) or addrs.setdefault(f[1], proc_addr(f[1], family))
        remote = addrs.get(f[2]) or addrs.setdefault(f[2], proc_addr(f[2], family))
        # For a listener /proc shows the accept queue as rx_queue but not the backlog.
        out.append(SocketEntry(proto, local, remote, names.get(st) or f"STATE-{st}", rx,
                               None if st == 10 else tx, int(f[9]), int(f[7])))
    return out


def parse_unix(text: str, state_numbers: Optional[frozenset] = None) -> list[SocketEntry]:
    """Entries of /proc/net/unix's text: ``Num RefCount Protocol Flags Type St Inode [Path]``.

    No queues (0) and no peer (inode 0) there; uid unknown (-1).
    """
    out: list[SocketEntry] = []
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        flags, stype, st, inode = int(f[3], 16), int(f[4], 16), int(f[5], 16), int(f[6])
        state = "LISTEN" if flags & _SO_ACCEPTCON else _UNIX_SS.get(st, f"STATE-{st}")
        num = 10 if state == "LISTEN" else {UNCONN: 7, "SYN-SENT": 2, "ESTABLISHED": 1}.get(state, 7)
        if state_numbers is not None and num not in state_numbers:
            continue
        path = f[7].strip() if len(f) > 7 else "*"
        out.append(SocketEntry(_UNIX_TYPES.get(stype, f"u_{stype}"), (path, inode), ("*", 0),
                               state, 0, 0, inode, -1))
    return out


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None             # tcp6/udp6 are absent when IPv6 is disabled


def read(family: str, state_numbers: Optional[frozenset] = None) -> list[SocketEntry]:
    """Every socket of one family ("tcp", "udp" or "unix") from /proc/net."""
    if family == "unix":
        text = _read(UNIX_FILE)
        return [] if text is None else parse_unix(text, state_numbers)
    out: list[SocketEntry] = []
    for proto, path, fam in INET_FILES[family]:
        text = _read(path)
        if text is not None:
            out.extend(parse_inet(text, proto, fam, state_numbers))
    return out


def available() -> bool:
    import os
    return os.path.exists("/proc/net/tcp")

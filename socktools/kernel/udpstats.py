"""Where UDP datagrams were dropped, as the kernel counts it.

UDP never blocks a sender the way TCP does: a datagram that finds the receiver's buffer
full is dropped by the receiver's kernel, and one that finds the sender's own buffer full
is dropped (or refused with ENOBUFS/EAGAIN) on the way out.  The kernel counts both:

* per socket, ``sk_drops`` -- read with ``getsockopt(SO_MEMINFO)`` on a socket we hold
  (:func:`socket_drops`), or with sock_diag for any socket (``socktools sockets --udp``);
* per machine, ``/proc/net/snmp`` (``Udp: RcvbufErrors SndbufErrors InErrors ...``) and
  ``/proc/net/snmp6`` for IPv6 (:func:`read_counters`).

:func:`attribute` splits the datagrams flood lost into "dropped by the receiver's full
buffer", "dropped by the sender's", and "unexplained" (lost on a path the kernel does not
count: a server that read and never answered, a reply dropped by a firewall...).  The
machine-wide counters include every other program's datagrams: a delta taken around a run
is an upper bound for that run's, which is why the per-socket counts come first.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Optional

__all__ = ["read_counters", "socket_drops", "socket_memory", "bound_sockets", "Attribution", "attribute",
           "SO_MEMINFO", "COUNTERS"]

#: getsockopt(SOL_SOCKET, SO_MEMINFO): the socket's sk_meminfo array (Linux 4.3+).
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
#: SK_MEMINFO_DROPS is the 9th member of the array (Linux 3.6+); RMEM_ALLOC (the receive
#: queue's memory, ss's Recv-Q for UDP) the 1st, RCVBUF the 2nd.
_DROPS = 8
_RMEM_ALLOC, _RCVBUF = 0, 1

#: The counters read from /proc/net/snmp's ``Udp:`` rows (and snmp6's ``Udp6*``), summed.
COUNTERS = ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors", "SndbufErrors",
            "InCsumErrors", "MemErrors")


def read_counters(snmp: str = "/proc/net/snmp", snmp6: str = "/proc/net/snmp6") -> Optional[dict]:
    """The machine's UDP counters (IPv4 and IPv6 summed), or None where /proc has none."""
    out = dict.fromkeys(COUNTERS, 0)
    try:
        with open(snmp) as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return None
    if len(rows) < 2:
        return None
    for name, value in zip(rows[0][1:], rows[1][1:]):
        if name in out:
            out[name] += int(value)
    try:
        with open(snmp6) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0].startswith("Udp6") and parts[0][4:] in out:
                    out[parts[0][4:]] += int(parts[1])
    except OSError:
        pass    # no IPv6 on this machine: the IPv4 counts stand
    return out


def socket_drops(sock: socket.socket) -> Optional[int]:
    """Datagrams the kernel dropped at ``sock`` (its receive buffer was full, or a filter
    refused them), or None when this kernel does not say."""
    mem = socket_memory(sock)
    return None if mem is None else mem[2]


def socket_memory(sock: socket.socket) -> Optional[tuple]:
    """``(rmem_alloc, rcvbuf, drops)`` of a socket we hold, from SO_MEMINFO: the bytes its
    receive queue holds as the kernel accounts them (each datagram's payload *and* its
    buffer overhead -- what ``ss`` shows as a UDP socket's Recv-Q), its effective SO_RCVBUF,
    and its sk_drops; None when this kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return None
    if len(raw) < 9 * 4:
        return None
    values = struct.unpack_from("=9I", raw)
    return values[_RMEM_ALLOC], values[_RCVBUF], values[_DROPS]


def bound_sockets(host: str, port: int, *, processes: bool = False) -> list:
    """The UDP sockets on this machine that receive what is sent to ``host``:``port`` -- bound
    to that port on that address or a wildcard, connected to nobody or to anyone (socat's
    UDP-LISTEN connects to its first client); a SO_REUSEPORT server has one per worker.
    Socket-table entries with their memory (``skmem``: sk_drops, Recv-Q) and, with
    ``processes``, their owners.  Raises ``SocketTableUnavailable``/``OSError`` as
    :func:`socktools.kernel.socktable.read_sockets` does."""
    from socktools.kernel.socktable import read_sockets
    entries = read_sockets(port=port, families=("udp",), memory=True, processes=processes, sort=False)
    return [e for e in entries if e.local[1] == port and e.local[0] in (host, "0.0.0.0", "::")]


class Attribution(NamedTuple):
    """Of ``lost`` datagrams: dropped at a receive buffer (the server's or, for a reply, our
    own), dropped at the sender, and what the kernel's counts do not explain."""

    lost: int
    receiver_buffer: int
    sender_buffer: int
    unexplained: int
    machine_rcvbuf_errors: Optional[int]     # the machine-wide deltas, for the reader
    machine_sndbuf_errors: Optional[int]


def attribute(lost: int, *, receiver_drops: int, sender_drops: int = 0,
              before: Optional[dict] = None, after: Optional[dict] = None) -> Attribution:
    """Split ``lost`` by what the kernel counted.  ``receiver_drops``: sk_drops of the sockets
    that receive in the exchange (the server's and ours, their deltas over the run);
    ``sender_drops``: datagrams our sends were refused or dropped for (ENOBUFS, SndbufErrors).
    Never attributes more than was lost: other traffic on a socket or the machine cannot
    make the explained part exceed the losses."""
    rcv = min(lost, max(0, receiver_drops))
    snd = min(lost - rcv, max(0, sender_drops))
    machine_rcv = machine_snd = None
    if before is not None and after is not None:
        machine_rcv = after["RcvbufErrors"] - before["RcvbufErrors"]
        machine_snd = after["SndbufErrors"] - before["SndbufErrors"]
    return Attribution(lost, rcv, snd, lost - rcv - snd, machine_rcv, machine_snd)

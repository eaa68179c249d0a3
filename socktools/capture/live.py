"""Live capture from a Linux packet socket, built to keep up with a loopback flood.

Strategy (why not ``scapy.sniff``): scapy dissects every packet into layer
objects and drops packets above a few thousand per second.  Here the kernel
does the selecting and Python does the least work per packet:

- one ``AF_PACKET``/``SOCK_RAW`` socket bound to the interface; it is opened
  with protocol 0 (receives nothing), gets its filter, and only then is bound
  to ``ETH_P_ALL`` — so no unfiltered packet ever sits in its queue;
- the BPF program (``bpf.py``) runs in the kernel: other traffic costs nothing;
- on loopback the kernel hands every packet to packet sockets twice, leaving
  and arriving; ``PACKET_IGNORE_OUTGOING`` (Linux 4.20+) suppresses the
  outgoing copy before it is even cloned, else a BPF prefix rejects it, and
  ``sll_pkttype`` is checked again in user space;
- a large receive buffer (``SO_RCVBUFFORCE``, root may exceed ``rmem_max``)
  absorbs bursts while Python formats lines;
- kernel timestamps (``SO_TIMESTAMPNS``), so times and RTTs are when the
  packet passed the interface, not when Python got around to it;
- ``recvmsg_into`` a preallocated buffer, many packets per wake-up;
- ``PACKET_STATISTICS`` gives the packets the kernel dropped for lack of
  buffer space — reported at the end, honestly.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from typing import Callable, Optional

from socktools.capture import bpf
from socktools.capture import dissect as d
from socktools.capture.common import DEFAULT_SNAPLEN, InterfaceError, PrivilegeError, SniffError

__all__ = ["LiveSource", "DEFAULT_BUFFER", "interface_linktype"]

SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

#: 64 MiB of socket buffer.  A small loopback packet is charged its skb truesize,
#: ~870 bytes for a 64-byte segment (measured: 2 MiB held ~2,400), and the kernel
#: doubles the value set, so this holds ~150,000 small packets: several seconds
#: of a 20,000 packet/s flood while Python is busy.  (tcpdump's default is a
#: 2 MiB mmap ring, where a small packet takes ~150 bytes.)
DEFAULT_BUFFER = 64 << 20

#: Packets taken per wake-up before returning to the caller (bounds latency).
_BATCH = 512
_TIMESPEC = struct.Struct("@qq")


def interface_linktype(iface: str) -> tuple[int, int]:
    """(pcap link type, socket type) for an interface, from its ARPHRD type in sysfs.

    Ethernet-like interfaces (including ``lo``) are read raw, as Ethernet
    frames; anything else (tun, GRE, ...) is read "cooked" (``SOCK_DGRAM``:
    the kernel strips the link header) and shows up as raw IP.
    """
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            hatype = int(f.read().strip())
    except (OSError, ValueError):
        hatype = ARPHRD_ETHER
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return d.LINKTYPE_ETHERNET, socket.SOCK_RAW
    return d.LINKTYPE_RAW, socket.SOCK_DGRAM


def _interfaces() -> str:
    try:
        return ", ".join(name for _, name in socket.if_nameindex())
    except OSError:
        return "see `ip link`"


class LiveSource:
    """Packets from an interface: :meth:`read` returns lists of ``(ts_ns, frame, wirelen, linktype)``.

    ``program_for(linktype)`` returns the BPF program and its text; it is
    called once the interface's link type is known.
    """

    def __init__(self, iface: str, program_for: Callable[[int], tuple[list, str]], *,
                 buffer_size: int = DEFAULT_BUFFER, snaplen: int = DEFAULT_SNAPLEN) -> None:
        if not hasattr(socket, "AF_PACKET"):
            raise SniffError("live capture needs Linux packet sockets; read a capture file with -r")
        try:
            ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise InterfaceError(f"no interface named {iface!r} (available: {_interfaces()})") from None
        self.iface = iface
        self.linktype, socktype = interface_linktype(iface)
        self.loopback = iface == "lo" or _is_loopback(iface)
        program, self.filter_text = program_for(self.linktype)
        self._sock = self._open(socktype, program, buffer_size)
        self.ifindex = ifindex
        self._buf = bytearray(max(snaplen, 65536 + 64))
        self._view = memoryview(self._buf)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._received = 0
        self._dropped = 0
        self.skipped_outgoing = 0

    def _open(self, socktype: int, program: list, buffer_size: int) -> socket.socket:
        try:
            # Protocol 0: the socket receives nothing until bind() below, after the filter is on.
            sock = socket.socket(socket.AF_PACKET, socktype, 0)
        except PermissionError:
            raise PrivilegeError(
                "live capture needs root or the CAP_NET_RAW capability (opening a packet socket "
                "was refused); run it with sudo, or read a saved capture with -r FILE.pcap, "
                "which needs no privilege") from None
        try:
            self.buffer_bytes = _set_rcvbuf(sock, buffer_size)
            self.outgoing = "user space"
            if self.loopback:
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    self.outgoing = "kernel"
                except OSError:
                    program = bpf.drop_outgoing(program)
                    self.outgoing = "filter"
            _attach(sock, program)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass   # fall back to user-space time stamps in read()
            sock.bind((self.iface, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENETDOWN:
                raise InterfaceError(f"interface {self.iface} is down") from None
            raise SniffError(f"cannot capture on {self.iface}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: Optional[float]) -> list[tuple[int, bytes, int]]:
        """Wait up to ``timeout`` seconds (None: forever) and return the packets queued."""
        if not self._poll.poll(None if timeout is None else max(0, int(timeout * 1000))):
            return []
        out = []
        sock, buf, view = self._sock, [self._view], self._view
        anc_size = socket.CMSG_SPACE(_TIMESPEC.size)
        loopback, linktype = self.loopback, self.linktype
        for _ in range(_BATCH):
            try:
                n, anc, _flags, addr = sock.recvmsg_into(buf, anc_size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if loopback and addr[2] == PACKET_OUTGOING:
                self.skipped_outgoing += 1
                continue
            if anc:
                sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                ts = sec * 1_000_000_000 + nsec
            else:
                ts = time.time_ns()
            out.append((ts, bytes(view[:n]), n, linktype))
        return out

    def stats(self) -> tuple[int, int]:
        """(packets the filter accepted, packets dropped for lack of buffer) since opening.

        The kernel resets its counters on every read, so they are accumulated here.
        """
        if self._sock.fileno() >= 0:
            try:
                packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            except OSError:
                packets = drops = 0
            self._received += packets
            self._dropped += drops
        return self._received, self._dropped

    def close(self) -> None:
        self._sock.close()


def _is_loopback(iface: str) -> bool:
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return int(f.read().strip()) == ARPHRD_LOOPBACK
    except (OSError, ValueError):
        return False


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; returns what the kernel granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)   # root: past rmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)  # capped by rmem_max
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _attach(sock: socket.socket, program: list) -> None:
    import ctypes
    insns = bpf.pack(program)
    buf = ctypes.create_string_buffer(insns, len(insns))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

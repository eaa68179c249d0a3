"""Live capture from a Linux packet socket, built to keep up with a loopback flood.

Strategy (why not ``scapy.sniff``): scapy dissects every packet into layer
objects and drops packets above a few thousand per second.  Here the kernel
does the selecting and Python does the least work per packet:

- one ``AF_PACKET`` socket bound to the interface; it is opened with protocol
  0 (receives nothing), gets its filter, and only then is bound to
  ``ETH_P_ALL`` — so no unfiltered packet ever sits in its queue;
- the BPF program (``bpf.py``) runs in the kernel: other traffic costs nothing;
- on loopback the kernel hands every packet to packet sockets twice, leaving
  and arriving; ``PACKET_IGNORE_OUTGOING`` (Linux 4.20+) suppresses the
  outgoing copy before it is even cloned, else a BPF prefix rejects it, and
  ``sll_pkttype`` is checked again in user space;
- packets arrive in a PACKET_MMAP TPACKET_V3 ring (``ring.py``), as libpcap
  reads them for tcpdump: shared memory, whole blocks per wake-up, kernel
  nanosecond time stamps, no system call per packet, and about five times
  the packets per byte of buffer that a socket queue holds;
- where the ring cannot be set up, ``recvmsg_into`` a preallocated buffer with
  a large receive buffer (``SO_RCVBUFFORCE``) and ``SO_TIMESTAMPNS``;
- ``PACKET_STATISTICS`` gives the packets the kernel dropped for lack of
  buffer space — reported at the end, honestly.

``-i any`` opens a cooked (``SOCK_DGRAM``) socket on every interface, as
libpcap does, and puts a Linux cooked v2 (SLL2) header in front of each
packet, so the interface and direction are kept in the record and the file.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Callable, Iterator, Optional

from socktools.capture import bpf
from socktools.capture import dissect as d
from socktools.capture.ring import PacketRing
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

#: The name that means every interface (tcpdump's ``-i any``).
ANY = "any"

#: Packets taken per wake-up before returning to the caller (bounds latency).
_BATCH = 512

#: How long :meth:`LiveSource.drain` waits for packets it knows are captured but cannot
#: read yet: the ring hands over a part-filled block only when its timer fires (at most
#: ring.MAX_BLOCK_TIMEOUT_MS, 250 ms), so four of those, for a busy machine.  The wait
#: restarts with every block read, so a large backlog drains whole.
DRAIN_WAIT = 1.0
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
                 buffer_size: int = DEFAULT_BUFFER, snaplen: int = DEFAULT_SNAPLEN,
                 ring: bool = True) -> None:
        if not hasattr(socket, "AF_PACKET"):
            raise SniffError("live capture needs Linux packet sockets; read a capture file with -r")
        self.iface = iface
        self.any = iface == ANY
        if self.any:
            ifindex = 0
            self.linktype, socktype = d.LINKTYPE_LINUX_SLL2, socket.SOCK_DGRAM
            self.loopback = False
            # the kernel runs the filter on the network header of a cooked socket
            program, self.filter_text = program_for(d.LINKTYPE_RAW)
            try:
                lo = socket.if_nametoindex("lo")
                program = bpf.drop_loopback_outgoing(program, lo)
            except OSError:
                lo = None
        else:
            try:
                ifindex = socket.if_nametoindex(iface)
            except OSError:
                raise InterfaceError(f"no interface named {iface!r} (available: {_interfaces()}, "
                                     f"or any)") from None
            self.linktype, socktype = interface_linktype(iface)
            self.loopback = iface == "lo" or _is_loopback(iface)
            program, self.filter_text = program_for(self.linktype)
            lo = None
        self.ifindex = ifindex
        self._ring: Optional[PacketRing] = None
        self._sock = self._open(socktype, program, buffer_size, snaplen, ring, lo)
        self._buf = bytearray(max(snaplen, 65536 + 64))
        self._view = memoryview(self._buf)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._received = 0
        self._dropped = 0
        self._skipped = 0
        self._read = 0                   # packets handed to the caller

    @property
    def skipped_outgoing(self) -> int:
        return self._skipped + (self._ring.skipped_outgoing if self._ring else 0)

    @property
    def taken(self) -> int:
        """Packets taken off the ring or queue: handed over, or skipped as outgoing copies.
        The kernel's received minus dropped, less this, is what is still waiting there."""
        return self._read + self.skipped_outgoing

    def drain(self) -> Iterator[list]:
        """Stop capturing and yield the packets already captured (what :meth:`read` gives).

        A reject-all filter goes on first, so nothing new enters; then reads go on until
        every packet the kernel counted for the filter is taken, or nothing came for
        :data:`DRAIN_WAIT` seconds (what is left then, :attr:`taken` lets the caller count).
        """
        try:
            _attach(self._sock, bpf.reject_all())
        except OSError:
            return        # packets would keep coming: a drain could never end (the rest is counted)
        idle_until = time.monotonic() + DRAIN_WAIT
        while True:
            received, dropped = self.stats()
            if self.taken >= received - dropped:
                return
            left = idle_until - time.monotonic()
            if left <= 0:
                return
            batch = self.read(min(left, 0.05))
            if batch:
                idle_until = time.monotonic() + DRAIN_WAIT
                yield batch

    @property
    def mode(self) -> str:
        """``ring`` (TPACKET_V3) or ``socket`` (one recvmsg per packet)."""
        return "ring" if self._ring is not None else "socket"

    def _open(self, socktype: int, program: list, buffer_size: int, snaplen: int, ring: bool,
              lo: Optional[int]) -> socket.socket:
        try:
            # Protocol 0: the socket receives nothing until bind() below, after the filter is on.
            sock = socket.socket(socket.AF_PACKET, socktype, 0)
        except PermissionError:
            raise PrivilegeError(
                "live capture needs root or the CAP_NET_RAW capability (opening a packet socket "
                "was refused); run it with sudo, or read a saved capture with -r FILE.pcap, "
                "which needs no privilege") from None
        try:
            self.outgoing = "user space"
            if self.loopback:
                try:
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    self.outgoing = "kernel"
                except OSError:
                    program = bpf.drop_outgoing(program)
                    self.outgoing = "filter"
            elif self.any:
                self.outgoing = "filter"
            _attach(sock, program)
            if ring:
                try:
                    self._ring = PacketRing(
                        sock, buffer_size, min(snaplen, _max_frame(self.iface)), self.linktype,
                        cooked=self.any,
                        # when the kernel suppresses loopback's outgoing copies, checking
                        # each packet's sll_pkttype again costs an unpack per packet for nothing
                        skip_outgoing_on=(None if self.outgoing == "kernel" else 0)
                        if self.loopback else lo if self.any else None)
                    self.buffer_bytes = self._ring.size
                except OSError:
                    self._ring = None     # old kernel or no memory for it: one recv per packet
            if self._ring is None:
                self.buffer_bytes = _set_rcvbuf(sock, buffer_size)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:
                    pass   # fall back to user-space time stamps in read()
            if self.any:
                _bind_all(sock)
            else:
                sock.bind((self.iface, ETH_P_ALL))
        except OSError as exc:
            self._close_ring()
            sock.close()
            if exc.errno == errno.ENETDOWN:
                raise InterfaceError(f"interface {self.iface} is down") from None
            raise SniffError(f"cannot capture on {self.iface}: {exc.strerror or exc}") from None
        except BaseException:
            self._close_ring()
            sock.close()
            raise
        return sock

    def _close_ring(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: Optional[float]) -> list[tuple[int, bytes, int, int]]:
        """Wait up to ``timeout`` seconds (None: forever) and return the packets queued."""
        if self._ring is not None:
            out = self._ring.read(timeout)
            self._read += len(out)
            return out
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
                self._skipped += 1
                continue
            if anc:
                sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                ts = sec * 1_000_000_000 + nsec
            else:
                ts = time.time_ns()
            if self.any:
                if addr[0] == "lo" and addr[2] == PACKET_OUTGOING:
                    self._skipped += 1
                    continue
                out.append((ts, _sll2(addr, self._ifindex_of(addr[0])) + bytes(view[:n]), n + 20,
                            linktype))
                continue
            out.append((ts, bytes(view[:n]), n, linktype))
        self._read += len(out)
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

    def _ifindex_of(self, name: str) -> int:
        cache = self.__dict__.setdefault("_ifindexes", {})
        if name not in cache:
            try:
                cache[name] = socket.if_nametoindex(name)
            except OSError:
                cache[name] = 0
        return cache[name]

    def close(self) -> None:
        self._close_ring()
        self._sock.close()


def _sll2(addr: tuple, ifindex: int) -> bytes:
    """A Linux cooked v2 header from recvmsg's address (ifname, proto, pkttype, hatype, addr)."""
    _name, proto, pkttype, hatype, haddr = addr[:5]
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, hatype, pkttype, len(haddr), haddr)


def _max_frame(iface: str) -> int:
    """The largest frame a ring slot must hold: the MTU plus a link header, at least 64 KiB.

    64 KiB because offloads (GRO/GSO) hand packet sockets frames far above the
    MTU; libpcap uses the same floor (its BIGGER_THAN_ALL_MTUS) for ``any``.
    """
    mtu = 0
    names = [iface] if iface != ANY else [n for _, n in socket.if_nameindex()]
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/mtu") as f:
                mtu = max(mtu, int(f.read().strip()))
        except (OSError, ValueError):
            pass
    return max(mtu, 65536) + 64


def _bind_all(sock: socket.socket) -> None:
    """bind() to interface index 0 (every interface), which Python's bind cannot name."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    # struct sockaddr_ll: family, protocol (network order), ifindex 0, hatype, pkttype, halen, addr
    sll = struct.pack("=H", socket.AF_PACKET) + struct.pack("!H", ETH_P_ALL) + \
        struct.pack("=iHBB8s", 0, 0, 0, 0, b"")
    buf = ctypes.create_string_buffer(sll, len(sll))
    if libc.bind(sock.fileno(), buf, len(sll)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


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

"""A PACKET_MMAP TPACKET_V3 receive ring: the kernel writes packets into shared memory.

Why (kernel Documentation/networking/packet_mmap.rst, and what libpcap's
pcap-linux.c does for tcpdump): with a plain packet socket every packet is an
skb in the socket's receive queue, charged its full truesize (~870 bytes for
a 66-byte loopback segment), and costs a ``recvmsg`` to fetch.  With a
TPACKET_V3 ring the kernel copies each packet into the next free spot of a
memory block shared with us, packed back to back (~160 bytes for the same
segment), and hands over whole blocks: one ``poll`` per block, no system
call per packet, and the same memory holds five times the packets.  At an
equal 2 MiB, that is the difference between dropping a fifth of a fast
loopback flood and dropping none.

Layout, as the kernel defines it (``<linux/if_packet.h>``):

- the ring is ``block_nr`` blocks of ``block_size`` bytes, mmap'ed in one piece;
- each block starts with ``struct tpacket_block_desc``: version, offset to
  private area, then ``tpacket_hdr_v1`` — ``block_status`` (offset 8; the
  kernel sets TP_STATUS_USER when the block is ours, we write
  TP_STATUS_KERNEL to give it back), ``num_pkts`` (12), ``offset_to_first_pkt`` (16);
- each packet is ``struct tpacket3_hdr`` (``tp_next_offset``, ``tp_sec``,
  ``tp_nsec``, ``tp_snaplen``, ``tp_len``, ``tp_status``, ``tp_mac``,
  ``tp_net``...; 48 bytes), followed by a ``struct sockaddr_ll`` (where the
  packet came from: interface, packet type), and the frame at ``tp_mac``.

A block is handed over when it is full or when ``tp_retire_blk_tov``
milliseconds passed since its first packet, whichever is first: that timeout
is the view's latency when traffic is slow.
"""

from __future__ import annotations

import mmap
import select
import socket
import struct
from typing import Optional

__all__ = ["PacketRing", "ring_geometry", "BLOCK_TIMEOUT_MS", "RING_SPAN_MS"]

SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 1 << 1        # the packet did not fit the ring's frame: cut short
PACKET_OUTGOING = 4

#: Milliseconds before the kernel hands over a block that is not full.  libpcap
#: uses the capture's read timeout (tcpdump: 1,000 ms) and 1 ms in "immediate
#: mode"; 20 ms keeps the live view prompt for a human while a flood fills
#: blocks long before the timer fires.
BLOCK_TIMEOUT_MS = 20
#: But a slow trickle retires one nearly empty block per timeout, so a ring of
#: N blocks holds only N timeouts of traffic while the reader is descheduled
#: (16 blocks of a 2 MiB ring x 20 ms = 0.3 s, measured: drops at 10,000
#: packets/s on a busy machine where a socket buffer dropped none).  The timeout
#: is raised so the whole ring spans at least this long, up to MAX_BLOCK_TIMEOUT_MS.
RING_SPAN_MS = 2000
#: The view's worst latency at a trickle (tcpdump's is its 1,000 ms timeout).
MAX_BLOCK_TIMEOUT_MS = 250

_BLOCK_HDR = struct.Struct("=III")        # block_status, num_pkts, offset_to_first_pkt (at 8)
_PKT_HDR = struct.Struct("=IIIIIIH2x")    # next_offset, sec, nsec, snaplen, len, status, mac
_TPACKET3_HDRLEN = 48                     # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
_SLL = struct.Struct("=HHiHBB8s")         # family, protocol (big-endian bytes), ifindex,
#                                           hatype, pkttype, halen, addr
_RELEASE = struct.pack("=I", TP_STATUS_KERNEL)
_REQ3 = struct.Struct("=IIIIIII")


def ring_geometry(buffer_size: int, max_frame: int) -> tuple[int, int, int]:
    """(block size, block count, frame size) for a ring of about ``buffer_size`` bytes.

    As libpcap does: a frame slot must hold the largest frame plus headers;
    blocks are the smallest power-of-two number of pages that holds one such
    frame; as many blocks as fit in the buffer, but at least 2 so the kernel
    can fill one while we read the other.
    """
    page = mmap.PAGESIZE
    frame = (_TPACKET3_HDRLEN + 32 + max_frame + 15) & ~15    # + sockaddr_ll, aligned
    block = page
    while block < frame:
        block <<= 1
    return block, max(2, buffer_size // block), frame


class PacketRing:
    """The receive ring of one packet socket (already opened with protocol 0).

    :meth:`read` returns ``(ts_ns, frame, wirelen, linktype)`` tuples, like
    the plain-socket reader; ``cooked`` builds a Linux cooked v2 (SLL2)
    header in front of each network-layer packet (``-i any``).
    ``skip_outgoing_on``: None keeps every packet; 0 skips every outgoing copy
    (a socket bound to ``lo``); an interface index skips that interface's
    outgoing copies only (``-i any`` skipping loopback's duplicates).
    """

    def __init__(self, sock: socket.socket, buffer_size: int, max_frame: int, linktype: int, *,
                 cooked: bool = False, skip_outgoing_on: Optional[int] = None,
                 timeout_ms: Optional[int] = None) -> None:
        self.block_size, self.block_nr, frame = ring_geometry(buffer_size, max_frame)
        if timeout_ms is None:
            timeout_ms = min(MAX_BLOCK_TIMEOUT_MS,
                             max(BLOCK_TIMEOUT_MS, -(-RING_SPAN_MS // self.block_nr)))
        self.timeout_ms = timeout_ms
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        # struct tpacket_req3: block_size, block_nr, frame_size, frame_nr,
        # retire_blk_tov, sizeof_priv, feature_req_word
        req = _REQ3.pack(self.block_size, self.block_nr, frame,
                          (self.block_size // frame) * self.block_nr, timeout_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.size = self.block_size * self.block_nr
        try:
            self._map = mmap.mmap(sock.fileno(), self.size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            # undo the ring (an all-zero request) so the socket can be read the plain way
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(_REQ3.size))
            raise
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._block = 0
        self.linktype = linktype
        self.cooked = cooked
        self.skip_outgoing_on = skip_outgoing_on   # an ifindex (lo) whose outgoing copies to skip
        self.skipped_outgoing = 0
        self.cut = 0                               # packets the kernel cut to fit a frame slot

    def _ready(self) -> bool:
        return _BLOCK_HDR.unpack_from(self._map, self._block * self.block_size + 8)[0] \
            & TP_STATUS_USER != 0

    def read(self, timeout: Optional[float], max_blocks: int = 4) -> list:
        """Wait up to ``timeout`` seconds for a block; return the packets of the blocks ready."""
        if not self._ready():
            if not self._poll.poll(None if timeout is None else max(0, int(timeout * 1000))):
                return []
            if not self._ready():
                return []
        out: list = []
        m, bs = self._map, self.block_size
        linktype, cooked, skip_on = self.linktype, self.cooked, self.skip_outgoing_on
        unpack_pkt, unpack_sll = _PKT_HDR.unpack_from, _SLL.unpack_from
        append = out.append
        for _ in range(max_blocks):
            base = self._block * bs
            status, count, off = _BLOCK_HDR.unpack_from(m, base + 8)
            if not status & TP_STATUS_USER:
                break
            pos = base + off
            if skip_on is None and not cooked:
                # the common case (lo, its outgoing copies suppressed by the kernel), kept tight
                cut = 0
                for _ in range(count):
                    nxt, sec, nsec, snaplen, wirelen, pstatus, mac = unpack_pkt(m, pos)
                    start = pos + mac
                    append((sec * 1_000_000_000 + nsec, m[start:start + snaplen], wirelen,
                            linktype))
                    cut += pstatus & TP_STATUS_COPY
                    pos += nxt
                self.cut += cut // TP_STATUS_COPY
            else:
                for _ in range(count):
                    nxt, sec, nsec, snaplen, wirelen, pstatus, mac = unpack_pkt(m, pos)
                    if skip_on is not None or cooked:
                        _fam, proto, ifindex, hatype, pkttype, halen, addr = \
                            unpack_sll(m, pos + _TPACKET3_HDRLEN)
                        if pkttype == PACKET_OUTGOING and (skip_on == 0 or ifindex == skip_on):
                            self.skipped_outgoing += 1
                            pos += nxt
                            continue
                    if pstatus & TP_STATUS_COPY:
                        self.cut += 1
                    frame = m[pos + mac:pos + mac + snaplen]
                    if cooked:
                        # SLL2: protocol (already big-endian in sockaddr_ll), reserved,
                        # ifindex, ARPHRD type, packet type, address length, address
                        frame = struct.pack("=H", proto) + struct.pack(
                            "!HIHBB8s", 0, ifindex, hatype, pkttype, halen, addr) + frame
                        wirelen += 20
                    append((sec * 1_000_000_000 + nsec, frame, wirelen, linktype))
                    pos += nxt
            m[base + 8:base + 12] = _RELEASE             # give the block back to the kernel
            self._block = (self._block + 1) % self.block_nr
        return out

    def close(self) -> None:
        try:
            self._map.close()
        except (BufferError, ValueError):
            pass

"""Live capture through scapy's sockets, for platforms without Linux packet sockets.

scapy captures wherever it has a way to: libpcap or BPF on macOS and the BSDs,
Npcap on Windows, ``PF_PACKET`` on Linux.  This source reads raw frames from
the socket scapy picks (``conf.L2socket``/``conf.L2listen``) with
``recv_raw`` — bytes and a time stamp, no dissection — so the same cheap
dissector, tracker and view as the Linux fast path see the same packets.  It
is slower (one call per packet through scapy's socket class), which is why
it is the fallback and not the default on Linux.

The filter is handed to scapy as text (it compiles it with libpcap and
attaches it in the kernel); when that is not possible (no libpcap), the same
BPF program sniff built runs in user space, as it does for ``-r``.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable, Optional

from socktools.capture import bpf
from socktools.capture import dissect as d
from socktools.capture.common import InterfaceError, PrivilegeError, SniffError

__all__ = ["ScapySource"]

SOL_PACKET = getattr(socket, "SOL_PACKET", 263)
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Packets taken per wake-up before returning to the caller (bounds latency).
_BATCH = 512


class ScapySource:
    """Packets from an interface through scapy: same interface as :class:`live.LiveSource`."""

    mode = "scapy"

    def __init__(self, iface: str, program_for: Callable[[int], tuple[list, str]], *,
                 buffer_size: int, snaplen: int) -> None:
        from socktools.capture._scapy import ScapyCaptureError, open_capture_socket

        self.iface = iface
        self._snaplen = snaplen
        self.loopback = iface in ("lo", "lo0") or iface.startswith("Loopback")
        program, self.filter_text = program_for(d.LINKTYPE_ETHERNET)
        self._program: Optional[list] = None
        self._sock = None
        try:
            try:
                self._sock, layer2num = open_capture_socket(iface, self.filter_text, self.loopback)
            except ScapyCaptureError:
                if not self.filter_text:
                    raise
                # no libpcap to compile the text: capture everything, filter here
                self._sock, layer2num = open_capture_socket(iface, None, self.loopback)
                self._program = program
        except PermissionError:
            raise PrivilegeError(
                "live capture needs root or the CAP_NET_RAW capability (scapy could not open "
                "a capture socket); run it with sudo, or read a saved capture with -r FILE.pcap"
            ) from None
        except (OSError, ValueError, ScapyCaptureError) as exc:
            if isinstance(exc, OSError) and exc.errno == 19:
                raise InterfaceError(f"no interface named {iface!r}") from None
            raise SniffError(f"scapy cannot capture on {iface}: {exc}") from None
        self._layer2num = layer2num
        self.linktype = self._layer2num.get(getattr(self._sock, "LL", None), d.LINKTYPE_ETHERNET)
        if self._program is not None and self.linktype != d.LINKTYPE_ETHERNET:
            self._program = program_for(self.linktype)[0]
        self.outgoing = "scapy"
        self.skipped_outgoing = 0
        self.buffer_bytes = self._grow_buffer(buffer_size)
        self._received = 0
        self._dropped = 0
        # scapy opens its packet socket receiving everything, with a zero receive
        # buffer, until the filter is attached: the kernel counted (and dropped) that
        # traffic.  Reading the counters resets them, so the capture starts from zero.
        self.stats()
        self._received = self._dropped = 0

    def _packet_socket(self) -> Optional[socket.socket]:
        ins = getattr(self._sock, "ins", None)
        if isinstance(ins, socket.socket) and ins.family == getattr(socket, "AF_PACKET", -1):
            return ins
        return None

    def _grow_buffer(self, size: int) -> Optional[int]:
        # scapy asks for 64 KiB (conf.bufsize); a capture needs room for bursts
        ins = self._packet_socket()
        if ins is None:
            return None
        try:
            ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            try:
                ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except OSError:
                pass
        return ins.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: Optional[float]) -> list:
        sock = self._sock
        ready = sock.select([sock], timeout)
        if not ready:
            return []
        out = []
        program, linktypes, snaplen = self._program, self._layer2num, self._snaplen
        for _ in range(_BATCH):
            cls, frame, ts = sock.recv_raw(snaplen)
            if frame is None:               # an outgoing copy scapy left out, or nothing
                if cls is None and not sock.select([sock], 0):
                    break
                continue
            if program is not None and not bpf.run(program, frame):
                continue
            ts_ns = int(ts * 1e9) if ts is not None else time.time_ns()
            out.append((ts_ns, frame, len(frame), linktypes.get(cls, self.linktype)))
            if not sock.select([sock], 0):
                break
        return out

    def stats(self) -> tuple[Optional[int], Optional[int]]:
        """The kernel's counters where scapy's socket is a packet socket, else (None, None)."""
        ins = self._packet_socket()
        if ins is None:
            return None, None
        if ins.fileno() >= 0:
            try:
                packets, drops = struct.unpack("II", ins.getsockopt(SOL_PACKET,
                                                                    PACKET_STATISTICS, 8))
            except OSError:
                packets = drops = 0
            self._received += packets
            self._dropped += drops
        return self._received, self._dropped

    #: scapy's sockets give no count to compare with what was read: nothing is drained
    #: at --timeout, and what is left is not known (None).
    taken = None

    def drain(self):
        return iter(())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

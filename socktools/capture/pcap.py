"""pcap files with ``struct``: write the classic format, read classic pcap and pcapng.

Writing uses the classic libpcap format (microsecond timestamps, magic
0xa1b2c3d4) because every tool opens it: tcpdump, tshark, Wireshark, scapy.
Reading accepts both byte orders and nanosecond pcap, and pcapng (what
Wireshark and ``tshark -w`` save by default) with one link type per file.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

from socktools.capture.common import CaptureFileError, DEFAULT_SNAPLEN
from socktools.capture.dissect import SUPPORTED_LINKTYPES

__all__ = ["PcapWriter", "CaptureFile", "open_capture"]

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Append frames to a classic pcap file; ``write(ts_ns, frame, wirelen)``.

    Writes are buffered (1 MiB) so a fast capture does not make a system call
    per packet; :meth:`flush` runs whenever the capture waits for packets, so
    the file is never far behind, and :meth:`close` flushes the rest.
    """

    def __init__(self, path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> None:
        try:
            self._f: BinaryIO = open(path, "wb", buffering=1 << 20)
        except OSError as exc:
            raise CaptureFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.path = path
        self.count = 0
        self._snaplen = snaplen
        # magic, version 2.4, thiszone, sigfigs, snaplen, network (link type)
        self._f.write(struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns: int, frame: bytes, wirelen: int) -> None:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        caplen = min(len(frame), self._snaplen)
        try:
            self._f.write(_RECORD.pack(sec, ns // 1000, caplen, max(wirelen, caplen)))
            self._f.write(frame[:caplen] if caplen < len(frame) else frame)
        except OSError as exc:
            raise CaptureFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.count += 1

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            raise CaptureFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as exc:
                raise CaptureFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None


class CaptureFile:
    """A pcap or pcapng file opened for reading: ``linktype`` and :meth:`records`."""

    def __init__(self, f: BinaryIO, path: str, fmt: str, linktype: int,
                 reader: Iterator[tuple[int, bytes, int]]) -> None:
        self._f = f
        self.path = path
        self.format = fmt
        self.linktype = linktype
        self._reader = reader

    def records(self) -> Iterator[tuple[int, bytes, int]]:
        """Yield ``(timestamp_ns, frame, original_length)`` for each packet."""
        return self._reader

    def close(self) -> None:
        self._f.close()


def open_capture(path: str) -> CaptureFile:
    """Open ``path`` (pcap or pcapng); raises CaptureFileError with a reason."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CaptureFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        head = f.read(24)
        if len(head) < 4:
            raise CaptureFileError(f"{path} is empty or not a capture file")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (_MAGIC_US, _MAGIC_NS):
                if len(head) < 24:
                    raise CaptureFileError(f"{path}: truncated pcap header")
                linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
                _check_linktype(path, linktype)
                scale = 1 if magic == _MAGIC_NS else 1000
                return CaptureFile(f, path, "pcap", linktype, _pcap_records(f, path, order, scale))
        if struct.unpack("<I", head[:4])[0] == _PCAPNG_SHB:
            f.seek(0)
            return _open_pcapng(f, path)
        raise CaptureFileError(f"{path} is not a pcap or pcapng file (magic {head[:4].hex()})")
    except BaseException:
        f.close()
        raise


def _check_linktype(path: str, linktype: int) -> None:
    if linktype not in SUPPORTED_LINKTYPES:
        raise CaptureFileError(
            f"{path}: link type {linktype} is not supported (Ethernet, raw IP, Linux cooked "
            f"and BSD loopback captures are)")


def _pcap_records(f: BinaryIO, path: str, order: str, scale: int) -> Iterator[tuple[int, bytes, int]]:
    rec = struct.Struct(order + "IIII")
    while True:
        head = f.read(16)
        if len(head) < 16:
            return   # a capture cut short (tcpdump killed) still reads up to its last full packet
        sec, frac, caplen, wirelen = rec.unpack(head)
        if caplen > 0x4000000:
            raise CaptureFileError(f"{path}: corrupt record (captured length {caplen})")
        frame = f.read(caplen)
        if len(frame) < caplen:
            return
        yield sec * 1_000_000_000 + frac * scale, frame, wirelen


def _open_pcapng(f: BinaryIO, path: str) -> CaptureFile:
    """pcapng: read blocks until the first interface description gives the link type."""
    blocks = _pcapng_blocks(f, path)
    interfaces: list[tuple[int, int]] = []   # (linktype, ns per tick)
    for kind, body, order in blocks:
        if kind == 1:
            interfaces.append(_pcapng_idb(body, order))
            break
        if kind in (6, 3):
            raise CaptureFileError(f"{path}: packet before any interface description")
    if not interfaces:
        raise CaptureFileError(f"{path}: pcapng file without an interface description")
    linktype = interfaces[0][0]
    _check_linktype(path, linktype)

    def records() -> Iterator[tuple[int, bytes, int]]:
        for kind, body, order in blocks:
            if kind == 1:
                interfaces.append(_pcapng_idb(body, order))
                if interfaces[-1][0] != linktype:
                    raise CaptureFileError(
                        f"{path}: interfaces of different link types in one file are not supported")
            elif kind == 6 and len(body) >= 20:       # enhanced packet block
                ifid, hi, lo, caplen, wirelen = struct.unpack(order + "IIIII", body[:20])
                if ifid >= len(interfaces):
                    raise CaptureFileError(f"{path}: packet for unknown interface {ifid}")
                ticks = (hi << 32) | lo
                res = interfaces[ifid][1]
                ts_ns = ticks * res if isinstance(res, int) else int(ticks * res)
                yield ts_ns, body[20:20 + caplen], wirelen
            elif kind == 3 and len(body) >= 4:       # simple packet block (no timestamp)
                wirelen = struct.unpack(order + "I", body[:4])[0]
                yield 0, body[4:4 + wirelen], wirelen

    return CaptureFile(f, path, "pcapng", linktype, records())


def _pcapng_blocks(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes, str]]:
    order = "<"
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        kind = struct.unpack(order + "I", head[:4])[0]
        if kind == _PCAPNG_SHB:
            bom = f.read(4)
            if len(bom) < 4:
                return
            order = "<" if struct.unpack("<I", bom)[0] == _PCAPNG_BOM else ">"
            total = struct.unpack(order + "I", head[4:8])[0]
            rest = f.read(total - 12)
            if len(rest) < total - 12 or total < 28:
                raise CaptureFileError(f"{path}: corrupt pcapng section header")
            continue
        total = struct.unpack(order + "I", head[4:8])[0]
        if total < 12 or total % 4 or total > 0x4000000:
            raise CaptureFileError(f"{path}: corrupt pcapng block (length {total})")
        body = f.read(total - 8)
        if len(body) < total - 8:
            return
        yield kind, body[:-4], order


def _pcapng_idb(body: bytes, order: str) -> tuple[int, object]:
    linktype = struct.unpack(order + "H", body[:2])[0]
    ns_per_tick: object = 1000           # default resolution: microseconds
    i = 8
    while i + 4 <= len(body):
        code, length = struct.unpack(order + "HH", body[i:i + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:     # if_tsresol
            v = body[i + 4]
            exp = v & 0x7F
            if v & 0x80:
                ns_per_tick = 1e9 / (2 ** exp)
            else:
                ns_per_tick = 10 ** (9 - exp) if exp <= 9 else 1e9 / 10 ** exp
        i += 4 + ((length + 3) & ~3)
    return linktype, ns_per_tick

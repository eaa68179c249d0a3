"""pcapng with ``struct``: read any number of interfaces and link types; write with comments.

pcapng (what Wireshark and ``tshark -w`` save) is a sequence of blocks: a
section header (byte order), interface descriptions (link type, time stamp
resolution), then packets that name their interface.  Reading keeps a table
of interfaces per section, so a file that mixes, say, an Ethernet ``lo`` and
a Linux-cooked ``any`` is read packet by packet with the right link type for
each.

Writing (``-w x.pcapng``): one section, one interface description per link
type seen (nanosecond resolution, ``if_tsresol`` = 9), enhanced packet
blocks, and each decoded framed message as the packet's ``opt_comment``
(option 1), which Wireshark shows as a packet comment and tshark prints with
``-V`` (and filters with ``frame.comment``).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, Optional

from socktools.capture.common import CaptureFileError, DEFAULT_SNAPLEN
from socktools.capture.files import CaptureFile, CaptureWriter, Record, check_linktype

__all__ = ["PcapngWriter", "open_pcapng"]

_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D
_IDB, _SPB, _EPB = 1, 3, 6
_OPT_END, _OPT_COMMENT, _SHB_USERAPPL, _IF_NAME, _IF_TSRESOL = 0, 1, 4, 2, 9
#: No block a sane capture holds is bigger than this (snaplen 256 KiB plus
#: options); a larger length field means the file is corrupt, not that we
#: should allocate it.
_MAX_BLOCK = 0x4000000


# ------------------------------------------------------------------- reading
def open_pcapng(f: BinaryIO, path: str) -> CaptureFile:
    """Read blocks until the first interface description, for the file's first link type."""
    blocks = _blocks(f, path)
    first: list = []
    for kind, body, order in blocks:
        first.append((kind, body, order))
        if kind == _IDB:
            break
        if kind in (_EPB, _SPB):
            raise CaptureFileError(f"{path}: packet before any interface description")
    idbs = [b for b in first if b[0] == _IDB]
    if not idbs:
        raise CaptureFileError(f"{path}: pcapng file without an interface description")
    linktype = _idb(idbs[0][1], idbs[0][2])[0]
    check_linktype(path, linktype)
    cap = CaptureFile(f, path, "pcapng", linktype)
    cap._reader = _records(cap, first, blocks)
    return cap


def _records(cap: CaptureFile, first: list, blocks: Iterator) -> Iterator[Record]:
    path = cap.path
    interfaces: list[tuple[int, object]] = []     # (linktype, ns per tick), per section

    def chain():
        yield from first
        yield from blocks

    for kind, body, order in chain():
        if kind == _SHB:
            interfaces = []                        # a new section numbers interfaces afresh
        elif kind == _IDB:
            lt, res = _idb(body, order)
            check_linktype(path, lt)
            interfaces.append((lt, res))
        elif kind == _EPB and len(body) >= 20:
            ifid, hi, lo, caplen, wirelen = struct.unpack(order + "IIIII", body[:20])
            if ifid >= len(interfaces):
                raise CaptureFileError(f"{path}: packet for unknown interface {ifid}")
            lt, res = interfaces[ifid]
            ticks = (hi << 32) | lo
            ts_ns = ticks * res if isinstance(res, int) else int(ticks * res)
            yield ts_ns, body[20:20 + caplen], wirelen, lt
        elif kind == _SPB and len(body) >= 4:      # simple packet block: interface 0, no time
            if not interfaces:
                raise CaptureFileError(f"{path}: packet before any interface description")
            wirelen = struct.unpack(order + "I", body[:4])[0]
            yield 0, body[4:4 + wirelen], wirelen, interfaces[0][0]
    if getattr(blocks, "truncated", None):
        cap.truncated = blocks.truncated


class _Blocks:
    """Iterator of ``(kind, body, byte order)``; ``truncated`` says if the file stopped mid-block."""

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._gen = self._run(f, path)
        self.truncated: Optional[str] = None
        self.blocks = 0

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def _cut(self, what: str) -> None:
        self.truncated = f"cut short in a {what} after {self.blocks} blocks"

    def _run(self, f: BinaryIO, path: str):
        order = "<"
        while True:
            head = f.read(8)
            if len(head) < 8:
                if head:
                    self._cut("block header")
                return
            kind = struct.unpack(order + "I", head[:4])[0]
            if kind == _SHB:
                bom = f.read(4)
                if len(bom) < 4:
                    self._cut("section header")
                    return
                order = "<" if struct.unpack("<I", bom)[0] == _BOM else ">"
                total = struct.unpack(order + "I", head[4:8])[0]
                if total < 28 or total % 4 or total > _MAX_BLOCK:
                    raise CaptureFileError(f"{path}: corrupt pcapng section header")
                rest = f.read(total - 12)
                if len(rest) < total - 12:
                    self._cut("section header")
                    return
                self.blocks += 1
                yield _SHB, bom + rest[:-4], order
                continue
            total = struct.unpack(order + "I", head[4:8])[0]
            if total < 12 or total % 4 or total > _MAX_BLOCK:
                raise CaptureFileError(f"{path}: corrupt pcapng block (length {total})")
            body = f.read(total - 8)
            if len(body) < total - 8:
                self._cut("packet block" if kind in (_EPB, _SPB) else "block")
                return
            self.blocks += 1
            yield kind, body[:-4], order


def _blocks(f: BinaryIO, path: str) -> _Blocks:
    return _Blocks(f, path)


def _idb(body: bytes, order: str) -> tuple[int, object]:
    linktype = struct.unpack(order + "H", body[:2])[0]
    ns_per_tick: object = 1000           # default resolution: microseconds
    i = 8
    while i + 4 <= len(body):
        code, length = struct.unpack(order + "HH", body[i:i + 4])
        if code == _OPT_END:
            break
        if code == _IF_TSRESOL and length >= 1:
            v = body[i + 4]
            exp = v & 0x7F
            if v & 0x80:
                ns_per_tick = 1e9 / (2 ** exp)
            else:
                ns_per_tick = 10 ** (9 - exp) if exp <= 9 else 1e9 / 10 ** exp
        i += 4 + ((length + 3) & ~3)
    return linktype, ns_per_tick


# ------------------------------------------------------------------- writing
def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


#: opt_comment's length is a 16-bit field; a decoded message's comment is cut
#: well below it (a preview is ~120 characters anyway).
_MAX_COMMENT = 4096


class PcapngWriter(CaptureWriter):
    """Append frames to a pcapng file: ``write(ts_ns, frame, wirelen, linktype, comment)``."""

    format = "pcapng"

    def __init__(self, path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN, *,
                 protect: Optional[tuple[int, int]] = None) -> None:
        super().__init__(path, linktype, snaplen, protect)
        self._ifids: dict[int, int] = {}
        from socktools import __version__
        shb = struct.pack("<IHHq", _BOM, 1, 0, -1) + _option(
            _SHB_USERAPPL, f"socktools {__version__} sniff".encode()) + _option(_OPT_END, b"")
        self._put(_block(_SHB, shb))
        self._interface(linktype)

    def _interface(self, linktype: int) -> int:
        ifid = self._ifids.get(linktype)
        if ifid is None:
            ifid = self._ifids[linktype] = len(self._ifids)
            body = struct.pack("<HHI", linktype, 0, self._snaplen) + \
                _option(_IF_TSRESOL, b"\x09") + _option(_OPT_END, b"")
            self._put(_block(_IDB, body))
        return ifid

    def write(self, ts_ns: int, frame: bytes, wirelen: int, linktype: Optional[int] = None,
              comment: Optional[str] = None) -> None:
        ifid = self._interface(self.linktype if linktype is None else linktype)
        caplen = min(len(frame), self._snaplen)
        data = frame[:caplen]
        body = struct.pack("<IIIII", ifid, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen,
                           max(wirelen, caplen)) + data + b"\x00" * (-caplen % 4)
        if comment:
            text = comment.encode("utf-8")[:_MAX_COMMENT].decode("utf-8", "ignore").encode()
            body += _option(_OPT_COMMENT, text) + _option(_OPT_END, b"")
        self._put(_block(_EPB, body))
        self.count += 1

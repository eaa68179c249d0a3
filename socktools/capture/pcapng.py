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

from socktools.capture.common import (DEFAULT_SNAPLEN, MAX_RECORD_BYTES, MAX_TIMESTAMP_NS,
                                      CaptureFileError, MalformedCaptureError)
from socktools.capture.files import CaptureFile, CaptureWriter, Record, check_linktype

__all__ = ["PcapngWriter", "open_pcapng"]

_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D
_IDB, _SPB, _EPB = 1, 3, 6
_OPT_END, _OPT_COMMENT, _SHB_USERAPPL, _IF_NAME, _IF_TSRESOL = 0, 1, 4, 2, 9
#: A larger block length field means the file is corrupt: it is refused before
#: anything is read (common.MAX_RECORD_BYTES says why that number).
_MAX_BLOCK = MAX_RECORD_BYTES


# ------------------------------------------------------------------- reading
def open_pcapng(f: BinaryIO, path: str) -> CaptureFile:
    """Read blocks until the first interface description, for the file's first link type.

    Every structural error raises :class:`MalformedCaptureError` with the offset of
    the block at fault; packets before it are still given."""
    blocks = _blocks(f, path)
    first: list = []
    for block in blocks:
        first.append(block)
        kind = block[0]
        if kind == _IDB:
            break
        if kind in (_EPB, _SPB):
            raise MalformedCaptureError(path, block[3], "packet before any interface description")
    idbs = [b for b in first if b[0] == _IDB]
    if not idbs:
        if blocks.truncated:
            raise MalformedCaptureError(path, blocks.cut_at, blocks.truncated)
        raise MalformedCaptureError(path, blocks.offset,
                                    "no interface description (a pcapng file without packets)")
    _kind, body, order, offset = idbs[0]
    linktype = _idb(path, offset, body, order)[0]
    check_linktype(path, linktype, offset)
    cap = CaptureFile(f, path, "pcapng", linktype)
    cap._reader = _records(cap, first, blocks)
    return cap


def _records(cap: CaptureFile, first: list, blocks: "_Blocks") -> Iterator[Record]:
    path = cap.path
    interfaces: list[tuple[int, object]] = []     # (linktype, ns per tick), per section

    def chain():
        yield from first
        yield from blocks

    for kind, body, order, offset in chain():
        if kind == _SHB:
            interfaces = []                        # a new section numbers interfaces afresh
        elif kind == _IDB:
            lt, res = _idb(path, offset, body, order)
            check_linktype(path, lt, offset)
            interfaces.append((lt, res))
        elif kind == _EPB:
            if len(body) < 20:
                raise MalformedCaptureError(path, offset, f"enhanced packet block too short "
                                                          f"({len(body)} bytes of body, needs 20)")
            ifid, hi, lo, caplen, wirelen = struct.unpack(order + "IIIII", body[:20])
            if ifid >= len(interfaces):
                raise MalformedCaptureError(path, offset, f"packet for interface {ifid}, but the "
                                                          f"section describes {len(interfaces)}")
            if caplen > len(body) - 20:
                raise MalformedCaptureError(path, offset, f"captured length {caplen} runs past "
                                                          f"the block ({len(body) - 20} bytes)")
            if caplen > wirelen:
                raise MalformedCaptureError(path, offset, f"captured length {caplen} is more than "
                                                          f"the packet's original length {wirelen}")
            lt, res = interfaces[ifid]
            ticks = (hi << 32) | lo
            ts_ns = ticks * res if isinstance(res, int) else int(ticks * res)
            if ts_ns > MAX_TIMESTAMP_NS:
                raise MalformedCaptureError(
                    path, offset, f"time stamp {ticks} ticks of {res} ns is {ts_ns // 10**9} s "
                                  f"after 1970, past the year 2554 (2^64 ns, the latest sniff "
                                  f"handles)")
            yield ts_ns, body[20:20 + caplen], wirelen, lt
        elif kind == _SPB:                         # simple packet block: interface 0, no time
            if not interfaces:
                raise MalformedCaptureError(path, offset, "packet before any interface description")
            if len(body) < 4:
                raise MalformedCaptureError(path, offset, f"simple packet block too short "
                                                          f"({len(body)} bytes of body, needs 4)")
            wirelen = struct.unpack(order + "I", body[:4])[0]
            yield 0, body[4:4 + wirelen], wirelen, interfaces[0][0]
    if blocks.truncated:
        cap.truncated = f"at byte {blocks.cut_at}: {blocks.truncated}"


class _Blocks:
    """Iterator of ``(kind, body, byte order, offset)``; ``truncated`` says if the file
    stopped mid-block (and ``cut_at`` where that block began)."""

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._gen = self._run(f, path)
        self.truncated: Optional[str] = None
        self.cut_at = 0
        self.offset = 0                  # where the next block starts
        self.blocks = 0

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def _cut(self, what: str) -> None:
        self.cut_at = self.offset
        self.truncated = f"cut short in a {what} after {self.blocks} blocks"

    def _run(self, f: BinaryIO, path: str):
        order = "<"
        while True:
            at = self.offset
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
                if bom == struct.pack("<I", _BOM):
                    order = "<"
                elif bom == struct.pack(">I", _BOM):
                    order = ">"
                else:
                    raise MalformedCaptureError(path, at, f"section header's byte-order magic is "
                                                          f"{bom.hex()}, not 1a2b3c4d either way")
                total = struct.unpack(order + "I", head[4:8])[0]
                _check_length(path, at, total, 28)
                rest = f.read(total - 12)
                if len(rest) < total - 12:
                    self._cut("section header")
                    return
                major = struct.unpack(order + "H", rest[:2])[0]
                if major != 1:
                    raise MalformedCaptureError(path, at, f"pcapng version {major} (sniff reads 1)")
                _check_trailer(path, at, total, rest[-4:], order)
                self.blocks += 1
                self.offset = at + total
                yield _SHB, bom + rest[:-4], order, at
                continue
            total = struct.unpack(order + "I", head[4:8])[0]
            _check_length(path, at, total, 12)
            body = f.read(total - 8)
            if len(body) < total - 8:
                self._cut("packet block" if kind in (_EPB, _SPB) else "block")
                return
            _check_trailer(path, at, total, body[-4:], order)
            self.blocks += 1
            self.offset = at + total
            yield kind, body[:-4], order, at


def _check_length(path: str, at: int, total: int, least: int) -> None:
    """A block's length field, checked before anything is read: bounded, aligned."""
    if total < least:
        raise MalformedCaptureError(path, at, f"block length {total} is less than {least}")
    if total % 4:
        raise MalformedCaptureError(path, at, f"block length {total} is not a multiple of 4")
    if total > _MAX_BLOCK:
        raise MalformedCaptureError(path, at, f"block length {total} is more than any block "
                                              f"holds ({_MAX_BLOCK >> 20} MiB): corrupt block")


def _check_trailer(path: str, at: int, total: int, trailer: bytes, order: str) -> None:
    again = struct.unpack(order + "I", trailer)[0]
    if again != total:
        raise MalformedCaptureError(path, at, f"block's trailing length {again} differs from "
                                              f"its leading length {total}")


def _blocks(f: BinaryIO, path: str) -> _Blocks:
    return _Blocks(f, path)


def _idb(path: str, offset: int, body: bytes, order: str) -> tuple[int, object]:
    """(link type, ns per tick) of an interface description block at ``offset``."""
    if len(body) < 8:
        raise MalformedCaptureError(path, offset, f"interface description block too short "
                                                  f"({len(body)} bytes of body, needs 8)")
    linktype = struct.unpack(order + "H", body[:2])[0]
    ns_per_tick: object = 1000           # default resolution: microseconds
    i = 8
    while i < len(body):
        if i + 4 > len(body):
            raise MalformedCaptureError(path, offset, "interface description's option header "
                                                      "runs past the block")
        code, length = struct.unpack(order + "HH", body[i:i + 4])
        if code == _OPT_END:
            break
        if i + 4 + length > len(body):
            raise MalformedCaptureError(path, offset, f"interface description's option {code} "
                                                      f"(length {length}) runs past the block")
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
        if ts_ns > MAX_TIMESTAMP_NS:      # readers refuse these; this says so if one slips by
            raise CaptureFileError(f"cannot write {self.path}: packet {self.count + 1} is "
                                   f"stamped past 2^64 ns (year 2554), what pcapng holds")
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

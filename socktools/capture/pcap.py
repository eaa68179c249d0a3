"""Capture files with ``struct``: classic pcap read/write, and opening either format.

Writing (``-w``) uses nanosecond pcap (magic 0xa1b23c4d): the kernel stamps
packets in nanoseconds and a file should keep what it was given.  tcpdump
(``-r``), tshark, Wireshark and scapy read it; ``-w x.pcapng`` writes pcapng
(``pcapng.py``).  Reading accepts classic pcap in either byte order with
micro- or nanosecond stamps, and pcapng.

A file cut short (the capture was killed, the disk filled) reads up to its last
complete packet and then says so: :attr:`CaptureFile.truncated` is set, as
tcpdump says "truncated dump file".  A corrupt record (a captured length above the
original length or above ``MAX_RECORD_BYTES``) raises
:class:`~socktools.capture.common.MalformedCaptureError` naming its byte offset, after the
records before it were given.

Opening for writing (``files.open_for_writing``) refuses a symbolic link and
the file being read.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, Optional

from socktools.capture.common import (CaptureFileError, DEFAULT_SNAPLEN, MAX_RECORD_BYTES,
                                      MalformedCaptureError)
from socktools.capture.files import CaptureFile, CaptureWriter, Record, check_linktype, open_for_writing
from socktools.capture.pcapng import PcapngWriter, open_pcapng

__all__ = ["PcapWriter", "CaptureFile", "open_capture", "open_writer", "open_for_writing",
           "Record"]

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_RECORD = struct.Struct("<IIII")
#: A pcap record's seconds are an unsigned 32-bit field: 2106-02-07 06:28:15 UTC.
#: A later packet (pcapng holds 64-bit ticks) is refused, not wrapped or clamped:
#: a file that silently moved a packet in time would lie.
_MAX_PCAP_SECONDS = 0xFFFFFFFF


class PcapWriter(CaptureWriter):
    """Append frames to a nanosecond pcap file; ``write(ts_ns, frame, wirelen, linktype)``.

    Writes are buffered (1 MiB) so a fast capture does not make a system call
    per packet; :meth:`flush` runs whenever the capture waits for packets, so
    the file is never far behind, and :meth:`close` flushes the rest.  A pcap
    file has one link type; a packet of another (a pcapng input with mixed
    interfaces) is refused with a hint to write pcapng.
    """

    format = "pcap"

    def __init__(self, path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN, *,
                 protect: Optional[tuple[int, int]] = None) -> None:
        super().__init__(path, linktype, snaplen, protect)
        # magic, version 2.4, thiszone, sigfigs, snaplen, network (link type)
        self._put(struct.pack("<IHHiIII", _MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns: int, frame: bytes, wirelen: int, linktype: Optional[int] = None,
              comment: Optional[str] = None) -> None:
        if linktype is not None and linktype != self.linktype:
            raise CaptureFileError(
                f"cannot write {self.path}: packets of two link types ({self.linktype} and "
                f"{linktype}); a pcap file holds one, write .pcapng instead")
        sec, ns = divmod(ts_ns, 1_000_000_000)
        if sec > _MAX_PCAP_SECONDS:
            raise CaptureFileError(
                f"cannot write {self.path}: packet {self.count + 1} is stamped {sec} s after "
                f"1970, later than a pcap file holds (32-bit seconds: up to "
                f"2106-02-07 06:28:15 UTC); write .pcapng instead (to 2554)")
        caplen = min(len(frame), self._snaplen)
        self._put(_RECORD.pack(sec, ns, caplen, max(wirelen, caplen)))
        self._put(frame[:caplen] if caplen < len(frame) else frame)
        self.count += 1


def open_writer(path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN, *,
                protect: Optional[tuple[int, int]] = None):
    """A pcapng writer for ``*.pcapng``, else a nanosecond pcap writer."""
    if path.lower().endswith((".pcapng", ".ntar")):
        return PcapngWriter(path, linktype, snaplen, protect=protect)
    return PcapWriter(path, linktype, snaplen, protect=protect)


def open_capture(path: str) -> CaptureFile:
    """Open ``path`` (pcap or pcapng); raises CaptureFileError with a reason."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CaptureFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        head = f.read(24)
        if len(head) < 4:
            raise MalformedCaptureError(
                path, 0, "empty file, not a pcap or pcapng capture" if not head else
                f"only {len(head)} bytes: too short for a pcap or pcapng capture")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (_MAGIC_US, _MAGIC_NS):
                if len(head) < 24:
                    raise MalformedCaptureError(
                        path, 0, f"pcap file header cut short ({len(head)} of 24 bytes)")
                linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
                check_linktype(path, linktype, 20)
                cap = CaptureFile(f, path, "pcap", linktype)
                cap._batches = _pcap_batches(f, cap, order, 1 if magic == _MAGIC_NS else 1000)
                return cap
        if struct.unpack("<I", head[:4])[0] == _PCAPNG_SHB:
            f.seek(0)
            return open_pcapng(f, path)
        raise MalformedCaptureError(path, 0, f"not a pcap or pcapng file (magic {head[:4].hex()})")
    except BaseException:
        f.close()
        raise


#: Bytes read from a pcap file at a time: a read (and a list of records) per MiB,
#: not two reads per packet.
_CHUNK = 1 << 20


def _pcap_batches(f: BinaryIO, cap: CaptureFile, order: str, scale: int) -> Iterator[list]:
    """Lists of records, one list per chunk read; sets ``cap.truncated`` if the file is cut,
    raises MalformedCaptureError (after the records before it) at a corrupt record."""
    unpack = struct.Struct(order + "IIII").unpack_from
    linktype = cap.linktype
    buf = b""
    base = 24                          # file offset of buf[0]: records follow the 24-byte header
    while True:
        chunk = f.read(_CHUNK)
        buf = buf + chunk if buf else chunk
        end = len(buf)
        pos = 0
        out = []
        append = out.append
        bad = None
        while pos + 16 <= end:
            sec, frac, caplen, wirelen = unpack(buf, pos)
            if caplen > wirelen or caplen > MAX_RECORD_BYTES:
                bad = MalformedCaptureError(cap.path, base + pos, _bad_caplen(caplen, wirelen))
                break
            nxt = pos + 16 + caplen
            if nxt > end:
                break
            append((sec * 1_000_000_000 + frac * scale, buf[pos + 16:nxt], wirelen, linktype))
            pos = nxt
        if out:
            yield out
        if bad is not None:
            raise bad
        buf = buf[pos:]
        base += pos
        if not chunk:
            if buf:
                done = cap.count
                if len(buf) < 16:
                    cap.truncated = (f"at byte {base}: cut short in a packet header "
                                     f"after {done} packets")
                else:
                    caplen = unpack(buf, 0)[2]
                    cap.truncated = (f"at byte {base}: cut short in packet {done + 1} "
                                     f"({len(buf) - 16} of {caplen} bytes)")
            return


def _bad_caplen(caplen: int, wirelen: int) -> str:
    if caplen > MAX_RECORD_BYTES:
        return (f"captured length {caplen} is more than any packet record holds "
                f"({MAX_RECORD_BYTES >> 20} MiB): corrupt record")
    return f"captured length {caplen} is more than the packet's original length {wirelen}"

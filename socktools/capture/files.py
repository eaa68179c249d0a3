"""What pcap and pcapng share: the opened capture file, and opening a file to write safely.

Opening for writing refuses a symbolic link (``O_NOFOLLOW``: ``-w x.pcap``
run as root must not overwrite whatever ``x.pcap`` points at) and the very
file being read (same device and inode, whatever the name or hard link), and
only then truncates.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Iterator, Optional

from socktools.capture.common import CaptureFileError, MalformedCaptureError, SameFileError
from socktools.capture.dissect import SUPPORTED_LINKTYPES

__all__ = ["CaptureFile", "CaptureWriter", "Record", "check_linktype", "open_for_writing"]

_BUFFER = 1 << 20           # write buffer: one system call per MiB, not per packet

#: ``(timestamp_ns, frame, original_length, linktype)``
Record = tuple


def open_for_writing(path: str, protect: Optional[tuple[int, int]] = None) -> BinaryIO:
    """Open ``path`` to (re)write it: never through a symlink, never the file in ``protect``.

    ``protect`` is the ``(st_dev, st_ino)`` of the file being read.  The file
    is truncated only after both checks pass, so a refusal destroys nothing.
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and os.path.islink(path)):
            try:
                target = f" (to {os.readlink(path)!r})"
            except OSError:
                target = ""
            raise CaptureFileError(f"refusing to write {path}: it is a symbolic link{target}; "
                                   f"give the real file name") from None
        raise CaptureFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if protect is not None and (st.st_dev, st.st_ino) == protect:
            raise SameFileError(f"refusing to write {path}: it is the file being read (-r); "
                                f"write to another file")
        if stat.S_ISREG(st.st_mode):       # /dev/null or a FIFO cannot be (and need not be) cut
            os.ftruncate(fd, 0)
    except OSError as exc:
        os.close(fd)
        raise CaptureFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb", buffering=_BUFFER)


class CaptureWriter:
    """What the pcap and pcapng writers share: the file (opened by :func:`open_for_writing`),
    buffered writes whose errors become :class:`CaptureFileError`, flush and close.  A
    subclass writes its file header in ``__init__`` and its records in ``write``."""

    format = ""

    def __init__(self, path: str, linktype: int, snaplen: int,
                 protect: Optional[tuple[int, int]] = None) -> None:
        self._f = open_for_writing(path, protect)
        self.path = path
        self.count = 0
        self.linktype = linktype
        self._snaplen = snaplen

    def _failed(self, exc: OSError) -> CaptureFileError:
        return CaptureFileError(f"cannot write {self.path}: {exc.strerror or exc}")

    def _put(self, data: bytes) -> None:
        try:
            self._f.write(data)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as exc:
                raise self._failed(exc) from None


class CaptureFile:
    """A pcap or pcapng file opened for reading: ``linktype`` and :meth:`records`.

    ``linktype`` is the first interface's; pcapng records carry their own.
    After :meth:`records` is exhausted, ``truncated`` says why the file ended
    early (None when it ended cleanly) and ``count`` how many packets it gave.
    """

    def __init__(self, f: BinaryIO, path: str, fmt: str, linktype: int) -> None:
        self._f = f
        self.path = path
        self.format = fmt
        self.linktype = linktype
        self.truncated: Optional[str] = None
        self.count = 0
        self.stat = os.fstat(f.fileno())
        self._reader: Iterator[Record] = iter(())
        self._batches: Optional[Iterator[list]] = None   # a reader that gives lists (pcap)

    def batches(self, size: int = 512) -> Iterator[list]:
        """Lists of records, counted as they are read (a list per read of the file for
        pcap, of up to ``size`` for pcapng): the per-packet cost of a generator is
        paid once per list."""
        if self._batches is not None:
            for batch in self._batches:
                self.count += len(batch)
                yield batch
            return
        batch: list = []
        failure = None
        try:
            for rec in self._reader:
                batch.append(rec)
                if len(batch) >= size:
                    self.count += len(batch)
                    yield batch
                    batch = []
        except CaptureFileError as exc:
            failure = exc                # the packets before the bad block are still given
        if batch:
            self.count += len(batch)
            yield batch
        if failure is not None:
            raise failure

    def records(self) -> Iterator[Record]:
        """Yield ``(timestamp_ns, frame, original_length, linktype)`` for each packet."""
        for batch in self.batches():
            yield from batch

    def close(self) -> None:
        self._f.close()


def check_linktype(path: str, linktype: int, offset: int) -> None:
    """Refuse a link type sniff cannot dissect; ``offset`` is where the file names it."""
    if linktype not in SUPPORTED_LINKTYPES:
        raise MalformedCaptureError(
            path, offset, f"link type {linktype} is not supported (Ethernet, raw IP, Linux "
                          f"cooked and BSD loopback captures are)")

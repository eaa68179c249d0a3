"""Zero-copy forwarding: socket -> pipe -> socket with ``os.splice`` (Linux, Python 3.10+).

A link that no toxic and no ``--decode`` needs to see does not bring its bytes
into Python: the kernel moves them from the source socket into a pipe and from
the pipe to the destination socket (haproxy's ``option splice-auto`` does the
same).  The pipe's capacity is the link's bound: the source is read only into
the room the pipe has, and is paused once the pipe holds :data:`PIPE_HIGH`
bytes the destination would not take; it is read again when the pipe is down
to :data:`PIPE_LOW`.  The sender's kernel buffers then fill, as on the copying
path.

Splicing is only the steady state.  Whatever is not -- an EOF, an error, a
close, a toxic added, a reset -- first *unsplices* the link: what the pipe
holds is written to the destination the ordinary way (or dropped, for a
reset), the pipe is closed, and :mod:`socktools.proxy.link`'s copying path
takes over, with its half-close and reset pass-through unchanged.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any, Optional

from socktools.core.loop import Connection
from socktools.core.pollers import IN, OUT
from socktools.errors import RECV, SEND

__all__ = ["AVAILABLE", "SpliceConnection", "Pipe", "PIPE_SIZE", "PIPE_HIGH", "PIPE_LOW"]

log = logging.getLogger("socktools.proxy")

AVAILABLE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")

#: The pipe's asked capacity: 1 MiB, the copying path's HIGH_WATER, so a spliced link holds at
#: most what a copying one does (and Linux's default pipe-max-size for unprivileged users).
#: Best effort: a user over pipe-user-pages-soft keeps the default 64 KiB pipe.
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

#: Stop reading the source once the pipe holds half its capacity that the destination refused
#: (splicing from a socket fills a pipe's pages partly, so its byte capacity is not reached
#: reliably: half is) ...
PIPE_HIGH_FRACTION = 2
#: ... and read again at a quarter, as the copying path's LOW_WATER does, so a link does not
#: flap between paused and reading on every write.
PIPE_LOW_FRACTION = 4
PIPE_HIGH = PIPE_SIZE // PIPE_HIGH_FRACTION
PIPE_LOW = PIPE_SIZE // PIPE_LOW_FRACTION
#: With ``--splice auto``: a spliced link whose reads stay under SMALL_READ bytes (and pass on
#: whole) UNSPLICE_AFTER times in a row went back to small messages -- an HTTP keep-alive
#: connection after a download -- and returns to the batch path, where a small message costs
#: less (bench_proxy.py: 0.96x haproxy's round trips batched, 0.80x spliced).  16 reads: one
#: short tail of a transfer does not flap the link between the two paths.
SMALL_READ = 4096
UNSPLICE_AFTER = 16


class Pipe:
    """One direction's pipe: ``link.src`` is spliced into it, it is spliced into ``link.dst``."""

    __slots__ = ("link", "r", "w", "size", "count", "high", "low", "small", "auto")

    def __init__(self, link: Any) -> None:
        self.link = link
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass                         # over the user's pipe pages: the default size
        self.size = fcntl.fcntl(self.w, _F_GETPIPE_SZ)
        self.high = self.size // PIPE_HIGH_FRACTION
        self.low = self.size // PIPE_LOW_FRACTION
        self.count = 0                   # bytes in the pipe
        self.small = 0                   # small reads in a row, passed on whole (SMALL_READ)
        self.auto = link.pair.proxy.server.config.splice == "auto"    # (may go back to batches)

    def fill(self) -> None:
        """The source is readable: splice what the pipe has room for, then pass it on."""
        link = self.link
        src = link.src
        try:
            n = os.splice(src.fd, self.w, self.size - self.count, flags=_FLAGS)
        except (BlockingIOError, InterruptedError):
            # Nothing to read -- or the pipe is full (splice says EAGAIN for both): wait for
            # the destination before reading again, so a full pipe cannot spin the loop.
            if self.count:
                self._pause()
            return
        except OSError as exc:
            link.unsplice(deliver=True)
            src._fail(exc, RECV)
            return
        if not n:
            link.unsplice(deliver=True)
            src._on_eof()                # the copying path passes the FIN on
            return
        src.bytes_in += n
        self.count += n
        self.flush()
        if self.count >= self.high:
            self._pause()
        elif n < SMALL_READ and not self.count and self.auto:
            self.small += 1
            if self.small >= UNSPLICE_AFTER:
                link.unsplice(deliver=True)      # small messages again: the batch path's
        else:
            self.small = 0

    def flush(self) -> None:
        """Splice what the pipe holds into the destination, as far as it takes it."""
        link = self.link
        dst = link.dst
        if dst._out is not None or dst.closed:
            return                       # bytes written the ordinary way go first
        moved = 0
        while self.count:
            try:
                m = os.splice(self.r, dst.fd, self.count, flags=_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                link.unsplice(deliver=False)
                dst._fail(exc, SEND)
                return
            self.count -= m
            moved += m
        if moved:
            dst.bytes_out += moved
            link.delivered += moved
            dst.last_active = dst.loop.now
        if self.count or dst._events & OUT:
            dst.refresh()                # write interest while the pipe owes it bytes, not after
        if link.paused and self.count <= self.low:
            link.paused = False
            link.src.resume_reading()

    def _pause(self) -> None:
        if not self.link.paused:
            self.link.paused = True
            self.link.src.pause_reading()

    def drain(self) -> bytes:
        """What the pipe holds, read out (at most its capacity: the bound is the pipe's)."""
        parts = []
        while self.count:
            try:
                data = os.read(self.r, self.count)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            parts.append(data)
            self.count -= len(data)
        return b"".join(parts)

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.count = 0


class SpliceConnection(Connection):
    """A proxy connection whose reads may go into a pipe (``splice_out``) and whose writes may
    come from one (``splice_in``); with neither it is an ordinary :class:`Connection`."""

    __slots__ = ("splice_out", "splice_in", "link")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.splice_out: Optional[Pipe] = None
        self.splice_in: Optional[Pipe] = None
        self.link: Any = None            # the link this connection is the source of, once up

    @property
    def _batchable(self) -> bool:
        """A plain link's source (no toxic, no decoder, no pipe) is read by the loop's batch
        path; :meth:`refresh` after any of those changes moves it in or out."""
        link = self.link
        return link is not None and link.plain

    @property
    def steady(self) -> bool:
        """Open both ways, no end requested: a link may splice through this connection."""
        return not (self.closed or self.eof or self._shut_wr or self._closing or self.connecting)

    def refresh(self) -> None:
        """Interest again, after a pipe feeding this connection came or went."""
        if not self.closed:
            self._update()

    @property
    def pending(self) -> int:
        pipe = self.splice_in
        return Connection.pending.fget(self) + (pipe.count if pipe is not None else 0)

    def _on_event(self, mask: int) -> None:
        pipe = self.splice_out
        if pipe is None or self.connecting:
            Connection._on_event(self, mask)
        elif not self.closed:
            self.last_active = self.loop.now
            if self._out is not None and mask & ~IN:
                self._on_writable()
            if self._reading and mask & ~OUT and not self.closed:
                pipe.fill()
        owed = self.splice_in
        if owed is not None and owed.count and mask & ~IN and not self.closed:
            owed.flush()

    def _update(self) -> None:
        Connection._update(self)
        owed = self.splice_in
        if owed is not None and owed.count and not self.closed and not self._events & OUT:
            want = self._events | OUT
            self.loop._set_events(self, self._events, want)
            self._events = want

    def close(self) -> None:
        # Bytes already in the pipes are handed on before the close, as an out-buffer's are.
        for pipe in (self.splice_in, self.splice_out):
            if pipe is not None:
                pipe.link.unsplice(deliver=True)
        Connection.close(self)

    def _finish(self, exc: Optional[BaseException]) -> None:
        for pipe in (self.splice_in, self.splice_out):
            if pipe is not None:
                pipe.link.unsplice(deliver=False)
        Connection._finish(self, exc)

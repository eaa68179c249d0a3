"""Signals and stdin EOF as loop events: the one mechanism every command uses.

A signal handler can run between any two bytecodes of the main thread, so
doing real work in one (closing sockets, sending on a pipe) races with the
loop it interrupts.  :class:`SignalQueue` installs handlers that do nothing
and sets Python's *wakeup fd*: the C-level handler writes the signal number as
one byte into a socketpair, which the owning :class:`~socktools.core.loop.Loop`
watches like any other fd and reads when it is ready -- the loop then acts on
the signal between callbacks, never in the middle of one (the pattern uvicorn
and asyncio use).

:func:`watch_stdin_eof` is the other "stop" source of an embedded server: its
owner holds the write end of its stdin, so stdin reaching EOF means the owner
is gone (even a ``kill -9`` of it closes the pipe).

Both read nonblocking fds: ``BlockingIOError`` (a spurious wakeup) and
``InterruptedError`` (a signal arrived mid-read) are handled here, once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable, Iterable, Optional

__all__ = ["SignalQueue", "watch_stdin_eof", "signal_name"]

log = logging.getLogger("socktools.core.signals")

#: Bytes read from the wakeup socket per readiness event: each signal is one
#: byte, and the socket buffer (hundreds of KiB) coalesces nothing, so a
#: burst larger than this is simply read on the next loop iteration.
_READ_SIZE = 512


def _queue_only(signum: int, frame: Any) -> None:
    """The work happens in the loop, woken by the wakeup fd; the handler only has to exist."""


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15; the number itself for one Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class SignalQueue:
    """Queue ``signals`` for a loop to read; optionally ignore others meanwhile.

    Use as a context manager (or :meth:`install` / :meth:`close`); previous
    handlers and the previous wakeup fd come back on close.  Outside the main
    thread Python cannot install handlers: the queue then stays empty and
    :meth:`fileno` is ``None``.
    """

    def __init__(self, signals: Iterable[int], *, ignore: Iterable[int] = ()) -> None:
        self.signals = tuple(signals)
        self.ignore = tuple(ignore)
        self.previous: dict[int, Any] = {}
        self._old_wakeup: Optional[int] = None
        self._r: Optional[socket.socket] = None
        self._w: Optional[socket.socket] = None

    def install(self) -> "SignalQueue":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)  # the C handler must never block on a full buffer
        self._old_wakeup = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, _queue_only)
        for sig in self.ignore:
            self.previous[sig] = signal.signal(sig, signal.SIG_IGN)
        return self

    def fileno(self) -> Optional[int]:
        return self._r.fileno() if self._r is not None else None

    def read(self) -> list[int]:
        """The signals queued since the last read, oldest first (may be empty)."""
        if self._r is None:
            return []
        try:
            data = self._r.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        # The wakeup fd carries every caught signal, also ones some other code
        # installed a handler for: hand on only the ones we asked for.
        return [s for s in data if s in self.signals]

    def attach(self, loop: Any, on_signal: Callable[[int], None]) -> None:
        """Call ``on_signal(signum)`` from ``loop`` for each queued signal."""
        if self._r is None:
            return

        def ready() -> None:
            for signum in self.read():
                on_signal(signum)

        loop.add_reader(self._r, ready)

    def close(self) -> None:
        """Restore the previous handlers and wakeup fd; close the socketpair."""
        if self._r is None:
            return
        signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}
        self._close_sockets()

    def forget_in_child(self) -> None:
        """In a forked child: drop the wakeup fd and this queue's handlers without touching the parent's.

        The child inherited the handlers and the socketpair; a signal caught
        there must not land in the parent's queue.  Previous handlers come back
        (the child then installs whatever it needs).
        """
        if self._r is None:
            return
        signal.set_wakeup_fd(-1)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in (self._r, self._w):
            if s is not None:
                s.close()
        self._r = self._w = None

    def __enter__(self) -> "SignalQueue":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def watch_stdin_eof(loop: Any, on_eof: Callable[[], None], *, fd: Optional[int] = None) -> bool:
    """Call ``on_eof()`` once when stdin (or ``fd``) reaches end of file; False if it cannot be watched.

    Whatever arrives before EOF is read and discarded.  A read error other
    than "try again" (EIO from a hung-up terminal, say) counts as EOF: the
    owner is gone either way.  stdin that is missing, closed, or a regular
    file or /dev/null (epoll refuses those: EPERM) cannot be watched.
    """
    if fd is None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return False

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.info("stdin unreadable (%s): treating it as closed", exc)
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_eof()

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, OSError) as exc:
        log.debug("cannot watch stdin for EOF: %s", exc)
        return False
    return True

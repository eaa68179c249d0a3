"""Accepting connections on a :class:`~socktools.core.loop.Loop`, as one mechanism.

``serve``'s workers, the proxy's listeners and the proxy's HTTP API all accept the same way:
a bounded bite of connections per readiness event, the owner's ``on_accept(sock, peer)`` for
each, and a *pause* -- not a spin -- when the process runs out of descriptors or memory.  A
listener whose accept() fails with EMFILE stays readable: waiting on it again would wake the
loop at once, for ever, so the listener leaves the loop and comes back after
:data:`ACCEPT_RETRY` (or sooner, when the owner calls :meth:`Acceptor.resume` because one of
its connections closed); the clients wait in the kernel's backlog meanwhile.  An owner may cap
its connections too (``room``): the same pause, without the timer.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable, Optional

from socktools import errors

__all__ = ["Acceptor", "ACCEPT_BATCH", "ACCEPT_RETRY", "RESOURCE_ERRORS"]

#: Connections accepted per readiness event: bounds how long one listener keeps the loop from
#: the connections it already has (and leaves some for sibling workers on a shared socket).
ACCEPT_BATCH = 64
#: After a resource error at accept(): how long before accept() is tried again, when no
#: connection of the owner's closes first.  A quarter second: a busy server frees descriptors
#: within that, and four retries a second cost nothing.
ACCEPT_RETRY = 0.25
#: The errors that say "this process cannot take a connection now", not "that client is gone".
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts from ``listener`` on ``loop`` while started.

    ``on_accept(sock, peer)`` takes each connection.  ``on_pause(why)`` is told when accepting
    pauses (to log it, count it); ``on_error(exc)`` of an accept that failed for one client only
    (ECONNABORTED, EPROTO, a firewall's EPERM); ``room()`` -- asked before each accept --
    returns why no more connections may come now (a cap), or None.
    """

    __slots__ = ("loop", "listener", "on_accept", "on_pause", "on_error", "room", "batch", "retry",
                 "accepting", "stopped", "_timer")

    def __init__(self, loop: Any, listener: socket.socket, on_accept: Callable[[socket.socket, Any], None], *,
                 on_pause: Optional[Callable[[str], None]] = None,
                 on_error: Optional[Callable[[OSError], None]] = None,
                 room: Optional[Callable[[], Optional[str]]] = None,
                 batch: int = ACCEPT_BATCH, retry: float = ACCEPT_RETRY) -> None:
        self.loop = loop
        self.listener = listener
        self.on_accept = on_accept
        self.on_pause = on_pause
        self.on_error = on_error
        self.room = room
        self.batch = batch
        self.retry = retry
        self.accepting = False
        self.stopped = True
        self._timer: Any = None

    def start(self) -> None:
        """Accept from now on."""
        self.stopped = False
        self._watch()

    def stop(self) -> None:
        """Accept no more (a drain, a proxy disabled): the listener leaves the loop, and a
        pending retry is cancelled.  The listener itself is the owner's to close."""
        self.stopped = True
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resume(self) -> None:
        """A connection of the owner's closed (a descriptor or a slot is free): accept again
        now, if paused and not waiting for a retry already."""
        if self._timer is None:
            self._watch()

    def pause(self, why: str) -> None:
        if self.accepting:
            self._unwatch()
            if self.on_pause is not None:
                self.on_pause(why)

    # ------------------------------------------------------------ internals
    def _watch(self) -> None:
        if not self.accepting and not self.stopped:
            self.loop.add_reader(self.listener, self._on_readable)
            self.accepting = True

    def _unwatch(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.listener)
            self.accepting = False

    def _retry_now(self) -> None:
        self._timer = None
        self._watch()

    def _on_readable(self) -> None:
        accept, room = self.listener.accept, self.room
        for _ in range(self.batch):
            if room is not None:
                full = room()
                if full:
                    self.pause(full)
                    return
            try:
                sock, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    self.pause(f"{errors.one_line(exc)}; trying again in {self.retry:g}s")
                    if self._timer is None:
                        self._timer = self.loop.call_later(self.retry, self._retry_now)
                    return
                if self.on_error is not None:
                    self.on_error(exc)
                continue
            self.on_accept(sock, peer)
            if self.stopped:             # (the owner stopped while taking that one)
                return

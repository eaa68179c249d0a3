"""The pollers under :class:`socktools.core.loop.Loop`: epoll used directly, or any selector.

Both speak epoll's interface -- ``register(fd, mask)``, ``modify``,
``unregister``, ``poll(timeout) -> [(fd, mask)]`` -- with epoll's bits
(``IN``, ``OUT``), so the loop looks events up by fd and never builds a
``SelectorKey``.  epoll is the default on Linux; the ``selectors`` fallback
(``Loop(selectors.DefaultSelector())``) runs everywhere else and in tests.
"""

from __future__ import annotations

import math
import select
import selectors
from typing import Optional

__all__ = ["EpollPoller", "SelectorPoller", "IN", "OUT", "MAX_EVENTS", "FINE_WAIT"]

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
#: Interest and readiness bits: epoll's values (the selector poller translates).
IN = getattr(select, "EPOLLIN", 1)
OUT = getattr(select, "EPOLLOUT", 4)

#: Events fetched per poll; more wait in the kernel for the next iteration.
MAX_EVENTS = 1024

#: Waits shorter than this (seconds) are timed with select() on the epoll fd,
#: which has microsecond resolution; epoll itself counts milliseconds.
FINE_WAIT = 0.002



class EpollPoller:
    """epoll, with ``poll()`` returning ``[(fd, mask)]`` in epoll's bits."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._fds = [self._ep.fileno()]
        self.register = self._ep.register
        self.modify = self._ep.modify

    def unregister(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):  # already closed: the kernel dropped it
            pass

    def poll(self, timeout: Optional[float]) -> list:
        if timeout is None:
            return self._ep.poll(-1, MAX_EVENTS)
        if timeout >= FINE_WAIT:
            # epoll counts whole milliseconds: round down (wake a little early,
            # the loop then waits out the rest finely) rather than up (a timer
            # up to 1 ms late -- all of it error in a paced load generator).
            return self._ep.poll(math.floor(timeout * 1e3) * 1e-3, MAX_EVENTS)
        if timeout > 0:
            # Short waits: select() on the epoll fd itself (readable when any
            # watched fd is) has microsecond resolution.
            select.select(self._fds, (), (), timeout)
        return self._ep.poll(0, MAX_EVENTS)

    def close(self) -> None:
        self._ep.close()


class SelectorPoller:
    """Any ``selectors`` selector, translated to the epoll-style interface."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector

    @staticmethod
    def _to_sel(mask: int) -> int:
        return (EVENT_READ if mask & IN else 0) | (EVENT_WRITE if mask & OUT else 0)

    def register(self, fd: int, mask: int) -> None:
        self.selector.register(fd, self._to_sel(mask))

    def modify(self, fd: int, mask: int) -> None:
        self.selector.modify(fd, self._to_sel(mask))

    def unregister(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def poll(self, timeout: Optional[float]) -> list:
        return [(key.fd, (IN if ev & EVENT_READ else 0) | (OUT if ev & EVENT_WRITE else 0))
                for key, ev in self.selector.select(timeout)]

    def close(self) -> None:
        self.selector.close()

"""Run ``socktools sockets``: read the table once, or sample it live (``--watch``).

Nothing here renders or prints: :func:`table` returns entries, :func:`frames`
yields one :class:`~.results.Frame` per refresh, and the CLI hands them to
:mod:`.report`.  The clock and the sleep are parameters so that tests drive
the loop.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from socktools.kernel.socktable import SocketEntry, read_sockets

from .config import SocketsConfig


def read(config: SocketsConfig) -> list[SocketEntry]:
    return read_sockets(families=config.families, match=config.filter,
                        processes=config.processes, tcp_info=config.wants_tcp_info,
                        memory=config.memory, source=config.source)


def table(config: SocketsConfig) -> list[SocketEntry]:
    """The one-shot table: the matching sockets, in ``--sort`` order if asked."""
    entries = read(config)
    if config.sort is not None:
        from .results import Row, sort_key
        entries = [r.entry for r in sorted((Row(e) for e in entries), key=sort_key(config.sort))]
    return entries


def frames(config: SocketsConfig, *, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep,
           wall: Callable[[], float] = time.time) -> Iterator:
    """``config.count`` frames (forever when None), one interval apart.

    A silent first read is the baseline, so every frame carries rates.  The
    schedule does not drift: a frame is due every interval from the start,
    unless a read took longer than an interval (then the next one is due now).
    """
    from .results import RateTracker
    tracker = RateTracker(config.sort)
    at = clock()
    tracker.update(at, read(config), clock() - at)
    next_at = at + config.interval
    shown = 0
    while config.count is None or shown < config.count:
        delay = next_at - clock()
        if delay > 0:
            sleep(delay)
        # The dump is the first thing read() does: the counters are as of (about) this instant.
        at = clock()
        entries = read(config)
        frame = tracker.update(at, entries, clock() - at, wall=wall())
        next_at = max(next_at + config.interval, clock())
        shown += 1
        yield frame

"""Run ``socktools sockets``: read the table once, or refresh it live (``--watch``).

The clock, the sleep and the writer are parameters so that tests drive the
loop; the CLI passes the real ones and decides how to end (Ctrl-C).
"""

from __future__ import annotations

import time
from typing import Callable

from socktools.kernel.socktable import SocketEntry, paused_gc, read_sockets, resolve_source

from . import report
from .config import SocketsConfig


def read(config: SocketsConfig) -> list[SocketEntry]:
    return read_sockets(families=config.families, match=config.filter,
                        processes=config.processes, tcp_info=config.wants_tcp_info,
                        memory=config.memory, source=config.source)


def run_once(config: SocketsConfig, write: Callable[[str], None]) -> list[SocketEntry]:
    """Print the table (or its JSON) once; returns the sockets that matched."""
    source = resolve_source(config.source)
    entries = read(config)
    if config.sort is not None or config.as_json:
        from .view import Row, sort_key, summarize
    if config.sort is not None:
        entries = [r.entry for r in sorted((Row(e) for e in entries), key=sort_key(config.sort))]
    with paused_gc():           # rendering allocates as many tuples and lists as reading
        if config.as_json:
            write(report.one_shot_json(entries, summarize(entries), source=source))
        elif entries:
            write(report.one_shot(entries, config, source=source))
    return entries


def watch(config: SocketsConfig, write: Callable[[str], None], *, tty: bool,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
          wall: Callable[[], float] = time.time) -> int:
    """Refresh ``config.count`` times (forever when None), one interval apart; returns frames.

    A silent first read is the baseline, so every frame shown carries rates.
    On a terminal each frame replaces the last (cursor home + clear) and is cut
    to the screen's height; otherwise frames are appended, a blank line apart;
    with ``as_json`` each frame is one JSON line.
    """
    from .view import RateTracker
    source = resolve_source(config.source)
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
        frame = tracker.update(at, entries, clock() - at)
        # Keep the schedule (no drift), unless a slow read made us miss a slot.
        next_at = max(next_at + config.interval, clock())
        if config.as_json:
            write(report.frame_json(frame, source=source, wall=wall()))
        else:
            when = time.strftime("%H:%M:%S", time.localtime(wall()))
            if tty:
                import shutil
                lines = shutil.get_terminal_size((100, 40)).lines
                write(report.ANSI_HOME_CLEAR + report.frame_text(
                    frame, config, when=when, max_rows=max(lines - 3, 1)))
            else:
                write(report.frame_text(frame, config, when=when) + "\n")
        shown += 1
    return shown

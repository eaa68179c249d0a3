"""What a refresh shows, computed from socket entries: summary, rates, new and closed.

Pure: a :class:`RateTracker` is fed ``(time, entries)`` samples by whoever reads
the kernel and returns :class:`Frame` objects; nothing here reads a clock.
Rates come from the kernel's own per-socket counters (``tcp_info``:
``bytes_acked`` for what was sent and acknowledged, ``bytes_received``,
``segs_out``/``segs_in``), differenced between two samples of the same socket
(matched by its cookie) and divided by the time between the two reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Sequence

from socktools.kernel.socktable.entry import SocketEntry


@dataclass(frozen=True)
class Summary:
    """TCPView's status line: ``Endpoints: 35  Established: 0  Listening: 17  Time Wait: 4  Close Wait: 0``."""

    endpoints: int
    established: int
    listening: int
    time_wait: int
    close_wait: int

    def render(self) -> str:
        return (f"Endpoints: {self.endpoints}  Established: {self.established}  "
                f"Listening: {self.listening}  Time Wait: {self.time_wait}  "
                f"Close Wait: {self.close_wait}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(entries: Iterable[SocketEntry]) -> Summary:
    counts: dict[str, int] = {}
    n = 0
    for e in entries:
        n += 1
        counts[e.state] = counts.get(e.state, 0) + 1
    return Summary(n, counts.get("ESTABLISHED", 0), counts.get("LISTEN", 0),
                   counts.get("TIME-WAIT", 0), counts.get("CLOSE-WAIT", 0))


_COUNTERS = ("bytes_received", "bytes_acked", "segs_in", "segs_out")


class Row(NamedTuple):
    """One socket in a frame; rates in bytes/s and segments/s, ``None`` where unknown.

    A named tuple, not a dataclass: one is built per socket per frame.
    """

    entry: SocketEntry
    mark: str = ""                      # "new", "closed" or ""
    rate_in: Optional[float] = None     # bytes received per second
    rate_out: Optional[float] = None    # bytes sent and acknowledged per second
    segs_in_rate: Optional[float] = None
    segs_out_rate: Optional[float] = None

    def to_dict(self) -> dict:
        out = self.entry.to_dict()
        out.update(mark=self.mark, rate_in=self.rate_in, rate_out=self.rate_out,
                   segs_in_rate=self.segs_in_rate, segs_out_rate=self.segs_out_rate)
        return out


def _counters(e: SocketEntry) -> Optional[tuple]:
    info = e.tcp_info
    if info is None:
        return None
    vals = info.values
    try:
        return tuple(vals[c] for c in _COUNTERS)
    except KeyError:            # a kernel older than 4.2 lacks segs_in/out
        return None


def sort_key(name: Optional[str]):
    """Key for ``--sort``: the biggest first; sockets without the figure go last."""
    if name is None:
        return None

    def info(row: Row, field: str) -> float:
        ti = row.entry.tcp_info
        return -float(ti.get(field, 0) or 0) if ti is not None else 0.0
    keys = {
        "bytes": lambda r: info(r, "bytes_acked") + info(r, "bytes_received"),
        "rate": lambda r: -((r.rate_in or 0.0) + (r.rate_out or 0.0)),
        "rtt": lambda r: info(r, "rtt"),
        "queue": lambda r: -float(r.entry.recv_q + (r.entry.send_q or 0)),
    }
    return keys[name]


@dataclass(frozen=True)
class Frame:
    """One refresh: when it was read, the time since the previous read, rows, summary."""

    at: float                           # the reader's clock as this read began (seconds)
    interval: Optional[float]           # seconds since the previous read began (None: first one)
    rows: tuple[Row, ...]
    summary: Summary
    # How long this read and the previous one took: the kernel's counters were taken at some
    # instant within [at, at + read_s], which bounds how exact a rate can be.
    read_s: float = 0.0
    previous_read_s: Optional[float] = None
    wall: float = 0.0                   # time.time() of the read, for the reader's clock display

    @property
    def new(self) -> int:
        return sum(1 for r in self.rows if r.mark == "new")

    @property
    def closed(self) -> int:
        return sum(1 for r in self.rows if r.mark == "closed")


class RateTracker:
    """Turns successive samples into frames with per-socket rates.

    A socket seen for the first time after the first sample is ``new`` and its
    rate is its counters over the interval (it was created within it).  A
    socket in the previous sample but not in this one appears once more,
    marked ``closed`` (without rates: its final counters died with it).
    """

    def __init__(self, sort: Optional[str] = None) -> None:
        self._prev: Optional[dict] = None
        self._prev_at: Optional[float] = None
        self._prev_read_s: Optional[float] = None
        self._key = sort_key(sort)

    def update(self, at: float, entries: Sequence[SocketEntry], read_s: float = 0.0,
               wall: float = 0.0) -> Frame:
        """Feed one read that began at ``at`` and took ``read_s``; returns its frame."""
        prev, prev_at = self._prev, self._prev_at
        dt = None if prev_at is None else at - prev_at
        rows: list[Row] = []
        current: dict = {}
        for e in entries:
            key = e.key
            current[key] = e
            if prev is None:
                rows.append(Row(e))
                continue
            before = prev.get(key)
            now_c = _counters(e)
            mark = "" if before is not None else "new"
            if now_c is None or not dt or dt <= 0:
                rows.append(Row(e, mark))
                continue
            then_c = _counters(before) if before is not None else (0, 0, 0, 0)
            if then_c is None or any(n < t for n, t in zip(now_c, then_c)):
                rows.append(Row(e, mark))       # a counter went backwards: not the same socket
                continue
            d = [(n - t) / dt for n, t in zip(now_c, then_c)]
            rows.append(Row(e, mark, d[0], d[1], d[2], d[3]))
        if prev is not None:
            rows.extend(Row(e, "closed") for k, e in prev.items() if k not in current)
        if self._key is not None:
            rows.sort(key=self._key)
        frame = Frame(at, dt, tuple(rows), summarize(entries), read_s, self._prev_read_s, wall)
        self._prev, self._prev_at, self._prev_read_s = current, at, read_s
        return frame

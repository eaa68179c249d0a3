"""What a ping produces, as data: the target, one :class:`Probe` per attempt, the summary."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["Target", "Probe", "PingStats", "summarize"]


@dataclass(frozen=True)
class Target:
    host: str            # as the user typed it
    family: int
    sockaddr: Any        # the address actually used (print it: a name may resolve differently next
                         # time), or a Unix socket's path
    display: str         # "127.0.0.1:65432" or "[::1]:65432" (TCP), "127.0.0.1" (ICMP)


@dataclass(frozen=True)
class Probe:
    """One attempt.  ``ok`` probes have ``time_ms``; failed ones name what went wrong.

    ``error`` is an errno name (``ECONNREFUSED``), a socktools pseudo-error
    (``timeout``) or, for ICMP, ``icmp-<type>/<code>``; ``detail`` says it
    in words (the errors table's meaning, or the ICMP type/code's name).
    """

    seq: int
    ok: bool
    time_ms: Optional[float]
    peer: str
    error: Optional[str] = None
    errno: Optional[int] = None
    detail: Optional[str] = None
    ttl: Optional[int] = None
    icmp: Optional[tuple[int, int]] = None     # (type, code) of the reply, ICMP only
    elapsed_ms: Optional[float] = None         # time until the failure was known

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PingStats:
    """ping's summary.  Times in ms; ``None`` when nothing was received."""

    sent: int
    received: int
    loss_pct: float
    min_ms: Optional[float]
    avg_ms: Optional[float]
    max_ms: Optional[float]
    stddev_ms: Optional[float]
    failures: tuple[tuple[str, int], ...]      # (error, how many), most frequent first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = dict(self.failures)
        return d


def summarize(results: list[Probe]) -> PingStats:
    """Sent/received/loss and min/avg/max/stddev (ping's mdev: population stddev)."""
    sent = len(results)
    times = [p.time_ms for p in results if p.ok and p.time_ms is not None]
    received = len(times)
    tally: dict[str, int] = {}
    for p in results:
        if not p.ok:
            tally[p.error or "?"] = tally.get(p.error or "?", 0) + 1
    loss = 100.0 * (sent - received) / sent if sent else 0.0
    if times:
        avg = sum(times) / received
        var = max(0.0, sum(t * t for t in times) / received - avg * avg)
        stats = (min(times), avg, max(times), math.sqrt(var))
    else:
        stats = (None, None, None, None)
    return PingStats(sent, received, loss, *stats,
                     failures=tuple(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))))

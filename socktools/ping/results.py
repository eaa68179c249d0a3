"""What a ping produces, as data: the target, one :class:`Probe` per attempt, the summary."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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
    # --tls: the TCP connect and the TLS handshake, timed apart (time_ms is the connect, as
    # without TLS, and the probe is ok only when both succeeded); phase says which failed
    connect_ms: Optional[float] = None
    handshake_ms: Optional[float] = None
    tls_version: Optional[str] = None
    tls_cipher: Optional[str] = None
    phase: Optional[str] = None                # "connect" / "handshake" for a failed TLS probe
    leaf: Any = field(default=None, compare=False)   # the server's certificate (tlsinfo.CertInfo)
    # --udp: the reply's size, and the other datagrams read while this probe waited -- late
    # replies to earlier probes, duplicates, foreign ones -- as (kind, seq or None), in order;
    # counts: the run's datagram.Ledger counts once this probe was settled (None: not UDP)
    size: Optional[int] = None
    events: Optional[tuple] = None
    counts: Any = field(default=None, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["leaf"], d["counts"]
        if self.connect_ms is None and self.phase is None:     # no --tls: the keys it always had
            for key in ("connect_ms", "handshake_ms", "tls_version", "tls_cipher", "phase"):
                del d[key]
        if self.events is None:                                # no --udp: nor these
            del d["size"], d["events"]
        else:
            d["events"] = [{"kind": kind, "seq": seq} for kind, seq in self.events]
        return d


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
    handshake: Optional[dict] = None           # --tls: min/avg/max/stddev of the handshakes, ms
    versions: tuple = ()                       # --tls: (version, how many) negotiated
    datagrams: Optional[dict] = None           # --udp: the ledger's counts (sent, answered, late...)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = dict(self.failures)
        d["versions"] = dict(self.versions)
        if self.datagrams is None:          # not --udp: the keys it always had
            del d["datagrams"]
        return d


def _spread(times: list) -> tuple:
    """min, avg, max and stddev (ping's mdev: population stddev); Nones when empty."""
    if not times:
        return (None, None, None, None)
    n = len(times)
    avg = sum(times) / n
    var = max(0.0, sum(t * t for t in times) / n - avg * avg)
    return (min(times), avg, max(times), math.sqrt(var))


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
    handshakes = [p.handshake_ms for p in results if p.handshake_ms is not None]
    handshake = dict(zip(("min_ms", "avg_ms", "max_ms", "stddev_ms"), _spread(handshakes))) if handshakes else None
    versions: dict[str, int] = {}
    for p in results:
        if p.tls_version:
            versions[p.tls_version] = versions.get(p.tls_version, 0) + 1
    counts = next((p.counts for p in reversed(results) if p.counts is not None), None)
    return PingStats(sent, received, loss, *_spread(times),
                     failures=tuple(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))),
                     handshake=handshake, versions=tuple(sorted(versions.items(), key=lambda kv: -kv[1])),
                     datagrams=dict(counts) if counts is not None else None)

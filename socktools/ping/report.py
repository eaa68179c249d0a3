"""`socktools ping`'s lines for a person: one per probe, then ping's summary."""

from __future__ import annotations

import datetime
import socket
from typing import Optional

from socktools import errors
from socktools.ping.results import PingStats, Probe, Target
from socktools.tlsinfo import EXPIRY_WARNING_DAYS, expiry_words

__all__ = ["plural", "probe_line", "summary_lines", "to_json", "expiry_warning"]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def probe_line(p: Probe, icmp: bool) -> str:
    if icmp:
        if p.ok:
            return f"reply from {p.peer}: icmp_seq={p.seq} ttl={p.ttl} time={p.time_ms:.3f} ms"
        if p.icmp:
            return f"from {p.peer}: icmp_seq={p.seq} {p.detail}"
        return f"no reply from {p.peer}: icmp_seq={p.seq} {p.error} - {p.detail}"
    if p.ok and p.handshake_ms is not None:
        return (f"connected to {p.peer}: seq={p.seq} connect={p.connect_ms:.3f} ms "
                f"handshake={p.handshake_ms:.3f} ms {p.tls_version}")
    if p.ok:
        return f"connected to {p.peer}: seq={p.seq} time={p.time_ms:.3f} ms"
    if p.phase == "handshake":
        took = f", handshake failed after {p.elapsed_ms:.3f} ms" if p.error != errors.TIMEOUT else ""
        return f"no TLS with {p.peer}: seq={p.seq} {p.error} - {p.detail} (connect={p.connect_ms:.3f} ms{took})"
    took = f" (after {p.elapsed_ms:.3f} ms)" if p.elapsed_ms is not None and p.error != "ETIMEDOUT" else ""
    return f"no connection to {p.peer}: seq={p.seq} {p.error} - {p.detail}{took}"


def expiry_warning(leaf, now: datetime.datetime) -> Optional[str]:
    """The one warning for a server certificate with fewer than ``EXPIRY_WARNING_DAYS`` left
    (or already expired, seen with --insecure); None when it has more."""
    words = expiry_words(leaf.days_left(now))
    if not words:
        return None
    return (f"the server's certificate {words} (not after {leaf.not_after:%Y-%m-%d %H:%M} UTC; "
            f"ping warns within {EXPIRY_WARNING_DAYS} days of expiry): {leaf.subject or ', '.join(leaf.sans)}")


def summary_lines(target: Target, stats: PingStats, elapsed_s: float, icmp: bool, tls: bool = False) -> list[str]:
    what = "icmp" if icmp else "unix" if target.family == socket.AF_UNIX else "tcp"
    what = f"{what} tls" if tls else what
    got = "received" if icmp else "connected"
    lines = [f"--- {target.display} {what} ping statistics ---",
             f"{plural(stats.sent, 'probe')} sent, {stats.received} {got}, {stats.loss_pct:.0f}% loss, "
             f"time {elapsed_s * 1000:.0f} ms"]
    if stats.received:
        lines.append(f"rtt min/avg/max/stddev = {stats.min_ms:.3f}/{stats.avg_ms:.3f}/"
                     f"{stats.max_ms:.3f}/{stats.stddev_ms:.3f} ms")
    if stats.handshake:
        h = stats.handshake
        lines.append(f"handshake min/avg/max/stddev = {h['min_ms']:.3f}/{h['avg_ms']:.3f}/"
                     f"{h['max_ms']:.3f}/{h['stddev_ms']:.3f} ms, "
                     + ", ".join(f"{version} x{n}" for version, n in stats.versions))
    for key, n in stats.failures:
        exp = errors.lookup(key)
        fix = f"; {exp.fix}" if exp else ""
        lines.append(f"{key} x{n}{fix}")
    return lines


def to_json(host: str, target: Target, port, icmp: bool, results: list, stats: PingStats,
            interrupted: bool, tls: bool = False, now: Optional[datetime.datetime] = None) -> dict:
    """The ``--json`` document (before the run metadata every command's JSON carries).  With
    ``tls``: the server's certificate (the first probe's that had one) and the warnings."""
    unix = target.family == socket.AF_UNIX          # --unix: a path, no port
    doc = {"target": {"host": host, "address": target.display, "port": None if icmp or unix else port,
                      "mode": "icmp" if icmp else "unix" if unix else "tcp", "tls": tls},
           "probes": [p.to_dict() for p in results],
           "summary": stats.to_dict(), "interrupted": interrupted}
    if tls:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        leaf = next((p.leaf for p in results if p.leaf is not None), None)
        warning = expiry_warning(leaf, now) if leaf is not None else None
        doc["certificate"] = leaf.to_dict(now) if leaf is not None else None
        doc["warnings"] = [warning] if warning else []
    return doc

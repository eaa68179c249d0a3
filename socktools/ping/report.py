"""`socktools ping`'s lines for a person: one per probe, then ping's summary."""

from __future__ import annotations

import socket

from socktools import errors
from socktools.ping.results import PingStats, Probe, Target

__all__ = ["plural", "probe_line", "summary_lines", "to_json"]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def probe_line(p: Probe, icmp: bool) -> str:
    if icmp:
        if p.ok:
            return f"reply from {p.peer}: icmp_seq={p.seq} ttl={p.ttl} time={p.time_ms:.3f} ms"
        if p.icmp:
            return f"from {p.peer}: icmp_seq={p.seq} {p.detail}"
        return f"no reply from {p.peer}: icmp_seq={p.seq} {p.error} - {p.detail}"
    if p.ok:
        return f"connected to {p.peer}: seq={p.seq} time={p.time_ms:.3f} ms"
    took = f" (after {p.elapsed_ms:.3f} ms)" if p.elapsed_ms is not None and p.error != "ETIMEDOUT" else ""
    return f"no connection to {p.peer}: seq={p.seq} {p.error} - {p.detail}{took}"


def summary_lines(target: Target, stats: PingStats, elapsed_s: float, icmp: bool) -> list[str]:
    what = "icmp" if icmp else "unix" if target.family == socket.AF_UNIX else "tcp"
    got = "received" if icmp else "connected"
    lines = [f"--- {target.display} {what} ping statistics ---",
             f"{plural(stats.sent, 'probe')} sent, {stats.received} {got}, {stats.loss_pct:.0f}% loss, "
             f"time {elapsed_s * 1000:.0f} ms"]
    if stats.received:
        lines.append(f"rtt min/avg/max/stddev = {stats.min_ms:.3f}/{stats.avg_ms:.3f}/"
                     f"{stats.max_ms:.3f}/{stats.stddev_ms:.3f} ms")
    for key, n in stats.failures:
        exp = errors.lookup(key)
        fix = f"; {exp.fix}" if exp else ""
        lines.append(f"{key} x{n}{fix}")
    return lines


def to_json(host: str, target: Target, port, icmp: bool, results: list, stats: PingStats,
            interrupted: bool) -> dict:
    """The ``--json`` document (before the run metadata every command's JSON carries)."""
    unix = target.family == socket.AF_UNIX          # --unix: a path, no port
    return {"target": {"host": host, "address": target.display, "port": None if icmp or unix else port,
                       "mode": "icmp" if icmp else "unix" if unix else "tcp"},
            "probes": [p.to_dict() for p in results],
            "summary": stats.to_dict(), "interrupted": interrupted}

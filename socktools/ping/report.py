"""`socktools ping`'s lines for a person: one per probe, then ping's summary."""

from __future__ import annotations

import datetime
import socket
from typing import Optional

from socktools import errors
from socktools.ping.results import PingStats, Probe, Target
from socktools.tlsinfo import EXPIRY_WARNING_DAYS, expiry_words

__all__ = ["plural", "probe_line", "udp_probe_line", "summary_lines", "to_json", "expiry_warning"]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


#: What a datagram read during a probe was, when it was not that probe's echo (--udp).
_EVENT_WORDS = {"late": "late reply from {peer}: seq={seq} (after its timeout: counted late, not received)",
                "duplicated": "duplicate reply from {peer}: seq={seq}",
                "foreign": "foreign datagram from {peer}: not an echo of this ping's datagrams",
                "stale": "reply from {peer} to a probe too old to place: seq={seq}"}


def udp_probe_line(p: Probe) -> str:
    """A --udp probe: the other datagrams that came while it waited, then its own line."""
    lines = [_EVENT_WORDS.get(kind, kind + " from {peer}: seq={seq}").format(peer=p.peer, seq=seq)
             for kind, seq in p.events]
    if p.ok:
        lines.append(f"reply from {p.peer}: seq={p.seq} bytes={p.size} time={p.time_ms:.3f} ms")
    else:
        took = f" (after {p.elapsed_ms:.3f} ms)" if p.elapsed_ms is not None and p.error != errors.TIMEOUT else ""
        lines.append(f"no reply from {p.peer}: seq={p.seq} {p.error} - {p.detail}{took}")
    return "\n".join(lines)


def probe_line(p: Probe, icmp: bool) -> str:
    if p.events is not None:
        return udp_probe_line(p)
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
    udp = stats.datagrams is not None
    what = "icmp" if icmp else "udp" if udp else "unix" if target.family == socket.AF_UNIX else "tcp"
    what = f"{what} tls" if tls else what
    got = "received" if icmp or udp else "connected"
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
    if udp:
        d = stats.datagrams
        line = (f"datagrams: {d['sent']} sent, {d['answered']} answered, {d['late']} late, {d['lost']} lost, "
                f"{d['duplicated']} duplicated")
        others = [f"{d[k]} {k}" for k in ("reordered", "truncated", "foreign", "stale", "refused") if d.get(k)]
        lines.append(line + "".join(", " + o for o in others))
    for key, n in stats.failures:
        exp = errors.lookup(key, during="udp" if udp else None)
        fix = f"; {exp.fix}" if exp else ""
        lines.append(f"{key} x{n}{fix}")
    return lines


def to_json(host: str, target: Target, port, icmp: bool, results: list, stats: PingStats,
            interrupted: bool, tls: bool = False, now: Optional[datetime.datetime] = None) -> dict:
    """The ``--json`` document (before the run metadata every command's JSON carries).  With
    ``tls``: the server's certificate (the first probe's that had one) and the warnings."""
    unix = target.family == socket.AF_UNIX          # --unix: a path, no port
    doc = {"target": {"host": host, "address": target.display, "port": None if icmp or unix else port,
                      "mode": "icmp" if icmp else "udp" if stats.datagrams is not None else "unix" if unix
                      else "tcp", "tls": tls},
           "probes": [p.to_dict() for p in results],
           "summary": stats.to_dict(), "interrupted": interrupted}
    if tls:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        leaf = next((p.leaf for p in results if p.leaf is not None), None)
        warning = expiry_warning(leaf, now) if leaf is not None else None
        doc["certificate"] = leaf.to_dict(now) if leaf is not None else None
        doc["warnings"] = [warning] if warning else []
    return doc

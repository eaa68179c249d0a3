"""The proxy's events for humans: one line per event, the summary as a short table."""

from __future__ import annotations

__all__ = ["human_lines"]


def _bytes(n: int) -> str:
    return f"{n:,} B"


def _ended(stats: dict) -> str:
    parts = [f"{k} {v}" for k, v in sorted(stats["ended"].items())]
    return ", ".join(parts) if parts else "none"


def _number(ev: dict) -> str:
    # With --workers each worker numbers its own connections: "#3/w1" is worker 1's third.
    return f"{ev['number']}/w{ev['worker']}" if "worker" in ev else str(ev["number"])


def _tls_sides(ev: dict) -> str:
    """``; client TLSv1.3 TLS_AES_256_GCM_SHA384, upstream TLSv1.2 ...`` for a TLS side."""
    sides = [f"{side} {t['version']} {t['cipher']}" for side, t in
             (("client", ev.get("client_tls")), ("upstream", ev.get("upstream_tls"))) if t]
    return "; " + ", ".join(sides) if sides else ""


def human_lines(ev: dict) -> list:
    """The lines that say ``ev``."""
    kind = ev.get("event")
    if kind == "listening":
        up = ev.get("upstream_tls")
        tls_to = "" if up is None else \
            f" (TLS, {'name ' + up['sni'] if up['sni'] else 'no name'} {'checked' if up['verify'] else 'NOT verified'})"
        return [f"socktools proxy: {ev['proxy']} listening on {ev['listen']}"
                f"{' (TLS)' if 'listen_tls' in ev else ''} -> {ev['upstream']}{tls_to}"]
    if kind == "api":
        return [f"socktools proxy: API (Toxiproxy 2.x endpoints) on http://{ev['address']}"]
    if kind == "connection":
        return [f"{ev['proxy']} #{_number(ev)} {ev['client']}: {ev['how']} after {ev['duration']:.3f}s; "
                f"client->upstream {_bytes(ev['from_client'])} (delivered {_bytes(ev['to_upstream'])}), "
                f"upstream->client {_bytes(ev['from_upstream'])} (delivered {_bytes(ev['to_client'])})"
                f"{_tls_sides(ev)}"]
    if kind == "exchange":
        up = "?" if ev["upstream_ms"] is None else f"{ev['upstream_ms']:.3f} ms"
        return [f"{ev['proxy']} #{_number(ev)} {ev['request']} -> {ev['reply']}  "
                f"upstream {up}, client {ev['client_ms']:.3f} ms"]
    if kind == "summary":
        lines = [f"socktools proxy: stopped after {ev['duration']:.1f}s"]
        rows = list(ev["proxies"].items())
        if len(rows) != 1:
            rows.append(("total", ev["total"]))
        for name, s in rows:
            failed = sum(s["upstream_failed"].values())
            lines.append(f"  {name}: {s['accepted']} connection(s), {s['closed']} closed ({_ended(s)}), "
                         f"{failed} upstream connect(s) failed, {s['resets']} reset")
            lines.append(f"    client->upstream {_bytes(s['from_client'])} in, {_bytes(s['to_upstream'])} out; "
                         f"upstream->client {_bytes(s['from_upstream'])} in, {_bytes(s['to_client'])} out")
            for key, n in sorted(s["upstream_failed"].items()):
                lines.append(f"    upstream {key}: {n}")
            for key, n in sorted(s.get("client_tls_failed", {}).items()):
                lines.append(f"    client TLS handshake {key}: {n}")
        if "workers" in ev:        # --workers N
            lines.append("  connections per worker: " + ", ".join(
                f"{w['worker']}: {w['accepted']}" for w in ev["workers"])
                + f"; {ev['worker_restarts']} worker(s) replaced")
        return lines
    if kind == "worker-exit":
        return [f"socktools proxy: {ev['message']}"]
    return []

"""Views of one wire exchange (``socktools request --mode ...``): text and JSON. Pure functions."""

from __future__ import annotations

from socktools.addresses import format_addr
from socktools.wire.base import KEEP_BODY

__all__ = ["reply_text", "exchange_json", "not_kept_note", "tls_text", "tls_json"]


def reply_text(result) -> str:
    """What a user wants to read: the Redis value as redis-cli shows it, an HTTP status line and
    body, a raw reply's bytes -- and the failure, if the reply was one."""
    reply = result.reply
    if reply is None:
        return "(sent; no reply expected)" if not result.received else repr(result.received)
    fields = reply.fields
    if "status" in fields and "headers" in fields:
        lines = [reply.summary] + [f"{k}: {v}" for k, v in fields["headers"]] + [""]
        lines.append(fields["body"].decode("utf-8", "backslashreplace"))
        text = "\n".join(lines).rstrip("\n")
    elif fields.get("type") in ("$", "=", "+") and isinstance(fields.get("value"), str):
        text = fields["value"].rstrip("\r\n")
    else:
        text = reply.summary
    return text + not_kept_note(reply.fields.get("not_kept", 0), reply.size)


def not_kept_note(not_kept: int, size: int) -> str:
    """The line that says a long reply was shown only in part (empty when all of it was kept)."""
    if not not_kept:
        return ""
    return (f"\n(… {not_kept:,} more byte(s) of this {size:,}-byte reply were counted, not kept: "
            f"request keeps the first {KEEP_BODY:,})")


def exchange_json(result, mode: str) -> dict:
    reply = result.reply
    out = {"ok": not result.failures, "mode": mode, "address": format_addr(result.address),
           "connect_ms": round(result.connect_s * 1000, 3), "total_ms": round(result.total_s * 1000, 3),
           "bytes_sent": len(result.sent), "bytes_received": result.received_bytes,
           "reply": None, "failures": [{"kind": f.kind, "detail": f.detail} for f in result.failures]}
    if reply is not None:
        fields = {k: (v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v)
                  for k, v in reply.fields.items()}
        out["reply"] = {"size": reply.size, "summary": reply.summary, **fields}
    out.update(tls_json(result))
    return out


def tls_text(result) -> str:
    """``TLS 1.3 TLS_AES_256_GCM_SHA384, ALPN http/1.1, handshake 1.204 ms (name checked: localhost)``"""
    t = result.tls
    return (f"{t['version']} {t['cipher']}, ALPN {t['alpn'] or '(none)'}, "
            f"handshake {result.handshake_s * 1000:.3f} ms (server name: {t['server_name']})")


def tls_json(result) -> dict:
    """``{"tls": {...}}`` for a TLS exchange, ``{}`` for a plaintext one."""
    if not result.tls:
        return {}
    return {"tls": {**result.tls, "handshake_ms": round(result.handshake_s * 1000, 3)}}

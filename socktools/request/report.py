"""Views of one wire exchange (``socktools request --mode ...``): text and JSON. Pure functions."""

from __future__ import annotations

import datetime

from socktools.addresses import format_addr
from socktools.tlsinfo import expiry_words
from socktools.wire.base import KEEP_BODY

__all__ = ["reply_text", "exchange_json", "not_kept_note", "tls_text", "tls_json", "chain_lines", "record_lines",
           "conversation_text", "step_head", "is_conversation", "opening_head", "opening_reply", "datagram_line", "datagram_head", "datagram_text",
           "udp_json"]


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


def is_conversation(result) -> bool:
    """More than one exchange, a greeting or an opening: each step is shown under its own head."""
    return len(result.steps) > 1 or result.greeting is not None or bool(getattr(result, "opening", ()))


#: Characters of a reply in an opening shown when no parser of the mode frames it (a plug-in's
#: login: PostgreSQL's authentication messages are binary): the server's words are in the first
#: few hundred; a long one (a dozen ParameterStatus messages) is cut, not wrapped over a screen.
MAX_OPENING_SHOWN = 300


def opening_head(step) -> str:
    """``--- greeting, 1.204 ms`` / ``--- setup 1, 0.311 ms`` / ``--- opening 2, 4.130 ms``."""
    return f"--- {step.label}, {step.time_s * 1000:.3f} ms"


def opening_reply(step) -> str:
    """The server's words in a step of the opening: framed by the mode's parser (a built-in
    opening), else its bytes as a Python literal, cut at :data:`MAX_OPENING_SHOWN`."""
    if step.reply is not None:
        return reply_text(step)
    text = repr(step.received)
    return text if len(text) <= MAX_OPENING_SHOWN else text[:MAX_OPENING_SHOWN] + " …"


def step_head(step, index: int) -> str:
    """``--- greeting, 1.204 ms`` / ``--- 2: GET k, 0.311 ms``."""
    name = "greeting" if index == 0 else f"{index}: {step.label}" if step.label else str(index)
    return f"--- {name}, {step.time_s * 1000:.3f} ms"


def conversation_text(result) -> str:
    """Every step in order, each reply under its head (the greeting first)."""
    lines = []
    for step in ([result.greeting] if result.greeting is not None else []) + list(getattr(result, "opening", ())):
        lines += [opening_head(step), opening_reply(step)]
    for i, step in enumerate(result.steps, 1):
        lines += [step_head(step, i), reply_text(step)]
    return "\n".join(lines)


def _reply_json(reply):
    if reply is None:
        return None
    fields = {k: (v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v)
              for k, v in reply.fields.items()}
    return {"size": reply.size, "summary": reply.summary, **fields}


def _step_json(step) -> dict:
    return {"request": step.label, "ms": round(step.time_s * 1000, 3), "bytes_sent": step.sent_bytes,
            "bytes_received": step.received_bytes, "reply": _reply_json(step.reply),
            "failures": [{"kind": f.kind, "detail": f.detail} for f in step.failures]}


def exchange_json(result, mode: str, show_bytes: bool = False) -> dict:
    out = {"ok": not result.failures, "mode": mode, "address": format_addr(result.address),
           "connect_ms": round(result.connect_s * 1000, 3), "total_ms": round(result.total_s * 1000, 3),
           "bytes_sent": len(result.sent), "bytes_received": result.received_bytes,
           "reply": _reply_json(result.reply),
           "failures": [{"kind": f.kind, "detail": f.detail} for f in result.failures],
           "greeting": _step_json(result.greeting) if result.greeting is not None else None,
           "opening": [_step_json(s) for s in result.opening],
           "exchanges": [_step_json(s) for s in result.steps]}
    out.update(tls_json(result, show_bytes))
    return out


def tls_text(result) -> str:
    """``TLS 1.3 TLS_AES_256_GCM_SHA384, ALPN http/1.1, handshake 1.204 ms (name checked: localhost)``"""
    t = result.tls
    return (f"{t['version']} {t['cipher']}, ALPN {t['alpn'] or '(none)'}, "
            f"handshake {result.handshake_s * 1000:.3f} ms (server name: {t['server_name']})")


def chain_lines(result, now: datetime.datetime = None) -> list:
    """The certificates the server sent, leaf first: subject, issuer, SANs, not-after and days
    left (``EXPIRED``/``expires in N days`` when under tlsinfo.EXPIRY_WARNING_DAYS)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    how = "verified" if result.tls.get("verified") else "NOT verified (insecure)"
    lines = [f"certificate chain: {result.chain_sent} sent by the server, {how}"]
    for i, cert in enumerate(result.chain):
        days = cert.days_left(now)
        left = expiry_words(days) or f"{days:,} days left"
        lines += [f"  [{i}] subject: {cert.subject or '(empty)'}", f"      issuer: {cert.issuer}",
                  f"      SANs: {', '.join(cert.sans) or '(none)'}",
                  f"      not after {cert.not_after:%Y-%m-%d %H:%M} UTC ({left})"]
    if result.chain_sent > len(result.chain):
        lines.append(f"  (… {result.chain_sent - len(result.chain)} more not shown)")
    return lines


def record_lines(result) -> list:
    """The TLS records as they crossed the wire, in order: ``> handshake 517 bytes: ClientHello``."""
    lines = ["TLS records as they crossed the wire (> sent, < received; TLS 1.3 hides its handshake "
             "inside application_data records):"]
    lines += [f"  {'>' if way == 'out' else '<'} {record.describe()}" for way, record in result.records]
    if result.records_total > len(result.records):
        lines.append(f"  (… {result.records_total - len(result.records):,} more records counted, not listed)")
    return lines


def tls_json(result, show_bytes: bool = False) -> dict:
    """``{"tls": {...}}`` for a TLS exchange (with ``show_bytes``: its records too), ``{}`` for a
    plaintext one."""
    if not result.tls:
        return {}
    now = datetime.datetime.now(datetime.timezone.utc)
    out = {**result.tls, "handshake_ms": round(result.handshake_s * 1000, 3),
           "chain": [c.to_dict(now) for c in result.chain], "chain_sent": result.chain_sent}
    if show_bytes:
        out["records"] = [{"direction": way, **record.to_dict()} for way, record in result.records]
        out["records_total"] = result.records_total
        out["wire_bytes"] = dict(result.wire_bytes)
    return {"tls": out}


# ------------------------------------------------------------------ request --udp
def _plural_bytes(n: int) -> str:
    return f"{n:,} byte" if n == 1 else f"{n:,} bytes"


def _odd(step) -> str:
    """What a reply's line adds when the buffer cut it or datagrams were set aside before it."""
    out = ""
    if step.truncated:
        out += f", truncated to the {len(step.received):,} read"
    if step.ignored:
        out += (f" ({step.ignored} datagram(s) already waiting before it was sent were set aside: "
                "not its reply)")
    return out


def datagram_line(step) -> str:
    """``45 bytes from 127.0.0.1:53 in 0.211 ms`` (and what was odd about it)."""
    if step.reply is None:
        return "(sent; no reply expected)"
    return f"{_plural_bytes(step.size)} from {format_addr(step.peer)} in {step.time_s * 1000:.3f} ms{_odd(step)}"


def datagram_head(step, index: int) -> str:
    """``--- 2: GET k, 0.311 ms, 45 bytes from 127.0.0.1:53``."""
    name = f"{index}: {step.label}" if step.label else str(index)
    if step.reply is None:
        return f"--- {name}, sent; no reply expected"
    return f"--- {name}, {step.time_s * 1000:.3f} ms, {_plural_bytes(step.size)} from {format_addr(step.peer)}{_odd(step)}"


def datagram_text(step) -> str:
    """The reply as request shows a raw reply: its bytes as a Python literal."""
    if step.reply is None:
        return "(sent; no reply expected)"
    return repr(step.received)


def udp_json(result, mode: str, replies: bool, error=None) -> dict:
    """``--json`` of ``request --udp``: every datagram (its reply, bytes, size, sender, time),
    and the error that ended the exchange, if one did."""
    def reply(step):
        if step.reply is None:
            return None
        return {"size": step.size, "summary": step.reply.summary,
                "bytes": step.received.decode("utf-8", "backslashreplace"), "hex": step.received.hex()}

    def one(step):
        answered = step.reply is not None
        return {"request": step.label, "ms": round(step.time_s * 1000, 3) if answered else None,
                "bytes_sent": len(step.sent), "bytes_received": step.size if answered else 0,
                "truncated": step.truncated, "peer": format_addr(step.peer) if answered else None,
                "ignored": step.ignored, "reply": reply(step),
                "failures": [{"kind": f.kind, "detail": f.detail} for f in step.failures]}

    failures = [{"kind": f.kind, "detail": f.detail} for f in result.failures]
    last = result.steps[-1] if result.steps else None
    return {"ok": error is None and not failures, "udp": True, "mode": mode, "replies": replies,
            "address": format_addr(result.address),
            "local": format_addr(result.local) if result.local else None,
            "total_ms": round(result.total_s * 1000, 3), "bytes_sent": result.bytes_sent,
            "bytes_received": result.bytes_received, "reply": reply(last) if last else None,
            "failures": failures, "datagrams": [one(s) for s in result.steps],
            "error": None if error is None else {"phase": error.phase, "error": error.key, "message": str(error)}}

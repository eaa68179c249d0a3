"""Toxiproxy 2.x's HTTP API as one function: (method, path, body) -> (status, JSON).

The routes and JSON shapes are Toxiproxy's (``api.go``), so its clients
(``toxiproxy-python``, ``chaostoolkit-toxiproxy``, the Go and Ruby ones) drive
socktools unchanged:

==========================================  ===================================================
``GET /proxies``                            ``{name: proxy}``
``POST /proxies``                           create (``name``, ``upstream``, ``listen``,
                                            ``enabled``) -> 201 and the proxy
``POST /populate``                          create or replace a list -> 201 ``{"proxies": [...]}``
``GET /proxies/{p}``                        the proxy, with ``toxics``
``POST|PATCH /proxies/{p}``                 ``enabled``, ``listen``, ``upstream``
``DELETE /proxies/{p}``                     204
``GET|POST /proxies/{p}/toxics``            the list / add one (200 and the toxic)
``GET|POST|PATCH|DELETE .../toxics/{t}``    one toxic: show, update attributes, remove (204)
``POST /reset``                             every proxy enabled, every toxic removed (204)
``GET /version``                            ``{"version": ...}``
``GET /metrics``                            Toxiproxy's byte counters, Prometheus text format
==========================================  ===================================================

Errors are Toxiproxy's ``{"error": "...", "status": N}``: 400 for a body that is
not JSON or names an unknown toxic type or attribute (the message names it),
404 for an unknown proxy, toxic or route, 409 for a name taken, 500 for a
listen address that cannot be bound (the errno explained).  No I/O here:
:mod:`socktools.proxy.httpd` frames the requests.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import unquote

from socktools import __version__
from socktools.proxy.config import SpecError, proxy_from_json, toxic_from_json
from socktools.proxy.listen import Conflict, NotFound, ProxyError

__all__ = ["handle", "metrics", "VERSION", "METRICS"]

#: What /version says: ours, and which Toxiproxy API it speaks.
VERSION = f"socktools {__version__} (toxiproxy API 2.x)"


#: Toxiproxy's proxy metrics (``collectors/proxy.go``): bytes read from the sender and handed
#: to the receiver, per proxy and direction.  Open connections count too (Toxiproxy adds a
#: link's bytes when it ends).
METRICS = (("toxiproxy_proxy_received_bytes_total", "Bytes read by the proxy, per direction.",
            {"upstream": "from_client", "downstream": "from_upstream"}),
           ("toxiproxy_proxy_sent_bytes_total", "Bytes handed on by the proxy, per direction.",
            {"upstream": "to_upstream", "downstream": "to_client"}))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(server: Any) -> str:
    """The Prometheus text exposition (format 0.0.4) of every proxy's byte counters."""
    lines = []
    counts = {name: p.byte_counts() for name, p in server.proxies.items()}
    for metric, help_text, keys in METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for name, proxy in server.proxies.items():
            for direction, key in keys.items():
                labels = (f'direction="{direction}",proxy="{_label(name)}",listener="{_label(proxy.listen)}",'
                          f'upstream="{_label(proxy.upstream)}"')
                lines.append(f"{metric}{{{labels}}} {counts[name][key]}")
    return "\n".join(lines) + "\n"


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise _ApiError(400, f"bad request body: {exc}") from None


def _object(raw: bytes) -> dict:
    doc = _body(raw)
    if not isinstance(doc, dict):
        raise _ApiError(400, f"bad request body: expected a JSON object, got {type(doc).__name__}")
    return doc


def handle(server: Any, method: str, path: str, body: bytes) -> tuple[int, Optional[Any]]:
    """Answer one request against ``server`` (a :class:`~socktools.proxy.runner.ProxyServer`):
    ``(status, document or None)``; never raises for what a client sent."""
    try:
        return _route(server, method.upper(), path, body)
    except _ApiError as exc:
        return exc.status, {"error": str(exc), "status": exc.status}
    except SpecError as exc:
        return 400, {"error": str(exc), "status": 400}
    except NotFound as exc:
        return 404, {"error": str(exc), "status": 404}
    except Conflict as exc:
        return 409, {"error": str(exc), "status": 409}
    except ProxyError as exc:
        return 500, {"error": str(exc), "status": 500}


def _route(server: Any, method: str, path: str, body: bytes) -> tuple[int, Optional[Any]]:
    path = path.split("?", 1)[0]
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if parts == ["version"]:
        _allow(method, "GET")
        return 200, {"version": VERSION}
    if parts == ["metrics"]:
        _allow(method, "GET")
        return 200, metrics(server)
    if parts == ["reset"]:
        _allow(method, "POST")
        server.reset()
        return 204, None
    if parts == ["populate"]:
        _allow(method, "POST")
        return _populate(server, body)
    if not parts or parts[0] != "proxies" or len(parts) > 4 or (len(parts) >= 3 and parts[2] != "toxics"):
        raise _ApiError(404, f"no such route: {path}")
    if len(parts) == 1:
        _allow(method, "GET", "POST")
        if method == "GET":
            return 200, {name: p.to_json() for name, p in server.proxies.items()}
        doc = _object(body)
        doc.setdefault("listen", "127.0.0.1:0")
        return 201, server.create(proxy_from_json(doc)).to_json()
    proxy = server.get(parts[1])
    if len(parts) == 2:
        _allow(method, "GET", "POST", "PATCH", "DELETE")
        if method == "GET":
            return 200, proxy.to_json()
        if method == "DELETE":
            server.delete(proxy.name)
            return 204, None
        return 200, server.update(proxy.name, _object(body)).to_json()
    if len(parts) == 3:
        _allow(method, "GET", "POST")
        if method == "GET":
            return 200, [t.to_json() for t in proxy.toxics]
        spec = toxic_from_json(_object(body))
        proxy.add_toxic(spec)
        return 200, spec.to_json()
    _allow(method, "GET", "POST", "PATCH", "DELETE")
    current = proxy.toxic(parts[3])
    if method == "GET":
        return 200, current.to_json()
    if method == "DELETE":
        proxy.remove_toxic(current.name)
        return 204, None
    spec = toxic_from_json(_object(body), base=current)
    proxy.update_toxic(spec)
    return 200, spec.to_json()


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _ApiError(405, f"method {method} not allowed here (allowed: {', '.join(allowed)})")


def _populate(server: Any, body: bytes) -> tuple[int, Any]:
    doc = _body(body)
    if isinstance(doc, dict) and "proxies" in doc:
        doc = doc["proxies"]
    if not isinstance(doc, list):
        raise _ApiError(400, "bad request body: expected a list of proxies")
    # Every entry is checked before any proxy is created, as Toxiproxy does.
    specs = [proxy_from_json(dict({"listen": "127.0.0.1:0"}, **p) if isinstance(p, dict) else p,
                             f"proxy {i + 1}") for i, p in enumerate(doc)]
    return 201, {"proxies": [p.to_json() for p in server.populate(specs)]}

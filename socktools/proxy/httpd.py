"""A small HTTP/1.1 server for the API, on the proxy's own loop.

Requests are framed by llhttp (httptools, the parser ``socktools.wire.http``
uses for responses): keep-alive, Content-Length and chunked bodies.  Each
complete request goes to the server's ``dispatch`` (in one process:
:func:`socktools.proxy.api.handle` at once -- a few table operations, no I/O of
its own -- so the API shares the loop with the data path without blocking it;
with worker processes a change is answered once every worker has it).  The
requests of one connection are answered in order: one answered later holds the
ones behind it.  A malformed or oversized request gets a
400/413 in Toxiproxy's error shape and costs only its own connection.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
from typing import Any, Optional

from socktools.addresses import format_addr
from socktools.core.accept import Acceptor
from socktools.core.loop import Connection, Protocol
from socktools.proxy.config import parse_hostport
from socktools.proxy.listen import bind_listener
from socktools.wire.http import MAX_HEAD, require_httptools

__all__ = ["ApiServer", "RequestReader", "MAX_BODY", "MAX_API_CONNS", "MAX_PIPELINED", "API_IDLE"]

log = logging.getLogger("socktools.proxy")

#: Largest request body: a /populate of MAX_PROXIES proxies with their toxics is a few
#: hundred KB; 1 MiB is nginx's client_max_body_size default.
MAX_BODY = 1 << 20
#: API connections open at once; more are closed on accept (a test suite needs a handful).
MAX_API_CONNS = 64
#: An API connection with no request for this long is closed: a client that opens
#: connections and sends nothing cannot hold all MAX_API_CONNS slots for ever (nginx's
#: client_header_timeout is 60 s).
API_IDLE = 60.0
#: Requests answered from one read before the rest wait for the next: a pipelining client
#: cannot make one read cost unbounded work.
MAX_PIPELINED = 32

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
            500: "Internal Server Error"}


class RequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestReader:
    """Bytes in, complete requests out: ``feed(data)`` -> ``[(method, path, body, keep_alive)]``.

    Sans-I/O; raises :class:`RequestError` (400 or 413) for what cannot be an HTTP request.
    """

    def __init__(self) -> None:
        httptools = require_httptools("proxy --api")
        self._errors = (httptools.HttpParserError,)
        self._parser = httptools.HttpRequestParser(self)
        self._url = bytearray()
        self._body = bytearray()
        self._head = 0
        self._done: list = []

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self._url.clear()
        self._body.clear()
        self._head = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)
        if self._head > MAX_HEAD:
            raise RequestError(400, f"request head longer than {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value)
        if self._head > MAX_HEAD:
            raise RequestError(400, f"request head longer than {MAX_HEAD} bytes")

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            raise RequestError(413, f"request body larger than {MAX_BODY} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        p = self._parser
        self._done.append((p.get_method().decode("latin-1"), self._url.decode("latin-1"),
                           bytes(self._body), p.should_keep_alive()))

    def feed(self, data: bytes) -> list:
        try:
            self._parser.feed_data(data)
        except RequestError:
            raise
        except self._errors as exc:
            cause = exc.__context__
            if isinstance(cause, RequestError):
                raise cause from None
            raise RequestError(400, f"not an HTTP/1.1 request: {exc}") from None
        done, self._done = self._done, []
        return done


def response(status: int, doc: Optional[Any], keep_alive: bool) -> bytes:
    """The response bytes: ``doc`` as JSON, or as it is if it is text (/metrics), or no body."""
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if isinstance(doc, str):
        body = doc.encode()
        head.append("Content-Type: text/plain; version=0.0.4; charset=utf-8")
    else:
        body = b"" if doc is None else json.dumps(doc).encode() + b"\n"
    if doc is not None and not isinstance(doc, str):
        head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Session:
    """One API connection: its parser, the requests waiting their turn, and whether one is
    being answered (a change the workers have not all acknowledged yet)."""

    __slots__ = ("reader", "queue", "busy", "pumping")

    def __init__(self) -> None:
        self.reader = RequestReader()
        self.queue: collections.deque = collections.deque()
        self.busy = False
        self.pumping = False


class _ApiSide(Protocol):
    def __init__(self, api: "ApiServer") -> None:
        self.api = api

    def connection_made(self, conn: Connection) -> None:
        conn.ctx = _Session()

    def data_received(self, conn: Connection, data: bytes) -> None:
        session = conn.ctx
        try:
            requests = session.reader.feed(data)
        except RequestError as exc:
            log.warning("api: %s from %s; closing that connection", exc, format_addr(conn.peer))
            self._refuse(conn, exc.status, str(exc))
            return
        session.queue.extend(requests)
        excess = len(session.queue) - MAX_PIPELINED
        if excess > 0:
            # The first MAX_PIPELINED are answered, then a 400 (None) closes the connection;
            # nothing more is read from it.
            for _ in range(excess):
                session.queue.pop()
            session.queue.append(None)
            conn.pause_reading()
        self._pump(conn)

    def _pump(self, conn: Connection) -> None:
        """Answer the queued requests in order; one answered later stops the rest until then."""
        session = conn.ctx
        if session.pumping:
            return
        session.pumping = True
        try:
            while session.queue and not session.busy and not conn.closed:
                request = session.queue.popleft()
                if request is None:
                    self._refuse(conn, 400, f"more than {MAX_PIPELINED} pipelined requests")
                    return
                method, path, body, keep = request
                session.busy = True
                self.api.server.dispatch(method, path, body,
                                         lambda status, doc, m=method, p=path, k=keep:
                                         self._answer(conn, m, p, k, status, doc))
        finally:
            session.pumping = False

    def _answer(self, conn: Connection, method: str, path: str, keep: bool, status: int, doc: Any) -> None:
        session = conn.ctx
        session.busy = False
        if conn.closed:
            return
        log.debug("api: %s %s -> %d", method, path, status)
        conn.write(response(status, doc, keep))
        if not keep:
            session.queue.clear()
            conn.pause_reading()
            conn.close()
            return
        self._pump(conn)

    def _refuse(self, conn: Connection, status: int, message: str) -> None:
        conn.ctx.queue.clear()
        conn.write(response(status, {"error": message, "status": status}, False))
        conn.pause_reading()
        conn.close()

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.api.conns.discard(conn)


class ApiServer:
    """The API's listener and connections on ``server.loop``."""

    def __init__(self, server: Any, address: str) -> None:
        require_httptools("proxy --api")
        self.server = server
        host, port = parse_hostport(address, "--api")
        self.listener = bind_listener(host, port)
        self.address = format_addr(self.listener.getsockname())
        self.side = _ApiSide(self)
        self.conns: set = set()
        # (core.accept: a bite per wake-up, and a pause, not a spin, when out of descriptors)
        self.acceptor = Acceptor(server.loop, self.listener, self._accepted,
                                 on_pause=lambda why: log.warning("api: accept paused: %s", why))
        self.acceptor.start()
        self._sweep = server.loop.call_later(API_IDLE / 4, self._close_idle)

    def _close_idle(self) -> None:
        limit = self.server.loop.now - API_IDLE
        for conn in [c for c in self.conns if c.last_active < limit]:
            log.info("api: closing %s: no request for %gs", format_addr(conn.peer), API_IDLE)
            conn.abort()
        self._sweep = self.server.loop.call_later(API_IDLE / 4, self._close_idle)

    def _accepted(self, sock: socket.socket, peer: Any) -> None:
        if len(self.conns) >= MAX_API_CONNS:
            log.warning("api: %d connections open already; refusing %s", MAX_API_CONNS, format_addr(peer))
            sock.close()
            return
        self.conns.add(self.server.loop.add_connection(sock, self.side, peer))

    def close(self) -> None:
        self._sweep.cancel()
        self.acceptor.stop()
        self.listener.close()
        for conn in list(self.conns):
            conn.abort()

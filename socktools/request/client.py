"""One framed request (docs/protocol.md): connect, send, read and decode the response.

Blocking sockets with a deadline are the clearest tool for a single exchange;
the nonblocking core is for servers and load.  Failures raise
:class:`RequestError`, which carries the phase ("resolve", "connect", "send",
"recv", "protocol") and the bytes exchanged so far, so a wire trace can still
be shown.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from socktools import errors, protocol, reference
from socktools.addresses import format_addr, resolve
from socktools.tlsconf import TlsConfig, client_context, negotiated, server_name

__all__ = ["RequestResult", "RequestError", "PeerClosedError", "SpokeFirstError", "request", "ExchangeResult",
           "exchange", "KEEP_RECEIVED", "SPOKE_FIRST_WAIT"]

#: Received bytes kept for the wire trace (``--show-bytes``); the rest is counted in
#: ``received_bytes``, not kept.  The parsers keep what the reply shows on their own
#: (``wire.base.KEEP_BODY``), so a 1 GB reply costs this much, not a gigabyte.
KEEP_RECEIVED = 64 << 10

#: Bytes the server sends before the request goes out are not its answer (flood calls
#: them unsolicited).  request looks for them just before it sends, waiting this long:
#: 0, only what has already arrived -- waiting for a server that will not speak first
#: would add the wait to every request.  A greeting that arrives after the request went
#: out cannot be told from the answer; the rule is "readable before we sent".
SPOKE_FIRST_WAIT = 0.0

#: One recv(): 256 KiB drains a large reply in few calls (a small one fits either way).
_READ_SIZE = 256 << 10


@dataclass
class RequestResult:
    address: Any                 # sockaddr actually used
    sent: bytes
    received: bytes
    message: Optional[protocol.Message] = None
    connect_s: float = 0.0
    total_s: float = 0.0
    recv_calls: int = 0
    received_bytes: int = 0      # all of them; ``received`` keeps the first KEEP_RECEIVED
    handshake_s: float = 0.0     # TLS: connect done to handshake done
    tls: Optional[dict] = None   # TLS: what the handshake settled (tlsconf.negotiated) and the name checked


@dataclass
class RequestError(Exception):
    phase: str
    exc: BaseException
    result: RequestResult = field(default=None)  # type: ignore[assignment]
    tls: bool = False            # spoken over TLS: the hint for a plaintext port differs

    @property
    def key(self) -> str:
        """The errno name or pseudo-error (errors.PEER_CLOSED, PROTOCOL_ERROR, TIMEOUT)."""
        if isinstance(self.exc, protocol.ProtocolError):
            return errors.PROTOCOL_ERROR
        return errors.exception_key(self.exc)

    def __str__(self) -> str:
        where = format_addr(self.result.address) if self.result and self.result.address else "?"
        what = {"connect": f"connect to {where}", "handshake": f"TLS handshake with {where}",
                "send": f"send to {where}", "recv": f"receive from {where}", "resolve": f"resolving {where}",
                "protocol": f"response from {where}"}.get(self.phase, f"{self.phase} {where}")
        if isinstance(self.exc, protocol.ProtocolError):
            line = f"{what}: protocol error ({self.exc.kind}): {self.exc}"
        else:
            line = errors.one_line(self.exc, what, command="request")
        hint = errors.tls_hint(self.result.received if self.result else b"", self.key, tls=self.tls)
        return f"{line}; {hint}" if hint else line


class SpokeFirstError(protocol.RemoteProtocolError):
    """The server sent bytes before the request was sent: not an answer to it."""

    def __init__(self, got: int) -> None:
        super().__init__(f"the server spoke first: {got} byte(s) arrived before the request was sent "
                         f"(they are not its answer; the request was not sent)", "unsolicited")


class PeerClosedError(ConnectionError):
    """The peer closed before a complete response (recv returned b"")."""

    socktools_key = errors.PEER_CLOSED

    def __init__(self, got: int) -> None:
        super().__init__(f"peer closed the connection after {got} bytes, before a response")


def _round_trip(host: str, port: int, payload: bytes, result: RequestResult, timeout: float,
                take: Optional[Callable[[bytes], bool]], tls: Optional[TlsConfig] = None,
                unix: Optional[str] = None) -> None:
    """Resolve, connect, (with ``tls``: handshake,) send ``payload`` and hand each received chunk
    to ``take`` until it returns True (``take=None``: no reply is read).  One deadline covers
    every step.  With ``unix`` (a path) the connection goes to that Unix-domain socket.

    ``take`` gets ``b""`` when the peer closes and raises :class:`PeerClosedError` or
    :class:`protocol.RemoteProtocolError`; every failure leaves as :class:`RequestError`
    naming the phase, with what was sent and received so far in ``result``.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        family, sockaddr = resolve(host, port, unix=unix)
    except OSError as exc:
        raise RequestError("resolve", exc, result) from None
    result.address = sockaddr
    context = client_context(tls) if tls is not None and tls.enabled else None

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no answer within {timeout:g}s")
        return left

    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        phase = "connect"
        try:
            sock.settimeout(remaining())
            sock.connect(sockaddr)
            result.connect_s = time.perf_counter() - started
            if context is not None:
                phase = "handshake"
                name = server_name(tls, host)
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=name,
                                                               do_handshake_on_connect=False))
                sock.settimeout(remaining())
                sock.do_handshake()
                result.handshake_s = time.perf_counter() - started - result.connect_s
                result.tls = {**negotiated(sock), "server_name": name}
            phase = "recv"
            received = bytearray()
            early = _spoke_first(sock, SPOKE_FIRST_WAIT)
            if early:
                received += early
                result.received_bytes = len(early)
                result.recv_calls = 1
                raise SpokeFirstError(len(early))
            phase = "send"
            sock.settimeout(remaining())
            sock.sendall(payload)
            result.sent = payload
            phase = "recv"
            done = take is None
            while not done:
                sock.settimeout(remaining())
                chunk = sock.recv(_READ_SIZE)
                result.recv_calls += 1
                result.received_bytes += len(chunk)
                if len(received) < KEEP_RECEIVED:
                    received += chunk[:KEEP_RECEIVED - len(received)]
                done = take(chunk)
        except protocol.RemoteProtocolError as exc:
            result.received = bytes(received)
            raise RequestError("protocol", exc, result, context is not None) from None
        except OSError as exc:  # includes timeouts, resets and failed handshakes
            if phase == "send" and not result.sent:
                result.sent = payload
            if phase == "recv":
                result.received = bytes(received)
            raise RequestError(phase, exc, result, context is not None) from None
        if phase == "recv":
            result.received = bytes(received)
    result.total_s = time.perf_counter() - started


def _spoke_first(sock: socket.socket, wait: float) -> bytes:
    """What the server has sent before our request (``b""``: nothing, or only its close --
    which the exchange then meets as it would after the send)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(int(wait * 1000)):
        return b""
    sock.settimeout(0.0)      # readable: take what is there, never wait for more
    try:
        return sock.recv(KEEP_RECEIVED)
    except (BlockingIOError, ssl.SSLWantReadError):
        # TLS: readable may be only the server's session tickets (TLS 1.3 sends them after
        # the handshake), which the TLS layer takes in without any plaintext to give
        return b""


def request(host: str, port: int, action: str, value: str, *, timeout: float = 5.0,
            max_content: int = protocol.DEFAULT_MAX_CONTENT, tls: Optional[TlsConfig] = None,
            unix: Optional[str] = None) -> RequestResult:
    """Send ``ACTION VALUE`` to a framed server (at the Unix socket ``unix`` when given) and
    return the decoded response."""
    result = RequestResult(address=unix if unix is not None else (host, port), sent=b"", received=b"")
    decoder = protocol.Decoder(max_content)

    def take(chunk: bytes) -> bool:
        decoder.receive_data(chunk)
        event = decoder.next_event()
        if isinstance(event, protocol.Message):
            result.message = event
            return True
        if event is protocol.CLOSED:
            raise PeerClosedError(result.received_bytes)
        return False

    _round_trip(host, port, reference.make_request(action, value), result, timeout, take, tls, unix)
    return result


@dataclass
class ExchangeResult(RequestResult):
    """One request of a wire protocol (redis, http, raw...): the decoded reply and any failure."""

    reply: Any = None            # socktools.wire.Reply
    failures: list = field(default_factory=list)


def exchange(host: str, port: int, proto: Any, *, timeout: float = 5.0,
             tls: Optional[TlsConfig] = None, unix: Optional[str] = None) -> ExchangeResult:
    """Send request 0 of ``proto`` (a :mod:`socktools.wire` protocol) and read one whole reply
    (from the Unix socket ``unix`` when given).

    The same parser flood uses frames the reply; a protocol without replies
    (``--no-reply``) returns once the request is sent.
    """
    from socktools.wire import WireError

    result = ExchangeResult(address=unix if unix is not None else (host, port), sent=b"", received=b"")
    parser = proto.parser()
    parser.keep = []

    def take(chunk: bytes) -> bool:
        try:
            if not chunk:
                if not (parser.eof() if hasattr(parser, "eof") else 0):
                    raise PeerClosedError(result.received_bytes)
                return True
            return parser.feed(chunk) > 0
        except WireError as exc:
            raise protocol.RemoteProtocolError(str(exc), exc.kind) from None

    _round_trip(host, port, proto.request(0, 0), result, timeout, take if proto.replies else None, tls, unix)
    result.reply = parser.keep[0] if parser.keep else None
    result.failures = list(parser.failures)
    return result

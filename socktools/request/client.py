"""One framed request (docs/protocol.md): connect, send, read and decode the response.

Blocking sockets with a deadline are the clearest tool for a single exchange;
the nonblocking core is for servers and load.  Failures raise
:class:`RequestError`, which carries the phase ("resolve", "connect", "send",
"recv", "protocol") and the bytes exchanged so far, so a wire trace can still
be shown.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from socktools import errors, protocol, reference
from socktools.addresses import format_addr, resolve
from socktools.core.stream import Stream
from socktools.tlsconf import TlsConfig, client_context, negotiated, server_name
from socktools.tlsinfo import TlsRecords, peer_chain
from socktools.wire.opening import OpeningFailed

__all__ = ["RequestResult", "RequestError", "PeerClosedError", "SpokeFirstError", "request", "ExchangeResult",
           "exchange", "converse", "Step", "KEEP_RECEIVED", "SPOKE_FIRST_WAIT", "MAX_RECORDS_SHOWN",
           "MAX_EXCHANGES"]

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

#: Exchanges in one conversation (``--command``/``--send``/``--path`` repeated): a conversation
#: is typed by hand, a dozen steps is a long one; the cap keeps a generated command line from
#: holding a connection (and the output) open without end.
MAX_EXCHANGES = 1000


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
    tls: Optional[dict] = None   # TLS: what the handshake settled (tlsconf.negotiated), the name checked,
                                 # and whether the certificate was verified
    chain: list = field(default_factory=list)      # TLS: the certificates the server sent (tlsinfo.CertInfo)
    chain_sent: int = 0          # how many it sent (chain keeps tlsinfo.MAX_CHAIN)
    records: list = field(default_factory=list)    # TLS: (direction, tlsinfo.Record), wire order
    records_total: int = 0       # records keeps MAX_RECORDS_SHOWN of them
    greeting: Optional["Step"] = None              # --greeting: the server's first message
    opening: list = field(default_factory=list)    # the opening's other steps (--setup, a plug-in's login)
    steps: list = field(default_factory=list)      # one Step per exchange, in order
    wire_bytes: dict = field(default_factory=dict)  # {"out": n, "in": n}: what the kernel carried


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
        if isinstance(self.exc, OpeningFailed):
            return errors.OPENING_REFUSED
        return errors.exception_key(self.exc)

    def __str__(self) -> str:
        where = format_addr(self.result.address) if self.result and self.result.address else "?"
        what = {"connect": f"connect to {where}", "handshake": f"TLS handshake with {where}",
                "send": f"send to {where}", "recv": f"receive from {where}", "resolve": f"resolving {where}",
                "protocol": f"response from {where}",
                "greeting": f"waiting for the greeting of {where}",
                "opening": f"the opening conversation with {where}"}.get(self.phase, f"{self.phase} {where}")
        if isinstance(self.exc, OpeningFailed):      # the server's own words (never our setup's text)
            return f"{what} was refused ({self.exc.step}): {self.exc.words}"
        if isinstance(self.exc, protocol.ProtocolError):
            line = f"{what}: protocol error ({self.exc.kind}): {self.exc}"
        else:
            line = errors.one_line(self.exc, what, command="request")
        hint = errors.tls_hint(self.result.received if self.result else b"", self.key, tls=self.tls)
        return f"{line}; {hint}" if hint else line


class SpokeFirstError(protocol.RemoteProtocolError):
    """The server sent bytes before the request was sent: not an answer to it."""

    def __init__(self, got: int, greeted: bool = False, index: int = 0, opened: bool = False) -> None:
        which = "the request" if not index else f"request {index + 1}"
        if opened:
            why = ", beyond the replies of the opening conversation"
        elif not greeted and not index:
            why = "; if the server greets first (SMTP, FTP), give --greeting to wait for it and show it"
        else:
            why = ", beyond the answers to the requests before it" if index else ", beyond its greeting"
        super().__init__(f"the server spoke first: {got} byte(s) arrived before {which} was sent "
                         f"(they are not its answer; {which} was not sent){why}", "unsolicited")


class PeerClosedError(ConnectionError):
    """The peer closed before a complete response (recv returned b"")."""

    socktools_key = errors.PEER_CLOSED

    def __init__(self, got: int) -> None:
        super().__init__(f"peer closed the connection after {got} bytes, before a response")


#: TLS records listed for ``--show-bytes`` (and ``--json``'s ``tls.records``): a handshake is
#: ~10, one exchange a few more.  A long reply in 16 KiB records would list thousands: the
#: rest are counted in ``records_total``, not listed.
MAX_RECORDS_SHOWN = 200


@dataclass
class Step:
    """One exchange of a conversation (or the server's greeting): what went each way, the
    reply framed by the mode's parser, and how long it took -- from the send (the greeting:
    from the connection's being ready) until the reply was whole."""

    label: str = ""              # what the user typed (--command, --send...), or "greeting"
    sent: bytes = b""            # kept up to KEEP_RECEIVED, like the reply's bytes
    sent_bytes: int = 0
    received: bytes = b""
    received_bytes: int = 0
    recv_calls: int = 0
    reply: Any = None            # socktools.wire.Reply (wire modes), protocol.Message (framed)
    failures: list = field(default_factory=list)
    time_s: float = 0.0


def _keep(buf: bytearray, data: bytes) -> None:
    if len(buf) < KEEP_RECEIVED:
        buf += data[:KEEP_RECEIVED - len(buf)]


class _Conversation:
    """One connection, step by step: open it (connect, TLS), then :meth:`greet` and
    :meth:`exchange` as asked.  Every step appends to ``result`` (and its ``steps``) as it
    goes, so a failure still shows what crossed; every failure leaves as :class:`RequestError`
    naming the phase.  One deadline covers everything."""

    def __init__(self, host: str, port: int, result: "RequestResult", timeout: float,
                 tls: Optional[TlsConfig], unix: Optional[str]) -> None:
        self.host, self.port, self.result, self.timeout = host, port, result, timeout
        self.tls_cfg = tls if tls is not None and tls.enabled else None
        self.unix = unix
        self.stream: Optional[Stream] = None
        self._sent, self._received = bytearray(), bytearray()
        self._records = {"out": TlsRecords(), "in": TlsRecords()} if self.tls_cfg else None

    def _on_wire(self, direction: str, data: bytes) -> None:
        """TLS: the records as they crossed the wire, in order."""
        if self._records is None:
            return
        for record in self._records[direction].feed(data):
            self.result.records_total += 1
            if len(self.result.records) < MAX_RECORDS_SHOWN:
                self.result.records.append((direction, record))

    def _failed(self, phase: str, exc: BaseException) -> RequestError:
        self.finish()
        return RequestError(phase, exc, self.result, self.tls_cfg is not None)

    def open(self, stack: contextlib.ExitStack) -> None:
        self._started = time.perf_counter()
        r = self.result
        try:
            family, sockaddr = resolve(self.host, self.port, unix=self.unix)
        except OSError as exc:
            raise RequestError("resolve", exc, r) from None
        r.address = sockaddr
        context = client_context(self.tls_cfg) if self.tls_cfg else None
        sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        self.stream = stream = Stream(sock, time.monotonic() + self.timeout, f"no answer within {self.timeout:g}s",
                                      self._on_wire)
        stack.callback(self._tally)             # runs after close_notify (registered later)
        try:
            stream._arm()
            sock.connect(sockaddr)
        except OSError as exc:
            raise self._failed("connect", exc) from None
        r.connect_s = time.perf_counter() - self._started
        if context is not None:
            name = server_name(self.tls_cfg, self.host)
            try:
                obj = stream.tls_handshake(context, name)
            except OSError as exc:              # ssl.SSLError, resets and timeouts
                raise self._failed("handshake", exc) from None
            finally:
                r.handshake_s = time.perf_counter() - self._started - r.connect_s
            r.tls = {**negotiated(obj), "server_name": name, "verified": not self.tls_cfg.insecure}
            r.chain, r.chain_sent = peer_chain(obj)
            stack.callback(stream.close_notify)
        self._ready_at = time.perf_counter()

    def _read(self, step: Step, take: Callable[[bytes], bool], phase: str = "recv") -> None:
        """Hand each chunk to ``take`` until it says the reply is whole (``b""``: the peer closed)."""
        r = self.result
        done = False
        try:
            while not done:
                chunk = self.stream.recv()
                r.recv_calls += 1
                step.recv_calls += 1
                r.received_bytes += len(chunk)
                step.received_bytes += len(chunk)
                _keep(self._received, chunk)
                step.received += chunk[:max(0, KEEP_RECEIVED - len(step.received))]
                done = take(chunk)
        except protocol.RemoteProtocolError as exc:
            raise self._failed("protocol", exc) from None
        except OpeningFailed as exc:
            raise self._failed("opening", exc) from None
        except OSError as exc:
            raise self._failed(phase, exc) from None

    def run_opening(self, op: Any, frame: Callable[[Step], None]) -> None:
        """Hold the opening conversation ``op`` (a :class:`~socktools.wire.opening.Opening`,
        as flood drives it): send what it says, feed it the server's bytes, until it is done.
        Each message it sends and the server's answer to it is one :class:`Step` -- named as a
        built-in opening names its steps (``greeting``, ``setup 1``), else ``opening N`` --
        the greeting as ``result.greeting``, the rest in ``result.opening``; ``frame(step)``
        frames a built-in step's reply as the mode frames replies.  What was sent is counted,
        never kept: a setup or a login may carry a password."""
        from socktools.wire import WireError

        names = [name for name, _ in getattr(op, "steps", ())]
        out = [op.data_to_send()]

        def take(chunk: bytes) -> bool:
            if not chunk:
                raise PeerClosedError(self.result.received_bytes)
            try:
                op.receive_data(chunk)
            except WireError as exc:
                raise protocol.RemoteProtocolError(f"in the opening: {exc}", exc.kind) from None
            out[0] = op.data_to_send()
            return bool(out[0]) or op.done

        index, started = 0, self._ready_at
        while not op.done:
            step = Step(label=names[index] if index < len(names) else f"opening {index + 1}")
            if step.label == "greeting" and not out[0]:
                self.result.greeting = step
            else:
                self.result.opening.append(step)
            if out[0]:
                started = time.perf_counter()
                self._send(out[0], step)                # counted (sent_bytes), not kept
            self._read(step, take, "greeting" if step is self.result.greeting else "opening")
            step.time_s = time.perf_counter() - started
            started = time.perf_counter()               # a step that sends nothing: from here
            if names:
                frame(step)
            index += 1
        if out[0]:                                      # its last word needs no answer
            self._send(out[0], Step())
        left = op.leftover()
        if left:
            raise self._failed("protocol", SpokeFirstError(len(left), True, opened=bool(self.result.opening)))

    def _send(self, payload: bytes, step: Step) -> None:
        try:
            self.stream.send(payload)
        except OSError as exc:
            raise self._failed("send", exc) from None
        step.sent_bytes += len(payload)

    def greet(self, take: Callable[[bytes], bool]) -> Step:
        """Wait for the server's first message (``take`` frames it) and show it as the greeting."""
        step = Step(label="greeting")
        self.result.greeting = step
        self._read(step, take, "greeting")
        step.time_s = time.perf_counter() - self._ready_at
        return step

    def exchange(self, payload: bytes, take: Optional[Callable[[bytes], bool]], label: str = "") -> Step:
        """Send ``payload`` (after checking that the server has not spoken out of turn), then
        read until ``take`` says the reply is whole (``take=None``: no reply is read)."""
        step = Step(label=label)
        self.result.steps.append(step)
        r = self.result
        try:
            early = self.stream.ready(SPOKE_FIRST_WAIT)
        except OSError as exc:
            raise self._failed("recv", exc) from None
        if early:
            r.recv_calls += 1
            r.received_bytes += len(early)
            _keep(self._received, early)
            raise self._failed("protocol", SpokeFirstError(len(early), self.result.greeting is not None,
                                                           len(r.steps) - 1))
        started = time.perf_counter()
        try:
            self.stream.send(payload)
        except OSError as exc:
            _keep(self._sent, payload)
            raise self._failed("send", exc) from None
        _keep(self._sent, payload)
        step.sent, step.sent_bytes = payload[:KEEP_RECEIVED], len(payload)
        if take is not None:
            self._read(step, take)
        step.time_s = time.perf_counter() - started
        return step

    def finish(self) -> None:
        r = self.result
        r.sent, r.received = bytes(self._sent), bytes(self._received)
        r.total_s = time.perf_counter() - self._started

    def _tally(self) -> None:
        """The bytes the kernel carried, counted last (after TLS's close_notify went out)."""
        self.result.wire_bytes = {"out": self.stream.wire_out, "in": self.stream.wire_in}


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

    with contextlib.ExitStack() as stack:
        conv = _Conversation(host, port, result, timeout, tls, unix)
        conv.open(stack)
        conv.exchange(reference.make_request(action, value), take, f"{action} {value}").reply = result.message
        conv.finish()
    return result


@dataclass
class ExchangeResult(RequestResult):
    """A conversation in a wire protocol (redis, http, raw...): each step's decoded reply, the
    last one as ``reply``, and every failure."""

    reply: Any = None            # socktools.wire.Reply: the last exchange's
    failures: list = field(default_factory=list)


def exchange(host: str, port: int, proto: Any, *, timeout: float = 5.0,
             tls: Optional[TlsConfig] = None, unix: Optional[str] = None) -> ExchangeResult:
    """Send request 0 of ``proto`` (a :mod:`socktools.wire` protocol) and read one whole reply
    (from the Unix socket ``unix`` when given): a conversation of one exchange."""
    return converse(host, port, proto, timeout=timeout, tls=tls, unix=unix)


def converse(host: str, port: int, proto: Any, *, count: int = 1, labels: tuple = (), greeting: bool = False,
             timeout: float = 5.0, tls: Optional[TlsConfig] = None, unix: Optional[str] = None) -> ExchangeResult:
    """On one connection: with ``greeting``, wait for the server's first message; then hold
    the protocol's opening conversation (``proto.opening()``: ``--greeting``/``--setup`` built
    in, or a plug-in's login), as flood does before its traffic; then send requests 0 ..
    ``count``-1 of ``proto`` in order, each after the reply to the one before.

    One parser frames every reply -- the greeting too, as flood's ``--greeting`` frames it: by
    the mode's reply parser -- so bytes that arrive together are split where the protocol
    says.  Bytes the server sends out of turn (before a request, beyond the reply owed) are
    not taken as an answer: :class:`SpokeFirstError`, the request is not sent.  A protocol
    without replies (``--no-reply``) sends them all and reads nothing.
    """
    from socktools.wire import WireError

    if not 1 <= count <= MAX_EXCHANGES:
        raise ValueError(f"count must be 1 .. {MAX_EXCHANGES}")
    result = ExchangeResult(address=unix if unix is not None else (host, port), sent=b"", received=b"")
    parser = proto.parser()
    parser.keep = []
    done, owed = [0], [0]          # replies framed so far; replies owed (greeting and answers)

    def take(chunk: bytes) -> bool:
        try:
            if not chunk:
                done[0] += parser.eof() if hasattr(parser, "eof") else 0
                if done[0] < owed[0]:
                    raise PeerClosedError(result.received_bytes)
                return True
            done[0] += parser.feed(chunk)
            return done[0] >= owed[0]
        except WireError as exc:
            raise protocol.RemoteProtocolError(str(exc), exc.kind) from None

    def settle(step: Step, failures_before: int) -> None:
        step.reply = parser.keep[owed[0] - 1] if len(parser.keep) >= owed[0] else None
        step.failures = list(parser.failures[failures_before:])

    def frame(step: Step) -> None:
        """A built-in opening's reply, framed by a fresh parser of the mode (as flood's is)."""
        own = proto.parser()
        own.keep = []
        try:
            own.feed(step.received)
        except WireError:
            return
        # one reply framed: shown as the mode shows replies; several (SMTP's 250- lines), or
        # none: the bytes as they came
        step.reply = own.keep[0] if len(own.keep) == 1 else None

    with contextlib.ExitStack() as stack:
        conv = _Conversation(host, port, result, timeout, tls, unix)
        conv.open(stack)
        if greeting:
            owed[0] = 1
            settle(conv.greet(take), 0)
        op = proto.opening()
        if op is not None:
            conv.run_opening(op, frame)
        for seq in range(count):
            if done[0] > owed[0] or parser.buffered:       # already here, before this request
                extra = sum(r.size for r in parser.keep[owed[0]:]) + parser.buffered
                raise conv._failed("protocol", SpokeFirstError(extra, greeting, seq))
            before = len(parser.failures)
            label = labels[seq] if seq < len(labels) else ""
            if proto.replies:
                owed[0] += 1
            step = conv.exchange(proto.request(seq, 0), take if proto.replies else None, label)
            if proto.replies:
                settle(step, before)
        conv.finish()
    result.reply = result.steps[-1].reply
    result.failures = list(parser.failures)
    return result

"""socktools' own exchanges as wire protocols: echo (bytes back whole) and framed (docs/protocol.md)."""

from __future__ import annotations

import json

from socktools import protocol, reference
from socktools.wire.base import Parser, Reply, WireError, WireProtocol
from socktools.wire.options import WireSpec

__all__ = ["EchoProtocol", "FramedProtocol", "build_echo", "build_framed", "summary_echo", "summary_framed",
           "FramedStream", "stream_parser", "content_preview", "CONTENT_PREVIEW", "STREAM_MAX_CONTENT"]

#: Largest content a stream decoder (``proxy --decode framed``) holds to show a message: the
#: decoder keeps a message whole until it completes, once per direction of every watched
#: connection, so the cap is the server's own default (``serve --max-content``, nginx's
#: 1 MiB ``client_max_body_size``).  A longer message stops the decoding of that connection,
#: naming the cap; its bytes still pass.
STREAM_MAX_CONTENT = protocol.DEFAULT_MAX_CONTENT

#: Characters of a message's content shown in its one-line summary (sniff's ``content`` line).
CONTENT_PREVIEW = 120


# ------------------------------------------------------------------ the registry's entry points
def build_echo(spec: WireSpec) -> "EchoProtocol":
    return EchoProtocol(spec.size)


def build_framed(spec: WireSpec) -> "FramedProtocol":
    return FramedProtocol(spec.action, spec.value)


def summary_echo(spec: WireSpec) -> dict:
    return {"request_bytes": len(build_echo(spec).request(0, 0))}


def summary_framed(spec: WireSpec) -> dict:
    return {"request_bytes": len(build_framed(spec).request(0, 0)), "action": spec.action, "value": spec.value}


def content_preview(msg: protocol.Message) -> str:
    """The content in one short line: JSON re-serialised, text decoded, bytes as a literal
    (what ``sniff --decode framed`` prints as a message's ``content``)."""
    if msg.value is not None:
        text = json.dumps(msg.value, ensure_ascii=False)
    else:
        text = repr(msg.content)[2:-1] if msg.content_encoding == "binary" else _decoded(msg)
    return text if len(text) <= CONTENT_PREVIEW else text[:CONTENT_PREVIEW - 1] + "…"


def _decoded(msg: protocol.Message) -> str:
    try:
        return msg.content.decode(msg.content_encoding)
    except (LookupError, UnicodeDecodeError):
        return repr(msg.content)[2:-1]


def stream_parser(role: str) -> "FramedStream":
    """The registry's stream decoder: any framed message, requests and answers alike."""
    return FramedStream()


class EchoProtocol(WireProtocol):
    """``size`` bytes out, the same bytes back."""

    name = "echo"
    surplus_kind = "echo-surplus"
    echoes = True

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.fixed_request = b"x" * size
        self.reply_size = size
        # One byte more than an answer: extra bytes already queued show up at once.
        self.read_size = min(size + 1, 65536)

    def request(self, seq: int, conn: int) -> bytes:
        return self.fixed_request

    def parser(self) -> "_EchoParser":
        return _EchoParser(self.fixed_request)

    def describe(self) -> str:
        return f"echo, {self.size:,}-byte payloads"


class _EchoParser(Parser):
    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.got = 0

    @property
    def buffered(self) -> int:
        return self.got

    def feed(self, data: bytes) -> int:
        n, self.got = divmod(self.got + len(data), len(self.payload))
        if self.keep is not None:
            self.keep.extend(Reply(len(self.payload), "echo", {}) for _ in range(n))
        return n


class FramedProtocol(WireProtocol):
    """The reference server's protocol: each answer must be its answer to our request, kept alive.

    The usual case -- the whole known-good answer in one read -- is checked
    byte for byte; anything else (pieces, pipelined answers, another
    byteorder) goes through the protocol's decoder and is checked by content.
    """

    name = "framed"
    surplus_kind = "unsolicited"

    def __init__(self, action: str = "search", value: str = "morpheus") -> None:
        self.fixed_request = reference.make_request(action, value, keep_alive=True)
        req = protocol.Decoder()
        req.receive_data(self.fixed_request)
        self.expected_bytes = reference.respond(req.next_event())
        dec = protocol.Decoder()
        dec.receive_data(self.expected_bytes)
        msg = dec.next_event()
        self.expected_type = msg.content_type
        self.expected_content = msg.content
        self.what = f"{action} {value!r}"
        self.read_size = min(len(self.expected_bytes) + 1, 65536)

    def request(self, seq: int, conn: int) -> bytes:
        return self.fixed_request

    def parser(self) -> "_FramedParser":
        return _FramedParser(self)

    def describe(self) -> str:
        return f"framed, `{self.what}` with keep-alive"


class _FramedParser(Parser):
    def __init__(self, proto: FramedProtocol) -> None:
        super().__init__()
        self.proto = proto
        self.decoder = None

    @property
    def buffered(self) -> int:
        return self.decoder.buffered if self.decoder is not None else 0

    def feed(self, data: bytes) -> int:
        proto = self.proto
        dec = self.decoder
        if dec is None:
            if data == proto.expected_bytes and self.keep is None:
                return 1
            dec = protocol.Decoder()
        n = 0
        for event in _messages(dec, data):
            if event.content_type != proto.expected_type or event.content != proto.expected_content:
                raise WireError(f"unexpected answer to {proto.what}: {event.content_type} "
                                f"{event.content[:60]!r}", "unexpected-response")
            if not event.keep_alive:
                raise WireError("the server answered without keep-alive: it closes after one request",
                                "no-keep-alive")
            if self.keep is not None:
                self.keep.append(Reply(event.wire_size, event.content_type, {"header": event.header}))
            n += 1
        self.decoder = dec if dec.buffered else None
        return n


class FramedStream(Parser):
    """Every framed message of one direction, whatever it says, as a :class:`Reply`: its wire
    size, ``"<content-type> <content>"`` (as sniff shows a message) and its header -- for
    ``proxy --decode framed`` (flood's :class:`_FramedParser` judges answers instead)."""

    def __init__(self, max_content: int = STREAM_MAX_CONTENT) -> None:
        super().__init__()
        self.decoder = protocol.Decoder(max_content)

    @property
    def buffered(self) -> int:
        return self.decoder.buffered

    def feed(self, data: bytes) -> int:
        n = 0
        for event in _messages(self.decoder, data):
            if self.keep is not None:
                self.keep.append(Reply(event.wire_size, f"{event.content_type} {content_preview(event)}",
                                       {"header": event.header}))
            n += 1
        return n


def _messages(dec: protocol.Decoder, data: bytes):
    """The messages ``data`` completes in ``dec``; the peer's broken bytes as a WireError."""
    dec.receive_data(data)
    while True:
        try:
            event = dec.next_event()
        except protocol.RemoteProtocolError as exc:
            raise WireError(str(exc), exc.kind) from None
        if event is protocol.NEED_DATA or event is protocol.CLOSED:
            return
        yield event

"""socktools' own exchanges as wire protocols: echo (bytes back whole) and framed (docs/protocol.md)."""

from __future__ import annotations

from socktools import protocol, reference
from socktools.wire.base import Parser, Reply, WireError, WireProtocol
from socktools.wire.options import WireSpec

__all__ = ["EchoProtocol", "FramedProtocol", "build_echo", "build_framed", "summary_echo", "summary_framed"]


# ------------------------------------------------------------------ the registry's entry points
def build_echo(spec: WireSpec) -> "EchoProtocol":
    return EchoProtocol(spec.size)


def build_framed(spec: WireSpec) -> "FramedProtocol":
    return FramedProtocol(spec.action, spec.value)


def summary_echo(spec: WireSpec) -> dict:
    return {"request_bytes": len(build_echo(spec).request(0, 0))}


def summary_framed(spec: WireSpec) -> dict:
    return {"request_bytes": len(build_framed(spec).request(0, 0)), "action": spec.action, "value": spec.value}


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
        dec.receive_data(data)
        n = 0
        while True:
            try:
                event = dec.next_event()
            except protocol.RemoteProtocolError as exc:
                raise WireError(str(exc), exc.kind) from None
            if event is protocol.NEED_DATA or event is protocol.CLOSED:
                break
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

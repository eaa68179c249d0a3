"""The framed message protocol (docs/protocol.md), sans-I/O.

No sockets, selectors, clocks or prints live here: bytes go in, messages come
out, and the same code serves the server, the request client, flood and
sniff's dissector.  The tutorial's application on top of it (the search
table, the reference client's requests, the reference server's answers)
lives in :mod:`socktools.reference`.

Wire format::

    +----------------+-------------------+------------------------+
    | 2-byte length  | JSON header       | content                |
    | (big-endian)   | (that many bytes) | (content-length bytes) |
    +----------------+-------------------+------------------------+

Usage, the h11 way::

    dec = Decoder()
    dec.receive_data(chunk)          # b"" means the peer closed
    while True:
        ev = dec.next_event()        # a Message, NEED_DATA or CLOSED
        if ev is NEED_DATA or ev is CLOSED:
            break
        handle(ev)

Errors say whose fault they are: :class:`LocalProtocolError` when *we* were
asked to build something illegal, :class:`RemoteProtocolError` when the peer
sent something illegal.  After a remote error the decoder stays broken: every
later call raises the same error, so a caller cannot accidentally resync on
garbage.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "PROTOHEADER_SIZE", "MAX_HEADER_SIZE", "DEFAULT_MAX_CONTENT", "REQUIRED_KEYS",
    "ProtocolError", "LocalProtocolError", "RemoteProtocolError",
    "Message", "Decoder", "NEED_DATA", "CLOSED",
    "encode_message", "encode_json", "error_response",
    "TEXT_ENCODINGS", "text_codec", "escape_surrogates",
]

#: The proto-header is an unsigned 16-bit big-endian length ("!H").
PROTOHEADER_SIZE = 2
_PROTOHEADER = struct.Struct("!H")

#: The 2-byte prefix bounds the JSON header at 65,535 bytes; nothing else needed.
MAX_HEADER_SIZE = 0xFFFF

#: Nothing on the wire bounds ``content-length``, so the receiver needs its own
#: cap, checked as soon as the header arrives (before any content is buffered).
#: 1 MiB is the same order as nginx's ``client_max_body_size`` default (1 MiB)
#: and far above any message of this protocol's request/response shapes, while
#: keeping a hostile peer from making one connection buffer gigabytes.
DEFAULT_MAX_CONTENT = 1 << 20

#: Header keys every message must carry; this order is the reference order.
REQUIRED_KEYS = ("byteorder", "content-type", "content-encoding", "content-length")

TEXT_JSON = "text/json"
CLIENT_BINARY = "binary/custom-client-binary-type"
SERVER_BINARY = "binary/custom-server-binary-type"


class ProtocolError(Exception):
    """Something broke the framed protocol.

    ``kind`` is a short stable slug (``"bad-json"``, ``"content-too-large"``…)
    suitable for counting errors by kind in statistics.
    """

    def __init__(self, message: str, kind: str = "protocol-error") -> None:
        super().__init__(message)
        self.kind = kind


class LocalProtocolError(ProtocolError):
    """We were asked to build a message that breaks the protocol (our bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (their bug)."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_event()`` result: the buffer holds no complete message yet.
NEED_DATA = _Sentinel("NEED_DATA")
#: ``next_event()`` result: the peer closed cleanly between messages.
CLOSED = _Sentinel("CLOSED")


@dataclass(frozen=True)
class Message:
    """One decoded message.

    ``header`` is the JSON header exactly as received (all keys, in order);
    ``content`` the raw content bytes; ``value`` the decoded JSON object for
    ``text/json`` content and ``None`` otherwise; ``wire_size`` the number of
    bytes the message occupied on the wire.
    """

    header: dict
    content: bytes
    value: Any = None
    wire_size: int = 0

    @property
    def content_type(self) -> str:
        return self.header["content-type"]

    @property
    def content_encoding(self) -> str:
        return self.header["content-encoding"]

    @property
    def keep_alive(self) -> bool:
        """True when the header asks to keep the connection open (socktools extension)."""
        return self.header.get("keep-alive") is True


Event = Union[Message, _Sentinel]


# --------------------------------------------------------------------- encoding

def _dumps(obj: Any) -> str:
    # The reference peers: json.dumps(obj, ensure_ascii=False), default separators.
    return json.dumps(obj, ensure_ascii=False)


#: The content encodings ``text/json`` may declare, by the names people write,
#: mapped to the Python codec that decodes them.  An allow-list, not "any
#: codec Python can name": ``codecs.lookup`` also finds punycode (quadratic:
#: 1 MiB of it pinned a worker for 24 s), idna, rot13, zlib and friends.
#: Every codec here decodes in linear time.  The set is the one JSON itself
#: knows: RFC 8259 §8.1 says JSON between systems is UTF-8, its predecessor
#: RFC 4627 §3 allowed UTF-16/32 in either byte order, and Python's own
#: ``json.detect_encoding`` accepts exactly utf-8, utf-8-sig and utf-16/32
#: (LE/BE); plus the two single-byte labels older peers send (ascii and
#: latin-1, which the WHATWG Encoding Standard also lists).  h11 takes the
#: same line for HTTP framing: it decodes nothing but ASCII itself and leaves
#: bodies to the application.  Names match case-insensitively, ``_`` = ``-``.
TEXT_ENCODINGS: dict[str, str] = {
    "utf-8": "utf-8", "utf8": "utf-8",
    "utf-8-sig": "utf-8-sig",
    "utf-16": "utf-16", "utf16": "utf-16",
    "utf-16-le": "utf-16-le", "utf-16le": "utf-16-le",
    "utf-16-be": "utf-16-be", "utf-16be": "utf-16-be",
    "utf-32": "utf-32", "utf32": "utf-32",
    "utf-32-le": "utf-32-le", "utf-32le": "utf-32-le",
    "utf-32-be": "utf-32-be", "utf-32be": "utf-32-be",
    "ascii": "ascii", "us-ascii": "ascii",
    "latin-1": "latin-1", "latin1": "latin-1", "iso-8859-1": "latin-1", "iso8859-1": "latin-1",
}
_ACCEPTED = "utf-8, utf-8-sig, utf-16, utf-16-le, utf-16-be, utf-32, utf-32-le, utf-32-be, ascii, latin-1"


def text_codec(name: Any) -> str | None:
    """The Python codec for a declared text encoding, or None when it is not on the allow-list."""
    if not isinstance(name, str) or len(name) > 16:
        return None
    return TEXT_ENCODINGS.get(name.lower().replace("_", "-"))


def _check_encoding(name: Any, content_type: str) -> None:
    if not isinstance(name, str):
        raise ValueError(f"content-encoding must be a string, not {type(name).__name__}")
    if name == "binary":
        if content_type == TEXT_JSON:
            raise ValueError("text/json content needs a text encoding, not 'binary'")
        return
    # Other content types are never decoded, but a name off the list is still
    # refused: what sniff shows and what a peer answers must not depend on it.
    if text_codec(name) is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise ValueError(f"unknown content-encoding {shown!r}: accepted are binary (not for "
                         f"text/json) and the text encodings {_ACCEPTED}")


def encode_message(content: bytes, content_type: str, content_encoding: str, *,
                   byteorder: str = sys.byteorder, extra: dict | None = None) -> bytes:
    """Frame ``content`` with a JSON header in the reference key order.

    ``extra`` keys (for example ``{"keep-alive": True}``) follow the four
    required ones.  Raises :class:`LocalProtocolError` when the result would
    not be a legal message.
    """
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"content must be bytes, not {type(content).__name__}", "bad-content")
    if not isinstance(content_type, str):
        raise LocalProtocolError("content-type must be a string", "bad-content-type")
    try:
        _check_encoding(content_encoding, content_type)
    except ValueError as exc:
        raise LocalProtocolError(str(exc), "bad-content-encoding") from None
    header = {
        "byteorder": byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content),
    }
    if extra:
        clash = set(extra) & set(REQUIRED_KEYS)
        if clash:
            raise LocalProtocolError(f"extra header keys may not override {sorted(clash)}", "bad-header")
        header.update(extra)
    try:
        raw = _dumps(header).encode("utf-8")
    except (TypeError, ValueError) as exc:  # unserialisable extra, lone surrogate
        raise LocalProtocolError(f"header cannot be encoded as UTF-8 JSON: {exc}", "bad-header") from None
    if len(raw) > MAX_HEADER_SIZE:
        raise LocalProtocolError(
            f"JSON header is {len(raw)} bytes; the 2-byte prefix allows {MAX_HEADER_SIZE}",
            "header-too-large")
    return b"".join((_PROTOHEADER.pack(len(raw)), raw, bytes(content)))


def encode_json(obj: dict, *, encoding: str = "utf-8", byteorder: str = sys.byteorder,
                extra: dict | None = None) -> bytes:
    """Frame a JSON object as ``text/json`` content, encoded like the reference."""
    if not isinstance(obj, dict):
        raise LocalProtocolError("text/json content must be a JSON object", "bad-content")
    try:
        _check_encoding(encoding, TEXT_JSON)
    except ValueError as exc:
        raise LocalProtocolError(str(exc), "bad-content-encoding") from None
    try:
        content = _dumps(obj).encode(text_codec(encoding))
    except TypeError as exc:
        raise LocalProtocolError(f"text/json content is not JSON-serialisable: {exc}", "bad-content") from None
    except (LookupError, UnicodeError) as exc:
        raise LocalProtocolError(f"cannot encode content as {encoding!r}: {exc}", "bad-content-encoding") from None
    return encode_message(content, TEXT_JSON, encoding, byteorder=byteorder, extra=extra)


def error_response(error: ProtocolError | str, *, byteorder: str = sys.byteorder) -> bytes:
    """The ``{"error": ...}`` reply sent before closing a connection that broke the protocol.

    Never raises: text UTF-8 cannot carry (a lone surrogate quoted from the
    peer) is written as a ``\\udXXX`` escape.
    """
    return encode_json({"error": escape_surrogates(str(error))}, byteorder=byteorder)


def escape_surrogates(text: str) -> str:
    """``text`` with any lone surrogate written as a ``\\udXXX`` escape, so it encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --------------------------------------------------------------------- decoding

def _remote(msg: str, kind: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, kind)


def parse_header(raw: bytes, max_content: int = DEFAULT_MAX_CONTENT) -> dict:
    """Validate a JSON header's bytes; return the header dict or raise RemoteProtocolError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _remote(f"JSON header is not valid UTF-8 (byte {exc.start})", "bad-utf8") from None
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise _remote(f"JSON header does not parse: {exc}", "bad-json") from None
    except RecursionError:
        raise _remote("JSON header is nested too deeply to parse", "bad-json") from None
    if not isinstance(header, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(header), "a number")
        raise _remote(f"JSON header must be an object, got {kind}", "header-not-object")
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise _remote(f"JSON header lacks required key(s): {', '.join(missing)}", "missing-key")
    length = header["content-length"]
    if isinstance(length, bool) or not isinstance(length, int):
        raise _remote(f"content-length must be an integer, got {length!r}", "bad-content-length")
    if length < 0:
        raise _remote(f"content-length must not be negative, got {length}", "bad-content-length")
    if length > max_content:
        raise _remote(f"content-length {length} exceeds the limit of {max_content} bytes",
                      "content-too-large")
    ctype = header["content-type"]
    if not isinstance(ctype, str):
        raise _remote(f"content-type must be a string, got {ctype!r}", "bad-content-type")
    try:
        _check_encoding(header["content-encoding"], ctype)
    except ValueError as exc:
        raise _remote(str(exc), "bad-content-encoding") from None
    return header


# A JSON ``\\uD800``-``\\uDFFF`` escape: the only way a lone surrogate gets into a
# decoded value (the allowed codecs refuse surrogates in the bytes themselves).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate anywhere in a decoded JSON value (keys too), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return item[exc.start]
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def parse_content(header: dict, content: bytes) -> Any:
    """Decode ``text/json`` content to its object (None for other types), or raise.

    The encoding must be on :data:`TEXT_ENCODINGS` (checked with the header,
    before any content is buffered); a value carrying a lone surrogate
    (``"\\ud800"``, legal JSON syntax but no Unicode text, RFC 8259 §8.2) is
    refused too, so that whatever answers it can always encode its answer.
    """
    if header["content-type"] != TEXT_JSON:
        return None
    declared = header["content-encoding"]
    codec = text_codec(declared)
    if codec is None:  # parse_header already refused it; a hand-made header may not have been
        raise _remote(f"unknown content-encoding {declared!r}", "bad-content-encoding")
    try:
        text = content.decode(codec)
    except UnicodeError as exc:
        reason = getattr(exc, "reason", exc)
        raise _remote(f"text/json content does not decode as {declared}: {reason}",
                      "bad-content") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _remote(f"text/json content is not JSON: {exc}", "bad-content") from None
    except RecursionError:
        raise _remote("text/json content is nested too deeply to parse", "bad-content") from None
    if not isinstance(value, dict):
        raise _remote(f"text/json content must be a JSON object, got {type(value).__name__}",
                      "bad-content")
    if _SURROGATE_ESCAPE.search(text):  # only then walk the value: paired escapes are fine
        lone = _lone_surrogate(value)
        if lone is not None:
            raise _remote(f"text/json content has a lone surrogate \\u{ord(lone):04x}, which is "
                          f"not Unicode text (RFC 8259 §8.2)", "lone-surrogate")
    return value


class Decoder:
    """Incremental decoder: feed bytes with :meth:`receive_data`, pull with :meth:`next_event`.

    ``max_content`` caps ``content-length`` (see :data:`DEFAULT_MAX_CONTENT`).
    """

    __slots__ = ("max_content", "_buf", "_header", "_hdrlen", "_eof", "_error")

    def __init__(self, max_content: int = DEFAULT_MAX_CONTENT) -> None:
        if max_content < 0:
            raise ValueError("max_content must be >= 0")
        self.max_content = max_content
        self._buf = bytearray()
        self._header: dict | None = None  # parsed header of the message in progress
        self._hdrlen = 0                  # its JSON header length
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return len(self._buf)

    @property
    def expecting(self) -> str:
        """What the decoder waits for, in words (for error messages and sniff)."""
        if self._header is not None:
            return "content"
        if len(self._buf) >= PROTOHEADER_SIZE:
            return "JSON header"
        return "proto-header"

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed (EOF)."""
        if self._error is not None:
            raise self._error
        if data:
            if self._eof:
                raise RuntimeError("receive_data() after EOF")
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Event:
        """Return the next :class:`Message`, :data:`NEED_DATA` or :data:`CLOSED`.

        Raises :class:`RemoteProtocolError` when the bytes break the protocol.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Event:
        buf = self._buf
        if self._header is None:
            if len(buf) < PROTOHEADER_SIZE:
                return self._starved()
            hdrlen = _PROTOHEADER.unpack_from(buf)[0]
            if hdrlen == 0:
                raise _remote("proto-header says the JSON header is 0 bytes long", "empty-header")
            if len(buf) < PROTOHEADER_SIZE + hdrlen:
                return self._starved()
            self._header = parse_header(bytes(buf[PROTOHEADER_SIZE:PROTOHEADER_SIZE + hdrlen]),
                                        self.max_content)
            self._hdrlen = hdrlen
        header = self._header
        start = PROTOHEADER_SIZE + self._hdrlen
        end = start + header["content-length"]
        if len(buf) < end:
            return self._starved()
        content = bytes(buf[start:end])
        del buf[:end]
        self._header = None
        return Message(header, content, parse_content(header, content), end)

    def _starved(self) -> _Sentinel:
        if not self._eof:
            return NEED_DATA
        if not self._buf and self._header is None:
            return CLOSED
        if self._header is not None:
            need = PROTOHEADER_SIZE + self._hdrlen + self._header["content-length"]
        elif len(self._buf) >= PROTOHEADER_SIZE:
            need = PROTOHEADER_SIZE + _PROTOHEADER.unpack_from(self._buf)[0]
        else:
            need = PROTOHEADER_SIZE
        raise _remote(f"peer closed mid-message while reading the {self.expecting}: "
                      f"got {len(self._buf)} of {need} bytes", "truncated")


"""Raw and line exchanges: your bytes out, replies framed by a delimiter, a size or a prefix.

Framings (exactly one): ``until`` a delimiter, a fixed ``size``, a length
``prefix`` in :mod:`struct` notation (``>H``: 2-byte big-endian; the body
is ``length + adjust`` bytes), or none (write-only: replies are not expected
and whatever arrives is ignored, as tcpkali does).  ``match`` (a regular
expression over each whole reply, delimiter included) turns a reply that does
not match into a ``wrong-reply`` failure carrying its first bytes.
"""

from __future__ import annotations

import re
import struct
from typing import Optional, Sequence

from socktools.wire.base import (SAMPLE_BYTES, WHOLE_REPLY_BYTES, Failure, Parser, Reply, WholeReplies,
                                 WireError, WireProtocol)
from socktools.wire.escapes import EscapeError, Template, rotation, unescape
from socktools.wire.opening import Scripted, coded_continues, coded_refusal, describe_steps
from socktools.wire.options import (EOLS, SEND_FILE_SHOWN, WireOptionError, WireSpec, opening_steps, reply_match,
                                    templates)

__all__ = ["RawProtocol", "LineProtocol", "MAX_REPLY", "prefix_struct", "build_raw", "build_line",
           "summary_raw", "summary_line", "line_stream_parser", "line_may_start"]

#: Longest reply (or delimiter search) a raw parser buffers: 1 MiB, Redis's
#: own cap on an inline request (PROTO_INLINE_MAX_SIZE is 64 KiB; its query
#: buffer cap is 1 GiB) is far above any line, and a peer that never sends
#: the delimiter must not grow our memory without bound.
MAX_REPLY = 1 << 20

_PREFIX_CODES = "bBhHiIlLqQ"


def prefix_struct(fmt: str) -> struct.Struct:
    """A length prefix format: one integer code, optionally a byte-order mark (``>I``)."""
    body = fmt[1:] if fmt[:1] in "@=<>!" else fmt
    if len(body) != 1 or body not in _PREFIX_CODES:
        raise ValueError(f"{fmt!r} is not a length prefix: use one integer code of struct "
                         f"({' '.join(_PREFIX_CODES)}) after an optional byte order (< > ! =), e.g. >H or >I")
    return struct.Struct(fmt)


def _sample(reply: bytes) -> bytes:
    return bytes(reply[:SAMPLE_BYTES])


def _summary(reply: bytes) -> str:
    text = repr(bytes(reply[:200]))
    return text + ("…" if len(reply) > 200 else "")


class RawProtocol(WireProtocol):
    """Requests from templates (rotated); replies framed as configured."""

    name = "raw"

    def __init__(self, templates: Sequence[Template], *, until: Optional[bytes] = None,
                 size: Optional[int] = None, prefix: Optional[str] = None, adjust: int = 0,
                 no_reply: bool = False, until_close: bool = False, match: Optional[bytes] = None) -> None:
        chosen = [n for n, v in (("until", until), ("size", size), ("prefix", prefix)) if v is not None]
        chosen += [n for n, v in (("until_close", until_close), ("no_reply", no_reply)) if v]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one reply framing, not {', '.join(chosen) or 'none'}")
        if not templates:
            raise ValueError("give at least one request")
        if until is not None and not until:
            raise ValueError("the reply delimiter is empty")
        if size is not None and size < 1:
            raise ValueError("the reply size must be >= 1 byte")
        self.templates = tuple(templates)
        self.request = rotation(self.templates)
        self.fixed_request = self.templates[0].fixed if len(self.templates) == 1 else None
        self.shared_requests = not any("conn" in t.names for t in self.templates)
        self.until = until
        self.size = size
        self.prefix = prefix_struct(prefix) if prefix is not None else None
        self.adjust = adjust
        self.replies = not no_reply
        self.until_close = until_close
        # Every reply ends with the server's close: flood reconnects for the next request.
        self.may_close = until_close
        self.match = re.compile(match, re.DOTALL) if match is not None else None
        self.whole = WholeReplies()
        self.reply_size = size if match is None else None
        if size is not None:
            self.read_size = min(size + 1, 65536)

    def parser(self) -> Parser:
        if not self.replies:
            return _Ignore()
        if self.until is not None:
            return _UntilParser(self.until, self.match, self.whole)
        if self.until_close:
            return _CloseParser(self.match)
        if self.size is not None:
            return _SizeParser(self.size, self.match)
        return _PrefixParser(self.prefix, self.adjust, self.match)

    def framer(self) -> Parser:
        """A parser of this framing that judges nothing (--reply-match is the traffic's): the
        opening's replies are framed as the traffic's are."""
        if self.until is not None:
            return _UntilParser(self.until, None)
        if self.size is not None:
            return _SizeParser(self.size, None)
        return _PrefixParser(self.prefix, self.adjust, None)

    def describe(self) -> str:
        return f"{self.name}, " + framing(self.replies, self.until_close, self.until, self.size,
                                          self.prefix.format if self.prefix else None, self.adjust)


def framing(replies: bool, until_close: bool, until: Optional[bytes], size: Optional[int],
            prefix: Optional[str], adjust: int = 0) -> str:
    """How raw replies are framed, in words (flood's report and the run's summary)."""
    if not replies:
        return "no replies"
    if until_close:
        return "replies until the server closes"
    if until is not None:
        return f"replies until {until!r}"
    if size is not None:
        return f"{size:,}-byte replies"
    return f"replies with a {prefix} length prefix" + (f" (adjusted by {adjust:+d})" if adjust else "")


class _Checked(Parser):
    def __init__(self, match) -> None:
        super().__init__()
        self.match = match
        self.buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def _reply(self, reply) -> None:
        if self.match is not None and self.match.search(reply) is None:
            self.failures.append(Failure("wrong-reply", "did not match --reply-match", _sample(reply)))
        if self.keep is not None:
            self.keep.append(Reply(len(reply), _summary(reply), {"bytes": bytes(reply)}))


class _UntilParser(_Checked):
    def __init__(self, delim: bytes, match, whole: Optional[WholeReplies] = None) -> None:
        super().__init__(match)
        self.delim = delim
        self.plain = match is None
        self.whole = WholeReplies() if whole is None else whole

    def feed(self, data: bytes) -> int:
        delim = self.delim
        buf = self.buf
        # The common case: a read that was one whole reply before.
        if not buf and self.keep is None and len(data) <= WHOLE_REPLY_BYTES and data in self.whole:
            return 1
        fresh = not buf and self.keep is None
        failures = len(self.failures)
        start = max(0, len(buf) - len(delim) + 1)
        buf += data
        n = 0
        pos = 0
        while True:
            end = buf.find(delim, max(pos, start))
            if end < 0:
                break
            end += len(delim)
            if not self.plain or self.keep is not None:
                self._reply(buf[pos:end])
            n += 1
            pos = start = end
        if pos:
            del buf[:pos]
        if len(buf) > MAX_REPLY:
            raise WireError(f"no {delim!r} in {len(buf):,} bytes (the cap is {MAX_REPLY:,})", "reply-too-long")
        if n == 1 and fresh and not buf and len(self.failures) == failures:
            self.whole.learn(data)
        return n


class _CloseParser(_Checked):
    """A reply is every byte until the peer closes (one per connection)."""

    def feed(self, data: bytes) -> int:
        buf = self.buf
        buf += data
        if len(buf) > MAX_REPLY:
            raise WireError(f"{len(buf):,} bytes and the server has not closed (the cap is {MAX_REPLY:,})",
                            "reply-too-long")
        return 0

    def eof(self) -> int:
        """The close ends the reply; a close before any byte is no reply (0: peer-closed)."""
        if not self.buf:
            return 0
        self._reply(self.buf)
        self.buf = bytearray()
        self.closing = True
        return 1


class _SizeParser(_Checked):
    def __init__(self, size: int, match) -> None:
        super().__init__(match)
        self.size = size
        self.got = 0
        self.plain = match is None

    @property
    def buffered(self) -> int:
        return self.got if self.plain else len(self.buf)

    def feed(self, data: bytes) -> int:
        if self.plain and self.keep is None:
            n, self.got = divmod(self.got + len(data), self.size)
            return n
        buf = self.buf
        buf += data
        size = self.size
        n = len(buf) // size
        for i in range(n):
            self._reply(buf[i * size:(i + 1) * size])
        del buf[:n * size]
        return n


class _PrefixParser(_Checked):
    def __init__(self, prefix: struct.Struct, adjust: int, match) -> None:
        super().__init__(match)
        self.prefix = prefix
        self.adjust = adjust

    def feed(self, data: bytes) -> int:
        buf = self.buf
        buf += data
        head = self.prefix.size
        pos = 0
        n = 0
        while len(buf) - pos >= head:
            (length,) = self.prefix.unpack_from(buf, pos)
            body = length + self.adjust
            if body < 0 or body > MAX_REPLY:
                raise WireError(f"a length prefix of {length:,} means a {body:,}-byte body "
                                f"(allowed: 0 to {MAX_REPLY:,})", "bad-length")
            end = pos + head + body
            if end > len(buf):
                break
            self._reply(buf[pos:end])
            pos = end
            n += 1
        if pos:
            del buf[:pos]
        return n


class _Ignore(Parser):
    """Write-only streams: whatever the peer sends is read and dropped."""

    def feed(self, data: bytes) -> int:
        return 0

    def eof(self) -> int:
        return 0


class LineProtocol(RawProtocol):
    """Line requests (the end of line appended) and one-line replies (ended by ``\\n``;
    a ``\\r`` before it is part of the line ending)."""

    name = "line"

    def __init__(self, templates: Sequence[Template], *, eol: bytes = b"\n",
                 match: Optional[bytes] = None) -> None:
        lines = [t.plus(eol) for t in templates]
        super().__init__(lines, until=b"\n", match=match)
        self.eol = eol

    def describe(self) -> str:
        return f"line, {self.eol!r} line endings"


# ------------------------------------------------------------------ the registry's entry points
#: raw's reply framings: exactly one of them (its flag, whether the spec gives it).
FRAMINGS = (("--reply-until", lambda s: s.reply_until is not None),
            ("--reply-bytes", lambda s: s.reply_bytes is not None),
            ("--reply-prefix", lambda s: s.reply_prefix is not None),
            ("--reply-until-close", lambda s: s.reply_until_close),
            ("--no-reply", lambda s: s.no_reply))


def build_raw(spec: WireSpec) -> RawProtocol:
    request_templates = templates(spec)
    used = [flag for flag, given in FRAMINGS if given(spec)]
    if len(used) != 1:
        raise WireOptionError(used[1] if used else "--reply-until",
                              f"give exactly one reply framing, not {' and '.join(used)}" if used else
                              "give one reply framing: --reply-until, --reply-bytes, --reply-prefix, "
                              "--reply-until-close or --no-reply")
    until = None
    if spec.reply_until is not None:
        try:
            until = unescape(spec.reply_until)
        except EscapeError as exc:
            raise WireOptionError("--reply-until", str(exc)) from None
        if not until:
            raise WireOptionError("--reply-until", "the delimiter is empty")
    if spec.reply_bytes is not None and spec.reply_bytes < 1:
        raise WireOptionError("--reply-bytes", "must be >= 1")
    if spec.reply_prefix is not None:
        try:
            prefix_struct(spec.reply_prefix)
        except ValueError as exc:
            raise WireOptionError("--reply-prefix", str(exc)) from None
    elif spec.reply_prefix_adjust:
        raise WireOptionError("--reply-prefix-adjust", "only with --reply-prefix")
    if spec.no_reply and spec.reply_match is not None:
        raise WireOptionError("--reply-match", "there are no replies to check with --no-reply")
    return RawProtocol(request_templates, until=until, size=spec.reply_bytes, prefix=spec.reply_prefix,
                       adjust=spec.reply_prefix_adjust, no_reply=spec.no_reply,
                       until_close=spec.reply_until_close, match=reply_match(spec))


def build_line(spec: WireSpec) -> LineProtocol:
    eol = EOLS.get(spec.eol.lower())
    if eol is None:
        raise WireOptionError("--eol", f"{spec.eol!r}: use lf or crlf")
    return LineProtocol(templates(spec), eol=eol, match=reply_match(spec))


def _blamed(spec: WireSpec) -> str:
    return "--setup" if spec.setups else "--greeting-match" if spec.greeting_match is not None else "--greeting"


def opening_raw(spec: WireSpec, proto: RawProtocol):
    """raw's built-in opening: each --setup's bytes as typed (escapes as --send), each reply
    framed as the traffic's replies are; a reply is judged only by --greeting-match (raw
    bytes have no agreed way of saying no)."""
    if not proto.replies or proto.until_close:
        why = "--no-reply" if not proto.replies else "--reply-until-close (a reply that ends with the close " \
                                                    "leaves no connection for the traffic)"
        raise WireOptionError(_blamed(spec), f"the opening's replies need a framing: not with {why}; "
                                             f"give --reply-until, --reply-bytes or --reply-prefix")
    steps, match = opening_steps(spec, lambda text: Template.from_text(text).fixed)
    what = describe_steps(steps)
    return lambda: Scripted(steps, proto.framer, match=match, what=what)


def opening_line(spec: WireSpec, proto: LineProtocol):
    """line's built-in opening: each --setup a line (the --eol appended), each reply a line;
    a line with a 4xx/5xx code (SMTP, FTP) or POP3's -ERR refuses; ``NNN-`` lines continue
    the reply (multi-line SMTP and FTP replies)."""
    steps, match = opening_steps(spec, lambda text: Template.from_text(text).plus(proto.eol).fixed)
    what = describe_steps(steps)
    return lambda: Scripted(steps, proto.framer, judge=coded_refusal, more=coded_continues, match=match,
                            what=what)


def _sends(spec: WireSpec) -> dict:
    if spec.send_file is not None:
        head = spec.send_file[:SEND_FILE_SHOWN]
        return {"send": [head.decode("utf-8", "backslashreplace")], "send_file_bytes": len(spec.send_file)}
    return {"send": list(spec.sends)}


def summary_raw(spec: WireSpec) -> dict:
    """The sends, and how the replies are framed (the protocol's own words)."""
    try:
        until = unescape(spec.reply_until) if spec.reply_until is not None else None
    except EscapeError:       # (a spec that cannot be built says it as typed)
        until = spec.reply_until.encode("utf-8", "surrogateescape")
    return {**_sends(spec), "replies": framing(not spec.no_reply, spec.reply_until_close, until,
                                               spec.reply_bytes, spec.reply_prefix, spec.reply_prefix_adjust)}


def summary_line(spec: WireSpec) -> dict:
    return {**_sends(spec), "eol": spec.eol}


def line_stream_parser(role: str) -> Parser:
    """A captured stream, as lines (both directions alike)."""
    return _UntilParser(b"\n", None)


#: Control bytes no line of text holds (tab, CR and LF aside): line is for text.
NOT_TEXT = bytes(b for b in range(32) if b not in b"\t\r\n") + b"\x7f"


def line_may_start(first: int) -> bool:
    return first not in NOT_TEXT

"""Redis: commands as RESP arrays, replies parsed by RESP2 and RESP3 type.

``--command 'SET key:{seq} "a value"'`` is split like a shell line (quotes
group words; escapes as in :mod:`socktools.wire.escapes` inside each word)
and sent as a RESP array of bulk strings, as redis-cli does.  Replies are
framed by type (``+ - : $ *`` of RESP2, ``_ , # ! = ( % ~ | >`` of RESP3);
a top-level error (``-ERR ...``, ``!`` blob error) counts as failure
``server-error`` tallied by its text.  Out-of-band pushes (``>``) and
attributes (``|``) are not replies to a request and are not counted.
"""

from __future__ import annotations

import shlex
from typing import Optional, Sequence

from socktools.wire.base import (SAMPLE_BYTES, WHOLE_REPLY_BYTES, Failure, Parser, Reply, WholeReplies,
                                 WireError, WireProtocol)
from socktools.wire.escapes import Template, readable

__all__ = ["RedisProtocol", "RespParser", "encode_command", "MAX_BULK", "MAX_ELEMENTS"]

#: Largest bulk string accepted: Redis's own default proto-max-bulk-len (512 MB).
MAX_BULK = 512 << 20
#: Most elements in one aggregate: Redis caps a multibulk request at 1024*1024
#: arguments when the client is not authenticated; the same bound for replies.
MAX_ELEMENTS = 1 << 20
#: Longest simple line (+, -, :, ...) before its CRLF: Redis's inline cap, 64 KiB.
MAX_LINE = 64 << 10

_ERROR_TEXT = 80   # characters of an error text kept as its tally key


def encode_command(args: Sequence[bytes]) -> bytes:
    """``[b"SET", b"k", b"v"]`` -> ``*3\\r\\n$3\\r\\nSET\\r\\n...``."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def split_command(text: str) -> list:
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None
    if not words:
        raise ValueError("an empty command")
    return [Template.from_text(w) for w in words]


#: What a Redis exchange sends when no --command is given: the cheapest round trip there is.
DEFAULT_COMMANDS = ("PING",)


class RedisProtocol(WireProtocol):
    name = "redis"

    def __init__(self, commands: Sequence[str] = DEFAULT_COMMANDS) -> None:
        self.texts = tuple(commands or DEFAULT_COMMANDS)
        commands = [split_command(c) for c in self.texts]
        self.makers = [_compile(words) for words in commands]
        if len(commands) == 1 and all(w.fixed is not None for w in commands[0]):
            self.fixed_request = self.makers[0](0, 0)
        self.shared_requests = not any("conn" in w.names for words in commands for w in words)
        self.n = len(self.makers)
        self.whole = WholeReplies()
        if self.n == 1:
            self.request = self.makers[0]

    def request(self, seq: int, conn: int) -> bytes:
        return self.makers[seq % self.n](seq, conn)

    def parser(self) -> "RespParser":
        return RespParser(self.whole)

    def describe(self) -> str:
        return "redis, " + " / ".join(f"`{readable(t)}`" for t in self.texts)


def _compile(words: list):
    """``request(seq, conn)`` for one command: the fixed words encoded once, the others
    rendered and slotted into one ``bytes % args`` (``$%d\r\n%b\r\n``)."""
    if all(w.fixed is not None for w in words):
        fixed = encode_command([w.fixed for w in words])
        return lambda seq, conn: fixed
    fmt = [b"*%d\r\n" % len(words)]
    variable = []
    for w in words:
        if w.fixed is not None:
            fmt.append((b"$%d\r\n" % len(w.fixed) + w.fixed + b"\r\n").replace(b"%", b"%%"))
        else:
            fmt.append(b"$%d\r\n%b\r\n")
            variable.append(w.render)
    fmt = b"".join(fmt)
    if len(variable) == 1:
        render = variable[0]

        def one(seq: int, conn: int) -> bytes:
            v = render(seq, conn)
            return fmt % (len(v), v)
        return one

    def many(seq: int, conn: int) -> bytes:
        args = []
        for r in variable:
            v = r(seq, conn)
            args += (len(v), v)
        return fmt % tuple(args)
    return many


class _Incomplete(Exception):
    pass


_NEED = _Incomplete()


class RespParser(Parser):
    """Counts whole top-level replies; decodes them when ``keep`` is a list."""

    def __init__(self, whole: Optional[WholeReplies] = None) -> None:
        super().__init__()
        self.buf = bytearray()
        self.whole = WholeReplies() if whole is None else whole

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> int:
        buf = self.buf
        # The common case: a read that was one whole reply before (+OK, +PONG, $1 x).
        if not buf and self.keep is None and len(data) <= WHOLE_REPLY_BYTES and data in self.whole:
            return 1
        fresh = not buf and self.keep is None
        failures = len(self.failures)
        buf += data
        n = 0
        pos = 0
        decode = self.keep is not None
        while pos < len(buf):
            try:
                end, value = self._one(buf, pos, decode or buf[pos] in b"-!")
            except _Incomplete:
                break
            kind = buf[pos]
            if kind in b">|":       # push / attribute: not a reply to a request
                pos = end
                continue
            if kind in b"-!":
                self.failures.append(Failure("server-error", value[:_ERROR_TEXT],
                                             bytes(buf[pos:min(end, pos + SAMPLE_BYTES)])))
            if decode:
                self.keep.append(Reply(end - pos, _show(value, kind), {"type": chr(kind), "value": value}))
            pos = end
            n += 1
        if pos:
            del buf[:pos]
        if n == 1 and fresh and not buf and len(self.failures) == failures:
            self.whole.learn(data)
        return n

    def _line(self, buf: bytearray, pos: int) -> int:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_LINE:
                raise WireError(f"a RESP line longer than {MAX_LINE:,} bytes", "protocol-error")
            raise _NEED
        return end

    def _one(self, buf: bytearray, pos: int, decode: bool):
        """(end, value) of the RESP value at ``pos``; raises _NEED when incomplete."""
        kind = buf[pos]
        eol = self._line(buf, pos + 1)
        head = bytes(buf[pos + 1:eol])
        after = eol + 2
        if kind in b"+-:_,#(":
            if not decode:
                return after, None
            text = head.decode("utf-8", "replace")
            if kind == 58:       # ':'
                return after, _int(head, "integer")
            if kind == 95:       # '_'
                return after, None
            if kind == 35:       # '#'
                return after, head == b"t"
            return after, text
        if kind in b"$!=":
            size = _int(head, "bulk length")
            if size < 0:
                return after, None           # RESP2 null bulk
            if size > MAX_BULK:
                raise WireError(f"a {size:,}-byte bulk string (the cap is {MAX_BULK:,})", "protocol-error")
            end = after + size + 2
            if end > len(buf):
                raise _NEED
            if buf[end - 2:end] != b"\r\n":
                raise WireError("a bulk string not followed by CRLF", "protocol-error")
            if not decode:
                return end, None
            body = bytes(buf[after:end - 2])
            if kind == 61:       # '=' verbatim: "txt:" then the text
                body = body[4:]
            return end, body.decode("utf-8", "replace") if kind != 36 else _text_or_bytes(body)
        if kind in b"*%~>|":
            count = _int(head, "aggregate length")
            if count < 0:
                return after, None           # RESP2 null array
            if count > MAX_ELEMENTS:
                raise WireError(f"an aggregate of {count:,} elements (the cap is {MAX_ELEMENTS:,})",
                                "protocol-error")
            if kind in b"%|":
                count *= 2
            items = [] if decode else None
            p = after
            for _ in range(count):
                if p >= len(buf):
                    raise _NEED
                p, v = self._one(buf, p, decode)
                if decode:
                    items.append(v)
            if decode and kind in b"%|":
                items = {_key(items[i]): items[i + 1] for i in range(0, len(items), 2)}
            return p, items
        raise WireError(f"{bytes(buf[pos:pos + 16])!r} does not start a RESP value", "protocol-error")


def _int(head: bytes, what: str) -> int:
    try:
        return int(head)
    except ValueError:
        raise WireError(f"a RESP {what} that is not a number: {head[:20]!r}", "protocol-error") from None


def _text_or_bytes(body: bytes):
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return repr(body)


def _key(v) -> str:
    return v if isinstance(v, str) else repr(v)


def _show(value, kind: int) -> str:
    """One line, as redis-cli would print it."""
    if kind in b"-!":
        return f"(error) {value}"
    if kind == 58:
        return f"(integer) {value}"
    if value is None:
        return "(nil)"
    if isinstance(value, (list, dict)):
        text = repr(value)
        return text if len(text) <= 200 else text[:199] + "…"
    return str(value) if kind in b"+" else repr(value) if len(str(value)) < 200 else repr(value)[:199] + "…"

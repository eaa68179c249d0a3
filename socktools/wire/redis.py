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

from socktools.wire.base import (KEEP_BODY, SAMPLE_BYTES, WHOLE_REPLY_BYTES, Failure, Parser, Reply,
                                 WholeReplies, WireError, WireProtocol)
from socktools.wire.escapes import EscapeError, Template, readable
from socktools.wire.options import WireOptionError, WireSpec

__all__ = ["RedisProtocol", "RespParser", "encode_command", "MAX_BULK", "MAX_ELEMENTS", "MAX_DEPTH", "KEEP_REPLY", "build", "summary", "stream_parser", "may_start"]

#: Largest bulk string accepted: Redis's own default proto-max-bulk-len (512 MB).
MAX_BULK = 512 << 20
#: Most elements in one aggregate: Redis caps a multibulk request at 1024*1024
#: arguments when the client is not authenticated; the same bound for replies.
MAX_ELEMENTS = 1 << 20
#: Longest simple line (+, -, :, ...) before its CRLF: Redis's inline cap, 64 KiB.
MAX_LINE = 64 << 10
#: Deepest nesting of aggregates in one reply.  Real replies nest a few levels (XINFO
#: STREAM FULL, the deepest built-in, about 6; hiredis refused more than 7 until 1.0);
#: a Lua or function reply may nest its tables further.  512 leaves them room while
#: bounding the parser's stack (one small frame a level) against ``*1\r\n`` repeated
#: by a hostile peer: 4 bytes on the wire would otherwise cost a frame each.
MAX_DEPTH = 512
#: Wire bytes of one reply that request and sniff decode and keep (values, bulk payloads);
#: the rest is counted, not kept: the same budget as an HTTP body, so a 512 MB bulk or a
#: million-element array costs no more memory than a screenful.
KEEP_REPLY = KEEP_BODY

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


class _Frame:
    """An aggregate still open: its type byte, the values it still needs, those decoded so far."""

    __slots__ = ("kind", "left", "items")

    def __init__(self, kind: int, left: int, items: Optional[list]) -> None:
        self.kind = kind
        self.left = left
        self.items = items


class RespParser(Parser):
    """Counts whole top-level replies; decodes them when ``keep`` is a list.

    Strategy: one pass, resumable.  Input is consumed as soon as it is understood --
    a whole line, or as much of a bulk payload as has arrived -- and the position in
    the reply lives in this object (the open aggregates on an explicit stack, the
    payload bytes still owed), so every byte is examined once however the reply is
    split, and nothing recurses on nesting the peer chooses.  ``buf`` holds only an
    unfinished line (at most :data:`MAX_LINE`) and the unread part of the last read.

    Bulk payloads are counted, not kept: flood keeps none of them (a top-level blob
    error keeps its first bytes, for the tally); request and sniff keep the first
    :data:`KEEP_REPLY` bytes of each reply and record how much more was counted.
    """

    def __init__(self, whole: Optional[WholeReplies] = None) -> None:
        super().__init__()
        self.buf = bytearray()
        self.whole = WholeReplies() if whole is None else whole
        self.stack: list = []        # open aggregates, outermost first
        self.size = 0                # wire bytes of the reply in progress consumed so far
        self.top = 0                 # type byte of the reply in progress
        self.head = b""              # its first line (the failure sample of a blob error)
        self.owed = 0                # bulk payload bytes still to come (+2 for its CRLF); 0: none
        self.bulk_kind = 0
        self.kept: Optional[bytearray] = None   # the payload kept so far (decoding, or a blob error)
        self.decoding = False        # decoding the reply in progress (off once KEEP_REPLY is used)
        self.cut = 0                 # wire offset in the reply where decoding stopped (0: it did not)
        self.value = None            # (type byte, value) of the reply just completed

    @property
    def buffered(self) -> int:
        return self.size + len(self.buf)

    def feed(self, data: bytes) -> int:
        buf = self.buf
        idle = not buf and not self.size
        # The common case: a read that was one whole reply before (+OK, +PONG, $1 x).
        if idle and self.keep is None and len(data) <= WHOLE_REPLY_BYTES and data in self.whole:
            return 1
        fresh = idle and self.keep is None
        if fresh and _one_plain_reply(data):
            self.whole.learn(data)
            return 1
        failures = len(self.failures)
        buf += data
        n = 0
        pos = 0
        end = len(buf)
        try:
            while pos < end:
                if self.owed:
                    pos, done = self._payload(buf, pos, end)
                    if done is None:
                        break
                else:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end - pos > MAX_LINE:
                            raise WireError(f"a RESP line longer than {MAX_LINE:,} bytes", "protocol-error")
                        break
                    pos, done = self._line(buf, pos, eol, end)
                if done:
                    n += self._complete()
        finally:
            if pos:
                del buf[:pos]
        if n == 1 and fresh and not buf and not self.size and len(self.failures) == failures:
            self.whole.learn(data)
        return n

    def _line(self, buf: bytearray, pos: int, eol: int, end: int):
        """One line (a simple value, or the header of a bulk or aggregate) at ``pos``:
        (where parsing goes on, True if that completed the top-level reply)."""
        kind = buf[pos]
        head = buf[pos + 1:eol]
        if not self.size:                       # the first line of a reply
            self.top = kind
            self.decoding = self.keep is not None
            self.cut = 0
            if kind in b"-!":                   # a failure's sample starts here
                self.head = bytes(buf[pos:min(eol + 2, pos + SAMPLE_BYTES)])
        self.size += eol + 2 - pos
        after = eol + 2
        decode = self.decoding or (kind in b"-!" and not self.stack)
        if kind in b"+-:_,#(":
            value = None
            if decode:
                if kind == 58:       # ':'
                    value = _int(head, "integer")
                elif kind == 35:     # '#'
                    value = head == b"t"
                elif kind != 95:     # '_' is null
                    value = head.decode("utf-8", "replace")
            return after, self._value(kind, value)
        if kind in b"$!=":
            size = _int(head, "bulk length")
            if size < 0:
                return after, self._value(kind, None)    # RESP2 null bulk
            if size > MAX_BULK:
                raise WireError(f"a {size:,}-byte bulk string (the cap is {MAX_BULK:,})", "protocol-error")
            stop = after + size
            if not decode and stop + 2 <= end:           # counted, and all here: past it at once
                if buf[stop:stop + 2] != b"\r\n":
                    raise WireError("a bulk string not followed by CRLF", "protocol-error")
                self.size += size + 2
                return stop + 2, self._value(kind, None)
            self.owed = size + 2
            self.bulk_kind = kind
            self.kept = bytearray() if decode else None
            return after, False
        if kind in b"*%~>|":
            count = _int(head, "aggregate length")
            if count < 0:
                return after, self._value(kind, None)    # RESP2 null array
            if count > MAX_ELEMENTS:
                raise WireError(f"an aggregate of {count:,} elements (the cap is {MAX_ELEMENTS:,})",
                                "protocol-error")
            if kind in b"%|":
                count *= 2
            if not count:
                return after, self._value(kind, {} if kind in b"%|" else [])
            if len(self.stack) >= MAX_DEPTH:
                raise WireError(f"RESP aggregates nested deeper than {MAX_DEPTH} levels", "protocol-error")
            self.stack.append(_Frame(kind, count, [] if self.decoding else None))
            return after, False
        raise WireError(f"{bytes(buf[pos:pos + 16])!r} does not start a RESP value", "protocol-error")

    def _payload(self, buf: bytearray, pos: int, end: int):
        """Consume what has arrived of a bulk payload: (new pos, True if that completed the
        reply, False if not, None if more is needed)."""
        owed = self.owed
        if owed > 2:
            take = min(end - pos, owed - 2)
            kept = self.kept
            if kept is not None:
                room = (KEEP_REPLY - self.size) if self.decoding else (_ERROR_TEXT - len(kept))
                if room > 0:
                    kept += buf[pos:pos + min(take, room)]
                if self.decoding and take > room:
                    self._stop_decoding(self.size + max(room, 0))
            self.owed = owed - take
            self.size += take
            pos += take
            return pos, (None if self.owed > 2 or pos >= end else False)
        if end - pos < 2:
            return pos, None
        if buf[pos:pos + 2] != b"\r\n":
            raise WireError("a bulk string not followed by CRLF", "protocol-error")
        self.size += 2
        self.owed = 0
        body, self.kept = self.kept, None
        kind = self.bulk_kind
        if body is None:
            return pos + 2, self._value(kind, None)
        body = bytes(body)
        if kind == 61:       # '=' verbatim: "txt:" then the text
            body = body[4:]
        value = body.decode("utf-8", "replace") if kind != 36 else _text_or_bytes(body)
        return pos + 2, self._value(kind, value, kept=True)

    def _stop_decoding(self, at: int) -> None:
        """The reply has used its :data:`KEEP_REPLY` bytes at wire offset ``at``: the rest of
        it is counted, not kept."""
        self.decoding = False
        self.cut = at

    def _value(self, kind: int, value, kept: bool = False) -> bool:
        """A value is complete: add it to its aggregate (closing those it fills); True when it
        was the last of the top-level reply.  ``kept``: a bulk decoded from its start (kept
        in part if decoding stopped inside it)."""
        stack = self.stack
        while stack:
            frame = stack[-1]
            items = frame.items
            if items is not None and (self.decoding or kept):
                items.append(value)
            kept = False
            frame.left -= 1
            if frame.left:
                if self.decoding and self.size >= KEEP_REPLY:
                    self._stop_decoding(self.size)
                return False
            stack.pop()
            kind = frame.kind
            if items is not None and kind in b"%|":
                value = {_key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
            else:
                value = items
        self.value = (kind, value)
        return True

    def _complete(self) -> int:
        """The top-level reply is complete: count it (0 for a push or an attribute)."""
        kind, value = self.value
        top, size = self.top, self.size
        not_kept = size - self.cut if self.cut else 0
        self.size = 0
        self.value = None
        if top in b">|":          # push / attribute: not a reply to a request
            return 0
        if top in b"-!":
            sample = self.head if top == 45 else (self.head + (value or "").encode())[:SAMPLE_BYTES]
            self.failures.append(Failure("server-error", (value or "")[:_ERROR_TEXT], sample))
        if self.keep is not None:
            fields = {"type": chr(top), "value": value}
            if not_kept:
                fields["not_kept"] = not_kept
            self.keep.append(Reply(size, _show(value, top), fields))
        return 1


def _one_plain_reply(data: bytes) -> bool:
    """Is this read exactly one simple line (not an error) or one bulk string?  The common
    read of a reply never seen before (INCR's integers, GET's values), checked without
    building any parser state: about half the cost of the general path."""
    eol = data.find(b"\r\n")
    if eol < 1:
        return False
    kind = data[0]
    if kind in b"+:_,#(":
        return eol == len(data) - 2
    if kind == 36 and data.endswith(b"\r\n"):     # '$'
        head = data[1:eol]
        return head.isdigit() and eol + 4 + int(head) == len(data)
    return False


def _int(head: bytes, what: str) -> int:
    try:
        return int(head)
    except ValueError:
        raise WireError(f"a RESP {what} that is not a number: {bytes(head[:20])!r}", "protocol-error") from None


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


# ------------------------------------------------------------------ the registry's entry points
def build(spec: WireSpec) -> RedisProtocol:
    try:
        return RedisProtocol(tuple(spec.commands) or DEFAULT_COMMANDS)
    except (ValueError, EscapeError) as exc:
        raise WireOptionError("--command", str(exc)) from None


def opening(spec: WireSpec, proto: RedisProtocol):
    """redis' built-in opening: each --setup a command line encoded as --command is (``AUTH
    s3cret``, ``SELECT 2``, ``HELLO 3``), each reply RESP; an error reply (``-NOAUTH``,
    ``-WRONGPASS``) refuses the opening with its text."""
    from socktools.wire.opening import Scripted, describe_steps
    from socktools.wire.options import opening_steps

    def encode(text: str) -> Optional[bytes]:
        words = split_command(text)
        return None if any(w.fixed is None for w in words) else encode_command([w.fixed for w in words])
    steps, match = opening_steps(spec, encode)
    what = describe_steps(steps)
    return lambda: Scripted(steps, RespParser, match=match, what=what)


def summary(spec: WireSpec) -> dict:
    return {"commands": list(spec.commands or DEFAULT_COMMANDS)}


def stream_parser(role: str) -> RespParser:
    """A captured stream, as RESP (requests and replies are framed alike)."""
    return RespParser()


#: The bytes a RESP value starts with (RESP2 and RESP3 types): a redis parser waits for
#: a whole line before it judges, sniff's auto judges the first byte at once.
RESP_FIRST = frozenset(b"+-:$*_,#!=(%~>|")


def may_start(first: int) -> bool:
    return first in RESP_FIRST

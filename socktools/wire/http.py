"""HTTP/1.1 with keep-alive: requests built here, responses framed by httptools (llhttp).

Why httptools and not h11: on this load (one small keep-alive response after
another) h11 costs 70 to 260 times more per response than llhttp -- measured
with ``benchmarks/bench_http_parsers.py`` on a busy shared 2-core machine
(h11 140-740 us, httptools 1.6-4 us, this parser with flood's bookkeeping
3.8-5.6 us) -- and flood's whole budget per round trip is a few microseconds.
httptools is an optional dependency (the ``http`` extra, :mod:`socktools.optional`),
imported only when an HTTP exchange is built.

Responses are framed by Content-Length, chunked transfer-coding, or the
close of the connection (``eof``).  A response that announces the close
(``Connection: close``, HTTP/1.0 without keep-alive) sets the parser's
``closing``: flood then reconnects, as wrk does.  Responses to HEAD have no
body whatever their headers say; llhttp is told so by its
``on_headers_complete`` returning 1, which httptools does not pass on, so
:class:`HeadParser` frames them here, up to the blank line.  Status classes are tallied; a status the
user did not accept (default: 4xx and 5xx; ``--accept-status`` adds to the accepted) is a failure ``http-4xx`` /
``http-5xx`` tallied by code.  Bodies are counted, never buffered, in flood.
"""

from __future__ import annotations

from typing import Optional, Sequence

from socktools.optional import MissingPackage
from socktools.wire.base import KEEP_BODY, SAMPLE_BYTES, Failure, Parser, Reply, WireError, WireProtocol
from socktools.wire.escapes import EscapeError, Template, readable, rotation, typed_bytes
from socktools.wire.options import WireOptionError, WireSpec

__all__ = ["HttpProtocol", "HttpParser", "HeadParser", "require_httptools", "parse_accept", "KEEP_BODY",
           "MAX_HEAD", "build", "summary", "stream_parser", "may_start"]

#: Largest response head (status line and headers) a HEAD reply may have: h11's default
#: ``max_incomplete_event_size`` (16 KiB); nginx sends a few hundred bytes.
MAX_HEAD = 16 * 1024

#: ``body_left`` of a body that runs to the close: all the rest of every read is body.
_TO_THE_CLOSE = 1 << 62

#: NUL bytes fed to a dead counting parser to learn whether the message it was in ran to the
#: close (see :meth:`HttpParser._close_delimited`): a Content-Length body cut short by more
#: than this counts as close-delimited, as it always did.  1 MiB, allocated once per such close.
EOF_PROBE = 1 << 20

def require_httptools(feature: str = "--mode http"):
    """The httptools module, or :class:`~socktools.optional.MissingPackage` naming ``feature``."""
    try:
        import httptools
    except ImportError:
        raise MissingPackage("http", feature) from None
    return httptools


#: Statuses that are not failures unless ``--accept-status`` says otherwise: 1xx to 3xx.
_DEFAULT_ACCEPT = frozenset(range(100, 400))


class RequestPartError(ValueError):
    """A part of the request the user gave is not HTTP; ``option`` names which (``--header``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _typed(option: str, text: str) -> bytes:
    try:
        return typed_bytes(text)
    except EscapeError as exc:
        raise RequestPartError(option, str(exc)) from None


def parse_accept(values: Sequence[str]) -> frozenset:
    """``("404", "5xx")`` -> the set of accepted codes; raises ValueError.

    Each item *adds* a code or a class to the default (1xx-3xx): ``404`` accepts a 404 and
    still every 2xx.  An item with a ``!`` takes a code or class away: ``!2xx`` makes every
    2xx a failure (checking that a server refuses), ``!301`` one code.  Items apply in order.
    """
    codes: set = set(_DEFAULT_ACCEPT)
    for v in values:
        for item in v.split(","):
            item = item.strip().lower()
            reject = item.startswith("!")
            item = item[1:].strip() if reject else item
            if len(item) == 3 and item[0] in "12345" and item[1:] == "xx":
                base = int(item[0]) * 100
                these = set(range(base, base + 100))
            elif item.isdigit() and 100 <= int(item) <= 599:
                these = {int(item)}
            else:
                raise ValueError(f"{item!r} is not a status code (100-599) or class (2xx), "
                                 f"optionally after ! to reject it (!2xx)")
            if reject:
                codes -= these
            else:
                codes |= these
    return frozenset(codes)


#: What an HTTP exchange asks for when no --path is given.
DEFAULT_PATHS = ("/",)


class HttpProtocol(WireProtocol):
    name = "http"
    may_close = True
    # A small response fits in one read; 64 KiB drains a large body in few calls.
    read_size = 65536

    def __init__(self, host: str, *, method: str = "GET", paths: Sequence[str] = DEFAULT_PATHS,
                 headers: Sequence[str] = (), body: bytes = b"",
                 accept: Optional[frozenset] = None) -> None:
        require_httptools()
        method = method.upper()
        if not (method.isascii() and method.isalpha()):
            raise RequestPartError("--method", f"{method!r} is not an HTTP method")
        names = set()
        lines = []
        for h in headers:
            name, sep, value = h.partition(":")
            if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
                raise RequestPartError("--header", f"{h!r} is not 'Name: value'")
            names.add(name.strip().lower())
            lines.append(f"{name.strip()}: {value.strip()}")
            _typed("--header", lines[-1])       # a value may carry any byte the user typed
        head = []
        if "host" not in names:
            head.append(f"Host: {host}")
        if "user-agent" not in names:
            head.append("User-Agent: socktools")
        if body and "content-length" not in names:
            head.append(f"Content-Length: {len(body)}")
        tail = typed_bytes("\r\n".join(head + lines) + "\r\n\r\n") + body
        self.method = method
        self.paths = tuple(paths or DEFAULT_PATHS)
        templates = []
        for p in self.paths:
            if not p.startswith("/") and p != "*":
                raise RequestPartError("--path", f"{p!r} does not start with /")
            if any(c in p for c in " \r\n"):
                raise RequestPartError("--path", f"{p!r} contains a space or a line break (percent-encode it)")
            templates.append(Template(_typed("--path", f"{method} {p} HTTP/1.1\r\n")).plus(tail))
        self.request = rotation(templates)
        self.fixed_request = templates[0].fixed if len(templates) == 1 else None
        self.shared_requests = not any("conn" in t.names for t in templates)
        self.accept = _DEFAULT_ACCEPT if accept is None else accept
        self.tally: dict = {}

    def parser(self) -> Parser:
        if self.method == "HEAD":
            return HeadParser(self.accept, self.tally)
        return HttpParser(self.accept, self.tally)

    def describe(self) -> str:
        return f"http, {self.method} " + " ".join(readable(p) for p in self.paths)


class HttpParser(Parser):
    """One direction of an HTTP/1.1 connection: responses (flood, request) or requests (sniff)."""

    def __init__(self, accept: frozenset = _DEFAULT_ACCEPT, tally: Optional[dict] = None, *,
                 requests: bool = False) -> None:
        super().__init__()
        self._httptools = httptools = require_httptools()
        self._error = httptools.HttpParserError
        self.p = None             # made at the first feed, once ``keep`` says which callbacks
        self.is_request = requests
        self.accept = accept
        self.tally = {} if tally is None else tally
        self.done = 0
        self.in_message = False   # keep mode: from its first byte; counting: from its headers
        self.headers_done = False
        self.fed = 0              # bytes fed since the last complete message (keep mode)
        self.status = 0
        self.body_left: Optional[int] = None
        self.headers: list = []
        self.body = bytearray()
        self.not_kept = 0         # body bytes past KEEP_BODY: counted, not kept
        self.size_line: Optional[bytearray] = None   # a chunk-size line, as fed (keep mode)
        self.url = b""

    def _make(self) -> None:
        """httptools calls every ``on_*`` method its protocol object has (one call per header):
        counting needs three, decoding all of them."""
        h = self._httptools
        cls = h.HttpRequestParser if self.is_request else h.HttpResponseParser
        self.cb = self if self.keep is not None else _Counting(self)
        self.p = cls(self.cb)
        self._status = getattr(self.p, "get_status_code", None)   # responses only

    # -- httptools callbacks (called from inside feed_data)
    def on_message_begin(self) -> None:
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.keep is not None:
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if not self.is_request:
            self.status = self.p.get_status_code()
        if self.keep is not None:
            names = {k.lower(): v for k, v in self.headers}
            length = names.get("content-length")
            if "chunked" in names.get("transfer-encoding", "").lower():
                self.size_line = bytearray()    # each chunk's size, read by on_chunk_header
            elif length and length.isdigit():
                self.body_left = int(length)
            elif not self.is_request:
                self.body_left = _TO_THE_CLOSE   # a body framed by nothing but the close

    def on_body(self, body: bytes) -> None:
        if self.keep is not None:
            room = KEEP_BODY - len(self.body)
            if room > 0:
                self.body += body[:room]
            self.not_kept += max(len(body) - max(room, 0), 0)
            if self.body_left is not None:
                self.body_left -= len(body)

    def on_chunk_header(self) -> None:
        """A chunk-size line is in (keep mode feeds it byte by byte): its data can go at once."""
        if self.size_line is not None:
            try:
                self.body_left = int(bytes(self.size_line).split(b";")[0].strip(), 16)
            except ValueError:    # llhttp accepted it; whatever we misread, feed byte by byte
                self.body_left = None
            self.size_line = None

    def on_chunk_complete(self) -> None:
        if self.keep is not None:
            self.size_line = bytearray()

    def on_message_complete(self) -> None:
        self.done += 1
        self.in_message = self.headers_done = False
        if not self.is_request:
            code = self.status = self.p.get_status_code()
            self.closing = not self.p.should_keep_alive()
            cls = _CLASS.get(code // 100, "other")
            self.tally[cls] = self.tally.get(cls, 0) + 1
            if code not in self.accept:
                self.failures.append(Failure("http-" + cls, str(code)))
        if self.keep is not None:
            self._keep()

    def _keep(self) -> None:
        if self.is_request:
            summary = f"{self.p.get_method().decode()} {self.url.decode('latin-1')}"
        else:
            summary = f"HTTP {self.status}"
        fields = {"status": self.status, "headers": self.headers, "body": bytes(self.body)}
        if self.not_kept:
            fields["not_kept"] = self.not_kept
        self.keep.append(Reply(self.fed, summary, fields))
        self.fed = 0
        self.headers = []
        self.body = bytearray()
        self.not_kept = 0
        self.size_line = None
        self.url = b""
        self.body_left = None

    # -- the interface
    @property
    def buffered(self) -> int:
        return 1 if self.in_message else 0

    def feed(self, data: bytes) -> int:
        self.done = 0
        if self.p is None:
            self._make()
        try:
            if self.keep is None:
                self.p.feed_data(data)
            else:
                self._feed_exactly(data)
        except self._error as exc:
            raise WireError(f"not HTTP/1.1: {exc}", "protocol-error") from None
        return self.done

    def _feed_exactly(self, data: bytes) -> None:
        """Decoding for sniff/request: feed so that each message's size on the wire is known
        (byte by byte through heads and chunk-size lines, the known rest of a body or of a
        chunk at once -- so a body costs a few calls, not one per byte)."""
        pos = 0
        while pos < len(data):
            left = self.body_left
            if left and left > 0:
                chunk = data[pos:pos + left]
            else:
                chunk = data[pos:pos + 1]
                line = self.size_line
                if line is not None and len(line) < MAX_HEAD:
                    line += chunk
            self.fed += len(chunk)
            self.p.feed_data(chunk)
            pos += len(chunk)

    def eof(self) -> int:
        """A close-delimited body ends here; a message cut short elsewhere is an error."""
        if not self.in_message:
            return 0
        # Headers done, no keep-alive after them, and framed by nothing else: the body ran to
        # the close.  A Content-Length or chunked body cut short is truncated.
        if (self.headers_done and not self.is_request and not self.p.should_keep_alive()
                and self._close_delimited()):
            self.on_message_complete()
            return 1
        raise WireError("the peer closed in the middle of a message", "truncated")

    def _close_delimited(self) -> bool:
        """Was the message in progress framed by the close (no Content-Length, not chunked)?

        Decoding knows its headers.  Counting has none (a callback per header would cost
        flood a third of the parser's time), and llhttp's own answer (``llhttp_finish``) is
        not passed on by httptools; so the dead parser -- the peer has closed -- is fed
        :data:`EOF_PROBE` NUL bytes: a close-delimited body takes them all, a chunked one
        fails at the first (not a chunk size), and a Content-Length body short by at most that
        much completes, and then fails on what follows.
        """
        if self.keep is not None:
            names = {k.lower(): v.lower() for k, v in self.headers}
            return "content-length" not in names and "chunked" not in names.get("transfer-encoding", "")
        probe = HttpParser.__new__(HttpParser)   # takes the callbacks' counts, not ours
        probe.done, probe.in_message, probe.headers_done, probe.closing = 0, True, True, False
        probe.p, probe._status, probe.tally, probe.accept, probe.failures = self.p, self._status, {}, self.accept, []
        self.cb.o = probe
        try:
            self.p.feed_data(bytes(EOF_PROBE))
        except Exception:   # any parse error (httptools' own classes): not close-delimited
            return False
        finally:
            self.cb.o = self
        return probe.done == 0


_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class HeadParser(Parser):
    """Responses to HEAD: a status line and headers, never a body (RFC 9110 section 9.3.2),
    whatever Content-Length or Transfer-Encoding say -- so a head is framed by its blank line.
    Interim 1xx responses (other than 101) are skipped, as HTTP/1.1 clients do."""

    def __init__(self, accept: frozenset = _DEFAULT_ACCEPT, tally: Optional[dict] = None) -> None:
        super().__init__()
        self.accept = accept
        self.tally = {} if tally is None else tally
        self.buf = b""

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> int:
        buf = self.buf + data if self.buf else data
        done = 0
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if self._head(buf[start:end]):
                done += 1
            start = end + 4
        self.buf = buf[start:]
        if len(self.buf) > MAX_HEAD:
            raise WireError(f"a response head longer than {MAX_HEAD} bytes", "protocol-error")
        return done

    def _head(self, head: bytes) -> bool:
        """One head: tally it; False for an interim 1xx response (not the reply)."""
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ", 2)
        if (len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
                or len(parts[1]) != 3 or not parts[1].isdigit()):
            raise WireError(f"not an HTTP/1.x status line: {line[:SAMPLE_BYTES]!r}", "protocol-error")
        code = int(parts[1])
        if 100 <= code < 200 and code != 101:
            return False
        headers = []
        for field in rest.split(b"\r\n") if rest else ():
            name, sep, value = field.partition(b":")
            if not sep:
                raise WireError(f"not a header field: {field[:SAMPLE_BYTES]!r}", "protocol-error")
            headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
        conn = ",".join(v for k, v in headers if k.lower() == "connection").lower()
        self.closing = "close" in conn or (parts[0] == b"HTTP/1.0" and "keep-alive" not in conn)
        cls = _CLASS.get(code // 100, "other")
        self.tally[cls] = self.tally.get(cls, 0) + 1
        if code not in self.accept:
            self.failures.append(Failure("http-" + cls, str(code)))
        if self.keep is not None:
            self.keep.append(Reply(len(head) + 4, f"HTTP {code}",
                                   {"status": code, "headers": headers, "body": b""}))
        return True


class _Counting:
    """flood's callbacks: two per message, none per header.  A message counts as begun once
    its headers are in (what ``eof`` needs to frame a close-delimited body)."""

    __slots__ = ("o",)

    def __init__(self, parser: HttpParser) -> None:
        self.o = parser

    def on_headers_complete(self) -> None:
        o = self.o
        o.in_message = o.headers_done = True

    def on_message_complete(self) -> None:
        o = self.o
        o.done += 1
        o.in_message = o.headers_done = False
        o.closing = not o.p.should_keep_alive()
        code = o._status()
        cls = _CLASS.get(code // 100, "other")
        tally = o.tally
        tally[cls] = tally.get(cls, 0) + 1
        if code not in o.accept:
            o.failures.append(Failure("http-" + cls, str(code)))


# ------------------------------------------------------------------ the registry's entry points
def build(spec: WireSpec) -> HttpProtocol:
    try:
        accept = parse_accept(spec.accept_status) if spec.accept_status else None
    except ValueError as exc:
        raise WireOptionError("--accept-status", str(exc)) from None
    try:
        return HttpProtocol(spec.host, method=spec.method, paths=tuple(spec.paths) or DEFAULT_PATHS,
                            headers=spec.headers, body=spec.body, accept=accept)
    except (ValueError, EscapeError) as exc:   # RequestPartError names its option
        raise WireOptionError(getattr(exc, "option", "--path"), str(exc)) from None


def summary(spec: WireSpec) -> dict:
    given = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in spec.headers)}
    return {"method": spec.method.upper(), "paths": list(spec.paths or DEFAULT_PATHS),
            "headers": len(spec.headers), "host": given.get("host", spec.host), "body_bytes": len(spec.body)}


def stream_parser(role: str) -> "HttpParser":
    """A captured stream, as HTTP/1.1: requests from the client, responses from the server."""
    return HttpParser(frozenset(range(100, 600)), requests=role == "request")


def may_start(first: int) -> bool:
    """A method or ``HTTP/`` starts with a letter."""
    return 65 <= first <= 90 or 97 <= first <= 122

"""The one interface every exchange protocol implements: what flood, request and sniff call.

An exchange protocol says what to send and how to count what comes back.  It
is sans-I/O: no socket, clock or print -- bytes in, counts out (as h11 does
for HTTP).  The same object serves every connection of a flood worker; state
of one connection lives in its *parser*::

    proto.request(seq, conn) -> bytes   # request number ``seq`` on connection ``conn``
    p = proto.parser()                  # one per connection
    p.feed(data) -> int                 # complete replies in ``data`` (0: need more)
    p.eof() -> int                      # the peer closed: replies completed by it

``feed`` raises :class:`WireError` when the bytes cannot be this protocol
(the connection is then dropped, counted under the error's ``kind``).  A
reply that is well formed but *fails* (a Redis ``-ERR``, an HTTP 500, a reply
not matching ``--reply-match``) still counts as a reply; the parser appends a
:class:`Failure` to ``p.failures`` and the caller tallies and clears it.

Optional attributes let the engine choose faster paths; a plug-in may ignore
them all (the defaults of :class:`WireProtocol` are the safe ones).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["WireError", "Failure", "Reply", "WireProtocol", "Parser", "SAMPLE_BYTES", "KEEP_BODY", "WholeReplies",
           "WHOLE_REPLIES", "WHOLE_REPLY_BYTES"]

#: Bytes of an offending reply kept for the report: enough to recognise a
#: status line or an error text, short enough for one line of a table.
SAMPLE_BYTES = 64

#: Payload bytes of one message that request and sniff decode and keep (an HTTP body, a
#: Redis reply's values); the rest is counted, not kept, and flood keeps none.  64 KiB is
#: more than a screen shows and bounds the memory of a 512 MB reply to this much.
KEEP_BODY = 64 << 10


#: Distinct reads a protocol remembers as "exactly one whole, successful reply": a
#: server answering a fixed command says a handful of different things (+OK, +PONG,
#: a value); 64 holds them, and ever-new replies (INCR's integers) cannot grow it.
WHOLE_REPLIES = 64
#: Longest read remembered so: a lookup hashes the read, at a cost that grows with its
#: length; 256 bytes covers status lines and small values, and a longer reply's own
#: bytes cost more than its parsing does.
WHOLE_REPLY_BYTES = 256


class WholeReplies(set):
    """Reads that a parser, from an empty buffer, found to be exactly one complete reply
    with no failure -- so the same bytes, again from an empty buffer, count as one reply
    without being parsed.  Only for parsers whose verdict depends on the bytes alone.

    Shared by every parser of one protocol object (a flood worker's connections), so
    one connection's answer teaches them all.  Why: on this project's Python, the
    checks of a hand-written fast path (``data[:1] in b"+:"``, ``endswith``,
    ``count``) cost about 1.5 us per reply; a set lookup costs about 0.1 us.
    """

    __slots__ = ()

    def learn(self, data: bytes) -> None:
        if len(self) < WHOLE_REPLIES and len(data) <= WHOLE_REPLY_BYTES:
            self.add(bytes(data))


class WireError(Exception):
    """The peer sent bytes that cannot be this protocol; ``kind`` is a stable slug."""

    def __init__(self, message: str, kind: str = "protocol-error") -> None:
        super().__init__(message)
        self.kind = kind


class Failure(NamedTuple):
    """A complete reply that counts as a failure: ``kind`` (wrong-reply, server-error,
    http-5xx...), ``detail`` (tallied: the error text, the status) and the first bytes."""

    kind: str
    detail: str
    sample: bytes = b""


class Reply(NamedTuple):
    """A decoded reply, for ``request`` and ``sniff`` (flood only counts): its size on the
    wire, a one-line summary, and fields worth showing."""

    size: int
    summary: str
    fields: dict


class Parser:
    """Base of the built-in parsers: the failure list, and decoded replies on request.

    ``keep`` is None in flood (counting only); ``request`` and ``sniff`` set it
    to a list and get a :class:`Reply` per complete message.
    """

    #: True once the last complete reply said the server closes the connection after it
    #: (HTTP ``Connection: close``, HTTP/1.0 without keep-alive); read only by protocols
    #: with ``may_close``.
    closing = False

    def __init__(self) -> None:
        self.failures: list = []
        self.keep: Optional[list] = None

    def feed(self, data: bytes) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def eof(self) -> int:
        """The peer closed.  Default: a reply cut short is a protocol error."""
        if self.buffered:
            raise WireError(f"the peer closed in the middle of a reply ({self.buffered} byte(s) of it)",
                            "truncated")
        return 0

    @property
    def buffered(self) -> int:
        return 0


class WireProtocol:
    """Base class (and documentation) of an exchange protocol; plug-ins may subclass it.

    ``fixed_request``: every request is these bytes (lets flood count requests
    from bytes sent, and use the echo-speed batch path).  ``reply_size``: every
    reply is exactly this many bytes (with ``fixed_request``: the batch path).
    ``replies``: False for write-only streams (``--no-reply``).  ``may_close``:
    a reply may announce the server's close (the parser then sets ``closing``
    and flood reconnects instead of sending on).  ``read_size``:
    a good ``recv`` size.  ``tally``: counts of reply classes (HTTP 2xx...)
    that the parsers add to, reported as they are.  ``shared_requests``:
    ``request(seq, conn)`` depends on ``seq`` alone and gives the same bytes
    every time (no ``{conn}``, no clock, no randomness) -- flood then renders
    request ``seq`` once and sends those bytes on every connection.
    ``surplus_kind``: the protocol error named when more comes back than
    the answers owed.  ``until_close``: every reply ends with the server's
    close (one request per connection, so no pipelining).  ``echoes``: a
    reply is the request's own bytes (flood's fixed loop then checks each
    reply against the request, not only its size).  With ``fixed_request``
    and ``reply_size`` both set, flood uses its batch path (one call per
    round trip, a batch per poll).
    """

    name = "custom"
    fixed_request: Optional[bytes] = None
    reply_size: Optional[int] = None
    replies = True
    may_close = False
    read_size = 65536
    tally: Optional[dict] = None
    shared_requests = False
    surplus_kind = "unsolicited"
    until_close = False
    echoes = False

    def request(self, seq: int, conn: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def parser(self) -> Parser:  # pragma: no cover - interface
        raise NotImplementedError

    def opening(self):
        """A new :class:`~socktools.wire.opening.Opening` for one connection (a login, a
        greeting to wait for), run before the measured traffic; None (the default): none."""
        return None

    def stream_parser(self, role: str) -> Optional[Parser]:
        """A decoding parser (``keep`` a list) for one direction of a conversation someone else
        holds (``proxy --decode``): ``role`` ``request`` frames what a client sends (every
        message the server answers is one :class:`Reply`, one nobody answers -- a goodbye --
        is none), ``response`` what the server sends (one Reply per answer the client waits
        for).  None (the default): this protocol has no stream decoder."""
        return None

    def describe(self) -> str:
        """One line for the report's title."""
        return self.name

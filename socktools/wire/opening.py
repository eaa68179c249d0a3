"""A connection's opening conversation, before the measured traffic: sans-I/O.

Servers that greet first (SMTP's ``220``, FTP's banner), ask for a login (redis ``AUTH``,
PostgreSQL's startup and SCRAM exchange) or set a session up (``SELECT 2``, ``HELLO 3``) must
be talked to before the first request that is measured.  An :class:`Opening` is that
conversation for one connection, in h11's shape: the caller feeds it what the server said
and asks it what to send; it never touches a socket or a clock, so it is tested by feeding
bytes (whole, byte by byte, at random splits)::

    op = proto.opening()              # one per connection; None: no opening (the default)
    conn.write(op.data_to_send())     # may be b"": the server speaks first
    ... on every read:
    op.receive_data(data)             # raises OpeningFailed (the server said no) or WireError
    out = op.data_to_send()           # the next message, once an answer decided it
    if op.done: ...                   # the traffic starts; op.leftover() are its first bytes

Who uses it: flood (every connection and every replacement, timed as its own figure, the
"open" histogram), request (the conversation shown step by step) and the plug-ins, whose
``WireProtocol.opening()`` returns one.  ``--greeting`` and ``--setup`` are built-in openings
on this same interface, framed by the mode's own reply parser.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

from socktools.wire.base import WireError

__all__ = ["Opening", "OpeningFailed", "MAX_WORDS", "Scripted", "MAX_OPENING_REPLY", "coded_refusal",
           "coded_continues", "describe_steps"]

#: Characters of a server's refusal kept as its words (``-WRONGPASS invalid username-password
#: pair``, ``FATAL: password authentication failed for user "bob"``): enough for every real
#: one seen, and a tally keyed by them stays small when a server says something new each time.
MAX_WORDS = 120


class OpeningFailed(Exception):
    """The server refused the opening: ``words`` are its own (``NOAUTH Authentication
    required.``), kept to :data:`MAX_WORDS` characters; flood tallies connections by them.
    ``step`` names what was refused (``greeting``, ``setup 1``, ``password``)."""

    def __init__(self, words: str, step: str = "opening") -> None:
        words = " ".join(words.split())[:MAX_WORDS] or "(nothing)"
        super().__init__(f"{step}: {words}")
        self.words = words
        self.step = step


class Opening:
    """One connection's opening conversation.  Subclass and override; the base is the empty
    conversation (done at once, nothing to send)."""

    #: True once the conversation is over: the measured traffic may start.
    done = True

    def data_to_send(self) -> bytes:
        """Bytes to send now (b"": nothing yet -- wait for the server)."""
        return b""

    def receive_data(self, data: bytes) -> None:
        """The server's bytes, as they arrived.  Raises :class:`OpeningFailed` when the server
        refused, :class:`~socktools.wire.base.WireError` when its bytes are not the protocol."""

    def leftover(self) -> bytes:
        """Bytes received after the conversation ended: they belong to the traffic (a server
        that spoke before being asked: flood counts them ``unsolicited``)."""
        return b""

    def describe(self) -> Optional[str]:
        """One line for the report ("AUTH, SELECT 2"), or None."""
        return None


#: Bytes of one reply of a built-in opening kept until it is whole (a greeting, the answer to a
#: ``--setup``): the reply is matched and judged as a whole.  64 KiB is far above every real one
#: (redis' HELLO 3 map is ~200 bytes, exim's EHLO ~300, an FTP banner with a message file a few
#: KB); a peer that never ends its greeting costs us this much, then its connection.
MAX_OPENING_REPLY = 64 << 10


class Scripted(Opening):
    """A built-in opening: the server's greeting awaited (``--greeting``), then each
    ``--setup`` message sent in turn, its reply awaited and judged before the next goes out.

    ``steps`` are ``(name, message)``: ``message`` None is a greeting (nothing sent, a reply
    awaited).  Each reply is framed by a fresh parser from ``parser`` (the mode's own, so it
    frames as the traffic does) and refused when that parser counts a failure (a Redis
    ``-NOAUTH``), when ``judge(reply)`` returns words (a line's ``530``), or, for the
    greeting, when ``match`` does not find itself in it.  ``more(reply)``: this reply is not
    the last of its step (SMTP's ``250-`` continuation lines).

    Strategy: a read is fed whole to the step's parser; only when it holds more than one
    reply (a server that said two things in one segment) is the step's part found again,
    byte by byte, with a fresh parser -- so the common read costs one ``feed``.
    """

    def __init__(self, steps: Sequence[tuple], parser: Callable[[], object], *,
                 judge: Optional[Callable[[bytes], Optional[str]]] = None,
                 more: Optional[Callable[[bytes], bool]] = None,
                 match: Optional[bytes] = None, what: Optional[str] = None) -> None:
        self.steps = tuple(steps)
        self.make_parser = parser
        self.judge = judge
        self.more = more
        self.match = re.compile(match, re.DOTALL) if match is not None else None
        self.what = what
        self.parser = parser()
        self.step = 0
        self.got = bytearray()       # the bytes of the unit of reply in progress
        self.reply = bytearray()     # the step's reply so far (several units: continuation lines)
        self.out = bytearray()
        self.left = bytearray()
        self.done = False
        self._begin()

    def _begin(self) -> None:
        """Send the current step's message (if it has one), or end the conversation."""
        if self.step >= len(self.steps):
            self.done = True
            return
        message = self.steps[self.step][1]
        if message:
            self.out += message

    def data_to_send(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def leftover(self) -> bytes:
        return bytes(self.left)

    def describe(self) -> Optional[str]:
        return self.what

    def receive_data(self, data: bytes) -> None:
        pending = bytes(data)
        while pending and not self.done:
            parser = self.parser
            n = parser.feed(pending)
            if not n:
                self.got += pending
                if len(self.got) > MAX_OPENING_REPLY:
                    raise WireError(f"the {self.steps[self.step][0]} reply is over "
                                    f"{MAX_OPENING_REPLY:,} bytes and not whole", "reply-too-long")
                return
            if n == 1 and not parser.buffered:
                unit, pending, failures = bytes(self.got) + pending, b"", parser.failures
            else:
                unit, pending, failures = self._split(pending)
            self.got.clear()
            self.parser = self.make_parser()
            self._unit(unit, failures)
        if pending:
            self.left += pending

    def _split(self, pending: bytes) -> tuple:
        """A read that completed the step's reply and held more: (the reply, the rest, its
        failures), found by feeding a fresh parser the same bytes up to the reply's end."""
        parser = self.make_parser()
        parser.feed(bytes(self.got))
        for i in range(len(pending)):
            if parser.feed(pending[i:i + 1]):
                return bytes(self.got) + pending[:i + 1], pending[i + 1:], parser.failures
        raise AssertionError("the parser counted a reply it cannot find again")  # pragma: no cover

    def _unit(self, unit: bytes, failures: list) -> None:
        """One whole reply (or one line of a step's reply): judge it; on to the next step."""
        name = self.steps[self.step][0]
        if failures:
            f = failures[0]
            raise OpeningFailed(f.detail or f.sample.decode("latin-1"), name)
        words = self.judge(unit) if self.judge is not None else None
        if words is not None:
            raise OpeningFailed(words, name)
        self.reply += unit
        if self.more is not None and self.more(unit):
            if len(self.reply) > MAX_OPENING_REPLY:
                raise WireError(f"the {name} reply is over {MAX_OPENING_REPLY:,} bytes", "reply-too-long")
            return
        reply = bytes(self.reply)
        self.reply.clear()
        if self.steps[self.step][1] is None and self.match is not None and self.match.search(reply) is None:
            raise OpeningFailed(reply.decode("utf-8", "replace"), name)
        self.step += 1
        self._begin()


#: A reply line with a three-digit code whose first digit says "no" (SMTP, FTP, NNTP: 4xx is a
#: transient failure, 5xx a permanent one) or POP3's ``-ERR``.
_REFUSED = re.compile(rb"^(?:[45][0-9][0-9](?:[ -]|\r?\n|$)|-ERR\b)")
#: A continuation line of a multi-line coded reply (``250-SIZE``): the reply goes on
#: (RFC 5321 4.2.1, RFC 959 4.2).
_CONTINUES = re.compile(rb"^[0-9]{3}-")


def coded_refusal(line: bytes) -> Optional[str]:
    """A line's own words if it refuses (``530 Please login``, ``-ERR``), else None."""
    if _REFUSED.match(line):
        return line.decode("utf-8", "replace")
    return None


def coded_continues(line: bytes) -> bool:
    return _CONTINUES.match(line) is not None


def describe_steps(steps: Sequence[tuple]) -> str:
    """A built-in opening in words, for reports: never its texts (an AUTH carries a password)."""
    setups = sum(1 for _, message in steps if message is not None)
    parts = (["greeting"] if steps and steps[0][1] is None else []) + \
        ([f"{setups} setup message{'s' if setups > 1 else ''}"] if setups else [])
    return ", then ".join(parts)

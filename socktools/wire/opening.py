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

from typing import Optional

__all__ = ["Opening", "OpeningFailed", "MAX_WORDS"]

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

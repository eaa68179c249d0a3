"""What ``socktools stall`` repeats, and what the peer said back: sans-I/O, no sockets.

:class:`PayloadStream` is the byte stream stall writes: one unit repeated (the
zeros of old, a ``--send`` text, a wire mode's fixed request) or a wire mode's
requests one after another (``{seq}`` placeholders).  ``view()`` is the next
chunk, ``advance(n)`` drops what ``send()`` took: the bytes a partial send left
are offered again, so the peer sees whole requests in order, never a request cut
where a send() stopped (a cut would make redis or nginx answer "protocol error"
for the wrong reason).  A refused send (EAGAIN, ``SSLWantWriteError``) is retried
with the same bytes, which is what OpenSSL requires of a retried ``SSL_write``.

:func:`decode_answer` frames the peer's first bytes with the mode's own reply
parser (the one ``request`` and ``sniff`` use), or, without a mode, with the
first decoder that takes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["PayloadStream", "decode_answer", "Decoded", "MAX_DECODED", "MAX_REFILL"]

#: Replies of the peer's answer shown decoded: the first says what went wrong; a few more
#: show whether it kept answering (+OK +OK ...) before it closed.
MAX_DECODED = 5
#: Requests rendered per refill, at most: enough for a 64 KiB chunk of 30-byte redis
#: commands, and a bound on the work one view() does whatever the request maker returns.
MAX_REFILL = 1 << 16


class PayloadStream:
    """The bytes stall sends, ``chunk`` at a time.  Make one with :meth:`repeat` or :meth:`requests`."""

    def __init__(self, chunk: int, *, unit: bytes = b"", make: Optional[Callable[[int], bytes]] = None,
                 label: str = "") -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1 byte")
        if not unit and make is None:
            raise ValueError("give a unit to repeat or a request maker")
        self.chunk = chunk
        self.label = label
        self.unit = bytes(unit)
        self._make = make
        self.sent = 0                   # bytes send() took, over the whole run
        self.requests_started = 0       # requests rendered (made) so far, whole or not
        if make is None:
            # unit repeated past chunk + one unit: every offset within the unit has a whole
            # chunk after it, so view() is a slice, never a copy
            self._ring = memoryview(self.unit * (-(-chunk // len(self.unit)) + 1))
            self._offset = 0
        else:
            self._buf = bytearray()
            self._seq = 0
            self._made = 0                  # bytes rendered so far
            self._ends: deque = deque()     # where each rendered, not yet wholly sent request ends
            self._whole = 0

    @classmethod
    def repeat(cls, unit: bytes, chunk: int, label: str = "") -> "PayloadStream":
        return cls(chunk, unit=unit, label=label)

    @classmethod
    def requests(cls, proto, chunk: int, label: str = "") -> "PayloadStream":
        """A wire protocol's requests in order; a fixed request (no ``{seq}``) is just repeated."""
        fixed = getattr(proto, "fixed_request", None)
        if fixed:
            return cls(chunk, unit=fixed, label=label)
        first = proto.request(0, 0)
        if getattr(proto, "shared_requests", False) and first == proto.request(1, 0) == proto.request(2, 0):
            return cls(chunk, unit=first, label=label)
        return cls(chunk, make=lambda seq: proto.request(seq, 0), label=label)

    def view(self) -> memoryview:  # noqa: D401
        """The next ``chunk`` bytes (the same ones again until :meth:`advance` moves past them)."""
        if self._make is None:
            return self._ring[self._offset:self._offset + self.chunk]
        made = 0
        while len(self._buf) < self.chunk and made < MAX_REFILL:
            data = self._make(self._seq)
            if not data:
                raise ValueError(f"request {self._seq} is empty: nothing to send")
            self._buf += data
            self._made += len(data)
            self._ends.append(self._made)
            self._seq += 1
            made += 1
        # a copy (64 KiB per send: cheap beside the syscall): a view would pin the buffer
        # that advance() trims while the caller still holds it
        return memoryview(bytes(self._buf[:self.chunk]))

    def advance(self, n: int) -> None:
        """send() took ``n`` bytes of the last view."""
        self.sent += n
        if self._make is None:
            self._offset = (self._offset + n) % len(self.unit)
        else:
            del self._buf[:n]
            while self._ends and self._ends[0] <= self.sent:
                self._ends.popleft()
                self._whole += 1

    @property
    def whole_requests(self) -> Optional[int]:
        """Requests send() took entirely (None for the zeros, which are no requests)."""
        if self._make is None:
            return self.sent // len(self.unit) if self.label else None
        return self._whole


@dataclass(frozen=True)
class Decoded:
    decoder: Optional[str]          # the mode whose parser framed the bytes; None: none did
    replies: tuple                  # one-line summaries, first MAX_DECODED
    complete: int                   # whole replies in the bytes kept


def decode_answer(data: bytes, mode: Optional[str] = None) -> Decoded:
    """The peer's first bytes as replies of ``mode`` (or of the first decoder that frames them)."""
    from socktools.wire import modes
    from socktools.wire.base import WireError
    if not data:
        return Decoded(None, (), 0)
    if mode is not None and mode in modes.decoders():
        names: tuple = (mode,)
    else:   # no mode, or one without a decoder (raw, echo, framed): the protocols sniff knows
        names = tuple(m for m in modes.decoders() if modes.get(m).may_start(data[0]))
    for name in names:
        parser = modes.get(name).stream_parser("response")
        try:
            count = parser.feed(bytes(data))
        except WireError:
            continue
        except Exception:   # noqa: BLE001 - a decoder's bug must not hide what the peer said
            continue
        if count:
            return Decoded(name, tuple(r.summary for r in parser.keep[:MAX_DECODED]), count)
    return Decoded(None, (), 0)

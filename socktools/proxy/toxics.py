"""The toxics as stages of a chain: bytes and markers in, bytes and markers out, on a clock.

Each direction of a proxied connection (upstream: client -> server, downstream:
server -> client) is a chain of stages, one per toxic, as in Toxiproxy
(``link.go``).  What flows is an *item*: ``(DATA, bytes, timestamp)`` or a
marker ``(EOF,)`` (the sender half-closed), ``(CLOSE,)`` (close the whole
connection, what Toxiproxy's ``stub.Close()`` does) or ``(RESET,)`` (close it
with RST).  A stage passes items on to ``self.next.push``, at once or later.

No sockets here: a stage is given ``clock()`` (monotonic seconds) and
``call_at(when, callback)`` (returning something with ``cancel()``), so the
tests drive the timing math with a hand-turned clock; the loop's own
``clock``/``call_at`` drive it in the proxy.  Each stage counts the bytes it
holds (``held``), which the link sums for its back-pressure.

Semantics follow Toxiproxy's ``toxics/*.go`` (see docs/proxy.md), with one
difference on purpose: an EOF is a half-close passed on (``shutdown(SHUT_WR)``),
not a close of the whole connection.
"""

from __future__ import annotations

import collections
import random
import re
from typing import Any, Callable, Optional

from socktools.proxy.config import ToxicSpec
from socktools.wire.base import WireError
from socktools.wire.spec import stream_parser

__all__ = ["DATA", "EOF", "CLOSE", "RESET", "Stage", "Pass", "make_stage", "slice_points",
           "BANDWIDTH_PIECE", "STALLED", "MESSAGE_HOLD"]

DATA, EOF, CLOSE, RESET = "data", "eof", "close", "reset"

#: Bandwidth hands data on in pieces of at most this many seconds' worth at the rate
#: (Toxiproxy's 100 ms: ``t.Rate*100`` bytes), so a large read trickles out rather than
#: arriving in one burst after its whole transmission time.
BANDWIDTH_PIECE = 0.1

_BEHIND = float("-inf")   # a marker's release time: right after the data queued before it


class Stage:
    """Pass everything on at once; the base of every toxic (and the stage of a toxic whose
    toxicity roll said "not on this connection")."""

    def __init__(self, spec: Optional[ToxicSpec], clock: Callable[[], float],
                 call_at: Callable[[float, Callable[[], Any]], Any], rng: random.Random) -> None:
        self.spec = spec
        self.clock = clock
        self.call_at = call_at
        self.rng = rng
        self.next: Any = None    # the next stage, or the link's sink: anything with push(item)
        self.held = 0            # bytes this stage holds
        self.stopped = False
        self.timer: Any = None   # the one pending timer of a stage that waits, if any
        self.wake: Callable[[], None] = lambda: None   # the link's back-pressure check

    def push(self, item: tuple) -> None:
        self.next.push(item)

    def take(self) -> list:
        """The stage is being removed: stop it and return the items it holds, in order
        (they go on to the next stage: Toxiproxy drops nothing on the floor)."""
        self.stop()
        return []

    def stop(self) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


Pass = Stage


class _Timed(Stage):
    """A queue of ``(release time, item)`` handed on in order, each no earlier than its time.

    The head blocks the rest (one stream, in order), as a Toxiproxy stage handles one chunk
    at a time; a marker queued with :data:`_BEHIND` follows the data before it at once.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queue: collections.deque = collections.deque()

    def enqueue(self, release: float, item: tuple) -> None:
        was_empty = not self.queue
        self.queue.append((release, item))
        if item[0] == DATA:
            self.held += len(item[1])
        if was_empty:
            self.pump()

    def pump(self) -> None:
        self.timer = None
        queue = self.queue
        while queue and not self.stopped:
            release, item = queue[0]
            now = self.clock()
            if release > now:
                self.timer = self.call_at(release, self.pump)
                return
            queue.popleft()
            if item[0] == DATA:
                self.held -= len(item[1])
            self.next.push(item)

    def take(self) -> list:
        self.stop()
        items = [item for _, item in self.queue]
        self.queue.clear()
        self.held = 0
        return items


class Latency(_Timed):
    """Each chunk is held until ``latency`` ± ``jitter`` ms after it was read (Toxiproxy: time
    already spent in earlier stages counts, and the chunk's time becomes its release time)."""

    def delay(self) -> float:
        a = self.spec.attrs
        ms = a["latency"]
        if a["jitter"] > 0:
            ms += self.rng.randrange(2 * a["jitter"]) - a["jitter"]   # Go: rand.Int63n(2j) - j
        return max(ms, 0) / 1000.0

    def push(self, item: tuple) -> None:
        if item[0] != DATA:
            self.enqueue(_BEHIND, item)
            return
        release = item[2] + self.delay()
        self.enqueue(release, (DATA, item[1], release))


class Bandwidth(_Timed):
    """At most ``rate`` KB/s (1 KB = 1000 bytes): each byte leaves once the bytes before it
    and itself have had their time on the wire; rate 0 passes everything at once."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.free_at = 0.0       # when the bytes queued so far will have been "sent"

    def push(self, item: tuple) -> None:
        rate = self.spec.attrs["rate"] * 1000.0   # bytes per second
        if item[0] != DATA or rate <= 0:
            self.enqueue(_BEHIND, item)
            return
        data, ts = item[1], item[2]
        piece = max(1, int(rate * BANDWIDTH_PIECE))
        at = max(self.clock(), self.free_at)
        for start in range(0, len(data), piece):
            part = data[start:start + piece]
            at += len(part) / rate
            self.enqueue(at, (DATA, part, ts))
        self.free_at = at


class SlowClose(_Timed):
    """Data passes; the close (EOF, or a close from an earlier stage) waits ``delay`` ms."""

    def push(self, item: tuple) -> None:
        if item[0] == DATA:
            self.enqueue(_BEHIND, item)
        else:
            self.enqueue(self.clock() + self.spec.attrs["delay"] / 1000.0, item)


class Timeout(Stage):
    """No data passes; after ``timeout`` ms the connection is closed (0: held open forever,
    until the toxic is removed -- which closes it: Toxiproxy's ``Cleanup``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        ms = self.spec.attrs["timeout"]
        if ms > 0:
            self.timer = self.call_at(self.clock() + ms / 1000.0, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if not self.stopped:
            self.stopped = True
            self.next.push((CLOSE,))

    def push(self, item: tuple) -> None:
        if self.stopped:
            return
        if item[0] != DATA:
            self.stop()
            self.next.push(item)

    def take(self) -> list:
        was_stopped = self.stopped
        self.stop()
        return [] if was_stopped else [(CLOSE,)]


class ResetPeer(Stage):
    """The first item after the toxic starts (data or a close) arms it: ``timeout`` ms later the
    connection is reset (RST: SO_LINGER 0 and close).  What arrives meanwhile is dropped."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.armed = False

    def push(self, item: tuple) -> None:
        if self.armed or self.stopped:
            return
        self.armed = True
        ms = self.spec.attrs["timeout"]
        if ms <= 0:
            self._fire()
        else:
            self.timer = self.call_at(self.clock() + ms / 1000.0, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if not self.stopped:
            self.stopped = True
            self.next.push((RESET,))


def slice_points(length: int, average: int, variation: int, rng: random.Random) -> list:
    """Toxiproxy's ``SlicerToxic.chunk``: cut ``length`` bytes in halves (± ``variation``) until
    a piece is within ``variation`` of ``average``; the cut offsets, ending with ``length``.

    Iterative (Toxiproxy recurses), and each cut is kept strictly inside its span, so a
    variation larger than half a span cannot make an empty or a backwards slice.
    """
    cuts = []
    stack = [(0, length)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation or end - start < 2:
            cuts.append(end)
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(2 * variation) - variation
        mid = min(max(mid, start + 1), end - 1)
        stack.append((mid, end))     # popped after the left half: the cuts come out in order
        stack.append((start, mid))
    return cuts


class Slicer(_Timed):
    """Each chunk is cut into slices of about ``average_size`` ± ``size_variation`` bytes,
    ``delay`` microseconds apart."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.busy_until = 0.0

    def push(self, item: tuple) -> None:
        if item[0] != DATA:
            self.enqueue(_BEHIND, item)
            return
        a = self.spec.attrs
        data, ts = item[1], item[2]
        gap = a["delay"] / 1e6
        at = max(self.clock(), self.busy_until)
        start = 0
        for end in slice_points(len(data), a["average_size"], a["size_variation"], self.rng):
            self.enqueue(at, (DATA, data[start:end], ts))
            at += gap
            start = end
        self.busy_until = at


class LimitData(Stage):
    """At most ``bytes`` pass in this direction of the connection; then it is closed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sent = 0

    def push(self, item: tuple) -> None:
        if self.stopped:
            return
        if item[0] != DATA:
            self.next.push(item)
            return
        limit = self.spec.attrs["bytes"]
        data = item[1][:max(limit - self.sent, 0)]
        if data:
            self.sent += len(data)
            self.next.push((DATA, data, item[2]) if len(data) < len(item[1]) else item)
        if self.sent >= limit and not self.stopped:
            self.stopped = True
            self.next.push((CLOSE,))


#: What a stalled stage says it holds: more than any high-water mark, so the link stops
#: reading its source at once and does not start again while the stall lasts.
STALLED = float("inf")


class Stall(Stage):
    """Beyond Toxiproxy: the link stops reading the sender, whose kernel buffers then fill and
    whose ``send()`` blocks -- ``socktools stall``'s full buffer, in a real client's path.
    What was read before the pause is held; after ``timeout`` ms (0: until the toxic is
    removed) it all passes and reading resumes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queue: list = []
        self.held = STALLED
        ms = self.spec.attrs["timeout"]
        if ms > 0:
            self.timer = self.call_at(self.clock() + ms / 1000.0, self._release)

    def push(self, item: tuple) -> None:
        if self.held == STALLED:
            self.queue.append(item)
        else:
            self.next.push(item)

    def _release(self) -> None:
        self.timer = None
        items, self.queue, self.held = self.queue, [], 0
        for item in items:
            if self.stopped:
                return
            self.next.push(item)
        self.wake()              # held nothing, maybe: the link must still resume reading

    def take(self) -> list:
        self.stop()
        items, self.queue, self.held = self.queue, [], 0
        return items


#: Bytes of one message the message toxic holds while it waits for the message's end: past
#: this the message passes unjudged (its bytes cannot wait for ever).  The link's high-water
#: mark (1 MiB) would pause the sender at about the same point.
MESSAGE_HOLD = 1 << 20


class Message(_Timed):
    """Beyond Toxiproxy: whole messages, framed by the wire parser of ``protocol``, each judged
    once complete -- the ``nth`` (0: every one) whose one-line summary matches ``match`` is
    delayed ``delay`` ms, or has only its first ``cut`` bytes passed before the connection is
    closed or reset ("reset in the middle of the 3rd redis reply": nth=3, cut=5, action=reset).
    A message is held until it is complete (at most :data:`MESSAGE_HOLD`); bytes that are not
    the protocol end the judging, and pass as they come."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        a = self.spec.attrs
        self.parser = stream_parser(a["protocol"], "request" if self.spec.stream == "upstream" else "response")
        self.pattern = re.compile(a["match"]) if a["match"] else None
        self.buf = bytearray()      # bytes of messages not yet judged
        self.passed = 0             # bytes of the current message passed unjudged (too long)
        self.count = 0
        self.judging = True
        self.done = False           # closed or reset: nothing more passes
        self.ts = 0.0

    def push(self, item: tuple) -> None:
        if self.done:
            return
        if item[0] != DATA:
            self._flush()
            self.enqueue(_BEHIND, item)
            return
        self.ts = item[2]
        if not self.judging:
            self.enqueue(_BEHIND, item)
            return
        data = item[1]
        self.buf += data
        self.held += len(data)
        try:
            self.parser.feed(data)
        except WireError:
            self.judging = False
            self._flush()
            return
        messages, self.parser.keep[:] = list(self.parser.keep), []
        for msg in messages:
            size = msg.size - self.passed
            body = bytes(self.buf[:size])
            del self.buf[:size]
            self.held -= len(body)
            unjudged, self.passed = self.passed, 0
            self.count += 1
            if unjudged or not self._picks(msg.summary):
                self.enqueue(_BEHIND, (DATA, body, self.ts))
            elif self._act(body):
                return
        if len(self.buf) > MESSAGE_HOLD:
            self.passed += len(self.buf)
            self._flush()

    def _picks(self, summary: str) -> bool:
        nth = self.spec.attrs["nth"]
        return (nth == 0 or self.count == nth) and (self.pattern is None or bool(self.pattern.search(summary)))

    def _act(self, body: bytes) -> bool:
        """Do the action to a picked message; True when the connection ends with it."""
        a = self.spec.attrs
        if a["action"] == "delay":
            self.enqueue(self.clock() + a["delay"] / 1000.0, (DATA, body, self.ts))
            return False
        if a["cut"]:
            self.enqueue(_BEHIND, (DATA, body[:a["cut"]], self.ts))
        self.done = True
        self.held -= len(self.buf)
        self.buf.clear()
        self.enqueue(_BEHIND, (CLOSE,) if a["action"] == "close" else (RESET,))
        return True

    def _flush(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            self.held -= len(data)
            self.enqueue(_BEHIND, (DATA, data, self.ts))

    def take(self) -> list:
        items = super().take()
        if self.buf:
            items.append((DATA, bytes(self.buf), self.ts))
            self.buf.clear()
        return items


_KINDS = {"latency": Latency, "bandwidth": Bandwidth, "slow_close": SlowClose, "timeout": Timeout,
          "reset_peer": ResetPeer, "slicer": Slicer, "limit_data": LimitData, "stall": Stall,
          "message": Message}


def make_stage(spec: ToxicSpec, clock: Callable[[], float], call_at: Callable, rng: random.Random) -> Stage:
    """The stage for ``spec`` on one connection: the toxic itself with probability
    ``toxicity`` (Toxiproxy rolls ``rand.Float32() < toxicity`` per connection), else a pass."""
    if rng.random() < spec.toxicity:
        return _KINDS[spec.type](spec, clock, call_at, rng)
    return Pass(spec, clock, call_at, rng)

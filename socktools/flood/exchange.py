"""What flood says on a connection and how it checks the answers: the protocols.

The worker (:mod:`socktools.flood.worker`) owns the connections and the
phases; these protocol objects handle the bytes.  One instance serves all the
connections of a worker; per-connection state is a :class:`Slot` in
``conn.ctx``.

* :class:`Confirm` -- connect phase: handshake done -> first request -> the
  first whole answer confirms the connection;
* :class:`EchoLoop` -- closed-loop echo, the hot path: one call per round trip;
* :class:`ClosedLoop` -- closed loop for any answer format (framed);
* :class:`OpenLoop` -- ``--rate``: a pacer sends on a fixed schedule.

Answers are recognised by a *replies* object (:func:`make_replies`):
``parse(slot, data)`` returns how many whole answers ``data`` completed, or
raises :class:`~socktools.protocol.RemoteProtocolError`.
"""

from __future__ import annotations

import collections
import operator
from typing import TYPE_CHECKING, Any, Optional

from socktools import protocol, reference
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.core.loop import READ_SIZE, Connection, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from socktools.flood.worker import _Worker

__all__ = ["Slot", "owed", "make_replies", "EchoReplies", "FramedReplies", "Confirm", "EchoLoop",
           "ClosedLoop", "OpenLoop", "NS"]

NS = 1_000_000_000
_NS = NS
_get_ctx = operator.attrgetter("ctx")
_get_got = operator.attrgetter("got")
_get_sent = operator.attrgetter("sent")


class Slot:
    """Per-connection state (``conn.ctx``); slotted to keep memory per connection small."""

    __slots__ = ("index", "started", "got", "sent", "due", "backlog", "decoder", "confirmed", "failed")

    def __init__(self, index: int, started: int) -> None:
        self.index = index
        self.started = started
        self.got = 0            # echo: bytes of the current answer received
        self.sent = 0           # when the outstanding request left (0: none outstanding)
        self.due = 0            # --rate: when the outstanding request was scheduled
        self.backlog = None     # --rate: scheduled times of requests not sent yet (deque)
        self.decoder = None     # framed: a Decoder while a reply arrives in pieces
        self.confirmed = False
        self.failed = False


def owed(slot: Slot) -> int:
    """Requests a connection still owes answers to (sent, or queued by the pacer)."""
    return (1 if slot.sent else 0) + (len(slot.backlog) if slot.backlog else 0)


def make_replies(config: FloodConfig) -> Any:
    """The answer checker for ``config.mode``."""
    if config.mode == "framed":
        return FramedReplies(config.request_bytes, f"{config.action} {config.value!r}")
    return EchoReplies(config.size)


class EchoReplies:
    """Echo: exactly as many bytes as were sent must come back -- not fewer, not more."""

    def __init__(self, size: int) -> None:
        self.size = size
        # One byte more than an answer: extra bytes already queued show up at once.
        self.read_size = min(size + 1, READ_SIZE)

    def parse(self, slot: Slot, data: bytes) -> int:
        size = self.size
        got = slot.got + len(data)
        if got < size:
            slot.got = got
            return 0
        if got > size:
            raise protocol.RemoteProtocolError(
                f"the echo server returned {got - size} byte(s) more than were sent", "echo-surplus")
        slot.got = 0
        return 1


class FramedReplies:
    """Framed: each answer must be the reference server's answer to our request, with keep-alive.

    The usual case -- the whole known-good answer in one read -- is checked
    byte for byte; anything else (pieces, pipelined answers, another
    byteorder) goes through the protocol's decoder and is checked by content.
    """

    def __init__(self, request: bytes, what: str) -> None:
        req = protocol.Decoder()
        req.receive_data(request)
        self.expected_bytes = reference.respond(req.next_event())
        dec = protocol.Decoder()
        dec.receive_data(self.expected_bytes)
        msg = dec.next_event()
        self.expected_type = msg.content_type
        self.expected_content = msg.content
        self.what = what
        self.read_size = min(len(self.expected_bytes) + 1, READ_SIZE)

    def parse(self, slot: Slot, data: bytes) -> int:
        dec = slot.decoder
        if dec is None:
            if data == self.expected_bytes:
                return 1
            dec = protocol.Decoder()
        dec.receive_data(data)
        n = 0
        while True:
            event = dec.next_event()
            if event is protocol.NEED_DATA or event is protocol.CLOSED:
                break
            if event.content_type != self.expected_type or event.content != self.expected_content:
                raise protocol.RemoteProtocolError(
                    f"unexpected answer to {self.what}: {event.content_type} {event.content[:60]!r}",
                    "unexpected-response")
            if not event.keep_alive:
                raise protocol.RemoteProtocolError(
                    "the server answered without keep-alive: it closes after one request", "no-keep-alive")
            n += 1
        slot.decoder = dec if dec.buffered else None
        return n


class Confirm(Protocol):
    """Connect phase: handshake done -> first request -> first reply confirms the connection."""

    def __init__(self, worker: "_Worker") -> None:
        self.w = worker

    def connection_made(self, conn: Connection) -> None:
        w = self.w
        slot: Slot = conn.ctx
        now = w.clock()
        w.rec["connect"].record(now - slot.started)
        w.stats.connected += 1
        conn.read_size = w.read_size
        slot.sent = now
        conn.write(w.request)
        w.stats.confirm_requests += 1

    def data_received(self, conn: Connection, data: bytes) -> None:
        w = self.w
        slot: Slot = conn.ctx
        if slot.confirmed:
            w.protocol_error(conn, protocol.RemoteProtocolError(
                f"{len(data)} byte(s) arrived while no request was outstanding", "unsolicited"))
            return
        try:
            n = w.parse(slot, data)
        except protocol.RemoteProtocolError as exc:
            w.protocol_error(conn, exc)
            return
        if n == 1:
            w.confirmed(conn, slot, w.clock())
        elif n > 1:
            w.protocol_error(conn, protocol.RemoteProtocolError(
                f"{n} answers to one request", "unsolicited"))

    def eof_received(self, conn: Connection) -> None:
        self.w.peer_closed(conn)

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.w.lost(conn, exc)


class Traffic(Confirm):
    """Common parts of the traffic protocols; ``left`` is the requests still to send."""

    def __init__(self, worker: "_Worker", quota: Optional[int]) -> None:
        super().__init__(worker)
        # "No quota" is a count that a run bounded to a day never reaches.
        self.left = (1 << 62) if quota is None else quota
        self.payload = worker.request
        self.clock = worker.clock

    def send_first(self, conn: Connection, now: int) -> None:
        slot: Slot = conn.ctx
        self.left -= 1
        slot.sent = now
        conn.write(self.payload)
        if self.left == 0:
            self.w.end_traffic()

    def stopped_sending(self, slot: Slot) -> None:
        slot.sent = 0
        if self.w.phase == "drain":
            self.w.answered()


class EchoLoop(Traffic):
    """Closed-loop echo: the hot path.  Everything per round trip is in ``data_received``."""

    def __init__(self, worker: "_Worker", quota: Optional[int]) -> None:
        super().__init__(worker, quota)
        self.size = worker.config.size
        self.counts = worker.rec["latency"].counts
        self.max_value = st.HIGHEST

    def data_received(self, conn: Connection, data: bytes) -> None:
        slot = conn.ctx
        if slot.got or len(data) != self.size:
            self._piece(conn, slot, len(data))
            return
        now = self.clock()
        value = now - slot.sent
        # stats.counts_index(value), inlined: this line runs once per round trip.
        shift = value.bit_length() - 11
        try:
            self.counts[(shift << 10) + (value >> shift) if shift > 0 else value] += 1
        except IndexError:
            self.w.rec["latency"].record(value)
        left = self.left
        if left:
            self.left = left - 1
            slot.sent = now
            conn.write(self.payload)
            if left == 1:
                self.w.end_traffic()
        else:
            self.stopped_sending(slot)

    def data_batch(self, conns: list, datas: list) -> None:
        """The steady state of a busy run: every connection one poll found answered.

        The same as ``data_received`` for each pair, with one clock reading for
        the batch (taken after its reads: every answer in it had arrived by
        then) and one ``write_batch`` for the next requests.  Anything else -- a piece, a
        surplus, the end of the quota, a latency beyond the histogram -- goes
        through ``data_received`` pair by pair.
        """
        n = len(conns)
        slots = list(map(_get_ctx, conns))
        payload = self.payload
        now = self.clock()
        oldest = min(map(_get_sent, slots))  # 0: a connection with no request outstanding
        if (datas.count(payload) != n or any(map(_get_got, slots)) or self.left <= n
                or not oldest or now - oldest > self.max_value):
            for conn, data in zip(conns, datas):
                if not conn.closed:
                    self.data_received(conn, data)
            return
        counts = self.counts
        for slot in slots:
            value = now - slot.sent
            slot.sent = now
            # stats.counts_index(value), inlined (max_value keeps the index in range).
            shift = value.bit_length() - 11
            counts[(shift << 10) + (value >> shift) if shift > 0 else value] += 1
        self.left -= n
        conns[0].loop.write_batch(conns, [payload] * n)

    def _piece(self, conn: Connection, slot: Slot, n: int) -> None:
        """Part of an answer (or too much): count it; once whole, take the common path."""
        got = slot.got + n
        if got < self.size:
            slot.got = got
            return
        if got > self.size:
            self.w.protocol_error(conn, protocol.RemoteProtocolError(
                f"the echo server returned {got - self.size} byte(s) more than were sent", "echo-surplus"))
            return
        slot.got = 0
        self.data_received(conn, self.payload)  # the same length as the answer now complete


class ClosedLoop(Traffic):
    """Closed loop for any reply format (framed): parse, check, time, send the next."""

    def data_received(self, conn: Connection, data: bytes) -> None:
        w = self.w
        slot: Slot = conn.ctx
        try:
            n = w.parse(slot, data)
        except protocol.RemoteProtocolError as exc:
            w.protocol_error(conn, exc)
            return
        if n == 0:
            return
        if n > 1 or not slot.sent:
            w.protocol_error(conn, protocol.RemoteProtocolError(
                "an answer arrived while no request was outstanding", "unsolicited"))
            return
        now = self.clock()
        w.rec["latency"].record(now - slot.sent)
        if self.left:
            self.left -= 1
            slot.sent = now
            conn.write(self.payload)
            if self.left == 0:
                w.end_traffic()
        else:
            self.stopped_sending(slot)


class OpenLoop(Traffic):
    """Open loop (--rate): a pacer sends on a fixed schedule, round-robin over connections.

    Send ``n`` of this worker is due at ``start + n / rate`` and goes to
    connection ``n % e``, so each connection sends every ``e / rate`` seconds,
    staggered.  A connection still waiting for an answer when its next send is
    due queues that due time and sends as soon as the answer is in; latency is
    counted from the due time (corrected) and from the real send (uncorrected).
    """

    def __init__(self, worker: "_Worker", quota: Optional[int]) -> None:
        super().__init__(worker, quota)
        self.rate = worker.config.rate_of(worker.index)
        self.order = list(worker.live)
        self.scheduled = 0

    def start(self, now: int) -> None:
        self.start_ns = now
        duration = self.w.config.duration
        # Sends are due in [start, start + duration): R per second, not one more.
        self.end_ns = None if duration is None else now + int(duration * _NS)
        if not self.order or self.left == 0:
            self.w.end_traffic()
            return
        self._pace()

    def _due(self, n: int) -> int:
        return self.start_ns + int(n * _NS / self.rate)

    def _pace(self) -> None:
        w = self.w
        w.pacer_timer = None
        if w.phase != "traffic":
            return
        now = self.clock()
        order = self.order
        e = len(order)
        lag = w.rec["send_lag"]
        while self.left:
            due = self._due(self.scheduled)
            if self.end_ns is not None and due >= self.end_ns:
                return  # the schedule is complete; the duration timer ends the phase
            if due > now:
                w.pacer_timer = w.loop.call_later((due - now) / _NS, self._pace)
                return
            conn = order[self.scheduled % e]
            self.scheduled += 1
            self.left -= 1
            if conn.closed:
                continue  # its connection is gone: the request is not sent
            slot: Slot = conn.ctx
            if slot.sent:
                if slot.backlog is None:
                    slot.backlog = collections.deque()
                slot.backlog.append(due)
            else:
                lag.record(now - due)
                self._send(conn, slot, due, now)
        w.end_traffic()

    def _send(self, conn: Connection, slot: Slot, due: int, now: int) -> None:
        slot.due = due
        slot.sent = now
        conn.write(self.payload)

    def data_received(self, conn: Connection, data: bytes) -> None:
        w = self.w
        slot: Slot = conn.ctx
        try:
            n = w.parse(slot, data)
        except protocol.RemoteProtocolError as exc:
            w.protocol_error(conn, exc)
            return
        if n == 0:
            return
        if n > 1 or not slot.sent:
            w.protocol_error(conn, protocol.RemoteProtocolError(
                "an answer arrived while no request was outstanding", "unsolicited"))
            return
        now = self.clock()
        w.rec["latency"].record(now - slot.due)
        w.rec["latency_uncorrected"].record(now - slot.sent)
        if slot.backlog:
            # Queued sends were scheduled inside the traffic window: they go out
            # even during the drain, and their latency counts from their due time.
            self._send(conn, slot, slot.backlog.popleft(), now)
            if w.phase == "drain":
                w.answered()
        else:
            self.stopped_sending(slot)

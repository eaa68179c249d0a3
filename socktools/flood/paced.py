"""The paced exchange loops: ``--rate`` (open loop) and ``--no-reply`` (write-only streams).

* :class:`OpenLoop` -- a pacer sends on a fixed schedule; latency from the
  scheduled time (corrected) and from the send (uncorrected);
* :class:`WriteOnly` -- the pacer's stream, nothing to await; a connection
  whose server does not keep up is never buffered beyond :data:`HIGH_WATER`.
"""

from __future__ import annotations

import collections
from typing import Optional

from socktools.core.loop import Connection
from socktools.flood import stages as stg
from socktools.flood.exchange import Traffic
from socktools.flood.lifecycle import TRAFFIC
from socktools.flood.session import Session, Slot

__all__ = ["OpenLoop", "WriteOnly", "HIGH_WATER"]

#: Bytes a write-only connection may hold in flood's own buffer (beyond what
#: the kernel took): the same 256 KiB high-water mark ``serve`` uses -- a few
#: socket buffers' worth, enough to ride out a server's pause without letting
#: a server that never reads grow flood's memory by the rate times the run.
#: A request due while a connection is above it is not sent: it is counted
#: ``late`` (coordinated omission: the report shows it), never queued.
HIGH_WATER = 256 * 1024

_NS = 1_000_000_000
_deque = collections.deque


class OpenLoop(Traffic):
    """Open loop (--rate): a pacer sends on a fixed schedule, round-robin over connections.

    Send ``n`` of this worker is due at ``start + n / rate`` and goes to
    connection ``n % e``, so each connection sends every ``e / rate`` seconds,
    staggered.  A connection with ``pipeline`` requests already in flight when
    its next send is due queues that due time and sends as soon as an answer
    is in; latency is counted from the due time (corrected) and from the real
    send (uncorrected).

    With rates in ``--stages`` the schedule follows the ramp: send ``n`` (from 1) is due when
    the integral of this worker's share of the rate reaches ``n``, and the run schedules
    ``floor`` of the whole integral (:mod:`socktools.flood.stages`); the pacer deals to the
    connections open at that moment, in turn (the ramp adds and retires them).
    """

    def __init__(self, session: Session, quota: Optional[int]) -> None:
        super().__init__(session, quota)
        cfg = session.config
        self.rate = cfg.rate_of(session.index)
        self.scheduled = 0
        # --stages with rates: the ramped schedule and its count (None: a fixed rate).
        self.stages = cfg.stages if cfg.staged_rate else None
        self.share = cfg.share_of(session.index)
        self.cap = stg.scheduled(self.stages, self.share) if self.stages else None
        self.late = 0              # due but not sent (--stages: no connection open at that moment)
        self.max_buffered = 0
        self.uncorrected = session.rec["latency_uncorrected"]

    def start(self, conns: list, now: int) -> None:
        self.order = list(conns)
        if self.s.may_close:
            for conn in conns:
                self.closing(conn, conn.ctx)
        self.start_ns = now
        duration = self.s.config.duration
        # Sends are due in [start, start + duration): R per second, not one more.
        self.end_ns = None if duration is None else now + int(duration * _NS)
        if (not self.order and not self.s.config.stages) or self.left == 0:
            self.s.end_traffic()
            return
        self._pace()

    def _due(self, n: int) -> int:
        if self.stages is not None:
            return self.start_ns + stg.due_ns(self.stages, n + 1, self.share)
        return self.start_ns + int(n * _NS / self.rate)

    def join(self, conn: Connection) -> None:
        """A connection of the ramp: the pacer deals to it from now on (if it is still
        connecting, what is written waits for the handshake)."""
        self.order.append(conn)

    def retire(self, conns: list) -> None:
        gone = set(conns)
        self.order = [c for c in self.order if c not in gone]
        super().retire(conns)

    def retiring_replies(self, conn: Connection, slot: Slot, n: int) -> None:
        """As :meth:`replies`, but nothing new is sent: only what the pacer had queued for this
        connection before it retired (scheduled inside the traffic, as in the drain)."""
        if self.surplus_of(conn, slot, n):
            return
        times = slot.times
        now = self.clock()
        for _ in range(n):
            self.latency.record(now - slot.dues.popleft())
            self.uncorrected.record(now - times.popleft())
        backlog = slot.backlog
        while backlog and len(times) < self.pipeline:
            self._send_due(conn, slot, backlog.popleft(), now)
        self.s.retired(conn, n)

    def _pace(self) -> None:
        self.s.paced()
        self._dispatch()

    def time_up(self) -> None:
        """The duration timer fired: what the schedule still owes inside the window goes out
        now (its latency still counted from each due time), so ``--rate R --duration D``
        schedules R x D requests however late the loop ran the timers."""
        if self.end_ns is not None:
            # (a ramped schedule is bounded by its count: its last send may fall on the end)
            self._dispatch(self.end_ns if self.cap is not None else self.end_ns - 1)

    def _dispatch(self, upto: Optional[int] = None) -> None:
        """Send what is due by now (or by ``upto``); come back when the next one is."""
        s = self.s
        if s.phase != "traffic":
            return
        now = self.clock()
        horizon = now if upto is None else max(now, upto)
        order = self.order
        e = len(order)
        lag = s.rec["send_lag"]
        pipeline = self.pipeline
        cap = self.cap
        opens = s.opens
        while self.left:
            if cap is not None and self.scheduled >= cap:
                return  # the ramped schedule is complete; the duration timer ends the phase
            due = self._due(self.scheduled)
            if cap is None and self.end_ns is not None and due >= self.end_ns:
                return  # the schedule is complete; the duration timer ends the phase
            if due > horizon:
                s.pace(due - now, self._pace)
                return
            if not e:   # --stages: no connection open at this moment: due, not sent (late)
                self.scheduled += 1
                self.left -= 1
                self.late += 1
                continue
            conn = order[self.scheduled % e]
            self.scheduled += 1
            self.left -= 1
            if conn.closed:
                continue  # its connection is gone: the request is not sent
            slot: Slot = conn.ctx
            # Queued: the pipeline is full, the connection carried its --churn requests, or it
            # is not yet through its opening (a replacement, the ramp: it sends them once made).
            if ((slot.times and len(slot.times) >= pipeline) or slot.budget <= 0
                    or (opens and slot.state != TRAFFIC)):
                if slot.backlog is None:
                    slot.backlog = _deque()
                slot.backlog.append(due)
            elif self._send_due(conn, slot, due, now) is not False:   # False: not sent (late)
                lag.record(now - due)
        s.end_traffic()

    def _send_due(self, conn: Connection, slot: Slot, due: int, now: int) -> None:
        slot.budget -= 1
        if slot.times is None:
            slot.times = _deque()
            slot.dues = _deque()
        slot.times.append(now)
        slot.dues.append(due)
        self.sent += 1
        conn.write(self.s.request(slot))

    def replies(self, conn: Connection, slot: Slot, n: int) -> None:
        s = self.s
        times = slot.times
        in_flight = len(times) if times else 0
        if n > in_flight or (n == in_flight and slot.parser.buffered and not conn.eof):
            s.broken(conn, self.surplus, "an answer arrived while no request was outstanding")
            return
        now = self.clock()
        for _ in range(n):
            self.latency.record(now - slot.dues.popleft())
            self.uncorrected.record(now - times.popleft())
        if s.may_close and self.closing(conn, slot):
            if s.phase == "drain":
                s.answered(n)
            return
        backlog = slot.backlog
        while backlog and len(times) < self.pipeline and slot.budget > 0:
            # Queued sends were scheduled inside the traffic window: they go out
            # even during the drain, and their latency counts from their due time.
            self._send_due(conn, slot, backlog.popleft(), now)
        if s.phase == "drain":
            s.answered(n)


    def closing(self, conn: Connection, slot: Slot) -> bool:
        """As the closed loop's, and the replacement takes ``conn``'s turn in the schedule."""
        if not slot.parser.closing and (slot.budget > 0 or slot.times):
            return False    # (--churn: the connection has requests left to carry, or answers owed)
        if self.s.phase in ("traffic", "drain") and slot.times:
            # Requests pipelined past the close go first in the queue the replacement takes
            # over, their latency still counted from their scheduled times.
            dues = slot.dues
            self.s.unsend(slot)
            dues.extend(slot.backlog or ())
            slot.backlog = dues
        # (Replaced while any request is still to be scheduled: the pacer deals requests to
        # the connections in turn, this one's turn included.)
        new = self._renew(conn, must=bool(slot.backlog) or self.left > 0)
        if new is not None:
            self.order[self.order.index(conn)] = new
        return True

    def resume(self, conn: Connection, slot: Slot, now: int) -> None:
        """A reconnection sends what the pacer queued for its predecessor."""
        backlog = slot.backlog
        while backlog and (not slot.times or len(slot.times) < self.pipeline) and slot.budget > 0:
            self._send_due(conn, slot, backlog.popleft(), now)


class WriteOnly(OpenLoop):
    """--no-reply: the pacer's schedule, written and never awaited (tcpkali's streams).

    Back-pressure: a connection holding more than :data:`HIGH_WATER` unsent
    bytes skips its due request (``late``) instead of buffering it, so memory
    stays bounded (at most HIGH_WATER plus one request per connection) while
    the schedule runs on.
    """

    def __init__(self, session: Session, quota: Optional[int]) -> None:
        super().__init__(session, quota)
        # late: due but not sent -- the connection was above HIGH_WATER (or, --stages, none open)
        self.max_buffered = 0      # the most unsent bytes one connection held after a write
        self.stopped = False

    def _send_due(self, conn: Connection, slot: Slot, due: int, now: int) -> Optional[bool]:
        if conn.pending > HIGH_WATER:
            self.late += 1
            return False
        self.sent += 1
        conn.write(self.s.request(slot))
        pending = conn.pending
        if pending > self.max_buffered:
            self.max_buffered = pending

    def _buffered(self) -> int:
        """Requests written but not yet wholly handed to the kernel (with a fixed request,
        exactly: one partly handed over is not sent whole); 0 when requests vary in size."""
        size = len(self.s.fixed_request or b"")
        if not size:
            return 0
        return sum(-(-conn.pending // size) for conn in self.order if not conn.closed)

    def requests_sent(self) -> int:
        """Requests the server could read whole: with nothing to await, the run closes as the
        traffic ends, and what is still in flood's own buffer then never reaches the server."""
        return self.sent if self.stopped else self.sent - self._buffered()

    def stop(self) -> None:
        super().stop()
        self.sent -= self._buffered()     # dropped as the run closes
        self.stopped = True

    def data_received(self, conn: Connection, data: bytes) -> None:
        """Whatever the peer says is read (bytes in counts it) and dropped."""

"""What flood says on a connection and how it counts the answers: the exchange loops.

The worker (:mod:`socktools.flood.worker`) owns the connections; the
:class:`~socktools.flood.session.Session` owns the phases; these loop
objects move the bytes of any wire protocol (:mod:`socktools.wire`).  One
instance serves all the connections of a worker; per-connection state is a
:class:`~socktools.flood.session.Slot` in ``conn.ctx``.

* :class:`Confirm` -- connect phase: handshake done -> first request -> the
  first whole answer confirms the connection;
* :class:`FixedLoop` -- closed loop, one request in flight, every request
  the same bytes and every reply the same size (echo; raw with
  ``--reply-bytes``): the hot path, one call per round trip, with a batch
  form for a busy poll;
* :class:`ClosedLoop` -- closed loop for any protocol, up to ``pipeline``
  requests in flight, each timed from its own send;
* the paced loops (``--rate``, ``--no-reply``) are in :mod:`socktools.flood.paced`;
* :class:`Retiring` -- ``--stages`` ramping down: a connection taken off the traffic loop
  (``conn.set_protocol``, so the hot path has no per-reply check for it) answers what it
  owes, sends nothing new, and is closed by us.
"""

from __future__ import annotations

import collections
import operator
from typing import Optional

from socktools.flood import lifecycle as lc
from socktools.flood import stats as st
from socktools.flood.session import Session, Slot, owed
from socktools.core.loop import Connection, Protocol
from socktools.wire.base import WireError

__all__ = ["Confirm", "Traffic", "FixedLoop", "ClosedLoop", "ChurnLoop", "Retiring", "Opener"]

_get_ctx = operator.attrgetter("ctx")
_get_got = operator.attrgetter("got")
_get_sent = operator.attrgetter("sent")
_deque = collections.deque


class Confirm(Protocol):
    """Connect phase: handshake done -> first request -> first reply confirms the connection."""

    #: Replies fed here confirm connections (their failures are tallied apart from the traffic's).
    confirming = True

    def __init__(self, session: Session) -> None:
        self.s = session
        self.proto = session.proto
        self.surplus = session.proto.surplus_kind

    def tls_started(self, conn: Connection) -> None:
        self.s.tls_started(conn)

    def made(self, conn: Connection) -> tuple:
        """What every new connection gets: its connect time counted, its parser; (slot, now)."""
        slot, now = self.s.made(conn)
        conn.read_size = self.proto.read_size
        slot.parser = self.proto.parser()
        return slot, now

    def connection_made(self, conn: Connection) -> None:
        s = self.s
        if s.opens and s.open(conn, self):   # the opening conversation first (the Opener)
            return
        slot, now = self.made(conn)
        if not self.proto.replies:   # write-only: the handshake is all the confirmation there is
            s.confirmed(conn, now)
            return
        slot.sent = now
        slot.budget -= 1             # (--churn: the confirming request is one of the connection's)
        conn.write(s.request(slot))
        s.confirm_sent()

    def feed(self, conn: Connection, slot: Slot, data: bytes) -> int:
        """Replies completed by ``data`` (-1: the connection was ended for a protocol error)."""
        parser = slot.parser
        try:
            n = parser.feed(data)
        except WireError as exc:  # the peer's bytes are to blame (a bug of ours or a plug-in's
            self.s.broken(conn, exc.kind, str(exc))  # propagates: the loop logs its traceback)
            return -1
        if parser.failures:
            self.s.failed(parser.failures, self.confirming, data)
        return n

    def data_received(self, conn: Connection, data: bytes) -> None:
        s = self.s
        slot: Slot = conn.ctx
        if slot.confirmed:
            s.broken(conn, "unsolicited", f"{len(data)} byte(s) arrived while no request was outstanding")
            return
        n = self.feed(conn, slot, data)
        if n < 0:
            return
        if n > 1 or (n == 1 and slot.parser.buffered):
            s.broken(conn, self.surplus, "more came back than the answer to one request")
        elif n == 1:
            s.confirmed(conn, s.clock())

    def replies(self, conn: Connection, slot: Slot, n: int) -> None:
        """Replies completed by the peer's close (HTTP close-delimited): nothing more to send."""

    def eof_received(self, conn: Connection) -> None:
        self.s.peer_closed(conn)

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.s.lost(conn, exc)


class Traffic(Confirm):
    """Common parts of the traffic loops; ``left`` is the requests still to send (of ``quota``),
    ``sent`` the requests sent (sent again after a close included), counted as they go."""

    confirming = False

    def __init__(self, session: Session, quota: Optional[int]) -> None:
        super().__init__(session)
        self.left = self.quota = (1 << 62) if quota is None else quota
        self.sent = 0
        self.clock = session.clock
        self.latency = session.rec["latency"]
        self.pipeline = session.config.pipeline
        self.opening = 0          # reconnections not yet made
        self.retiring: Optional[Retiring] = None   # --stages: the protocol of retired connections

    def connection_made(self, conn: Connection) -> None:
        """A reconnection (:meth:`Session.renew`) is up: time its connect, go on sending."""
        s = self.s
        if s.opens and s.open(conn, self):     # the opening conversation first (the Opener)
            return
        ramp = lc.origin(conn.ctx.state) == lc.RAMPING    # --stages: one more of the ramp, not a reconnection
        slot, now = self.made(conn)
        if not ramp:
            self.opening -= 1
            s.reconnected()
        # In the drain, a reconnection that owes requests goes on: the cut-off ones queued for
        # it, or one the pacer wrote while it was still connecting (open loop).
        if s.phase == "traffic" or (s.phase == "drain" and owed(slot)):
            self.resume(conn, slot, now)
        else:
            conn.close()

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        # a reconnection that was never made (not connected, or still in its TLS handshake or opening)
        if conn.ctx.parser is None and lc.origin(conn.ctx.state) == lc.REOPENING:
            self.opening -= 1
        self.s.lost(conn, exc)

    def data_received(self, conn: Connection, data: bytes) -> None:
        slot: Slot = conn.ctx
        n = self.feed(conn, slot, data)
        if n > 0:
            self.replies(conn, slot, n)

    def requests_sent(self) -> int:
        return self.sent

    def stop(self) -> None:
        """The traffic phase ended: nothing more to send (``quota - left`` stays what was taken)."""
        self.quota -= self.left
        self.left = 0

    def time_up(self) -> None:
        """The duration is over (the open loop completes its schedule first)."""

    # ------------------------------------------------------------ --stages
    def join(self, conn: Connection) -> None:
        """A connection of the ramp is on its way (a closed loop sends once it is made)."""

    def retire(self, conns: list) -> None:
        """The ramp takes ``conns`` down: they send nothing more, answer what they owe, close."""
        retiring = self.retiring
        if retiring is None:
            retiring = self.retiring = Retiring(self)
        for conn in conns:
            self.s.retire(conn, retiring)

    def retiring_data(self, conn: Connection, slot: Slot, data: bytes) -> None:
        n = self.feed(conn, slot, data)
        if n > 0:
            self.retiring_replies(conn, slot, n)

    def retiring_replies(self, conn: Connection, slot: Slot, n: int) -> None:
        """``n`` answers on a retiring connection: timed as the loop times them, nothing sent."""
        if self.surplus_of(conn, slot, n):
            return
        now = self.clock()
        times = slot.times
        for _ in range(n):
            self.latency.record(now - times.popleft())
        self.s.retired(conn, n)

    def surplus_of(self, conn: Connection, slot: Slot, n: int) -> bool:
        """More answers than requests in flight on a retiring connection: it ends (True)."""
        if n > (len(slot.times) if slot.times else 0):
            self.s.broken(conn, self.surplus, "an answer arrived while no request was outstanding")
            return True
        return False

    def resume(self, conn: Connection, slot: Slot, now: int) -> None:
        """Closed loop: a reconnection sends first the requests its predecessor's close cut off
        (``closing``: the same requests, in order), then as a fresh connection does."""
        backlog = slot.backlog
        if backlog:
            k = min(len(backlog), slot.budget)     # (--churn: what one connection may carry)
            for _ in range(k):
                backlog.pop()
            if not backlog:
                slot.backlog = None
            slot.budget -= k
            self.sent += k
            slot.times = _deque([now] * k)
            conn.write(b"".join([self.s.request(slot) for _ in range(k)]))
            if self.left > 0 and k < self.pipeline and slot.budget > 0:
                self._send(conn, slot, min(self.pipeline - k, self.left), now)
        elif self.left > 0:
            self.send_first(conn, now)

    def closing(self, conn: Connection, slot: Slot) -> bool:
        """The last reply announced the server's close, or (--churn) the connection carried its
        requests and has every answer: reconnect (True: ``conn`` is done).
        Requests pipelined past the close go to the replacement's queue: it sends those very
        requests first (:meth:`Session.unsend`), in the traffic and in the drain alike."""
        if not slot.parser.closing:
            if slot.budget > 0 or slot.times:    # (--churn: not yet, or answers still owed)
                return False
            self._renew(conn, must=bool(slot.backlog))
            return True
        if slot.times and self.s.phase in ("traffic", "drain"):
            slot.backlog = _deque([0] * self.s.unsend(slot))
        self._renew(conn, must=bool(slot.backlog))
        return True

    def _renew(self, conn: Connection, must: bool = False) -> Optional[Connection]:
        """Replace ``conn`` -- unless the reconnections already on their way will carry every
        request still to send (no connection opened only to be closed unused); ``must``:
        ``conn`` has requests queued that only its replacement will send."""
        new = self.s.renew(conn, self, reopen=must or self.left > self.opening * self.pipeline)
        if new is not None:
            self.opening += 1
        return new

    def start(self, conns: list, now: int) -> None:
        """Traffic begins: the first requests on every connection (a connection whose
        confirming reply announced the server's close is replaced first)."""
        may_close = self.s.may_close
        for conn in conns:
            if self.left <= 0:
                break
            if not conn.closed and not (may_close and self.closing(conn, conn.ctx)):
                self.send_first(conn, now)

    def send_first(self, conn: Connection, now: int) -> None:
        slot: Slot = conn.ctx
        k = min(self.pipeline, self.left)
        self._send(conn, slot, k, now)

    def _send(self, conn: Connection, slot: Slot, k: int, now: int) -> None:
        """``k`` requests now, in one write (--churn: as many as the connection may still carry)."""
        budget = slot.budget
        if k >= budget:
            k = budget
            if k <= 0:
                return
        slot.budget = budget - k
        s = self.s
        self.left -= k
        self.sent += k
        times = slot.times
        if times is None:
            times = slot.times = _deque()
        if k == 1:
            times.append(now)
            conn.write(s.request(slot))
        else:
            times.extend([now] * k)
            conn.write(b"".join([s.request(slot) for _ in range(k)]))
        if self.left == 0:
            s.end_traffic()


class FixedLoop(Traffic):
    """Closed loop, fixed request and reply size: the hot path.  One call per round trip."""

    def __init__(self, session: Session, quota: Optional[int]) -> None:
        super().__init__(session, quota)
        self.payload = session.proto.fixed_request
        self.size = session.proto.reply_size
        # Echo: the reply must be the request's bytes; raw --reply-bytes: any bytes of that size.
        self.expect = self.payload if session.proto.echoes else None
        self.counts = self.latency.counts
        self.max_value = st.HIGHEST

    def requests_sent(self) -> int:
        """Every send takes one from the quota (no request is ever sent twice here): counted
        by the quota's own decrement, at no cost on the hot path."""
        return self.quota - self.left

    def send_first(self, conn: Connection, now: int) -> None:
        slot: Slot = conn.ctx
        self.left -= 1
        slot.sent = now
        conn.write(self.payload)
        if self.left == 0:
            self.s.end_traffic()

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
            self.latency.record(value)
        left = self.left
        if left:
            self.left = left - 1
            slot.sent = now
            conn.write(self.payload)
            if left == 1:
                self.s.end_traffic()
        else:
            slot.sent = 0
            if self.s.phase == "drain":
                self.s.answered()

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
        expect = self.expect
        whole = datas.count(expect) == n if expect is not None else set(map(len, datas)) == {self.size}
        if (not whole or any(map(_get_got, slots)) or self.left <= n
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

    def retiring_data(self, conn: Connection, slot: Slot, data: bytes) -> None:
        """The one answer a retiring connection owes (whole or in pieces): timed, then closed."""
        if self._whole(conn, slot, len(data)):
            self.latency.record(self.clock() - slot.sent)
            slot.sent = 0
            self.s.retired(conn, 1)

    def _piece(self, conn: Connection, slot: Slot, n: int) -> None:
        """Part of an answer (or too much): count it; once whole, take the common path."""
        if self._whole(conn, slot, n):
            self.data_received(conn, self.payload if self.expect is not None else b"\0" * self.size)

    def _whole(self, conn: Connection, slot: Slot, n: int) -> bool:
        """``n`` more bytes of the answer: True once it is whole (counted again from 0); too
        many end the connection."""
        got = slot.got + n
        if got < self.size:
            slot.got = got
            return False
        if got > self.size:
            self.s.broken(conn, self.surplus, f"the server returned {got - self.size} byte(s) more "
                                              f"than one answer")
            return False
        slot.got = 0
        return True


class ClosedLoop(Traffic):
    """Closed loop for any protocol: parse, time each reply from its own send, send the next."""

    def __init__(self, session: Session, quota: Optional[int]) -> None:
        super().__init__(session, quota)
        self.counts = self.latency.counts

    def replies(self, conn: Connection, slot: Slot, n: int) -> None:
        times = slot.times
        in_flight = len(times) if times else 0
        if n > in_flight or (n == in_flight and slot.parser.buffered and not conn.eof):
            self.s.broken(conn, self.surplus, "an answer arrived while no request was outstanding")
            return
        now = self.clock()
        record = self.latency.record
        pop = times.popleft
        for _ in range(n):
            record(now - pop())
        if self.s.may_close and self.closing(conn, slot):
            if self.s.phase == "drain":
                self.s.answered(n)
            return
        if self.left:
            self._send(conn, slot, min(n, self.left), now)
        elif self.s.phase == "drain":
            self.s.answered(n)

    def data_batch(self, conns: list, datas: list) -> None:
        """Every connection one poll found readable: parse each, one clock reading for the
        batch (taken after its reads), the next requests in one ``write_batch``.  Anything
        unusual -- a failure, a surplus, the end of the quota -- takes ``replies``."""
        s = self.s
        now = self.clock()
        counts = self.counts
        may_close = s.may_close
        request = s.request
        fixed = s.fixed_request
        out_c: list = []
        out_d: list = []
        sent = 0
        left = self.left
        for conn, data in zip(conns, datas):
            slot = conn.ctx
            parser = slot.parser
            try:
                n = parser.feed(data)
            except WireError as exc:
                s.broken(conn, exc.kind, str(exc))
                continue
            if parser.failures:
                s.failed(parser.failures, False, data)
            if not n:
                continue
            times = slot.times
            # A surplus, or the end of the quota: the careful path (with our sends so far).
            # (Bytes of a reply beyond those owed, still partial, are caught when they complete.)
            if not times or n > len(times) or left - sent <= n or (may_close and parser.closing):
                self.left = left - sent
                self.sent += sent
                sent = 0
                self.replies(conn, slot, n)
                left = self.left
                continue
            if n == 1:
                value = now - times.popleft()
                # stats.counts_index(value), inlined; beyond the histogram: record() clamps.
                shift = value.bit_length() - 11
                try:
                    counts[(shift << 10) + (value >> shift) if shift > 0 else value] += 1
                except IndexError:
                    self.latency.record(value)
                times.append(now)
                out_d.append(fixed if fixed is not None else request(slot))
            else:
                pop = times.popleft
                for _ in range(n):
                    value = now - pop()
                    shift = value.bit_length() - 11
                    try:
                        counts[(shift << 10) + (value >> shift) if shift > 0 else value] += 1
                    except IndexError:
                        self.latency.record(value)
                times.extend([now] * n)
                out_d.append(b"".join([request(slot) for _ in range(n)]))
            sent += n
            out_c.append(conn)
        self.left = left - sent
        self.sent += sent
        if out_c:
            # Every connection answered: the poll's own list (write_batch knows its fds already).
            out_c[0].loop.write_batch(conns if len(out_c) == len(conns) else out_c, out_d)


class ChurnLoop(ClosedLoop):
    """--churn N in the closed loop: every connection carries N requests (its confirming one
    included), then, with every answer in, is replaced (:meth:`Traffic.closing`) -- the
    opening conversation and all.  No batch path: a connection's count is checked per reply,
    and the connects, not the replies, are what a churn run measures."""

    data_batch = None


class Opener(Protocol):
    """What a connection runs during its opening conversation (``conn.set_protocol``): the
    session feeds the server's bytes to the connection's :class:`~socktools.wire.opening.Opening`
    and, once it is done, hands the connection to the loop that opened it.  No ``data_batch``:
    an opening is a handful of reads, and the traffic loops' hot paths carry no check for it."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def data_received(self, conn: Connection, data: bytes) -> None:
        self.s.opening_data(conn, data)

    def eof_received(self, conn: Connection) -> None:
        from socktools import errors
        self.s.abort(conn, errors.OPEN, errors.PEER_CLOSED,
                     ConnectionError("the peer closed the connection during the opening"))

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        conn.ctx.then.connection_lost(conn, exc)    # the loop that opened it settles its counts


class Retiring(Protocol):
    """``--stages`` ramping down: what a retired connection runs (``conn.set_protocol``).

    It sends nothing; the answers it owes are counted by its traffic loop
    (``retiring_data``: the same latency records, so *answered* stays exact), then
    :meth:`Session.retired` closes it.  No ``data_batch``: the batch path leaves it to
    ``data_received``, and the traffic loops' hot paths carry no check for it."""

    def __init__(self, traffic: Traffic) -> None:
        self.t = traffic
        self.s = traffic.s

    def data_received(self, conn: Connection, data: bytes) -> None:
        self.t.retiring_data(conn, conn.ctx, data)

    def replies(self, conn: Connection, slot: Slot, n: int) -> None:
        """Answers completed by the peer's close (close-delimited replies)."""
        self.t.retiring_replies(conn, slot, n)

    def eof_received(self, conn: Connection) -> None:
        self.s.peer_closed(conn)

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.s.lost(conn, exc)

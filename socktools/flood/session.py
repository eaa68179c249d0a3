"""The phase machine of one flood worker: the narrow interface its exchange loops call.

A worker's traffic goes connect -> ready -> traffic -> drain -> close.  The
exchange loops (:mod:`socktools.flood.exchange`) see only this object: the
clock, the recorders, the request maker (``{seq}`` numbering), the quota,
the pacer's timer, and the verbs of a run -- ``confirmed``, ``answered``,
``failed`` (a reply that counts as a failure), ``broken`` (a protocol error:
the connection ends), ``peer_closed``, ``lost``, ``unsend``, ``reconnected``,
``time_up``, ``end_traffic``.  The worker owns the sockets and the connect
pump; it learns of connections that settle through the one ``settled``
callback it passes in.

Counting: each count is taken where its event happens, by these verbs --
a confirming reply in ``confirmed``, a failed reply in ``failed`` (confirming
ones apart), a reconnection when it is made, a request never answered
(``unanswered``, tallied as the error ``no-reply``) when the connection that
owed it ends, or when the drain does.  Requests sent and answered in the
traffic are the traffic loop's own counts (its quota, its latency records).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from socktools import errors
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.wire.base import SAMPLE_BYTES, WireError, WireProtocol

__all__ = ["Session", "Slot", "owed", "NO_QUOTA"]

_NS = 1_000_000_000

#: "No quota": a count that a run bounded to a day never reaches.
NO_QUOTA = 1 << 62

#: Bytes of rendered requests a worker keeps for reuse (``shared_requests``: request
#: ``seq`` is the same on every connection, so it is rendered once, not once per
#: connection -- formatting a number costs more than a round trip's other Python work).
#: 8 MiB is about a third of a flood worker's own resident size with 10,000 connections;
#: at 40-byte requests it holds the first ~100,000 of every connection.  Past it,
#: requests are rendered each time, as for templates with ``{conn}``.
REQUEST_MEMO_BYTES = 8 << 20
#: Requests rendered at a time as the memo grows: one call per block, not per request.
_MEMO_BLOCK = 256

#: Distinct failure details kept per kind (an -ERR text, a status): a server
#: answering with ever-new texts must not grow the tally without bound.
MAX_DETAILS = 32


class Slot:
    """Per-connection state (``conn.ctx``); slotted to keep memory per connection small."""

    __slots__ = ("index", "started", "got", "sent", "due", "backlog", "parser", "times", "dues",
                 "count", "confirmed", "failed")

    def __init__(self, index: int, started: int) -> None:
        self.index = index
        self.started = started
        self.got = 0            # fixed-size replies: bytes of the current one received
        self.sent = 0           # when the outstanding request left (0: none) -- one in flight
        self.due = 0            # --rate: when that request was scheduled
        self.backlog = None     # --rate: scheduled times of requests not sent yet (deque)
        self.parser: Any = None  # the wire parser of this connection
        self.times = None       # pipelined: send times of the requests in flight (deque)
        self.dues = None        # pipelined --rate: their scheduled times (deque)
        self.count = 0          # requests made for this connection: the next one's {seq}
        self.confirmed = False
        self.failed = False


def owed(slot: Slot) -> int:
    """Requests a connection still owes answers to (sent, or queued by the pacer)."""
    return ((1 if slot.sent else 0) + (len(slot.times) if slot.times else 0)
            + (len(slot.backlog) if slot.backlog else 0))


class Session:
    def __init__(self, config: FloodConfig, index: int, loop: Any, clock: Callable[[], int],
                 stats: st.WorkerStats, proto: WireProtocol, settled: Callable[[Any], None],
                 connecting: Callable[[], int]) -> None:
        self.config = config
        self.index = index
        self.loop = loop
        self.clock = clock
        self.stats = stats
        self.proto = proto
        self.settled = settled               # worker: a connection left the connect phase
        self.connecting = connecting         # worker: connections not yet confirmed or failed
        self.rec = {name: st.Recorder() for name in st.HISTOGRAMS}
        self.phase = "connect"
        self.done = False
        self.live: set = set()               # confirmed connections still open
        self.outstanding = 0                 # drain: answers still owed
        self.traffic: Any = None
        self.confirm_classes: Optional[dict] = None   # proto.tally as the traffic began
        self.traffic_started = 0
        self.cpu_started = 0.0
        self.drain_started = 0
        self.connect_started = 0
        self.pacer_timer = None
        fixed = proto.fixed_request
        self.fixed_request = fixed
        # Request seq's bytes, shared by every connection (see REQUEST_MEMO_BYTES).
        self.memo: Optional[list] = [] if fixed is None and getattr(proto, "shared_requests", False) else None
        self.memo_bytes = 0
        # A reply may announce the server's close (HTTP): the traffic loops then reconnect.
        self.may_close = bool(getattr(proto, "may_close", False))
        self.reopen: Optional[Callable[[int, Any], Any]] = None   # worker: (index, protocol) -> conn

    # ------------------------------------------------------------ for the exchange loops
    def now(self) -> int:
        return self.clock()

    def request(self, slot: Slot) -> bytes:
        """The next request's bytes for ``slot``'s connection.

        ``seq`` counts the requests of one connection (0, 1, 2...), so that
        rotating templates alternate on each connection -- ``set key:{conn}``
        then ``get key:{conn}`` reads what it wrote -- and ``{conn}:{seq}`` is
        unique over the run.
        """
        fixed = self.fixed_request
        if fixed is not None:
            return fixed
        seq = slot.count
        slot.count = seq + 1
        memo = self.memo
        if memo is not None:
            try:
                return memo[seq]
            except IndexError:
                return self._remember(seq, slot.index)
        return self.proto.request(seq, slot.index)

    def _remember(self, seq: int, conn: int) -> bytes:
        """Request ``seq`` past the memo's end: render the next block into it (a
        connection asks for seq 0, 1, 2... in turn, so ``seq`` is the memo's length)."""
        memo = self.memo
        make = self.proto.request
        first = make(seq, conn)
        if seq != len(memo):
            return first
        used = self.memo_bytes + len(first)
        if used > REQUEST_MEMO_BYTES:     # (a --send-file request may be large)
            return first
        block = [first]
        for i in range(seq + 1, seq + _MEMO_BLOCK):
            request = make(i, conn)
            if used + len(request) > REQUEST_MEMO_BYTES:
                break
            block.append(request)
            used += len(request)
        memo += block
        self.memo_bytes = used
        return first

    def pace(self, delay_ns: int, callback: Callable[[], None]) -> None:
        """Run the pacer again in ``delay_ns``; end_traffic cancels it."""
        self.pacer_timer = self.loop.call_later(delay_ns / _NS, callback)

    def failed(self, failures: list, confirming: bool = False) -> None:
        """Replies that arrived whole but count as failures (wrong-reply, server-error, http-5xx);
        ``confirming``: a connection's first reply, tallied apart from the traffic's."""
        table = self.stats.confirm_reply_failures if confirming else self.stats.reply_failures
        for f in failures:
            kinds = table.setdefault(f.kind, {})
            detail = f.detail if (f.detail in kinds or len(kinds) < MAX_DETAILS) else "(other)"
            kinds[detail] = kinds.get(detail, 0) + 1
            if f.sample and f.kind not in self.stats.samples:
                self.stats.samples[f.kind] = f.sample[:SAMPLE_BYTES].decode("latin-1")
        failures.clear()

    def broken(self, conn: Any, kind: str, message: str) -> None:
        """The peer broke the protocol: count the kind, end this connection."""
        pe = self.stats.protocol_errors
        pe[kind] = pe.get(kind, 0) + 1
        from socktools.protocol import RemoteProtocolError
        self.abort(conn, "recv", errors.PROTOCOL_ERROR, RemoteProtocolError(message, kind))

    def abort(self, conn: Any, phase: str, key: str, exc: BaseException) -> None:
        slot = conn.ctx
        if not slot.failed:
            slot.failed = True
            st.add_tally(self.stats.errors, phase, key)
        conn.abort(exc)

    def confirmed(self, conn: Any, now: int) -> None:
        slot: Slot = conn.ctx
        s = self.stats
        slot.confirmed = True
        slot.sent = 0
        s.connect_bytes_out += conn.bytes_out
        s.connect_bytes_in += conn.bytes_in
        self.rec["first_reply"].record(now - slot.started)
        s.established += 1
        if self.proto.replies:
            s.confirm_responses += 1
        if self.config.mode == "connect":
            s.cycles += 1
            conn.close()
        elif self.phase == "connect":
            self.live.add(conn)
        else:  # confirmed after a stop: not needed any more
            conn.close()
        self.settled(conn)

    def peer_closed(self, conn: Any) -> None:
        slot: Slot = conn.ctx
        if self.phase == "close" or (self.config.mode == "connect" and slot.confirmed):
            conn.close()
            return
        parser = slot.parser
        if self.may_close and slot.confirmed and not owed(slot) and parser.closing:
            # A clean close the last reply announced: not a failure.  Before the traffic the
            # connection stays counted (the traffic loop replaces it as it starts).
            if self.phase not in ("connect", "ready"):
                conn.close()
            return
        if parser is not None and hasattr(parser, "eof") and owed(slot):
            try:
                n = parser.eof()
            except WireError as exc:
                self.broken(conn, exc.kind, str(exc))
                return
            if parser.failures:    # the reply the close completed failed (wrong-reply, http-5xx)
                self.failed(parser.failures, not slot.confirmed)
            if n and self.traffic is not None and slot.confirmed:
                self.traffic.replies(conn, slot, n)
                if conn.closed:   # the reply announced the close: reconnected, not a failure
                    return
            elif n == 1 and not slot.confirmed and self.phase == "connect":
                # The confirming reply was framed by the close (an HTTP body without a length,
                # raw --reply-until-close): confirmed, and replaced as the traffic starts.
                self.confirmed(conn, self.clock())
                if self.may_close and parser.closing:
                    return
        phase = "recv" if slot.confirmed or self.config.mode == "connect" or owed(slot) else "connect"
        self.abort(conn, phase, errors.PEER_CLOSED, ConnectionError("peer closed the connection"))

    def lost(self, conn: Any, exc: Optional[BaseException]) -> None:
        """Every connection ends here, whoever closed it."""
        slot: Slot = conn.ctx
        s = self.stats
        if exc is not None and conn.failed_in is not None and not slot.failed:
            slot.failed = True
            st.add_tally(s.errors, conn.failed_in, errors.exception_key(exc))
        if slot.confirmed:
            if conn in self.live:
                self.live.discard(conn)
                if slot.failed:
                    s.lost += 1
            was_owed = owed(slot)
            slot.sent = 0
            slot.times = None
            slot.backlog = None
            if was_owed and self.phase in ("traffic", "drain"):
                # Nobody will send them again.  (A connection that failed is one failure, under
                # its own name: its requests are unanswered, not a second failure each.)
                self.unanswered(was_owed, tally=not slot.failed)
            if was_owed and self.phase == "drain":
                self.answered(was_owed)
            elif self.phase == "traffic" and not self.live and self.config.mode != "connect":
                self.end_traffic()  # every connection is gone: nothing left to measure
            return
        s.connect_bytes_out += conn.bytes_out
        s.connect_bytes_in += conn.bytes_in
        if slot.failed:
            s.failed += 1
        else:  # we closed it ourselves before its reply: the run is ending
            s.cancelled += 1
        self.settled(conn)

    def unsend(self, slot: Slot) -> int:
        """The requests in flight on ``slot`` will never be answered (pipelined past a close
        the server announced): forget them, to be sent again; how many.

        They are the last ``n`` requests made for this connection, in order (a connection's
        requests are answered in the order sent), so the request maker steps back over them:
        the replacement renders the very same requests again -- the same ``{seq}``, the same
        turn of a ``--path``/``--send`` rotation -- before any new one."""
        n = len(slot.times)
        self.stats.resent += n
        slot.times = None
        slot.dues = None
        if self.fixed_request is None:
            slot.count -= n
        return n

    def reconnected(self) -> None:
        """A reconnection (:meth:`renew`) is up: a connection made, counted as it is made."""
        self.stats.reconnects += 1

    def unanswered(self, n: int, tally: bool = True) -> None:
        """``n`` requests will never be answered: their connection ended owing them, or the
        drain did.  A failure of their own (``no-reply``, unless ``tally`` is False: another
        error already counts it): a server that goes silent must not pass a run."""
        s = self.stats
        s.unanswered += n
        if tally:
            st.add_tally(s.errors, "recv", errors.NO_REPLY, n)

    def renew(self, conn: Any, protocol: Any, reopen: bool = True) -> Optional[Any]:
        """The server closes ``conn`` after the reply just counted (HTTP ``Connection: close``):
        open its replacement (same connection number) first -- so the traffic never sees
        no live connection -- then close ``conn`` ourselves, cleanly, as wrk does.  Requests
        the pacer queued for it move to the replacement (the traffic loop has put back the
        ones pipelined past the close: :meth:`unsend`) -- in the drain too, for they were
        due inside the traffic window.  What nobody will send again counts as unanswered."""
        old: Slot = conn.ctx
        new = None
        if reopen and self.reopen is not None and (
                self.phase == "traffic" or (self.phase == "drain" and old.backlog)):
            new = self.reopen(old.index, protocol)
            if new is not None:
                new.ctx.count = old.count
                new.ctx.backlog, old.backlog = old.backlog, None
        conn.close()   # lost() settles what ``old`` still owed (unanswered)
        return new

    # ------------------------------------------------------------ phases
    def start_traffic(self, traffic: Any, quota: Optional[int]) -> int:
        self.phase = "traffic"
        self.traffic = traffic
        if self.config.mode != "connect":  # (churn: every reply is a confirming one)
            self.confirm_classes = dict(self.proto.tally or {})
        now = self.traffic_started = self.clock()
        self.cpu_started = time.process_time()
        return now

    def answered(self, n: int = 1) -> None:
        """``n`` requests were answered (or lost) during the drain."""
        self.outstanding -= n
        if self.outstanding <= 0 and self.phase == "drain":
            self.close_all()

    def time_up(self) -> None:
        """The duration is over: the traffic loop completes its schedule (``--rate``: every
        request due inside the window goes out, however late the timer fired), then ends."""
        if self.phase == "traffic" and self.traffic is not None:
            self.traffic.time_up()
        self.end_traffic()

    def end_traffic(self) -> None:
        if self.phase != "traffic":
            return
        s = self.stats
        now = self.clock()
        s.phases["traffic"] = [self.traffic_started, now]
        s.traffic_wall = (now - self.traffic_started) / _NS
        s.traffic_cpu = time.process_time() - self.cpu_started
        self.phase = "drain"
        if self.traffic is not None:
            self.traffic.stop()
        if self.pacer_timer is not None:
            self.pacer_timer.cancel()
            self.pacer_timer = None
        self.drain_started = now
        self.outstanding = sum(owed(conn.ctx) for conn in self.live)
        if self.config.mode == "connect":
            self.outstanding = self.connecting()
        if self.outstanding <= 0:
            self.close_all()
        else:
            self.loop.call_later(self.config.drain_timeout, self.close_all)

    def close_all(self) -> None:
        if self.phase == "close":
            return
        s = self.stats
        if self.phase == "drain":
            s.phases["drain"] = [self.drain_started, self.clock()]
        self.phase = "close"
        start = self.clock()
        owed_at_end = sum(owed(conn.ctx) for conn in self.live)
        if owed_at_end:
            self.unanswered(owed_at_end)
        s.open_at_end = len(self.live)
        for conn in list(self.loop.connections.values()):
            conn.close() if conn.ctx.confirmed else conn.abort()
        s.phases["close"] = [start, self.clock()]
        self.done = True

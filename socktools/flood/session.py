"""One flood worker's session: the verbs its exchange loops and its connect pump call, and
the one place where a phase, a connection's state or a count changes.

The rules -- which phase or state follows which, on what event -- are the tables of
:mod:`socktools.flood.lifecycle`; this object fires their events as things happen and never
writes a state by hand.  A worker goes connect -> ready -> traffic -> drain -> close; each
connection connecting -> confirming -> ready -> traffic -> draining -> closed (a replacement
opened during the traffic: reopening -> traffic; one more of a ``--stages`` ramp: ramping ->
traffic; one the ramp takes down: traffic -> retiring -> closed).  Collaborators come in through the
constructor: the clock, the loop, the statistics, the protocol, and the worker's callbacks
(``settled``: a connection left the connect phase; ``connecting``: how many are still
opening; ``reopen``: open a replacement connection).

The verbs, by who calls them.  The connect pump: ``begin_connect``, ``opening``,
``open_failed``, ``reopening``, ``adopt``, ``reopen_failed``, ``connected_all``; the ramp
controller (``--stages``): ``ramp_opening``, ``retire``.  The exchange
loops: ``made``, ``confirm_sent``, ``confirmed``, ``failed`` (a reply that counts as a
failure), ``broken`` (a protocol error: the connection ends), ``peer_closed``, ``lost``,
``unsend``, ``reconnected``, ``answered``, ``retired``, ``pace``/``paced``, ``end_traffic``.  The worker:
``start_traffic``, ``time_up``, ``end_traffic``, ``close_all``.

Counting: each count is taken where its event happens, by these verbs -- a connection
attempted in ``opening``, made in ``made``, a confirming request and reply in
``confirm_sent`` and ``confirmed``, a failed reply in ``failed`` (confirming ones apart), a
reconnection when it is made, a request never answered (``unanswered``, tallied as the error
``no-reply``) when the connection that owed it ends, or when the drain does.  Requests sent
and answered in the traffic are the traffic loop's own counts (its quota, its latency records).
``tests/test_flood_lifecycle.py`` checks that no other module of flood assigns a phase, a
state or one of these counts.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from socktools import errors
from socktools.flood import lifecycle as lc
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.requests import RequestMaker
from socktools.wire.base import SAMPLE_BYTES, WireError, WireProtocol
from socktools.wire.opening import OpeningFailed

__all__ = ["Session", "Slot", "owed", "NO_QUOTA"]

_NS = 1_000_000_000

#: "No quota": a count that a run bounded to a day never reaches.
NO_QUOTA = 1 << 62

#: Distinct failure details kept per kind (an -ERR text, a status): a server
#: answering with ever-new texts must not grow the tally without bound.
MAX_DETAILS = 32

#: Distinct negotiated TLS parameters (version, cipher, ALPN) kept per worker: a handful in
#: practice; a server rotating through more is still tallied, the rest as "(other)".
MAX_NEGOTIATED = 16


class Slot:
    """Per-connection state (``conn.ctx``); slotted to keep memory per connection small.

    ``state`` is the connection's place in :data:`socktools.flood.lifecycle.CONNECTION`,
    moved by the session's verbs only."""

    __slots__ = ("index", "started", "got", "sent", "due", "backlog", "parser", "times", "dues",
                 "count", "confirmed", "failed", "state", "budget", "opening", "then", "opened",
                 "shake", "offered")

    def __init__(self, index: int, started: int, state: str = lc.CONNECTING, budget: int = NO_QUOTA) -> None:
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
        self.state = state
        # A replacement opened during the traffic is confirmed by its predecessor's replies; a
        # connection of the ramp joins the traffic as it is made (no confirming round trip).
        self.confirmed = state == lc.REOPENING or state == lc.RAMPING
        self.failed = False
        self.budget = budget    # --churn: requests this connection may still send (then replaced)
        self.opening = None     # its opening conversation, while it runs (wire.opening.Opening)
        self.then = None        # ... and the protocol that takes the connection once it is done
        self.opened = 0         # when the opening started (ns)
        self.shake = 0          # --tls: when the handshake began (0: no TLS, or not yet)
        self.offered = False    # --tls-resume: an earlier session was offered to resume


def owed(slot: Slot) -> int:
    """Requests a connection still owes answers to (sent, or queued by the pacer)."""
    return ((1 if slot.sent else 0) + (len(slot.times) if slot.times else 0)
            + (len(slot.backlog) if slot.backlog else 0))


class Session:
    def __init__(self, config: FloodConfig, index: int, loop: Any, clock: Callable[[], int],
                 stats: st.WorkerStats, proto: WireProtocol, settled: Callable[[Any], None],
                 connecting: Callable[[], int], reopen: Optional[Callable[[int, Any], Any]] = None) -> None:
        self.config = config
        self.index = index
        self.loop = loop
        self.clock = clock
        self.stats = stats
        self.proto = proto
        self.settled = settled               # worker: a connection left the connect phase
        self.connecting = connecting         # worker: connections not yet confirmed or failed
        self.reopen = reopen                 # worker: (index, protocol) -> a replacement conn
        self.rec = {name: st.Recorder() for name in st.HISTOGRAMS}
        self.machine = lc.worker_machine(index)
        self.done = False
        self.live: set = set()               # confirmed connections still open
        self.retiring: set = set()           # --stages: taken down, answering what they owe
        self.outstanding = 0                 # drain: answers still owed
        self.traffic: Any = None
        self.confirm_classes: Optional[dict] = None   # proto.tally as the traffic began
        self.traffic_started = 0
        self.cpu_started = 0.0
        self.drain_started = 0
        self.connect_started = 0
        self.pacer_timer = None
        self.maker = RequestMaker(proto)
        self.fixed_request = self.maker.fixed
        self.request = self.maker.request    # (bound once: one call per request, as before)
        self.requests = self.maker.requests
        # --churn N: a new connection after every N requests (the confirming one included).
        self.budget = config.churn or NO_QUOTA
        # A reply may announce the server's close (HTTP), or --churn may end a connection: the
        # traffic loops then reconnect.
        self.may_close = proto.may_close or bool(config.churn)
        # The opening conversation of every connection (None: none), and the protocol that runs
        # it (the exchange loops' Opener, given by the worker).
        self.opens = proto.opening() is not None
        self.opener: Any = None
        # Openings under way as the traffic ended: the server has what they sent (a login it
        # counts), so the drain lets them finish or fail rather than cut them off.
        self.drain_opens: set = set()
        self.tls_last: Any = None            # --tls-resume: the latest full handshake's SSLObject
        # ... and the session read from it, once: reading ``SSLObject.session`` copies the
        # session through DER (CPython's _ssl_session_dup, its peer certificate decoded
        # again) -- about 150 us a time here, more than the resumed handshake itself.
        self.tls_cached: Any = None

    @property
    def phase(self) -> str:
        """The worker's phase (:data:`socktools.flood.lifecycle.WORKER`)."""
        return self.machine.state

    # ------------------------------------------------------------ for the exchange loops
    def now(self) -> int:
        return self.clock()

    def pace(self, delay_ns: int, callback: Callable[[], None]) -> None:
        """Run the pacer again in ``delay_ns``; end_traffic cancels it."""
        self.pacer_timer = self.loop.call_later(delay_ns / _NS, callback)

    def paced(self) -> None:
        """The pacer's timer fired (nothing to cancel any more)."""
        self.pacer_timer = None

    # ------------------------------------------------------------ for the connect pump
    def begin_connect(self) -> int:
        """The connect phase (or a churn run's traffic) starts now: its rate counts from here."""
        now = self.connect_started = self.clock()
        return now

    def opening(self, index: int) -> Slot:
        """Connection ``index`` is about to be opened: one attempt more; its slot."""
        self.stats.attempted += 1
        return Slot(index, self.clock(), lc.CONNECTING, self.budget)

    def open_failed(self, exc: OSError) -> None:
        """A connection could not even be started (no socket, no source port...)."""
        s = self.stats
        st.add_tally(s.errors, getattr(exc, "phase", "socket"), errors.exception_key(exc))
        s.failed += 1

    def reopening(self, index: int) -> Slot:
        """A replacement for connection ``index`` is about to be opened (traffic or drain)."""
        return Slot(index, self.clock(), lc.REOPENING, self.budget)

    def tls_session(self, slot: Slot) -> Any:
        """--tls-resume: the session to offer for the connection of ``slot`` (the latest one
        this worker's handshakes got; None: nothing to resume yet -- a full handshake)."""
        if self.tls_cached is None and self.tls_last is not None:
            self.tls_cached = self.tls_last.session
        if self.tls_cached is None:
            return None
        slot.offered = True
        return self.tls_cached

    def ramp_opening(self, index: int) -> Slot:
        """``--stages``: connection ``index`` is about to be opened, one more of the ramp: an
        attempt, made straight into the traffic (no confirming round trip: the traffic's first
        reply is its confirmation, as for a replacement)."""
        self.stats.attempted += 1
        return Slot(index, self.clock(), lc.RAMPING, self.budget)

    def retire(self, conn: Any, protocol: Any) -> None:
        """``--stages``: the ramp goes down: ``conn`` sends nothing more.  With nothing owed it
        closes now; else ``protocol`` (the traffic loop's :class:`~socktools.flood.exchange.Retiring`)
        takes it, counts the answers it owes and closes it (:meth:`retired`).  Not a failure."""
        lc.step(conn.ctx, "retire")
        self.live.discard(conn)
        if owed(conn.ctx):
            self.retiring.add(conn)
            conn.set_protocol(protocol)
        else:
            conn.close()

    def retired(self, conn: Any, n: int) -> None:
        """``n`` answers arrived on a retiring connection (counted by the traffic loop): in the
        drain they are answers owed; once it owes nothing, we close it."""
        if self.phase == "drain":
            self.answered(n)
        if not owed(conn.ctx) and not conn.closed:
            conn.close()

    def adopt(self, conn: Any) -> None:
        """A replacement connection is on its way: it counts as live from now on."""
        self.live.add(conn)

    def reopen_failed(self, exc: Optional[OSError]) -> None:
        """A replacement failed at once (``exc``: it could not even be started)."""
        s = self.stats
        if exc is not None:
            st.add_tally(s.errors, getattr(exc, "phase", "socket"), errors.exception_key(exc))
        s.lost += 1

    def connected_all(self) -> None:
        """Every connection of the connect phase is confirmed or failed: wait for "go"."""
        self.machine.fire("connected")

    # ------------------------------------------------------------ a connection's life
    def tls_started(self, conn: Any) -> None:
        """``conn``'s TCP connection is up and its TLS handshake begins: the connect time
        (TCP only) is counted now, the handshake's from now."""
        slot: Slot = conn.ctx
        now = self.clock()
        self.rec["connect"].record(now - slot.started)
        slot.shake = now
        lc.step(slot, "tls")

    def _up(self, slot: Slot, conn: Any, now: int) -> None:
        """``conn``'s transport is up -- TCP's handshake, and TLS's with --tls: its connect time
        (or its TLS handshake's) counted, one connection more.  Once per connection: as its
        opening conversation starts, or as it is made when it has none."""
        if slot.shake:
            self.rec["handshake"].record(now - slot.shake)
            self._handshook(slot, conn.tls)
        else:
            self.rec["connect"].record(now - slot.started)
        self.stats.connected += 1

    def made(self, conn: Any) -> tuple:
        """``conn`` is ready for its first request (connected, TLS and its opening done): its
        connect time -- and handshake time -- counted unless its opening did; (slot, now)."""
        slot: Slot = conn.ctx
        now = self.clock()
        if slot.state.rpartition("/")[2] != lc.OPENING:
            self._up(slot, conn, now)
        if lc.origin(slot.state) == lc.RAMPING:
            self.stats.established += 1     # a connection of the ramp is up: it joins the traffic
        if lc.step(slot, "made") == lc.TRAFFIC and self.machine.state == lc.DRAIN:
            lc.step(slot, "drain")          # a replacement made after the traffic ended
        return slot, now

    def _handshook(self, slot: Slot, tls: Any) -> None:
        """A TLS handshake completed: what it settled, tallied; whether it resumed a session."""
        s = self.stats
        s.tls_handshakes += 1
        if slot.offered:
            s.tls_offered += 1
            if tls.session_reused:
                s.tls_resumed += 1
        cipher = tls.cipher()
        what = " ".join(x for x in (tls.version(), cipher[0] if cipher else None,
                                    tls.selected_alpn_protocol()) if x)
        table = s.tls_negotiated
        if what not in table and len(table) >= MAX_NEGOTIATED:
            what = "(other)"
        table[what] = table.get(what, 0) + 1
        if self.config.tls_resume and not tls.session_reused:
            # A full handshake made a new session: read it when the next connection needs it
            # (late enough for TLS 1.3's tickets, which arrive after the handshake).  A resumed
            # one keeps the session offered, read once.
            self.tls_last, self.tls_cached = tls, None

    # ------------------------------------------------------------ the opening conversation
    def open(self, conn: Any, then: Any) -> bool:
        """The protocol's opening conversation starts on ``conn`` (connected; after TLS when
        there is TLS), run by ``self.opener`` until it is done, then ``then`` takes ``conn``
        (its ``connection_made`` again).  False: ``conn`` is through its opening already."""
        slot: Slot = conn.ctx
        if slot.state.rpartition("/")[2] == lc.OPENING:
            return False
        if self.machine.state in (lc.DRAIN, lc.CLOSE) and lc.origin(slot.state) != lc.CONNECTING \
                and not owed(slot):
            conn.close()    # a replacement up after the traffic, with nothing to send: no login for nothing
            return True
        now = self.clock()
        self._up(slot, conn, now)
        lc.step(slot, "open")
        slot.opened = now
        slot.then = then
        op = slot.opening = self.proto.opening()
        conn.set_protocol(self.opener)
        out = op.data_to_send()
        if out:
            conn.write(out)
        return True

    def opening_data(self, conn: Any, data: bytes) -> None:
        """The server's bytes during the opening: fed to it; what it says next is sent; once it
        is done, its time is counted and the connection goes on as ``made``."""
        slot: Slot = conn.ctx
        op = slot.opening
        try:
            op.receive_data(data)
        except OpeningFailed as exc:
            self.refused(conn, exc)
            return
        except WireError as exc:
            self.broken(conn, exc.kind, f"in the opening: {exc}", errors.OPEN)
            return
        out = op.data_to_send()
        if out:
            conn.write(out)
        if not op.done:
            return
        now = self.clock()
        self.rec["open"].record(now - slot.opened)
        s = self.stats
        s.opened += 1
        if self.machine.state == lc.TRAFFIC:
            s.traffic_opened += 1
        leftover = op.leftover()
        slot.opening = None
        then = slot.then
        if leftover:    # the server spoke before it was asked: not an answer to anything
            self.broken(conn, "unsolicited", f"{len(leftover)} byte(s) arrived after the opening, before "
                                             f"any request", errors.OPEN)
            return
        waited = conn in self.drain_opens
        self.drain_opens.discard(conn)
        conn.set_protocol(then)
        then.connection_made(conn)
        if waited:
            self.answered()

    def refused(self, conn: Any, exc: OpeningFailed) -> None:
        """The server refused the opening: the connection ends, tallied by the server's words."""
        s = self.stats
        s.refused += 1
        words = exc.words if (exc.words in s.refusals or len(s.refusals) < MAX_DETAILS) else "(other)"
        s.refusals[words] = s.refusals.get(words, 0) + 1
        self.abort(conn, errors.OPEN, errors.OPENING_REFUSED, exc)

    def confirm_sent(self) -> None:
        """A connection's first, confirming request went out."""
        self.stats.confirm_requests += 1

    def failed(self, failures: list, confirming: bool = False, data: bytes = b"") -> None:
        """Replies that arrived whole but count as failures (wrong-reply, server-error, http-5xx);
        ``confirming``: a connection's first reply, tallied apart from the traffic's.  ``data``,
        the bytes that completed them, is read for the TLS mistakes users make first (nginx's
        400 "The plain HTTP request was sent to HTTPS port"), once per worker."""
        if confirming and data and not self.stats.hints:
            hint = errors.tls_hint(data, None, tls=self.config.tls_on)
            if hint:
                self.stats.hints.append(hint)
        table = self.stats.confirm_reply_failures if confirming else self.stats.reply_failures
        for f in failures:
            kinds = table.setdefault(f.kind, {})
            detail = f.detail if (f.detail in kinds or len(kinds) < MAX_DETAILS) else "(other)"
            kinds[detail] = kinds.get(detail, 0) + 1
            if f.sample and f.kind not in self.stats.samples:
                self.stats.samples[f.kind] = f.sample[:SAMPLE_BYTES].decode("latin-1")
        failures.clear()

    def broken(self, conn: Any, kind: str, message: str, phase: str = errors.RECV) -> None:
        """The peer broke the protocol: count the kind, end this connection."""
        pe = self.stats.protocol_errors
        pe[kind] = pe.get(kind, 0) + 1
        from socktools.protocol import RemoteProtocolError
        self.abort(conn, phase, errors.PROTOCOL_ERROR, RemoteProtocolError(message, kind))

    def abort(self, conn: Any, phase: str, key: str, exc: BaseException) -> None:
        slot = conn.ctx
        if not slot.failed:
            slot.failed = True
            st.add_tally(self.stats.errors, phase, key)
        conn.abort(exc)

    def confirmed(self, conn: Any, now: int) -> None:
        slot: Slot = conn.ctx
        s = self.stats
        lc.step(slot, "confirmed")
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
                conn.protocol.replies(conn, slot, n)   # the traffic loop's, or Retiring's
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
        waited = conn in self.drain_opens
        if waited:   # an opening the drain waited for ended without being through
            self.drain_opens.discard(conn)
        try:
            self._lost(conn, exc)
        finally:
            if waited and self.phase == "drain":
                self.answered()

    def _lost(self, conn: Any, exc: Optional[BaseException]) -> None:
        slot: Slot = conn.ctx
        s = self.stats
        never_made = lc.origin(slot.state) == lc.RAMPING
        lc.step(slot, "closed")
        if exc is not None and conn.failed_in is not None and not slot.failed:
            slot.failed = True
            st.add_tally(s.errors, conn.failed_in, errors.exception_key(exc))
        if never_made:    # a connection of the ramp that never came up: an attempt that failed
            self.live.discard(conn)
            if slot.failed:
                s.failed += 1
            else:         # we closed it ourselves before it was made: the run is ending
                s.cancelled += 1
            return
        if slot.confirmed:
            if conn in self.live or conn in self.retiring:
                self.live.discard(conn)
                self.retiring.discard(conn)
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
            elif (self.phase == "traffic" and not self.live and self.config.mode != "connect"
                  and not self.config.stages):
                # Every connection is gone: nothing left to measure.  (With --stages the ramp
                # opens connections again, or its schedule ends the traffic.)
                self.end_traffic()
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
        self.maker.step_back(slot, n)
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
                self.maker.carry_over(old, new.ctx)
                new.ctx.backlog, old.backlog = old.backlog, None
        conn.close()   # lost() settles what ``old`` still owed (unanswered)
        return new

    # ------------------------------------------------------------ phases
    def start_traffic(self, traffic: Any) -> int:
        """"go": the traffic starts now, with the loop ``traffic`` (None: nothing to send)."""
        self.machine.fire("go")
        for conn in self.live:
            lc.step(conn.ctx, "go")
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
        st.traffic_ended(s, self.traffic_started, now, self.cpu_started)
        self.machine.fire("end")
        for conn in self.live:
            slot = conn.ctx
            if slot.state == lc.TRAFFIC:    # (a replacement still connecting drains once made)
                lc.step(slot, "drain")
        if self.traffic is not None:
            self.traffic.stop()
        if self.pacer_timer is not None:
            self.pacer_timer.cancel()
            self.pacer_timer = None
        self.drain_started = now
        self.outstanding = sum(owed(conn.ctx) for conn in self.live) + self._retiring_owed()
        self.drain_opens = {conn for conn in self.live if conn.ctx.opening is not None}
        self.outstanding += len(self.drain_opens)
        if self.config.mode == "connect":
            self.outstanding = self.connecting()
        if self.outstanding <= 0:
            self.close_all()
        else:
            self.loop.call_later(self.config.drain_timeout, self.close_all)

    def _retiring_owed(self) -> int:
        return sum(owed(conn.ctx) for conn in self.retiring)

    def close_all(self) -> None:
        if self.phase == "close":
            return
        s = self.stats
        if self.phase == "drain":
            s.phases["drain"] = [self.drain_started, self.clock()]
        self.machine.fire("close")
        start = self.clock()
        owed_at_end = sum(owed(conn.ctx) for conn in self.live) + self._retiring_owed()
        if owed_at_end:
            self.unanswered(owed_at_end)
        s.open_at_end = len(self.live)
        for conn in list(self.loop.connections.values()):
            conn.close() if conn.ctx.confirmed else conn.abort()
        s.phases["close"] = [start, self.clock()]
        self.done = True

"""One flood worker: its share of the connections, driven by the shared I/O core.

:func:`run_worker` is a plain function of a frozen config that returns a
:class:`~socktools.flood.stats.WorkerStats`; the runner runs one per process,
but nothing here depends on that.  A worker's life:

1. *connect* -- open its connections (paced by ``connect_rate``, at most
   :data:`MAX_CONNECTING` in flight), each confirmed by a first round trip:
   connect() succeeds as soon as the kernel finished the handshake, even when
   the server's accept queue is full and nobody will ever read.
2. *barrier* -- report "ready" over the channel and wait for "go", so that all
   workers start their traffic at the same moment.
3. *traffic* -- closed loop (the next request leaves when the answer is in),
   or open loop with ``rate``: requests on a fixed schedule, latency counted
   from the scheduled time (coordinated omission corrected, as wrk2 does).
4. *drain* -- stop sending, wait up to ``drain_timeout`` for answers owed.
5. *close* -- close every connection.

With ``--stages`` the connect phase opens nothing: the traffic starts with no connection
and a ramp controller (:meth:`_Worker._ramp`, every :data:`RAMP_STEP`) opens connections
straight into the traffic (the reconnection path, no confirming round trip) or retires
them, to hold this worker's share of the stages' target.

Connect mode folds these into churn: each slot connects, gets its one reply,
closes and starts over, for the duration.

Counts are taken where they happen, at no extra cost on the hot path: the
traffic loop counts the requests it sends (the fixed-request loop by its
quota's own decrement), each answer is one record in the latency histogram,
and the session counts the confirming replies, reconnections and requests
never answered.  The phases themselves live in
:class:`~socktools.flood.session.Session`, the one object the exchange loops
talk to.
"""

from __future__ import annotations

import collections
import os
import resource
import socket
import time
from typing import Any, Callable, Optional

from socktools import errors, wire
from socktools.flood import exchange, paced
from socktools.flood.channel import RunnerLink
from socktools.flood import lifecycle as lc
from socktools.flood import stages as stg
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.session import Session

__all__ = ["run_worker", "MAX_CONNECTING", "RAMP_STEP"]

#: Connections of one worker between connect() and their first reply.  Bounds
#: the burst a worker throws at the server's accept queue (backlog 4096 by
#: default, capped by net.core.somaxconn): beyond it the kernel drops SYNs or
#: final ACKs and clients wait a 1 s retransmission.  512 already sustains
#: tens of thousands of connections/s on loopback.
MAX_CONNECTING = 512

#: Connects opened per loop iteration (one pump pass, run from a timer, so
#: completions and replies are read in between): in a long burst the first
#: connections' measured times would include the time spent opening all the
#: others (~40 us each).
CONNECT_BATCH = 16

#: --stages: how often the ramp controller matches the open connections to the target.  20
#: steps a second: a 1 s stage to 100 connections moves in steps of 5; each step costs a few
#: microseconds when nothing changes.  (stages.MIN_STAGE, the shortest stage, is this.)
RAMP_STEP = 0.05

#: How often pending connections are checked against the connect timeout.
SWEEP_INTERVAL = 0.05

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_NS = 1_000_000_000


def run_worker(config: FloodConfig, worker_index: int, channel: Any = None, *,
               epoch_ns: Optional[int] = None,
               clock: Callable[[], int] = time.perf_counter_ns) -> st.WorkerStats:
    """Run worker ``worker_index`` of ``config`` to the end and return its statistics.

    ``channel`` (optional) is a duplex ``multiprocessing`` connection to the
    runner: the worker sends ``("ready", None)`` after its connect phase and
    ``("tick", Tick)`` every ``config.interval`` seconds (aligned to
    ``epoch_ns``), and obeys ``("go", None)`` and ``("stop", None)``.  Without
    a channel the traffic phase starts as soon as the connect phase ends.
    """
    return _Worker(config, worker_index, channel, epoch_ns, clock).run()


def _choose(session: Session, quota: Optional[int]) -> "exchange.Traffic":
    """The traffic loop for this run: open loop with --rate, else the fastest closed loop."""
    cfg = session.config
    proto = session.proto
    if not proto.replies:
        return paced.WriteOnly(session, quota)
    if cfg.rate is not None:
        return paced.OpenLoop(session, quota)
    if cfg.churn:
        return exchange.ChurnLoop(session, quota)
    if (cfg.pipeline == 1 and proto.fixed_request is not None and proto.reply_size is not None):
        return exchange.FixedLoop(session, quota)
    return exchange.ClosedLoop(session, quota)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Worker(RunnerLink):
    """The sockets of one worker: the connect pump, the runner's channel, ticks and the final
    statistics.  Phases and per-request bookkeeping are the session's."""

    def __init__(self, config: FloodConfig, index: int, channel: Any, epoch_ns: Optional[int],
                 clock: Callable[[], int]) -> None:
        self._attach(config, index, channel, epoch_ns, clock)
        self.proto = wire.build(config.wire_spec)
        self.session = Session(config, index, self.loop, clock, self.stats, self.proto, self._settled_one,
                               lambda: self.connecting, reopen=self._reopen)
        self.rec = self.session.rec
        self.indices = range(index, config.conns, config.workers)
        self.next_i = 0                     # next of self.indices to open
        self.connecting = 0                 # opened, not yet confirmed or failed
        self.pending: collections.deque = collections.deque()   # slots by connect time
        self.connect_rate = config.connect_rate_of(index)
        self.cycle_quota: Optional[int] = None
        self.confirm = exchange.Confirm(self.session)
        self.session.opener = exchange.Opener(self.session)
        self.pump_timer = None
        self._pumping = False
        self._repump = False
        self.family = config.family
        self.ramp_next = 0                  # --stages: the next connection number the ramp uses
        # --tls: one client context per worker (made here, in the worker's process: contexts do
        # not pickle), the name its handshakes send and check
        self.tls_ctx = self.sni = None
        if config.tls_on:
            from socktools.tlsconf import client_context, server_name
            self.tls_ctx = client_context(config.tls)
            self.sni = server_name(config.tls, config.host)
        if config.stages:
            self.next_i = len(self.indices)  # the ramp opens them, during the traffic

    @property
    def phase(self) -> str:
        return self.session.phase

    # ------------------------------------------------------------ setup
    def _source_addr(self, index: int) -> Optional[tuple]:
        host = self.config.source_of(index)
        if host is None:
            return None
        return (host, 0, 0, 0) if self.family == socket.AF_INET6 else (host, 0)

    def _setup_socket(self, sock: socket.socket) -> None:
        if self.family == socket.AF_UNIX:   # --unix: no TCP options (setsockopt would fail)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.config.sources and self.family == socket.AF_INET:
            # Let connect() pick the port per destination (4-tuple), not bind():
            # otherwise every source address is capped at one port range in all.
            try:
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass

    # ------------------------------------------------------------ the run
    def run(self) -> st.WorkerStats:
        cfg = self.config
        s = self.stats
        s.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        s.rss_start = _rss()
        if self.channel is not None:
            self.loop.add_reader(self.channel.fileno(), self._on_channel)
            if cfg.interval:
                self._arm_tick()
        self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        self.session.begin_connect()
        if cfg.mode == "connect":
            self.cycle_quota = cfg.requests_of(self.index)
            self._ready()
        else:
            self._pump()
        try:
            self.loop.run(until=lambda: self.session.done)
        finally:
            self.loop.close()
        return self._final()

    def _ready(self) -> None:
        self.stats.rss_connected = _rss()
        if self.channel is None:
            self._go()
        else:
            self.session.connected_all()
            self._tell(("ready", None))

    def _stop(self) -> None:
        """Stop early (Ctrl-C in the runner): wind down from whatever phase we are in."""
        session = self.session
        if session.phase in ("connect", "ready"):
            if session.phase == "connect":  # the phase ran, however short: report it and its rate
                self._phase_end("connect")
            self.next_i = len(self.indices)
            session.start_traffic(None)
            session.end_traffic()
        elif session.phase == "traffic":
            session.end_traffic()
        elif session.phase == "drain":
            session.close_all()

    def _phase_end(self, name: str, start: Optional[int] = None) -> None:
        self.stats.phases[name] = [self.session.connect_started if start is None else start, self.clock()]

    # ------------------------------------------------------------ connect phase
    def _pump(self) -> None:
        """Open connections while the in-flight cap, the connect rate and the quota allow.

        Connections that settle (confirmed, failed) ask for the next pass with
        :meth:`_pump_later`, so there is one pass per loop iteration.
        Re-entrant calls (a connect that fails at once reports from inside
        open_connection) only ask the running pump for another pass, so a
        burst of failures never recurses.
        """
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            self._repump = True
            while self._repump:
                self._repump = False
                self._pump_once()
        finally:
            self._pumping = False
        self._settled()

    def _pump_once(self) -> None:
        if self.session.phase not in ("connect", "traffic") or (self.session.phase == "traffic" and self.config.mode != "connect"):
            return
        cfg = self.config
        churn = cfg.mode == "connect"
        total = len(self.indices)
        cap = min(MAX_CONNECTING, total) if churn else MAX_CONNECTING
        opened = 0
        while self.connecting < cap:
            if churn:
                if self.cycle_quota is not None and self.stats.attempted >= self.cycle_quota:
                    break
            elif self.next_i >= total:
                break
            if opened == CONNECT_BATCH:
                self._pump_later(0.0)  # let the loop see completions first, then go on
                break
            if self.connect_rate:
                due = self.session.connect_started + int(self.stats.attempted * _NS / self.connect_rate)
                now = self.clock()
                if due > now:
                    self._pump_later((due - now) / _NS)
                    break
            index = self.indices[self.next_i % total]
            self.next_i += 1
            opened += 1
            self._open(index)

    def _pump_later(self, delay: float) -> None:
        if self.pump_timer is None:
            self.pump_timer = self.loop.call_later(delay, self._pump_timer)

    def _pump_timer(self) -> None:
        self.pump_timer = None
        self._pump()

    def _open(self, index: int) -> None:
        slot = self.session.opening(index)
        source = self._source_addr(index)
        self.connecting += 1
        try:
            conn = self._connect(self.confirm, source, slot)
        except OSError as exc:
            self.connecting -= 1
            self.session.open_failed(exc)
            return
        if not conn.closed:
            self.pending.append((slot, conn))

    def _connect(self, protocol: Any, source: Optional[tuple], slot: Any) -> Any:
        """open_connection for one slot: TLS with --tls (offering the latest session with
        --tls-resume)."""
        if self.tls_ctx is None:
            return self.loop.open_connection(self.config.address, protocol, family=self.family,
                                             source=source, setup=self._setup_socket, ctx=slot)
        return self.loop.open_connection(
            self.config.address, protocol, family=self.family, source=source, setup=self._setup_socket,
            ctx=slot, tls=self.tls_ctx, server_hostname=self.sni,
            tls_session=self.session.tls_session(slot) if self.config.tls_resume else None)

    def _reopen(self, index: int, protocol: Any, ramp: bool = False) -> Optional[Any]:
        """A traffic-phase reconnect (the server closed after a complete reply) -- or, with
        ``ramp``, one more connection of the --stages ramp: a new connection for number
        ``index``, handed straight to the traffic loop ``protocol``, which counts it live from
        now on and sends once it is made (no confirming round trip)."""
        session = self.session
        slot = session.ramp_opening(index) if ramp else session.reopening(index)
        try:
            conn = self._connect(protocol, self._source_addr(index), slot)
        except OSError as exc:
            session.open_failed(exc) if ramp else session.reopen_failed(exc)
            return None
        if conn.closed:   # failed at once: tallied as it was lost, never in the live set
            if not ramp:  # (a connection of the ramp was counted failed as it was lost)
                self.session.reopen_failed(None)
        else:
            self.session.adopt(conn)
            self.pending.append((slot, conn))   # the sweep holds it to the connect timeout
        return conn

    def _sweep(self) -> None:
        """Abort connections not confirmed within the connect timeout."""
        limit = self.clock() - int(self.config.connect_timeout * _NS)
        pending = self.pending
        while pending:
            slot, conn = pending[0]
            # (a replacement is confirmed from the start: it is done once its setup is -- the TCP
            # connect, with --tls the handshake, and its opening conversation)
            if conn.closed or (slot.confirmed and not conn.connecting and not lc.in_setup(slot.state)):
                pending.popleft()
                continue
            if slot.started > limit:
                break
            pending.popleft()
            # (an opening that never finishes is bounded by the same timeout)
            phase = ("connect" if conn.connecting else
                     errors.HANDSHAKE if getattr(conn, "handshaking", False) else
                     errors.OPEN if lc.in_setup(slot.state) else "recv")
            self._abort(conn, phase, errors.TIMEOUT, TimeoutError(
                f"no reply within the connect timeout ({self.config.connect_timeout:g}s)"))
        if not self.session.done:
            self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _settled_one(self, conn: Any) -> None:
        """A connection left the connecting state (confirmed, failed or cancelled)."""
        self.connecting -= 1
        self._pump_later(0.0)

    def _settled(self) -> None:
        """After connections settle: end the connect phase, or the churn, when all are done."""
        if self._pumping or self.connecting:
            return
        session = self.session
        if session.phase == "connect" and self.next_i >= len(self.indices):
            self._phase_end("connect")
            self._ready()
        elif self.config.mode == "connect":
            if session.phase == "drain":
                session.close_all()
            elif (session.phase == "traffic" and self.cycle_quota is not None
                  and self.stats.attempted >= self.cycle_quota):
                session.end_traffic()

    def _abort(self, conn: Any, phase: str, key: str, exc: BaseException) -> None:
        self.session.abort(conn, phase, key, exc)

    # ------------------------------------------------------------ traffic phase
    def _go(self) -> None:
        cfg = self.config
        session = self.session
        quota = cfg.requests_of(self.index)
        if cfg.duration is not None:
            self.loop.call_later(cfg.duration, session.time_up)
        if cfg.mode == "connect":
            session.start_traffic(None)
            session.begin_connect()         # the churn's connect rate counts from "go"
            self._pump()
            return
        if not session.live and not cfg.stages:  # nothing to send on: no connection was established
            session.start_traffic(None)
            session.end_traffic()
            return
        traffic = _choose(session, quota)
        now = session.start_traffic(traffic)
        if quota == 0:
            session.end_traffic()
            return
        conns = list(session.live)
        for conn in conns:
            conn.set_protocol(traffic)
        traffic.start(conns, now)
        if cfg.stages:
            self._ramp()

    def _ramp(self) -> None:
        """--stages: open or retire connections to this worker's share of the target now."""
        session = self.session
        if session.phase != "traffic":
            return
        cfg = self.config
        t = (self.clock() - session.traffic_started) / _NS
        want = stg.conns_at(cfg.stages, t, self.index, cfg.workers)
        have = len(session.live)
        traffic = session.traffic
        if have < want:
            indices = self.indices
            # At most MAX_CONNECTING a step: the same bound on the burst at the accept queue.
            for _ in range(min(want - have, MAX_CONNECTING)):
                # Connection numbers in turn over this worker's pool (--conns: the peak target).
                index = indices[self.ramp_next % len(indices)]
                self.ramp_next += 1
                conn = self._reopen(index, traffic, ramp=True)
                if conn is not None and not conn.closed:
                    traffic.join(conn)
                if session.phase != "traffic":
                    return
        elif have > want:
            # (only connections already in the traffic: one still connecting goes at a later step)
            up = [conn for conn in session.live if conn.ctx.state == lc.TRAFFIC]
            traffic.retire(up[:have - want])
        if session.phase == "traffic":
            self.loop.call_later(RAMP_STEP, self._ramp)

    # ------------------------------------------------------------ statistics
    def _counts(self) -> tuple:
        """(bytes sent, bytes received) so far, open and closed connections alike."""
        inn, out = self.loop.byte_totals()
        return out, inn

    def _traffic_counts(self) -> tuple:
        """(requests sent, answered) in the traffic so far: the loop's count of its sends, and
        one latency record per answer (read after the latest ``take`` into ``self.hist``)."""
        traffic = self.session.traffic
        sent = traffic.requests_sent() if traffic is not None else 0
        hist = self.hist["latency"]
        return sent, hist.get_total_count() if hist else 0

    def _tick(self) -> None:
        if self.channel is None or self.session.done:
            return
        s = self.stats
        latency = self.rec["latency"].take()
        self.hist["latency"] = st.add_into(self.hist["latency"], latency)
        out, inn = self._counts()
        sent, answered = self._traffic_counts()
        tick = st.Tick(worker=self.index, seq=self.tick_seq, phase=self.phase,
                       established=s.established, open=len(self.session.live), failed=s.failed + s.lost,
                       requests=s.confirm_requests + sent, responses=s.confirm_responses + answered,
                       traffic_responses=answered, bytes_out=out, bytes_in=inn,
                       errors=st.tally_total(s.errors), latency=st.encode(latency), **self._targets())
        self._tell(("tick", tick))
        self._arm_tick()

    def _targets(self) -> dict:
        """--stages: this worker's share of the stages' targets now (before the traffic: 0)."""
        cfg = self.config
        if not cfg.stages:
            return {}
        session = self.session
        t = (self.clock() - session.traffic_started) / _NS if session.traffic_started else 0.0
        rps = stg.rate_at(cfg.stages, t, cfg.share_of(self.index)) if cfg.staged_rate else None
        return {"target_conns": stg.conns_at(cfg.stages, t, self.index, cfg.workers), "target_rps": rps}

    def _final(self) -> st.WorkerStats:
        s = self.stats
        self._store_histograms()
        s.bytes_out, s.bytes_in = self._counts()
        s.traffic_requests, s.traffic_responses = self._traffic_counts()
        s.requests = s.confirm_requests + s.traffic_requests
        s.responses = s.confirm_responses + s.traffic_responses
        traffic = self.session.traffic
        if traffic is not None and hasattr(traffic, "scheduled"):
            s.scheduled = traffic.scheduled
        if traffic is not None and hasattr(traffic, "late"):
            s.late = traffic.late
            s.max_buffered = traffic.max_buffered
        if self.proto.tally:
            # The classes of the confirming replies apart (tallied before the traffic began).
            confirm = self.session.confirm_classes
            if confirm is None:
                confirm = dict(self.proto.tally)
            s.confirm_reply_classes = {k: v for k, v in confirm.items() if v}
            s.reply_classes = {k: v - confirm.get(k, 0) for k, v in self.proto.tally.items()
                               if v - confirm.get(k, 0)}
        return s

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

Connect mode folds these into churn: each slot connects, gets its one reply,
closes and starts over, for the duration.

Nothing is counted per request on the hot path: requests sent are derived
from the bytes each connection handed to the kernel (every request of a run
is the same bytes), responses from the latency histogram's count.
"""

from __future__ import annotations

import collections
import os
import resource
import socket
import time
from typing import Any, Callable, Optional

from socktools import errors, protocol
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.exchange import (ClosedLoop, Confirm, EchoLoop, OpenLoop, Slot,
                                       make_replies, owed)
from socktools.core.loop import Connection, Loop

__all__ = ["run_worker", "MAX_CONNECTING"]

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


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Worker:
    def __init__(self, config: FloodConfig, index: int, channel: Any, epoch_ns: Optional[int],
                 clock: Callable[[], int]) -> None:
        self.config = config
        self.index = index
        self.channel = channel
        self.clock = clock
        self.epoch = clock() if epoch_ns is None else epoch_ns
        self.loop = Loop()
        self.stats = st.WorkerStats(worker=index, conns=config.conns_of(index))
        self.rec = {name: st.Recorder() for name in st.HISTOGRAMS}
        self.hist: dict = {name: None for name in st.HISTOGRAMS}
        self.request = config.request_bytes
        self.req_size = len(self.request)
        self.replies = make_replies(config)
        self.parse = self.replies.parse
        self.read_size = self.replies.read_size
        self.phase = "connect"
        self.done = False
        self.indices = range(index, config.conns, config.workers)
        self.next_i = 0                     # next of self.indices to open
        self.connecting = 0                 # opened, not yet confirmed or failed
        self.pending: collections.deque = collections.deque()   # slots by connect time
        self.live: set = set()              # confirmed connections still open
        self.outstanding = 0                # drain: answers still owed
        self.connect_rate = config.connect_rate_of(index)
        self.connect_started = 0
        self.cycle_quota: Optional[int] = None
        self.tick_seq = 0
        self.traffic_started = 0
        self.cpu_started = 0.0
        self.confirm = Confirm(self)
        self.traffic: Any = None
        self.pacer_timer = None
        self.pump_timer = None
        self._pumping = False
        self._repump = False
        self.drain_started = 0
        self.family = config.family
        self.sources = [self._source_addr(a) for a in config.sources]

    # ------------------------------------------------------------ setup
    def _source_addr(self, host: str) -> tuple:
        return (host, 0, 0, 0) if self.family == socket.AF_INET6 else (host, 0)

    def _setup_socket(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.sources and self.family == socket.AF_INET:
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
        self.connect_started = self.clock()
        if cfg.mode == "connect":
            self.cycle_quota = cfg.requests_of(self.index)
            self._ready()
        else:
            self._pump()
        try:
            self.loop.run(until=lambda: self.done)
        finally:
            self.loop.close()
        return self._final()

    def _ready(self) -> None:
        self.stats.rss_connected = _rss()
        if self.channel is None:
            self._go()
        else:
            self.phase = "ready"
            self._send(("ready", None))

    def _send(self, msg: tuple) -> None:
        try:
            self.channel.send(msg)
        except (OSError, ValueError):
            self._runner_gone()

    def _on_channel(self) -> None:
        try:
            while self.channel is not None and self.channel.poll():
                kind, _ = self.channel.recv()
                if kind == "go":
                    self._go()
                elif kind == "stop":
                    self.stats.stopped_early = True
                    self._stop()
        except (EOFError, OSError):
            self._runner_gone()

    def _runner_gone(self) -> None:
        """The runner died or closed our pipe: finish on our own, quietly."""
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                self.loop.remove_reader(channel.fileno())
            except (OSError, ValueError):
                pass
        self.stats.stopped_early = True
        self._stop()

    def _stop(self) -> None:
        """Stop early (Ctrl-C in the runner): wind down from whatever phase we are in."""
        if self.phase in ("connect", "ready"):
            self.next_i = len(self.indices)
            self.phase = "traffic"
            self.traffic_started = self.clock()
            self.traffic = None
            self.end_traffic()
        elif self.phase == "traffic":
            self.end_traffic()
        elif self.phase == "drain":
            self._close_all()

    def _phase_end(self, name: str, start: Optional[int] = None) -> None:
        self.stats.phases[name] = [self.connect_started if start is None else start, self.clock()]

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
        if self.phase not in ("connect", "traffic") or (self.phase == "traffic" and self.config.mode != "connect"):
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
                due = self.connect_started + int(self.stats.attempted * _NS / self.connect_rate)
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
        s = self.stats
        s.attempted += 1
        slot = Slot(index, self.clock())
        source = self.sources[index % len(self.sources)] if self.sources else None
        self.connecting += 1
        try:
            conn = self.loop.open_connection(self.config.address, self.confirm, family=self.family,
                                             source=source, setup=self._setup_socket, ctx=slot)
        except OSError as exc:
            self.connecting -= 1
            st.add_tally(s.errors, getattr(exc, "phase", "socket"), errors.exception_key(exc))
            s.failed += 1
            return
        if not conn.closed:
            self.pending.append((slot, conn))

    def _sweep(self) -> None:
        """Abort connections not confirmed within the connect timeout."""
        limit = self.clock() - int(self.config.connect_timeout * _NS)
        pending = self.pending
        while pending:
            slot, conn = pending[0]
            if slot.confirmed or conn.closed:
                pending.popleft()
                continue
            if slot.started > limit:
                break
            pending.popleft()
            phase = "connect" if conn.connecting else "recv"
            self._abort(conn, phase, errors.TIMEOUT, TimeoutError(
                f"no reply within the connect timeout ({self.config.connect_timeout:g}s)"))
        if not self.done:
            self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def confirmed(self, conn: Connection, slot: Slot, now: int) -> None:
        s = self.stats
        slot.confirmed = True
        slot.sent = 0
        self.connecting -= 1
        s.connect_bytes_out += conn.bytes_out
        s.connect_bytes_in += conn.bytes_in
        self.rec["first_reply"].record(now - slot.started)
        s.established += 1
        if self.config.mode == "connect":
            s.cycles += 1
            conn.close()
        elif self.phase == "connect":
            self.live.add(conn)
        else:  # confirmed after a stop: not needed any more
            conn.close()
        self._pump_later(0.0)

    def _settled(self) -> None:
        """After connections settle: end the connect phase, or the churn, when all are done."""
        if self._pumping or self.connecting:
            return
        if self.phase == "connect" and self.next_i >= len(self.indices):
            self._phase_end("connect")
            self._ready()
        elif self.config.mode == "connect":
            if self.phase == "drain":
                self._close_all()
            elif (self.phase == "traffic" and self.cycle_quota is not None
                  and self.stats.attempted >= self.cycle_quota):
                self.end_traffic()

    # ------------------------------------------------------------ failures
    def _abort(self, conn: Connection, phase: str, key: str, exc: BaseException) -> None:
        slot = conn.ctx
        if not slot.failed:
            slot.failed = True
            st.add_tally(self.stats.errors, phase, key)
        conn.abort(exc)

    def protocol_error(self, conn: Connection, exc: protocol.ProtocolError) -> None:
        pe = self.stats.protocol_errors
        pe[exc.kind] = pe.get(exc.kind, 0) + 1
        self._abort(conn, "recv", errors.PROTOCOL_ERROR, exc)

    def peer_closed(self, conn: Connection) -> None:
        slot = conn.ctx
        if self.phase == "close" or (self.config.mode == "connect" and slot.confirmed):
            conn.close()
            return
        phase = "recv" if slot.confirmed or self.config.mode == "connect" or slot.sent else "connect"
        self._abort(conn, phase, errors.PEER_CLOSED, ConnectionError("peer closed the connection"))

    def lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
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
            slot.backlog = None
            if was_owed and self.phase == "drain":
                self.answered(was_owed)
            elif self.phase == "traffic" and not self.live and self.config.mode != "connect":
                self.end_traffic()  # every connection is gone: nothing left to measure
            return
        self.connecting -= 1
        s.connect_bytes_out += conn.bytes_out
        s.connect_bytes_in += conn.bytes_in
        if slot.failed:
            s.failed += 1
        else:  # we closed it ourselves before its reply: the run is ending
            s.cancelled += 1
        self._pump_later(0.0)

    # ------------------------------------------------------------ traffic phase
    def _go(self) -> None:
        cfg = self.config
        self.phase = "traffic"
        now = self.traffic_started = self.clock()
        self.cpu_started = time.process_time()
        quota = cfg.requests_of(self.index)
        if cfg.duration is not None:
            self.loop.call_later(cfg.duration, self.end_traffic)
        if cfg.mode == "connect":
            self.connect_started = now
            self._pump()
            return
        if not self.live:  # nothing to send on: no connection was established
            self.traffic = None
            self.end_traffic()
            return
        if cfg.rate is not None:
            self.traffic = OpenLoop(self, quota)
            for conn in self.live:
                conn.set_protocol(self.traffic)
            self.traffic.start(now)
            return
        self.traffic = (EchoLoop if cfg.mode == "echo" else ClosedLoop)(self, quota)
        if quota == 0:
            self.end_traffic()
            return
        for conn in list(self.live):
            conn.set_protocol(self.traffic)
            if self.traffic.left > 0 and not conn.closed:
                self.traffic.send_first(conn, now)

    def answered(self, n: int = 1) -> None:
        """``n`` requests were answered (or lost) during the drain."""
        self.outstanding -= n
        if self.outstanding <= 0 and self.phase == "drain":
            self._close_all()

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
            self.traffic.left = 0
        if self.pacer_timer is not None:
            self.pacer_timer.cancel()
            self.pacer_timer = None
        self.drain_started = now
        self.outstanding = sum(owed(conn.ctx) for conn in self.live)
        if self.config.mode == "connect":
            self.outstanding = self.connecting
        if self.outstanding <= 0:
            self._close_all()
        else:
            self.loop.call_later(self.config.drain_timeout, self._close_all)

    def _close_all(self) -> None:
        if self.phase == "close":
            return
        s = self.stats
        if self.phase == "drain":
            s.phases["drain"] = [self.drain_started, self.clock()]
        self.phase = "close"
        start = self.clock()
        s.unanswered = sum(owed(conn.ctx) for conn in self.live)
        s.open_at_end = len(self.live)
        for conn in list(self.loop.connections.values()):
            conn.close() if conn.ctx.confirmed else conn.abort()
        s.phases["close"] = [start, self.clock()]
        self.done = True

    # ------------------------------------------------------------ statistics
    def _counts(self) -> tuple:
        """(bytes sent, bytes received) so far, open and closed connections alike."""
        inn, out = self.loop.byte_totals()
        return out, inn

    def _arm_tick(self) -> None:
        """Tick k is due at epoch + k * interval in every worker; a missed one is skipped."""
        step = int(self.config.interval * _NS)
        now = self.clock()
        self.tick_seq = max(self.tick_seq + 1, (now - self.epoch) // step + 1)
        due = self.epoch + self.tick_seq * step
        self.loop.call_later(max(0.0, (due - now) / _NS), self._tick)

    def _tick(self) -> None:
        if self.channel is None or self.done:
            return
        s = self.stats
        latency = self.rec["latency"].take()
        self.hist["latency"] = st.add_into(self.hist["latency"], latency)
        out, inn = self._counts()
        total_lat = self.hist["latency"].get_total_count() if self.hist["latency"] else 0
        tick = st.Tick(worker=self.index, seq=self.tick_seq, phase=self.phase,
                       established=s.established, open=len(self.live), failed=s.failed + s.lost,
                       requests=out // self.req_size, responses=s.established + total_lat,
                       traffic_responses=total_lat, bytes_out=out, bytes_in=inn,
                       errors=st.tally_total(s.errors), latency=st.encode(latency))
        self._send(("tick", tick))
        self._arm_tick()

    def _final(self) -> st.WorkerStats:
        s = self.stats
        for name, rec in self.rec.items():
            self.hist[name] = st.add_into(self.hist[name], rec.take())
            blob = st.encode(self.hist[name])
            if blob:
                s.histograms[name] = blob
        s.bytes_out, s.bytes_in = self._counts()
        s.requests = s.bytes_out // self.req_size
        lat = self.hist["latency"]
        s.traffic_responses = lat.get_total_count() if lat else 0
        s.responses = s.established + s.traffic_responses
        s.traffic_requests = s.requests - s.confirm_requests
        if self.traffic is not None and hasattr(self.traffic, "scheduled"):
            s.scheduled = self.traffic.scheduled
        return s

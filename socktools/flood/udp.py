"""One flood worker over UDP: its share of N connected datagram sockets, every datagram
accounted for.

The TCP worker (:mod:`socktools.flood.worker`) counts bytes on streams; here every request
is one datagram carrying flood's header (:mod:`socktools.wire.datagram`: socket number,
sequence number, send time), an echo server sends it back as it is, and each socket's
:class:`~socktools.wire.datagram.Ledger` says what every reply was -- answered, late,
duplicated, reordered, truncated, foreign -- and which datagrams were lost (no reply within
``reply_timeout``).  The worker speaks the runner's protocol like the TCP worker ("ready",
"go", "stop", ticks, the final :class:`~socktools.flood.stats.WorkerStats`), so the runner,
the intervals and the report are flood's own.

* closed loop (the default): one datagram in flight per socket; the next leaves when the
  reply is in or the datagram was declared lost;
* open loop (``--rate``): datagrams leave on a fixed schedule, round-robin over the sockets,
  whatever came back (UDP never pushes back: a sender is never blocked by its receiver).

"Connected" sockets (``connect()`` on a datagram socket) exchange with one peer only: the
kernel drops datagrams from anyone else, and an ICMP port-unreachable for a datagram we sent
comes back as ECONNREFUSED on the next call -- tallied, and explained by ``explain``.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any, Callable, Optional

from socktools import errors
from socktools.flood import stats as st
from socktools.flood.channel import RunnerLink
from socktools.flood.config import FloodConfig
from socktools.kernel.udpstats import socket_drops
from socktools.wire import datagram as dg

__all__ = ["run_udp_worker", "READ_BATCH", "PACE_STEP"]

#: Datagrams read from one socket per readiness event before the others get their turn: a
#: socket flooded with replies (open loop) must not starve the timers and the other sockets.
READ_BATCH = 64

#: The open loop's pacer wakes this often and sends what fell due (its own count, so a late
#: wake-up sends more, never fewer): 1 ms keeps a 100,000/s schedule within 100 datagrams.
PACE_STEP = 0.001

#: How often datagrams past their reply timeout are declared lost (at most; a short timeout
#: is checked at a quarter of itself).  50 ms bounds how late a loss is noticed.
SWEEP_MAX = 0.05

_NS = 1_000_000_000
_read = os.read
_write = os.write


def run_udp_worker(config: FloodConfig, worker_index: int, channel: Any = None, *,
                   epoch_ns: Optional[int] = None,
                   clock: Callable[[], int] = time.perf_counter_ns) -> st.WorkerStats:
    """Run worker ``worker_index`` of a ``--udp`` flood to the end; its statistics."""
    return _UdpWorker(config, worker_index, channel, epoch_ns, clock).run()


class _Socket:
    __slots__ = ("sock", "fd", "ledger", "index")

    def __init__(self, sock: socket.socket, ledger: dg.Ledger, index: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.ledger = ledger
        self.index = index


class _UdpWorker(RunnerLink):
    """One worker's datagram sockets, their ledgers, the pacer and the sweep."""

    def __init__(self, config: FloodConfig, index: int, channel: Any, epoch_ns: Optional[int],
                 clock: Callable[[], int]) -> None:
        self._attach(config, index, channel, epoch_ns, clock)
        self.rec = {name: st.Recorder() for name in st.HISTOGRAMS}
        self.latency = self.rec["latency"]
        self.socks: list = []
        self.phase = "connect"
        self.quota: Optional[int] = config.requests_of(index)
        self.timeout_ns = int(config.reply_timeout * _NS)
        self.closed_loop = config.rate is None
        # Your own bytes (--mode raw, line): no header of ours, so one datagram in flight per
        # socket, its reply whatever comes next (wire.datagram.Unstamped); else flood's header.
        self.unstamped = config.mode != "echo"
        if self.unstamped:
            import re

            from socktools import wire
            from socktools.wire.options import reply_match
            self.make = wire.build(config.udp_request_spec).request
            pattern = reply_match(config.wire)
            self.match = re.compile(pattern, re.DOTALL) if pattern is not None else None
        self.traffic_started = 0
        self.cpu_started = 0.0
        self.drain_started = 0
        self.last_reply = 0              # when the latest reply of any kind arrived
        self.scheduled = 0               # open loop: datagrams due so far
        self.next_sock = 0               # open loop: round-robin
        self.bytes_out = self.bytes_in = 0
        self.client_drops = 0            # replies the kernel dropped at our own sockets (sk_drops)
        self.done = False

    # ------------------------------------------------------------ the run
    def run(self) -> st.WorkerStats:
        s = self.stats
        s.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        started = self.clock()
        if self.channel is not None:
            self.loop.add_reader(self.channel.fileno(), self._on_channel)
            if self.config.interval:
                self._arm_tick()
        for i in range(self.index, self.config.conns, self.config.workers):
            self._open(i)
        s.phases["connect"] = [started, self.clock()]
        if self.channel is None:
            self._go()
        else:
            self.phase = "ready"
            self._tell(("ready", None))
        self.loop.call_later(self._sweep_every(), self._sweep)
        try:
            self.loop.run(until=lambda: self.done)
        finally:
            for sk in self.socks:
                sk.sock.close()
            self.loop.close()
        return self._final()

    def _open(self, i: int) -> None:
        """Socket number ``i``: created, bound to its source, connected to the target."""
        s = self.stats
        cfg = self.config
        s.attempted += 1
        try:
            sock = socket.socket(cfg.family, socket.SOCK_DGRAM)
        except OSError as exc:
            st.add_tally(s.errors, errors.SOCKET, errors.exception_key(exc))
            s.failed += 1
            return
        try:
            sock.setblocking(False)
            source = cfg.source_of(i)
            if source is not None:
                sock.bind((source, 0))
            sock.connect(cfg.address)
        except OSError as exc:
            sock.close()
            st.add_tally(s.errors, errors.CONNECT, errors.exception_key(exc))
            s.failed += 1
            return
        if self.unstamped:
            ledger = dg.Unstamped(i, lambda seq, i=i: self.make(seq, i), self.timeout_ns, self.match)
        else:
            ledger = dg.Ledger(i, cfg.size, self.timeout_ns)
        sk = _Socket(sock, ledger, i)
        self.socks.append(sk)
        self.loop.add_reader(sk.fd, lambda sk=sk: self._readable(sk))
        s.connected += 1
        s.established += 1

    def _stop(self) -> None:
        if self.phase in ("connect", "ready"):
            self.phase = "traffic"
            self.traffic_started = self.clock()
            self.cpu_started = time.process_time()
            self._end_traffic()
        elif self.phase == "traffic":
            self._end_traffic()
        elif self.phase == "drain":
            self._close()

    # ------------------------------------------------------------ traffic
    def _go(self) -> None:
        if self.phase not in ("connect", "ready"):
            return
        self.phase = "traffic"
        self.traffic_started = self.clock()
        self.cpu_started = time.process_time()
        cfg = self.config
        if not self.socks or self.quota == 0:
            self._end_traffic()
            return
        if cfg.duration is not None:
            self.loop.call_later(cfg.duration, self._end_traffic)
        if self.closed_loop:
            for sk in list(self.socks):
                if self.phase != "traffic":
                    break
                self._send_datagram(sk)
        else:
            self._pace()

    def _send_datagram(self, sk: _Socket) -> bool:
        """One datagram on ``sk`` now, if the quota allows; False once it is spent."""
        if self.quota is not None:
            if self.quota <= 0:
                self._end_traffic()
                return False
            self.quota -= 1
        ledger = sk.ledger
        data = ledger.send(self.clock())
        try:
            n = _write(sk.fd, data)
        except (BlockingIOError, InterruptedError):
            ledger.refuse()       # our own send buffer is full: it never left
            return True
        except OSError as exc:
            ledger.refuse()
            self._error(errors.SEND, exc)
            return True
        self.bytes_out += n
        if self.quota == 0 and self.closed_loop is False:
            self._end_traffic()
        return True

    def _pace(self) -> None:
        """Open loop: every datagram due by now, round-robin over the sockets."""
        if self.phase != "traffic":
            return
        elapsed = self.clock() - self.traffic_started
        due = int(elapsed * self.config.rate_of(self.index) / _NS) + 1
        socks = self.socks
        while self.scheduled < due and self.phase == "traffic":
            self.scheduled += 1
            sk = socks[self.next_sock % len(socks)]
            self.next_sock += 1
            if not self._send_datagram(sk):
                return
        if self.phase == "traffic":
            self.loop.call_later(PACE_STEP, self._pace)

    def _readable(self, sk: _Socket) -> None:
        ledger = sk.ledger
        fd = sk.fd
        for _ in range(READ_BATCH):
            try:
                data = _read(fd, dg.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ECONNREFUSED: an ICMP port unreachable for a datagram we sent (nobody listens
                # there); the datagram it answers is lost, and declared so by its timeout.
                self._error(errors.RECV, exc)
                continue
            now = self.last_reply = self.clock()
            self.bytes_in += len(data)
            outcome = ledger.receive(data, now)
            if outcome == "answered":
                self.latency.record(ledger.latency_ns)
                if self.closed_loop and self.phase == "traffic":
                    self._send_datagram(sk)
        self._check_drained()

    def _sweep_every(self) -> float:
        return min(SWEEP_MAX, self.config.reply_timeout / 4)

    def _sweep(self) -> None:
        """Declare lost what is past its timeout; in the closed loop, send the next one."""
        if self.done:
            return
        now = self.clock()
        for sk in self.socks:
            if sk.ledger.expire(now) and self.closed_loop and self.phase == "traffic" and not sk.ledger.in_flight:
                self._send_datagram(sk)
        self._check_drained()
        if not self.done:
            self.loop.call_later(self._sweep_every(), self._sweep)

    def _error(self, phase: str, exc: OSError) -> None:
        st.add_tally(self.stats.errors, phase, errors.exception_key(exc))

    # ------------------------------------------------------------ the end
    def _end_traffic(self) -> None:
        if self.phase != "traffic":
            return
        s = self.stats
        now = self.clock()
        st.traffic_ended(s, self.traffic_started, now, self.cpu_started)
        self.phase = "drain"
        self.drain_started = now
        # A datagram in flight gets its whole reply timeout (bounded by the drain timeout):
        # after that it is lost, whatever the drain waits for.
        self.loop.call_later(min(self.config.drain_timeout, self.config.reply_timeout) + 0.001, self._close)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.phase == "drain" and not any(sk.ledger.in_flight for sk in self.socks):
            self._close()

    def _close(self) -> None:
        if self.phase == "close":
            return
        s = self.stats
        now = self.clock()
        if self.phase == "drain":
            # Up to the last reply: the time spent waiting for datagrams that never came back
            # would dilute every rate of the run (they are counted lost instead).
            s.phases["drain"] = [self.drain_started, max(self.drain_started, self.last_reply)]
        self.phase = "close"
        for sk in self.socks:
            sk.ledger.expire(now + self.timeout_ns + 1)   # still waiting at the end: lost
            self.client_drops += socket_drops(sk.sock) or 0
        s.phases["close"] = [now, self.clock()]
        self.done = True

    # ------------------------------------------------------------ ticks and the result
    def _totals(self) -> dict:
        out = dict.fromkeys(dg.COUNTS, 0)
        for sk in self.socks:
            for name, n in sk.ledger.counts().items():
                out[name] += n
        return out

    def _tick(self) -> None:
        if self.channel is None or self.done:
            return
        s = self.stats
        latency = self.latency.take()
        self.hist["latency"] = st.add_into(self.hist["latency"], latency)
        c = self._totals()
        answered = self.hist["latency"].get_total_count() if self.hist["latency"] else 0
        tick = st.Tick(worker=self.index, seq=self.tick_seq, phase=self.phase, established=s.established,
                       open=len(self.socks), failed=s.failed, requests=c["sent"], responses=answered,
                       traffic_responses=answered, bytes_out=self.bytes_out, bytes_in=self.bytes_in,
                       errors=st.tally_total(s.errors) + c["lost"], latency=st.encode(latency))
        self._tell(("tick", tick))
        self._arm_tick()

    def _final(self) -> st.WorkerStats:
        s = self.stats
        self._store_histograms()
        c = self._totals()
        c["client_drops"] = self.client_drops
        if self.unstamped:   # replies that did not match --reply-match: answers that failed
            c["mismatched"] = mismatched = sum(sk.ledger.mismatched for sk in self.socks)
            if mismatched:
                s.reply_failures.setdefault("wrong-reply", {})["did not match --reply-match"] = mismatched
        s.datagrams = c
        s.bytes_out, s.bytes_in = self.bytes_out, self.bytes_in
        s.traffic_requests = s.requests = c["sent"]
        s.traffic_responses = s.responses = c["answered"]
        s.unanswered = c["lost"]
        if c["lost"]:     # a failure of the run, like an unanswered TCP request (--threshold errors==0)
            st.add_tally(s.errors, errors.RECV, errors.DATAGRAM_LOST, c["lost"])
        s.open_at_end = len(self.socks)
        if self.config.rate is not None:
            s.scheduled = self.scheduled
        return s


def server_drops(address: Any) -> Optional[int]:
    """Datagrams the kernel dropped at the target's UDP socket(s) so far (their ``sk_drops``,
    summed: a SO_REUSEPORT server has one per worker, socat one per client it forked for),
    read with sock_diag; None when the target is not on this machine's loopback or the socket
    table cannot say.  Read before and after a run, the difference is what the server's full
    receive buffer cost it."""
    from socktools.addresses import is_loopback
    from socktools.kernel.udpstats import bound_sockets
    host, port = address[0], address[1]
    if not is_loopback(host):
        return None
    try:
        entries = bound_sockets(host, port)
    except Exception:   # no netlink, no /proc: the attribution says "not known"
        return None
    drops = [e.skmem.drops for e in entries if e.skmem is not None]
    return sum(drops) if drops else None


def snapshot(config: FloodConfig) -> dict:
    """The kernel's counts before a run: the target's socket drops, the machine's UDP counters."""
    from socktools.kernel.udpstats import read_counters
    return {"server_drops": server_drops(config.address), "machine": read_counters()}


def attribute_losses(config: FloodConfig, grams: dict, before: dict) -> None:
    """Add to the merged counts ``grams`` where the lost datagrams were dropped, from the
    kernel's counts now against ``before``: ``server_drops`` (the target's receive buffer
    was full; None: not known), ``client_drops`` (our sockets' buffers, for replies; counted
    by the workers) and the split of ``lost`` (:func:`socktools.kernel.udpstats.attribute`)."""
    from socktools.kernel.udpstats import attribute, read_counters
    after = server_drops(config.address)
    server = None if after is None or before["server_drops"] is None else after - before["server_drops"]
    grams["server_drops"] = server
    split = attribute(grams.get("lost", 0), receiver_drops=(server or 0) + grams.get("client_drops", 0),
                      before=before["machine"], after=read_counters() if before["machine"] else None)
    grams["lost_at_receive_buffer"] = split.receiver_buffer
    grams["lost_unexplained"] = split.unexplained
    grams["machine_rcvbuf_errors"] = split.machine_rcvbuf_errors
    grams["machine_sndbuf_errors"] = split.machine_sndbuf_errors

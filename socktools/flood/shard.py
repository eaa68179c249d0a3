"""The Dask side of ``flood --cluster``: one flood shard run as one task, in-process.

A shard is exactly what a local flood worker process runs --
:func:`socktools.flood.worker.run_worker` -- given a channel that speaks Dask
instead of a pipe.  The worker expects a duplex channel with ``fileno()``
(registered in its poller), ``poll()``, ``recv()`` and ``send()``;
:class:`DaskChannel` provides that over Dask's scheduler-held
coordination objects:

* up, a :class:`distributed.Queue` shared by all shards and read by the
  flood client: ``["ready", i, None]``, ``["tick", i, {...}]`` (queue items
  must be msgpack-encodable, so a Tick travels as a dict);
* control, written by the client and read by every shard: the "go" instant
  (a :class:`distributed.Variable` holding wall-clock nanoseconds, then a
  :class:`distributed.Event` set), and a "stop" Event.  Events, not queues:
  a queue ``get`` that times out is logged as an error by the scheduler,
  while ``Event.wait(timeout)`` just returns False.

Every one of these calls blocks on a round trip to the scheduler, so none runs
on the shard's event loop: a *control* thread waits on the events and a
*sender* thread empties an outbox into the up queue.  The control thread hands
messages to the loop through a local socketpair (its ``fileno()``), and holds
"go" until the wall-clock instant the client broadcast: monotonic clocks mean
nothing across hosts, wall clocks agree as well as NTP keeps them.

The shard's monotonic times (phases, tick epoch) are converted to and from
the wall clock here, so that shards on different hosts share one timeline.
Only this module and :mod:`socktools.flood.cluster` import ``distributed``.
"""

from __future__ import annotations

import collections
import os
import queue
import resource
import signal
import socket
import threading
import time
from dataclasses import asdict
from typing import Any, Optional

__all__ = ["DaskChannel", "run_shard", "names", "probe", "dask_setup", "host_cpu"]

#: How long one wait on a Dask Event lasts.  A wait returns the moment its event
#: is set, so this bounds only how often the wait is re-issued (a scheduler round
#: trip each, and a wake-up of the worker's event loop beside the shard), how soon
#: the thread notices the shard ended, and -- before "go" -- how late a "stop"
#: that came first is seen.
CONTROL_POLL = 1.0


def _thread_cpu() -> float:
    """CPU seconds of the calling thread (the shard's loop), not the whole Dask worker."""
    try:
        ru = resource.getrusage(resource.RUSAGE_THREAD)
    except (AttributeError, OSError, ValueError):   # not Linux: the whole process
        return time.process_time()
    return ru.ru_utime + ru.ru_stime


def host_cpu() -> Optional[tuple]:
    """``(busy, total)`` jiffies of all CPUs from /proc/stat, or None (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    total = sum(fields[:8])                                    # guest time is inside user already
    return total - idle, total


class DaskChannel:
    """The channel :func:`run_worker` expects, over two Dask queues (see the module note)."""

    def __init__(self, up: Any, go_event: Any, go_at: Any, stop_event: Any, shard: int) -> None:
        self.shard = shard
        self._up = up
        self._go_event = go_event
        self._go_at = go_at
        self._stop_event = stop_event
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._inbox: collections.deque = collections.deque()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ended = threading.Event()
        self.go_late_ns: Optional[int] = None     # how late "go" reached the loop (clock skew, network)
        self.cpu_at_go: Optional[tuple] = None
        self.go_wall_ns: Optional[int] = None
        self._threads = [threading.Thread(target=self._control_loop, name=f"flood-shard-{shard}-control",
                                          daemon=True),
                         threading.Thread(target=self._send_loop, name=f"flood-shard-{shard}-send",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ what run_worker calls
    def fileno(self) -> int:
        return self._r.fileno()

    def poll(self) -> bool:
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        return bool(self._inbox)

    def recv(self) -> tuple:
        return self._inbox.popleft()

    def send(self, msg: tuple) -> None:
        kind, payload = msg
        if kind == "tick":
            payload = asdict(payload)
        self._outbox.put([kind, self.shard, payload])

    # ------------------------------------------------------------ the threads
    def _deliver(self, msg: tuple) -> None:
        self._inbox.append(msg)
        try:
            self._w.send(b"!")
        except OSError:
            pass

    def _control_loop(self) -> None:
        try:
            self._await_go()
            while not self._ended.is_set():
                if self._stop_event.wait(timeout=CONTROL_POLL):
                    self._deliver(("stop", None))
                    return
        except Exception:     # the client or the scheduler went away: finish on our own
            if not self._ended.is_set():
                self._deliver(("stop", None))

    def _await_go(self) -> None:
        while not self._ended.is_set():
            if self._go_event.wait(timeout=CONTROL_POLL):
                instant = self._go_at.get(timeout=CONTROL_POLL * 10)
                delay = (instant - time.time_ns()) / 1e9
                if delay > 0:
                    self._ended.wait(delay)
                self.go_wall_ns = time.time_ns()
                self.go_late_ns = max(0, self.go_wall_ns - instant)
                self.cpu_at_go = host_cpu()
                self._deliver(("go", None))
                return
            if self._stop_event.is_set():   # stopped before traffic started
                self._deliver(("stop", None))
                self._ended.wait()
                return

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            try:
                self._up.put(item)
            except Exception:     # the client is gone; the shard still finishes on its own
                pass

    def close(self) -> None:
        """Flush what is queued for the client, then let both threads end, close the socketpair.

        The sender is joined (its last messages must leave before the task returns); the
        control thread, a daemon, ends by itself within :data:`CONTROL_POLL`.
        """
        self._ended.set()
        self._outbox.put(None)
        self._threads[1].join(timeout=30)
        self._r.close()
        self._w.close()


def run_shard(config: Any, index: int, prefix: str, epoch_wall_ns: int) -> dict:
    """The Dask task: run shard ``index`` of ``config`` here, in this thread; return what it did.

    ``prefix`` names the run's Dask objects (see :func:`names`); ``epoch_wall_ns`` aligns the ticks of every shard on the wall clock.
    Returns ``{"stats": WorkerStats, "host", "pid", "worker", "cpu", "host_cpu", "go_late_ms"}``
    with the stats' phase times moved onto the wall clock (nanoseconds).
    """
    from distributed import Event, Queue, Variable, get_worker
    from socktools.flood.worker import run_worker

    try:
        worker = get_worker()
    except ValueError:
        worker = None
    address = worker.address if worker is not None else None
    n = names(prefix)
    channel = DaskChannel(Queue(n["up"]), Event(n["go"]), Variable(n["go_at"]), Event(n["stop"]), index)
    cpu0 = _thread_cpu()
    offset = time.time_ns() - time.perf_counter_ns()
    _profiler(worker, pause=True)
    if config.rate is not None:   # the pacer's lateness is measurement error: 1 us timer slack
        from socktools.kernel.capacity import tighten_timer_slack
        tighten_timer_slack()     # per thread: this shard's
    try:
        stats = run_worker(config, index, channel, epoch_ns=epoch_wall_ns - offset)
    finally:
        cpu = _thread_cpu() - cpu0
        end_cpu = host_cpu()
        _profiler(worker, pause=False)
        channel.close()
    offset = time.time_ns() - time.perf_counter_ns()
    stats.phases = {name: [a + offset, b + offset] for name, (a, b) in stats.phases.items()}
    busy = None
    if channel.cpu_at_go and end_cpu and end_cpu[1] > channel.cpu_at_go[1]:
        busy = (end_cpu[0] - channel.cpu_at_go[0]) / (end_cpu[1] - channel.cpu_at_go[1])
    return {"stats": stats, "host": socket.gethostname(), "pid": os.getpid(), "worker": address,
            "cpu": cpu, "host_cpu_busy": busy, "cpus": os.cpu_count() or 1,
            "go_late_ms": None if channel.go_late_ns is None else channel.go_late_ns / 1e6}


_paused_lock = threading.Lock()
_paused: dict = {}     # id(worker) -> shards running on it


def _profiler(worker: Any, pause: bool) -> None:
    """Pause the Dask worker's statistical profiler while shards run on it; resume after.

    It samples every thread's stack 100 times a second (distributed.worker.profile.interval,
    10 ms), taking the GIL from the shard each time: jitter in the very latencies flood measures.
    """
    callbacks = [worker.periodic_callbacks.get(k) for k in ("profile", "profile-cycle")] if worker else []
    callbacks = [pc for pc in callbacks if pc is not None]
    if not callbacks:
        return
    with _paused_lock:
        n = _paused.get(id(worker), 0) + (1 if pause else -1)
        _paused[id(worker)] = n
        if n == (1 if pause else 0):   # the first shard in pauses, the last one out resumes
            for pc in callbacks:
                worker.loop.add_callback(pc.stop if pause else pc.start)


def names(prefix: str) -> dict:
    """The Dask objects of one run, by name: shared by the client and every shard."""
    return {"up": f"{prefix}-up", "go": f"{prefix}-go", "go_at": f"{prefix}-go-at",
            "stop": f"{prefix}-stop"}


def probe() -> dict:
    """Run on every Dask worker before the run: who it is, and its open-file limit (raised).

    Raising RLIMIT_NOFILE here is the load host's equivalent of what the flood
    command does for itself; the change is returned so that the client says it.
    """
    from socktools.kernel import capacity
    change = capacity.raise_nofile()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        ports = hi - lo + 1
    except (OSError, ValueError):
        ports = None
    return {"host": socket.gethostname(), "pid": os.getpid(), "cpus": os.cpu_count() or 1,
            "fd_soft": soft, "fd_hard": hard, "ports": ports,
            "raised": change.line if change else None}


def dask_setup(worker: Any) -> None:
    """Worker preload (``--cluster local:N``): ignore SIGINT in the Dask worker processes.

    A Ctrl-C at the terminal reaches the whole process group, LocalCluster's
    workers included; only the flood client decides what it means (stop every
    shard, then report), exactly as flood's own worker processes ignore it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

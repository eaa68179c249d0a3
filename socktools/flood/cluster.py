"""``flood --cluster``: flood's worker shards as tasks on a Dask cluster.

``--cluster tcp://HOST:8786`` uses an existing cluster (``dask scheduler``
plus ``dask worker`` on each load host, or any Dask deployment);
``--cluster local:N`` starts a ``LocalCluster`` of N loopback-only processes
to try it on one machine.  The run, client side:

1. *probe* every Dask worker (host, CPUs, its open-file limit, raised as far
   as that process may -- and said);
2. *plan* as a local run does (:func:`socktools.flood.limits.plan`), one
   shard per Dask worker thread by default; each shard is pinned to one
   worker, so a lost worker's shard is never re-run elsewhere mid-run;
3. *submit* one task per shard (:func:`socktools.flood.shard.run_shard`:
   the same :func:`run_worker` a local worker process runs, in-process);
4. *supervise*: shards report "ready" and ticks through a Dask queue; when
   all are ready, "go" is broadcast as one wall-clock instant slightly ahead
   (hosts need NTP); ticks merge into interval records exactly as in a local
   run (:class:`~socktools.flood.intervals.Intervals`); Ctrl-C broadcasts
   "stop" and the report still comes; a Dask worker that disappears is
   reported with its shard's last interval, and the run goes on without it;
5. *merge* the shards' final statistics (HdrHistograms added) and add the
   per-host breakdown.

Dask is optional (the ``dask`` extra, :mod:`socktools.optional`): ``distributed`` is
imported only here and in :mod:`.shard`, and only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from socktools.flood import limits
from socktools.flood import stats as st
from socktools.flood.cluster_run import ClusterRun, go_warnings, hosts_of
from socktools.flood.config import parse_cluster
from socktools.flood.result import FloodError, FloodRefused, FloodResult, generator_warnings
from socktools.flood.own_server import embedded_server
from socktools.optional import hint

__all__ = ["ClusterUnavailable", "ClusterResult", "run_cluster", "dask_installed", "INSTALL_HINT"]

INSTALL_HINT = hint("dask", "--cluster")

#: Dask settings for the LocalCluster flood starts (a cluster of one's own is configured by its
#: owner).  Shards run beside these in the same processes, and on a load generator every
#: wake-up of Dask's own event loops takes CPU -- and the GIL -- from them: the loop-health
#: tick (20 ms by default) and the system monitor (500 ms) wake less often; no statistical
#: profiler (10 ms stack samples) and no work stealing (shards are pinned to their workers).
LOCAL_CONFIG = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
}
#: Tick interval when the user asked for none: a lost shard is reported with
#: figures at most this old, and the client sees progress while it waits.
DEFAULT_TICK = 1.0
#: Connecting to a scheduler (a Client's own default is 30 s: too long to say "unreachable").
CONNECT_TIMEOUT = 10.0


class ClusterUnavailable(FloodError):
    """Dask is not installed (:data:`INSTALL_HINT`)."""


def dask_installed() -> bool:
    """Is Dask's ``distributed`` importable?"""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _require_dask() -> None:
    if not dask_installed():
        raise ClusterUnavailable(INSTALL_HINT)


@dataclass
class ClusterResult(FloodResult):
    """A flood result plus the cluster: where the shards ran, per host, and who was lost."""

    cluster: dict = field(default_factory=dict)   # {"scheduler", "local", "workers", "threads"}
    hosts: list = field(default_factory=list)     # per-host breakdown (see _hosts)
    lost: list = field(default_factory=list)      # shards whose Dask worker disappeared


@contextlib.contextmanager
def _client(kind: str, value: Any, interrupts: "_Interrupts"):
    import dask
    from distributed import Client, LocalCluster
    if kind == "local":
        # Loopback only, no dashboard; one thread per process so each shard has
        # a process (and a GIL) to itself.  memory_limit=0: the nanny must not
        # kill a load shard for holding the connections it was asked to hold.
        with dask.config.set(LOCAL_CONFIG), warnings.catch_warnings():
            # With no dashboard the scheduler still serves /health: on a free loopback port
            # (scheduler_kwargs overrides LocalCluster's default of 8787, which another
            # cluster may hold -- distributed then warns and moves; the filter is for older ones).
            warnings.filterwarnings("ignore", message="Port 8787 is already in use")
            try:
                cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, memory_limit=0,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                       silence_logs=logging.CRITICAL,
                                       preload=["socktools.flood.shard"])
            except Exception as exc:
                # A terminal's Ctrl-C reaches the whole process group: a worker process
                # still starting (its preload not yet run) dies of it, and the start fails.
                if interrupts.count:
                    raise KeyboardInterrupt from None
                raise FloodError(f"could not start a LocalCluster of {value} processes: "
                                 f"{type(exc).__name__}: {exc}") from None
            with cluster, Client(cluster) as client:
                yield client, cluster.scheduler_address
            return
    try:
        client = Client(value, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise FloodError(f"cannot reach the Dask scheduler at {value}: {exc}") from None
    with client:
        yield client, value


class _Interrupts:
    """Ctrl-C (and SIGTERM, which means the same to flood) counted from the start of a cluster
    run, never raised inside Dask's own calls.

    A KeyboardInterrupt in the middle of starting a LocalCluster or of a scheduler round trip
    leaves Dask half-done (and a traceback); instead the count is looked at between steps:
    before traffic, one means "do not start" (:meth:`check`); during it, "stop every shard";
    a second one, "stop waiting for them".  ``signal`` is the first signal that came.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.count = 0
        self.signal: Optional[int] = None
        self._old: dict = {}

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        self.count += 1
        if self.signal is None:
            self.signal = signum

    def check(self) -> None:
        if self.count:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _placement(workers: dict, shards: int) -> dict:
    """Shard -> Dask worker address: round-robin over the workers' threads."""
    slots = []
    most = max(w.get("nthreads", 1) for w in workers.values())
    for k in range(most):
        slots += [addr for addr in sorted(workers) if workers[addr].get("nthreads", 1) > k]
    return {i: slots[i] for i in range(shards)}


def run_cluster(config: Any, *, on_event: Optional[Callable[[dict], None]] = None, force: bool = False) -> ClusterResult:
    """:func:`socktools.flood.runner.run_flood` for ``config.cluster``; same events, plus
    ``{"event": "cluster", ...}`` once connected and ``{"event": "lost", ...}`` per lost shard."""
    _require_dask()
    emit = on_event or (lambda event: None)
    kind, value = parse_cluster(config.cluster)
    started = time.time()
    t0 = time.monotonic()
    with _Interrupts() as interrupts, _client(kind, value, interrupts) as (client, scheduler):
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if not workers:
            raise FloodError(f"the Dask cluster at {scheduler} has no workers")
        probes = client.run(_probe_fn())
        threads = sum(w.get("nthreads", 1) for w in workers.values())
        shards = config.workers if config.workers_chosen else threads
        if shards > threads:
            raise FloodError(f"--workers {shards} is more shards than the cluster's {threads} worker "
                             f"thread(s): the rest would queue behind the first ones (the start "
                             f"barrier would never open); use at most {threads}, or add Dask workers")
        info = {"scheduler": scheduler, "local": kind == "local", "workers": len(workers),
                "threads": threads}
        emit({"event": "cluster", **info, "raised": sorted({(p["host"], p["raised"]) for p in
                                                             probes.values() if p["raised"]})})
        plan = limits.plan(replace(config, workers=shards))
        placement = _placement(workers, plan.config.active_workers)
        plan = replace(plan, problems=plan.problems + _host_problems(plan.config, placement, probes))
        if getattr(plan, "refusals", ()) and not force:
            raise FloodRefused(plan)
        emit({"event": "plan", "plan": plan})
        cfg = replace(plan.config, interval=plan.config.interval or DEFAULT_TICK)
        interrupts.check()
        with embedded_server(cfg, emit) as (cfg, server_info):
            interrupts.check()
            run = ClusterRun(client, cfg, placement, emit, interrupts)
            run.execute()
    totals = st.merge(run.policy.finals.values())
    result = ClusterResult(config=replace(cfg, interval=config.interval), plan=plan, totals=totals,
                           server=server_info, stopped_early=run.interrupted or totals.stopped_early,
                           crashed=run.policy.crashed, started=started, elapsed=time.monotonic() - t0,
                           intervals=run.policy.intervals, epoch_ns=run.epoch_ns,
                           stop_signal=interrupts.signal,
                           cluster=info, hosts=hosts_of(run), lost=run.lost)
    result.warnings = generator_warnings(result) + go_warnings(run)
    return result


def _probe_fn():
    from socktools.flood.shard import probe
    return probe


def _host_problems(cfg: Any, placement: dict, probes: dict) -> tuple:
    """Per Dask worker process: its shards' connections against its own open-file limit."""
    need: dict = {}
    for shard, addr in placement.items():
        need[addr] = need.get(addr, 0) + cfg.conns_of(shard)
    out = []
    for addr, conns in sorted(need.items()):
        p = probes.get(addr)
        if p and conns + limits.FD_RESERVE > p["fd_soft"]:
            out.append(f"Dask worker {addr} on {p['host']} holds {conns:,} connections but its "
                       f"open-file limit is {p['fd_soft']:,} (hard {p['fd_hard']:,}): expect EMFILE; "
                       f"start it with a higher `ulimit -n`, or add workers")
    return tuple(out)

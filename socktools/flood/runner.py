"""Run a flood: plan against the limits, start the embedded server if needed, spawn the
workers, coordinate their phases, collect their statistics, merge them exactly.

Workers are processes running :func:`~socktools.flood.worker.run_worker`,
started and watched by :class:`socktools.core.procs.Supervisor` (the same
mechanism serve uses); each talks to the runner over one duplex pipe.  The
runner's policy on top of it:

* waits until every worker reports "ready" (its connections are up), then
  sends "go" to all, so traffic starts at the same moment everywhere;
* aggregates the workers' ticks (cumulative counters, histogram deltas) into
  one interval record per tick number, for ``--interval`` and the live line;
* on the first Ctrl-C or SIGTERM sends "stop" (workers drain, close and still
  report); on a second one it kills them and reports what it has;
* notices a worker that died without reporting and says so.

Workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C (or a SIGTERM sent to
the process group) reaches every process, and only the runner decides what it
means (no traceback from any worker).  They die with the runner: SIGKILL as
their parent-death signal on Linux, and everywhere their pipe reaching EOF.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable, Optional

from socktools.core import procs
from socktools.flood import limits
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.own_server import embedded_server
from socktools.flood.policy import STOP_GRACE, RunPolicy
from socktools.flood.result import FloodError, FloodRefused, FloodResult, generator_warnings, traffic_seconds  # noqa: F401 (public names)
from socktools.flood.udp import attribute_losses, run_udp_worker, snapshot as udp_snapshot
from socktools.flood.worker import run_worker
from socktools.kernel.capacity import tighten_timer_slack as _tighten_timer_slack

__all__ = ["FloodResult", "run_flood", "FloodError", "FloodRefused", "traffic_seconds", "generator_warnings"]



def _worker_main(channel: Any, config: FloodConfig, index: int, epoch_ns: int) -> None:
    """Process body: run, send the result (core.procs reports a crash and exits 70)."""
    if config.rate is not None:
        _tighten_timer_slack()
    if config.udp:
        result = run_udp_worker(config, index, channel, epoch_ns=epoch_ns)
    else:
        result = run_worker(config, index, channel, epoch_ns=epoch_ns)
    try:
        channel.send(("final", result))
    except (OSError, ValueError):
        pass


def _raise_fd_limit(config: FloodConfig, emit: Callable[[dict], None]) -> int:
    """The one place flood changes a limit of its own (its worker processes, its embedded
    server and LocalCluster workers inherit it): the soft open-file limit up to the hard one,
    and the hard one too when this run needs more and the process may (CAP_SYS_RESOURCE, up
    to fs.nr_open).  Says so with a ``raised`` event; returns the soft limit before."""
    import resource

    from socktools.kernel.capacity import raise_nofile
    from socktools.kernel.doctor import FD_SLACK
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = config.conns + FD_SLACK
    change = raise_nofile(want if hard == resource.RLIM_INFINITY else max(want, hard))
    if change is not None:
        emit({"event": "raised", "line": change.line})
    return soft


def run_flood(config: FloodConfig, *, on_event: Optional[Callable[[dict], None]] = None,
              plan: Optional[limits.Plan] = None, force: bool = False) -> FloodResult:
    """Run ``config`` to the end and return a :class:`FloodResult`.

    ``on_event`` gets dicts as the run goes: ``{"event": "plan", "plan": Plan}``
    before anything is opened, ``{"event": "server", ...}`` once an embedded
    server listens, ``{"event": "go"}`` when traffic starts, and
    ``{"event": "interval", ...}`` per tick (when ``config.interval`` is set).
    Raises :class:`FloodError` when the run cannot start, :class:`FloodRefused`
    (before anything is started) when the plan has refusals and not ``force``.
    ``plan`` is one the caller made already.
    """
    emit = on_event or (lambda event: None)
    fd_before = _raise_fd_limit(config, emit)
    if config.cluster:
        from socktools.flood.cluster import run_cluster
        return run_cluster(config, on_event=on_event, force=force)
    if plan is None:
        plan = limits.plan(config, fd_before=fd_before)
    if plan.refusals and not force:
        raise FloodRefused(plan)
    cfg = plan.config
    emit({"event": "plan", "plan": plan})
    started = time.time()
    t0 = time.monotonic()
    with embedded_server(cfg, emit) as (cfg, server_info):
        kernel_before = udp_snapshot(cfg) if cfg.udp else None
        run = _Run(cfg, emit)
        run.execute()
    totals = st.merge(run.policy.finals.values())
    if cfg.udp:
        attribute_losses(cfg, totals.datagrams, kernel_before)
    result = FloodResult(config=cfg, plan=plan, totals=totals, server=server_info,
                         stopped_early=run.interrupted or totals.stopped_early,
                         stop_signal=run.stop_signal,
                         crashed=run.policy.crashed, started=started, elapsed=time.monotonic() - t0,
                         intervals=run.policy.intervals, epoch_ns=run.epoch_ns)
    result.warnings = generator_warnings(result)
    return result


class _Run(procs.Supervisor):
    """The supervising side of one local run: :class:`~socktools.flood.policy.RunPolicy` over
    :class:`~socktools.core.procs.Supervisor`'s worker processes and pipes.

    Workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C, or a SIGTERM to
    the process group, reaches every process; only the runner decides what it
    means) and take their orders over their pipe; their parent-death signal
    is SIGKILL: with the runner gone nobody would read their results.
    """

    def __init__(self, config: FloodConfig, emit: Callable[[dict], None]) -> None:
        super().__init__("socktools-flood", drain_grace=STOP_GRACE, pdeathsig=signal.SIGKILL,
                         child_ignores=(signal.SIGINT, signal.SIGTERM))
        self.config = config
        self.emit = emit
        self.policy = RunPolicy(range(config.active_workers), config.interval or 1.0, emit,
                                name=lambda i: f"worker {i}")
        self.epoch_ns = time.perf_counter_ns()

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None

    # ------------------------------------------------------------ lifecycle
    def execute(self) -> None:
        self.run(self._spawn_all)

    def _spawn_all(self) -> None:
        for i in self.policy.units:
            self.spawn(i, _worker_main, self.config, i, self.epoch_ns)

    def finished(self) -> bool:
        return self.policy.finished()

    def _progress(self) -> None:
        """After any news: start the traffic once every running worker is ready."""
        if self.policy.go_now(self.stopping):
            for i in self.policy.running():
                child = self.children.get(i)
                if child is not None:
                    child.send(("go", None))
            self.emit({"event": "go"})

    # ------------------------------------------------------------ hooks
    def on_message(self, child: procs.Child, msg: tuple) -> None:
        kind, payload = msg
        if kind == "final":
            self.policy.on_final(child.index, payload)
        elif kind == "ready":
            self.policy.on_ready(child.index)
        elif kind == "tick":
            self.policy.on_tick(payload)
        self._progress()

    def on_exit(self, child: procs.Child) -> None:
        if child.crash is not None:
            self.policy.give_up(child.index, f"crashed: {child.crash}")
        else:
            self.policy.give_up(child.index, f"exited (code {child.exitcode}) without reporting")
        self._progress()

    def stop_child(self, child: procs.Child, force: bool) -> None:
        if child.index not in self.policy.running():
            return
        if not force:
            child.send(("stop", None))  # drain, close, report
        else:
            child.signal(signal.SIGKILL)  # they ignore SIGTERM
            self.policy.give_up(child.index, RunPolicy.second_stop(self.stop_signal))

    def on_overdue(self, children: list) -> None:
        for child in children:
            self.policy.give_up(child.index, RunPolicy.OVERDUE)

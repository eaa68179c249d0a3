"""What a flood run produced: :class:`FloodResult` and the figures derived from it.

Plain data for the report and the JSON view, kept apart from the runner so a
view of a result needs no multiprocessing and starts no process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from socktools.flood import limits
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig

__all__ = ["FloodError", "FloodRefused", "FloodResult", "traffic_seconds", "generator_warnings"]


class FloodError(RuntimeError):
    """The run could not start (e.g. the embedded server failed)."""


class FloodRefused(FloodError):
    """The plan does not fit this machine (``plan.refusals``); nothing was started."""

    def __init__(self, plan: limits.Plan) -> None:
        super().__init__("; ".join(plan.refusals))
        self.plan = plan


@dataclass
class FloodResult:
    """Everything a report needs: the config as run, the plan, merged totals, the server's view."""

    config: FloodConfig
    plan: limits.Plan
    totals: st.Totals
    server: Optional[dict] = None          # embedded: {"command", "workers", "summary"}
    stopped_early: bool = False
    stop_signal: Optional[int] = None      # the signal that stopped the run (SIGINT, SIGTERM)
    crashed: list = field(default_factory=list)    # "worker 2: ..." lines
    warnings: list = field(default_factory=list)
    started: float = 0.0                   # wall clock (time.time()) at start
    elapsed: float = 0.0
    intervals: list = field(default_factory=list)  # the runner's interval records, in order
    epoch_ns: int = 0                      # perf_counter_ns the interval times count from


def traffic_seconds(totals: st.Totals) -> float:
    """From the first worker's go to the last answer (end of the drain, if any)."""
    span = totals.phases.get("traffic")
    if not span:
        return 0.0
    end = span[1]
    drain = totals.phases.get("drain")
    if drain:
        end = max(end, drain[1])
    return max(0.0, (end - span[0]) / 1e9)


def generator_warnings(result: FloodResult) -> list:
    """Say when the numbers describe the generator rather than the server."""
    out = []
    cfg = result.config
    t = result.totals
    c = t.counters
    busy = [(s.worker, s.traffic_cpu / s.traffic_wall) for s in t.workers
            if s.traffic_wall > 0.2 and s.traffic_cpu / s.traffic_wall >= 0.9]
    if busy:
        share = max(b for _, b in busy)
        out.append(f"{len(busy)} of {len(t.workers)} flood worker(s) used {share:.0%} of a CPU during "
                   f"the traffic phase: the load generator itself may have been the limit, not the "
                   f"server (this machine has {limits.cpu_count()} CPUs; try --workers, or fewer "
                   f"connections per worker)")
    secs = traffic_seconds(t)
    if cfg.rate and secs > 0 and cfg.mode != "connect":
        achieved = c["traffic_requests"] / secs
        why = ("the generator was CPU-bound" if busy else
               "the generator's pacer fell behind" if cfg.udp else
               "answers came back too slowly to send the next request on time")
        if cfg.stages:   # a ramped rate: what was sent against what the stages scheduled
            if c["traffic_requests"] < 0.95 * c["scheduled"]:
                out.append(f"sent {c['traffic_requests']:,} of the {c['scheduled']:,} requests the "
                           f"stages scheduled: {why}")
        elif achieved < 0.95 * cfg.rate:
            out.append(f"sent {achieved:,.0f} requests/s of the {cfg.rate:,.0f} requested: {why}")
        lag = t.histograms.get("send_lag")
        if lag is not None and lag.get_total_count():
            p99 = lag.get_value_at_percentile(99) / 1e6
            if p99 > 2.0:
                out.append(f"the pacer sent 1% of requests more than {p99:.1f} ms late (the "
                           f"generator's own timer/CPU lag): corrected latencies include that lag")
    if cfg.embedded and result.server:
        procs = cfg.active_workers + cfg.server_workers
        cpus = limits.cpu_count()
        if procs > cpus:
            out.append(f"flood ({cfg.active_workers} worker(s)) and its embedded server "
                       f"({cfg.server_workers}) share {cpus} CPU(s): both sides compete for them")
    return out

"""The client's side of a ``flood --cluster`` run, once the shards are submitted: supervise them.

The counterpart of :class:`socktools.flood.runner._Run` for shards on Dask
(see :mod:`socktools.flood.cluster` for the whole run), with the same policy
(:class:`~socktools.flood.policy.RunPolicy`: when to go, what a stop means,
when to give up): it polls the shards' queue, opens the start barrier with one
wall-clock instant, turns Ctrl-C into a "stop" for every shard, notices a Dask
worker that disappeared, and collects what each shard returned -- with the
per-host breakdown built from it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Optional

from socktools.flood import stats as st
from socktools.flood.policy import STOP_GRACE, RunPolicy

__all__ = ["ClusterRun", "hosts_of", "worker_ip", "go_warnings", "GO_LEAD", "STOP_GRACE"]

#: From broadcasting "go" to the instant traffic starts: covers the round trips
#: through the scheduler (about a millisecond each on a LAN) for many shards.
#: A shard that gets it late says by how much.
GO_LEAD = 0.3
#: A shard whose "go" came later than this after the instant is worth a warning (clock skew).
GO_LATE_WARN_MS = 50.0
#: How often the client looks for shards' messages when there were none (the
#: queue is polled: a Dask queue ``get`` that times out is logged by the scheduler).
RECEIVE_POLL = 0.1
#: How often the client asks the scheduler which workers are still there (a lost
#: worker is reported this much later at most; the scheduler itself notices at once).
WORKER_CHECK = 1.0


class ClusterRun:
    """The supervising loop of one cluster run (client side).  ``interrupts.count`` is the
    number of Ctrl-Cs so far (counted by the caller's handler, never raised in here)."""

    def __init__(self, client: Any, config: Any, placement: dict, emit: Callable[[dict], None],
                 interrupts: Any) -> None:
        from distributed import Event, Queue, Variable
        from socktools.flood.shard import names
        self.client = client
        self.config = config
        self.placement = placement
        self.emit = emit
        run_id = uuid.uuid4().hex[:12]
        self.prefix = f"socktools-flood-{run_id}"
        n = names(self.prefix)
        self.up = Queue(n["up"], client=client)
        self.go_event = Event(n["go"], client=client)
        self.go_at = Variable(n["go_at"], client=client)
        self.stop_event = Event(n["stop"], client=client)
        self.futures: dict = {}
        self.policy = RunPolicy(placement, config.interval, emit,
                                name=lambda i: f"shard {i} on {placement[i]}")
        self.extras: dict = {}      # shard -> the rest of run_shard's answer (host, cpu...)
        self.lost: list = []
        self.go_wall_ns: Optional[int] = None
        self.interrupts = interrupts
        self.stop_sent_at: Optional[float] = None
        self.epoch_ns = 0           # wall clock: ticks and (moved) phase times count from it

    def execute(self) -> None:
        from socktools.flood.shard import run_shard
        try:
            epoch = self.epoch_ns = time.time_ns()
            for i, addr in self.placement.items():
                self.futures[i] = self.client.submit(
                    run_shard, self.config, i, self.prefix, epoch,
                    key=f"{self.prefix}-shard-{i}", workers=[addr], allow_other_workers=False,
                    pure=False)
            self._supervise()
        finally:
            try:
                self.stop_event.set()   # shards still waiting on the barrier end too
                pending = [f for i, f in self.futures.items() if i not in self.policy.finals]
                if pending:
                    self.client.cancel(pending)
                # A long-lived scheduler keeps what a run leaves: release the queue and the
                # go instant (the stop event stays set, a few bytes, for any straggler).
                self.up.close()
                self.go_at.delete()
            except Exception:           # the scheduler is gone: nothing left to tell
                pass

    @property
    def interrupted(self) -> bool:
        return self.interrupts.count > 0

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except Exception as exc:   # a round trip to the scheduler failed: it (or the network) is gone
            if not self.policy.running():
                raise
            self.policy.give_up_running(f"unreachable: the Dask scheduler stopped answering "
                                        f"({type(exc).__name__}: {exc})")

    def _supervise_loop(self) -> None:
        handled = 0
        next_check = time.monotonic() + WORKER_CHECK
        policy = self.policy
        while policy.running():
            if self.interrupts.count != handled:
                handled = self.interrupts.count
                if handled == 1:
                    self.stop_event.set()
                    self.stop_sent_at = time.monotonic()
                else:
                    policy.give_up_running(RunPolicy.second_stop(self.interrupts.signal))
                    break
            if self.stop_sent_at and time.monotonic() - self.stop_sent_at > STOP_GRACE:
                policy.give_up_running(RunPolicy.OVERDUE)
                break
            messages = self.up.get(batch=True)
            if not messages:
                time.sleep(RECEIVE_POLL)
            for kind, shard, payload in messages:
                if kind == "ready":
                    policy.on_ready(shard)
                elif kind == "tick":
                    policy.on_tick(st.Tick(**payload))
            self._collect()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + WORKER_CHECK
                self._check_workers()
            policy.flush()
            if policy.go_now(stopping=self.stop_sent_at is not None):
                self.go_wall_ns = time.time_ns() + int(GO_LEAD * 1e9)
                self.go_at.set(self.go_wall_ns)
                self.go_event.set()
                self.emit({"event": "go"})
        self._collect()

    def _collect(self) -> None:
        """Shards whose task ended: a final result, or a crash."""
        for i in self.policy.running():
            fut = self.futures[i]
            if fut.status == "finished":
                answer = fut.result()
                self.extras[i] = answer
                self.policy.on_final(i, answer.pop("stats"))
            elif fut.status == "error":
                exc = fut.exception()
                self.policy.give_up(i, f"crashed: {type(exc).__name__}: {exc}")

    def _check_workers(self) -> None:
        alive = set(self.client.nthreads())   # address -> threads, of the workers there now
        for i in self.policy.running():
            addr = self.placement[i]
            if addr in alive:
                continue
            self.policy.lose(i)
            self.client.cancel([self.futures[i]])
            last = self.policy.merger.latest(i)
            record = {"shard": i, "worker": addr, "conns": self.config.conns_of(i),
                      "at": round((time.time_ns() - self.go_wall_ns) / 1e9, 3) if self.go_wall_ns else None,
                      "last_interval": None if last is None else {
                          "t": round(last.seq * self.config.interval, 3), "phase": last.phase,
                          "established": last.established, "open": last.open, "failed": last.failed,
                          "requests": last.requests, "responses": last.responses,
                          "errors": last.errors}}
            self.lost.append(record)
            self.emit({"event": "lost", **record})


def worker_ip(worker: str) -> str:
    """The address part of a Dask worker's address: ``tcp://127.0.0.2:4321`` -> ``127.0.0.2``.

    ``tls://[::1]:4321`` -> ``::1``; an address with no port is returned as it is.
    """
    rest = worker.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def hosts_of(run: ClusterRun) -> list:
    """Per host: shards, connections, requests, the shards' own CPU and the host's CPU.

    A host is a host name *and* the address its Dask workers listen on: two containers (or two
    machines cloned from one image) can share a name, and two workers bound to different
    addresses of one machine are told apart the same way, as the user asked the cluster.
    """
    by: dict = {}
    for i, answer in sorted(run.extras.items()):
        s = run.policy.finals[i]
        key = (answer["host"], worker_ip(answer["worker"]))
        h = by.setdefault(key, {"host": answer["host"], "address": key[1], "shards": 0,
                                "workers": set(), "conns": 0, "established": 0, "requests": 0,
                                "responses": 0, "cpu_seconds": 0.0, "wall": 0.0,
                                "busy": [], "cpus": answer["cpus"]})
        h["shards"] += 1
        h["workers"].add(answer["worker"])
        h["conns"] += s.conns
        h["established"] += s.established
        h["requests"] += s.requests
        h["responses"] += s.responses
        h["cpu_seconds"] += answer["cpu"]
        span = s.phases.get("traffic")
        h["wall"] = max(h["wall"], (span[1] - span[0]) / 1e9 if span else 0.0)
        if answer["host_cpu_busy"] is not None:
            h["busy"].append(answer["host_cpu_busy"])
    out = []
    for h in by.values():
        busy = h.pop("busy")
        h["workers"] = len(h["workers"])
        h["cpu_seconds"] = round(h["cpu_seconds"], 3)
        h["host_cpu_busy"] = round(sum(busy) / len(busy), 3) if busy else None
        h.pop("wall")
        out.append(h)
    return out


def go_warnings(run: ClusterRun) -> list:
    late = [(i, a["go_late_ms"]) for i, a in run.extras.items()
            if a.get("go_late_ms") is not None and a["go_late_ms"] > GO_LATE_WARN_MS]
    if not late:
        return []
    worst = max(ms for _, ms in late)
    return [f"{len(late)} shard(s) started up to {worst:,.0f} ms after the broadcast instant: their "
            f"clocks may be behind (hosts need NTP) or the scheduler was slow to pass 'go' on"]

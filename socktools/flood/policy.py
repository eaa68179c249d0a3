"""The parent's run policy, one for local worker processes and for shards on Dask.

A run has *units* (a local worker process, or a shard on a Dask worker), each of which connects,
says "ready", waits for "go", sends ticks, and ends with its final statistics -- or dies, is
lost, or never reports.  Whoever supervises them (:class:`socktools.flood.runner._Run` over
pipes, :class:`socktools.flood.cluster_run.ClusterRun` over a Dask queue) moves the messages;
this class decides what they mean:

* **go** once every unit still running is ready, and never after a stop;
* **stop**: the first Ctrl-C or SIGTERM asks every unit to drain and report; a second one,
  or :data:`STOP_GRACE` without a report, gives up on those still running;
* **give up** on a unit: it is named in ``crashed`` with why, and its interval figures end;
* **intervals**: ticks merge into interval records, emitted once every running unit is past
  them (:class:`~socktools.flood.intervals.Intervals`).

Pure bookkeeping, like :mod:`.intervals`: no clock of its own, no I/O.
"""

from __future__ import annotations

import signal
from typing import Callable, Iterable, Optional

from socktools.flood import stats as st
from socktools.flood.intervals import Intervals

__all__ = ["RunPolicy", "STOP_GRACE"]

#: After "stop", how long a worker or shard may take to drain, close and report before the
#: parent gives up on it: flood's own drain is bounded at a few seconds (worker.DRAIN_TIMEOUT),
#: and a loaded machine (or a Dask scheduler's round trips) may add several more.
STOP_GRACE = 10.0


class RunPolicy:
    """What the parent of a run decides, for units ``units`` (indices)."""

    def __init__(self, units: Iterable[int], interval: float, emit: Callable[[dict], None],
                 name: Callable[[int], str]) -> None:
        self.units = list(units)
        self.emit = emit
        self.name = name                # unit -> "worker 3" / "shard 3 on tcp://...", for messages
        self.finals: dict = {}          # unit -> WorkerStats
        self.crashed: list = []         # one line per unit given up on, with why
        self.ready: set = set()
        self.went = False
        self.merger = Intervals(interval, emit)
        self.intervals = self.merger.records     # every record emitted, kept for the result
        self._dead: set = set()

    # ------------------------------------------------------------------ who is where
    def running(self) -> list:
        """Units that have neither reported nor been given up on."""
        return [i for i in self.units if i not in self.finals and i not in self._dead]

    def finished(self) -> bool:
        return not self.running()

    # ------------------------------------------------------------------ news from a unit
    def on_ready(self, i: int) -> None:
        self.ready.add(i)

    def on_tick(self, tick: st.Tick) -> None:
        self.merger.add(tick)
        self.flush()

    def on_final(self, i: int, stats: st.WorkerStats) -> None:
        self.finals[i] = stats
        self.merger.end(i)
        self.flush()

    def give_up(self, i: int, why: str) -> None:
        """Unit ``i`` will not report: say why, and end its interval figures where they are."""
        if i in self.finals or i in self._dead:
            return
        self.crashed.append(f"{self.name(i)} {why}")
        self._dead.add(i)
        self.merger.end(i)
        self.flush()

    def lose(self, i: int) -> None:
        """Unit ``i`` is gone with its host (reported by the caller as lost, not crashed)."""
        self._dead.add(i)
        self.merger.end(i)

    def give_up_running(self, why: str) -> None:
        for i in self.running():
            self.give_up(i, why)

    def flush(self) -> None:
        """Emit every interval record all running units are past."""
        self.merger.flush(self.running())

    # ------------------------------------------------------------------ decisions
    def go_now(self, stopping: bool) -> bool:
        """Should "go" be sent now?  Once: when every running unit is ready, unless stopping."""
        running = self.running()
        if self.went or stopping or not running or not self.ready >= set(running):
            return False
        self.went = True
        return True

    @staticmethod
    def second_stop(signum: Optional[int]) -> str:
        """Why units still running are given up on at a second stop signal."""
        how = "Ctrl-C" if signum == signal.SIGINT else "stop signal"
        return f"stopped by a second {how} before reporting"

    OVERDUE = f"did not report within {STOP_GRACE:g}s of being stopped"

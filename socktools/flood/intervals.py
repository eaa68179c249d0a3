"""Interval records: the workers' ticks merged into one record per tick number.

Every worker (a local process, or a shard on a Dask worker) sends a
:class:`~socktools.flood.stats.Tick` every ``interval`` seconds, aligned to one
epoch: cumulative counters and the latency histogram *since its previous
tick*.  :class:`Intervals` holds them until every running worker has reported
tick ``k`` (or later), then emits interval ``k``: counter deltas from the sums
of the latest cumulative figures, and the exact merge of the histogram deltas.

A worker kept busy past its tick skips the ticks it missed; its next one
carries everything since, and counts for the intervals it spans.  A worker
that finished (or was lost) keeps its last cumulative figures in the sums,
with no connections open, so deltas never go backwards.

Pure bookkeeping: no clock, no I/O; the caller says who is still running.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Optional

from socktools.flood import stats as st

__all__ = ["Intervals", "PHASE_ORDER"]

#: The phase an interval shows: the earliest any worker is still in.
PHASE_ORDER = ("connect", "ready", "traffic", "drain", "close")

_CUMULATIVE = ("established", "open", "failed", "requests", "responses", "traffic_responses",
               "bytes_out", "bytes_in", "errors")


class Intervals:
    """Merge ticks into interval records and hand each to ``emit`` (a dict per interval)."""

    def __init__(self, interval: float, emit: Callable[[dict], None]) -> None:
        self.interval = interval
        self.emit = emit
        self.inbox: dict = {}       # worker -> [Tick] not yet emitted, in order
        self.last: dict = {}        # worker -> the latest Tick emitted
        self.ended: set = set()     # workers finished or lost: no connections open any more
        self.emitted_seq = 0
        self.records: list = []     # every record emitted, in order (the result keeps them)
        self._prev: Optional[dict] = None
        self._so_far = None         # latency over all emitted intervals

    def add(self, tick: st.Tick) -> None:
        self.inbox.setdefault(tick.worker, []).append(tick)

    def end(self, worker: int) -> None:
        """``worker`` finished or was lost: it counts with what it had, and nothing open."""
        self.ended.add(worker)

    def latest(self, worker: int) -> Optional[st.Tick]:
        """The newest tick received from ``worker`` (emitted or not), or None."""
        box = self.inbox.get(worker)
        return box[-1] if box else self.last.get(worker)

    def flush(self, running: Iterable[int]) -> None:
        """Emit every interval that all ``running`` workers have reported."""
        running = list(running)
        while running:
            seq = self.emitted_seq + 1
            if any(not self.inbox.get(w) or self.inbox[w][-1].seq < seq for w in running):
                return
            self.emitted_seq = seq
            due = []
            for w, box in self.inbox.items():
                while box and box[0].seq <= seq:
                    t = box.pop(0)
                    self.last[w] = t
                    due.append(t)
            self._emit(seq, due)

    def _emit(self, seq: int, ticks: list) -> None:
        interval = self.interval
        latest = []
        for w, t in self.last.items():
            if w in self.ended:
                t = replace(t, phase="done", open=0)
            latest.append(t)
        cum = {name: sum(getattr(t, name) for t in latest) for name in _CUMULATIVE}
        prev = self._prev or dict.fromkeys(cum, 0)
        delta_hist = None
        for t in ticks:
            delta_hist = st.add_into(delta_hist, st.decode(t.latency))
        self._so_far = st.add_into(self._so_far, delta_hist)
        phases = {t.phase for t in latest}
        # No tick yet from anyone (shards still starting): the run is connecting.
        phase = next((p for p in PHASE_ORDER if p in phases), "done" if latest else "connect")
        # --stages: the targets at the tick (each worker's share, summed); None without stages.
        targets = [t.target_conns for t in latest if t.target_conns is not None]
        rates = [t.target_rps for t in latest if t.target_rps is not None]
        record = {"event": "interval", "t": round(seq * interval, 3), "phase": phase,
                  "established": cum["established"], "open": cum["open"], "failed": cum["failed"],
                  "errors": cum["errors"],
                  "requests": cum["requests"] - prev["requests"],
                  "responses": cum["responses"] - prev["responses"],
                  "traffic_responses": cum["traffic_responses"] - prev["traffic_responses"],
                  "rps": round((cum["traffic_responses"] - prev["traffic_responses"]) / interval, 1),
                  "bytes_out": cum["bytes_out"] - prev["bytes_out"],
                  "bytes_in": cum["bytes_in"] - prev["bytes_in"],
                  "target_conns": sum(targets) if targets else None,
                  "target_rps": round(sum(rates), 1) if rates else None,
                  "latency": st.summarize(delta_hist),
                  # one percentile, not a summary: this runs once per interval, in the loop
                  # that also watches for Ctrl-C
                  "p99_so_far": round(self._so_far.get_value_at_percentile(99) / 1000.0, 3)
                  if self._so_far is not None else None}
        if record["latency"] is not None:
            record["latency"]["hdr"] = st.encode(delta_hist)   # nanoseconds, like every blob
        self._prev = cum
        self.records.append(record)
        self.emit(record)

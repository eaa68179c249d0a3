"""A flood worker's side of the runner's pipe, one for the TCP worker and the UDP worker.

The runner (:mod:`socktools.flood.runner`) talks to every worker process the same way: the
worker sends ``("ready", None)`` when its sockets are up and a ``("tick", Tick)`` every
``interval`` (aligned to the shared epoch), and obeys ``("go", None)`` and ``("stop", None)``;
a pipe that breaks means the runner is gone, and the worker finishes on its own, quietly.
:class:`RunnerLink` is that protocol once; a worker mixes it in and provides ``_go``, ``_stop``
and ``_tick``; :meth:`RunnerLink._attach` sets up what every worker has (its config and
number, the pipe, the shared clock and epoch, its loop, its statistics and histograms), and
:meth:`RunnerLink._store_histograms` puts the histograms into the final statistics.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from socktools.core.loop import Loop
from socktools.flood import stats as st

__all__ = ["RunnerLink"]

_NS = 1_000_000_000


class RunnerLink:
    """The runner's pipe, for a worker class to mix in."""

    def _attach(self, config: Any, index: int, channel: Any, epoch_ns: Optional[int],
                clock: Callable[[], int]) -> None:
        self.config = config
        self.index = index
        self.channel = channel
        self.clock = clock
        self.epoch = clock() if epoch_ns is None else epoch_ns
        self.loop = Loop()
        self.stats = st.WorkerStats(worker=index, conns=config.conns_of(index))
        self.hist: dict = {name: None for name in st.HISTOGRAMS}   # what the ticks took so far
        self.tick_seq = 0

    def _store_histograms(self) -> None:
        """Each recorder's values since the last tick, added to what the ticks took, encoded
        into the final statistics (``self.rec``: name -> Recorder)."""
        s = self.stats
        for name, rec in self.rec.items():
            self.hist[name] = st.add_into(self.hist[name], rec.take())
            blob = st.encode(self.hist[name])
            if blob:
                s.histograms[name] = blob

    def _tell(self, msg: tuple) -> None:
        """Send ``msg`` to the runner; a broken pipe means it is gone."""
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

    def _arm_tick(self) -> None:
        """Tick k is due at epoch + k * interval in every worker; a missed one is skipped."""
        step = int(self.config.interval * _NS)
        now = self.clock()
        self.tick_seq = max(self.tick_seq + 1, (now - self.epoch) // step + 1)
        due = self.epoch + self.tick_seq * step
        self.loop.call_later(max(0.0, (due - now) / _NS), self._tick)

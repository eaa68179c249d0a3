"""A flood worker's side of the runner's pipe, one for the TCP worker and the UDP worker.

The runner (:mod:`socktools.flood.runner`) talks to every worker process the same way: the
worker sends ``("ready", None)`` when its sockets are up and a ``("tick", Tick)`` every
``interval`` (aligned to the shared epoch), and obeys ``("go", None)`` and ``("stop", None)``;
a pipe that breaks means the runner is gone, and the worker finishes on its own, quietly.
:class:`RunnerLink` is that protocol once; a worker mixes it in and provides ``_go``, ``_stop``
and ``_tick`` (and the attributes ``channel``, ``loop``, ``stats``, ``config``, ``clock``,
``epoch``, ``tick_seq``).
"""

from __future__ import annotations

__all__ = ["RunnerLink"]

_NS = 1_000_000_000


class RunnerLink:
    """The runner's pipe, for a worker class to mix in."""

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

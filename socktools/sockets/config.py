"""The frozen configuration of one ``socktools sockets`` run; it validates itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from socktools.errors import OptionError
from socktools.kernel.socktable.entry import FAMILIES
from socktools.kernel.socktable.filters import SocketFilter

#: ``--sort`` keys; each sorts descending (the biggest first), ties keep the table's order.
SORT_KEYS = ("bytes", "rate", "rtt", "queue")
#: Faster refreshes than this measure mostly the dump itself: on a 10,000-socket machine one
#: read with tcp_info takes ~0.1-0.3 s of CPU, and a tool watching sockets should not be the
#: load it shows.  top(1)'s minimum delay is 0.1 s too.
MIN_INTERVAL_S = 0.1
DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SocketsConfig:
    families: tuple[str, ...] = ("tcp",)
    filter: SocketFilter = field(default_factory=SocketFilter)
    processes: bool = False
    info: bool = False              # traffic columns from tcp_info (bytes, segments, rtt...)
    timers: bool = False            # ss -o
    memory: bool = False            # ss -m
    sort: Optional[str] = None
    watch: bool = False
    interval: float = DEFAULT_INTERVAL_S
    count: Optional[int] = None     # refreshes, then stop (None: until Ctrl-C)
    as_json: bool = False
    source: str = "auto"

    def __post_init__(self) -> None:
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise OptionError("all_families", f"families must be among {', '.join(FAMILIES)}")
        if self.sort is not None and self.sort not in SORT_KEYS:
            raise OptionError("sort", f"must be one of {', '.join(SORT_KEYS)}")
        if self.sort == "rate" and not self.watch:
            raise OptionError("sort", "rate needs --watch (a rate takes two reads)")
        if self.interval < MIN_INTERVAL_S:
            raise OptionError("interval", f"must be at least {MIN_INTERVAL_S:g}s "
                                            "(faster refreshes mostly measure the dump itself)")
        if self.count is not None and self.count < 1:
            raise OptionError("count", "must be 1 or more")
        if self.count is not None and not self.watch:
            raise OptionError("count", "needs --watch (it counts refreshes)")

    @property
    def wants_tcp_info(self) -> bool:
        """Rates, the traffic columns, timers and the rate/bytes/rtt sorts all need tcp_info."""
        return self.info or self.watch or self.timers or self.sort in ("bytes", "rate", "rtt")

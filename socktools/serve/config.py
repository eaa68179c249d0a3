"""What ``serve`` is asked to do, and the limits every worker holds to.

:class:`ServeConfig` is frozen and picklable: the CLI builds one, ``serve()``
hands a copy to every worker process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from socktools import protocol

__all__ = ["ServeConfig", "MODES", "HIGH_WATER", "ACCEPT_BATCH", "ACCEPT_RETRY"]

MODES = ("echo", "framed", "sink")

#: Stop reading from a connection whose unsent output exceeds this; resume when
#: it drains.  Bounds memory per connection when a client sends but does not
#: read (echo) or pipelines many requests (framed).  256 KiB is a few socket
#: buffers' worth: enough to keep a fast pipe full.
HIGH_WATER = 256 * 1024

#: Accepts per readiness event: bounds how long one worker spends in accept()
#: before serving its connections, and leaves some for sibling workers.
ACCEPT_BATCH = 64

#: Back-off before retrying accept() after EMFILE and friends, when no
#: connection of ours closes first.
ACCEPT_RETRY = 0.25


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``serve`` needs; frozen and picklable (workers receive a copy)."""

    mode: str = "echo"
    host: str = "127.0.0.1"
    port: int = 65432
    workers: int = 1
    max_conns: int = 0              # total across workers; 0 = no cap
    idle_timeout: Optional[float] = None
    max_content: int = protocol.DEFAULT_MAX_CONTENT
    rcvbuf: Optional[int] = None
    sndbuf: Optional[int] = None
    backlog: int = 4096             # the kernel caps it at net.core.somaxconn
    stats_interval: float = 10.0    # 0 = no periodic statistics
    drain_timeout: float = 5.0
    stop_on_stdin_eof: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    @property
    def per_worker_max_conns(self) -> int:
        if not self.max_conns:
            return 0
        return -(-self.max_conns // self.workers)  # ceil: the caps add up to >= max_conns


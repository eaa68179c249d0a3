"""What ``socktools stall`` is asked to do: :class:`StallConfig`, frozen, validated once here.

A bad combination raises :class:`socktools.errors.OptionError` naming the
field (which is also the CLI option), so the CLI can say which option is wrong
without repeating the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from socktools.addresses import is_loopback
from socktools.errors import OptionError

__all__ = ["StallConfig", "OptionError", "DEFAULT_CHUNK", "DEFAULT_SETTLE", "DEFAULT_TIMEOUT",
           "SAMPLE_INTERVAL"]

#: 64 KiB per send(): big enough that the fill takes few syscalls (a default loopback
#: send buffer grows to 4 MiB), small enough that the partial send before EAGAIN is visible.
DEFAULT_CHUNK = 65536
#: Steady state = nothing changed for this long.  On Linux loopback the last change after
#: the first EAGAIN comes when the first zero-window probe (RTO minimum 200 ms) gets a
#: window update back; 0.5 s leaves margin without making the command feel slow.
DEFAULT_SETTLE = 0.5
#: Upper bound for each of fill, settle and drain: a peer that keeps up never blocks us,
#: a slow reader never lets the queues settle, and the command must still end by itself.
DEFAULT_TIMEOUT = 10.0
#: How often the queues are recorded while settling and draining.
SAMPLE_INTERVAL = 0.05



@dataclass(frozen=True)
class StallConfig:
    """What ``socktools stall`` was asked to do.  ``port=None``: start an embedded sink on ``host``."""

    host: str = "127.0.0.1"
    port: Optional[int] = None
    chunk: int = DEFAULT_CHUNK
    sndbuf: Optional[int] = None      # our SO_SNDBUF, set before connect
    rcvbuf: Optional[int] = None      # the embedded sink's SO_RCVBUF (``serve --rcvbuf``)
    settle: float = DEFAULT_SETTLE
    drain: bool = False
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = 5.0
    sample_interval: float = SAMPLE_INTERVAL

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise OptionError("chunk", "must be at least 1 byte")
        if self.settle < 0:
            raise OptionError("settle", "must be 0 or more")
        if self.timeout <= 0:
            raise OptionError("timeout", "must be more than 0")
        if self.sample_interval <= 0:
            raise OptionError("sample_interval", "must be more than 0")
        if self.port is not None and self.rcvbuf is not None:
            raise OptionError("rcvbuf", "--rcvbuf sets the embedded sink's SO_RCVBUF; with --port the "
                              "server is another program, whose buffers stall cannot change")
        if self.port is not None and self.drain:
            raise OptionError("drain", "--drain tells the embedded sink to start reading; with --port "
                              "the server is another program, which stall cannot make read")
        if self.port is None and not is_loopback(self.host):
            raise OptionError("host", f"{self.host} is not a loopback address: the embedded sink listens "
                              "only on loopback (127.0.0.1, ::1); add --port to stall a server there")

    def to_dict(self) -> dict:
        return asdict(self)

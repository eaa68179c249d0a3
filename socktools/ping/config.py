"""What `socktools ping` is asked to do: a frozen, picklable config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from socktools.tlsconf import TlsConfig

__all__ = ["PingConfig"]


@dataclass(frozen=True)
class PingConfig:
    """What to ping and how.  ``count`` 0 means until interrupted."""

    host: str = "127.0.0.1"
    port: int = 65432
    count: int = 4
    interval: float = 1.0
    timeout: float = 2.0
    icmp: bool = False
    unix: Optional[str] = None      # --unix: time connect() to this Unix-domain socket instead
    tls: Optional[TlsConfig] = None  # --tls: a TLS handshake after each connect, timed apart
    udp: bool = False               # --udp: a datagram to an echo server per probe, its echo timed

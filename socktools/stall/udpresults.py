"""What ``socktools stall --udp`` found: frozen records with ``to_dict()`` for JSON.

:mod:`socktools.stall.udp` fills them in, :mod:`socktools.stall.udpreport` renders them.
Pure data: no sockets, no clocks, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from socktools.stall.results import PeerInfo, _Plain, _plain

if TYPE_CHECKING:  # pragma: no cover
    from socktools.stall.config import StallConfig

__all__ = ["UdpSend", "UdpReceiver", "UdpAccount", "UdpStallReport", "UDP_OUTCOMES"]

#: What a --udp run came to: the receiver's kernel dropped datagrams (the case shown), every
#: datagram fit in its buffer (send more, or a smaller --rcvbuf), another program's server
#: read them as they came (its queue is empty and nothing was dropped), or the receiver's
#: counts could not be read (a server on another host or network namespace: UDP itself tells
#: the sender nothing).
UDP_OUTCOMES = ("dropped", "fit", "reading", "unseen")


@dataclass(frozen=True)
class UdpSend(_Plain):
    """The sender's side: every send() of a nonblocking connected UDP socket."""

    attempted: int                  # send() calls
    sent: int                       # of which the kernel accepted (the datagram left)
    bytes: int                      # payload bytes of those
    refused: dict                   # errno name -> send() calls refused (EAGAIN, ENOBUFS)
    seconds: float                  # the whole loop
    slowest: float                  # the longest single send() call, in seconds
    stopped_by: str                 # "count" (all sent) or "timeout"


@dataclass(frozen=True)
class UdpReceiver(_Plain):
    """The receiving socket(s) as the kernel counts them, before and after the send."""

    kind: str                       # "own" (stall's socket) or "target" (another program's)
    address: str
    source: str                     # "SO_MEMINFO" (a socket we hold) or "sock_diag" (anyone's)
    sockets: int                    # sockets bound there (a SO_REUSEPORT server has several)
    pids: tuple = ()                # ((pid, name), ...) of a target's sockets
    rcvbuf: Optional[int] = None    # effective SO_RCVBUF (of each socket)
    recv_q: Optional[int] = None    # bytes held, as the kernel accounts them (payload + overhead)
    drops_before: Optional[int] = None
    drops_after: Optional[int] = None
    dropped: Optional[int] = None   # drops_after - drops_before: this run's datagrams
    unavailable: str = ""           # why a figure is None


@dataclass(frozen=True)
class UdpAccount(_Plain):
    """sent = reached the receiver's socket + dropped by its kernel, in datagrams.

    With stall's own receiver ``reached`` is counted: stall reads its queue afterwards
    (``counted`` True) and ``unaccounted`` must be 0.  With another program's socket stall
    sees no datagram, only the kernel's counts: ``reached`` is inferred (sent - dropped;
    held in its queue or read by the server -- the server's own count says which)."""

    sent: int
    reached: Optional[int]
    dropped: Optional[int]
    counted: bool
    unaccounted: Optional[int]      # sent - reached - dropped (counted only); 0 exactly
    held_bytes: Optional[int] = None        # payload bytes read back (own receiver)
    held_first: Optional[int] = None        # sequence numbers of the datagrams held
    held_last: Optional[int] = None
    foreign: int = 0                # datagrams read back that were not ours (not counted)
    machine_rcvbuf_errors: Optional[int] = None     # /proc/net/snmp deltas, every program's
    machine_sndbuf_errors: Optional[int] = None
    machine_in_errors: Optional[int] = None


@dataclass(frozen=True)
class UdpStallReport(_Plain):
    """Everything ``socktools stall --udp`` measured; ``to_dict()`` is its JSON."""

    config: "StallConfig"
    peer: PeerInfo
    local: str
    remote: str
    family: str
    send: UdpSend
    settled: bool                   # the receiver's counts stood still before the timeout
    settle_seconds: float
    receiver: UdpReceiver
    account: UdpAccount
    transport: str = "udp"

    @property
    def outcome(self) -> str:
        if self.account.dropped is None:
            return "unseen"
        if self.account.dropped:
            return "dropped"
        if self.receiver.kind == "target" and self.receiver.recv_q == 0:
            return "reading"
        return "fit"

    @property
    def ok(self) -> bool:
        """The receiver's kernel dropped datagrams the sender was never stopped from sending (exit 0)."""
        return self.outcome == "dropped"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"ok": self.ok, "outcome": self.outcome, **_plain(self),
                               "config": self.config.to_dict()}
        return out

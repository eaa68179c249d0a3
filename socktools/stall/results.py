"""What ``socktools stall`` found: frozen result records, one per step, with ``to_dict()`` for JSON.

:mod:`socktools.stall.steps` fills them in; ``socktools stall`` renders them.  Pure
data: no sockets, no clocks, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional

from socktools.kernel import socktable, tcpinfo
from socktools.addresses import format_addr

if TYPE_CHECKING:  # pragma: no cover
    from socktools.stall.config import StallConfig

__all__ = ["PeerInfo", "FillResult", "SettleResult", "PersistState", "SenderView", "ReceiverView", "TableRow", "Arithmetic", "Snapshot", "DrainSample", "DrainResult", "PeerAnswer", "TlsView", "StallReport",
           "OUTCOMES"]


def _plain(value: Any) -> Any:
    """dataclasses / TcpInfo / tuples -> JSON-ready values."""
    if isinstance(value, tcpinfo.TcpInfo):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Plain:
    def to_dict(self) -> dict:
        return _plain(self)


@dataclass(frozen=True)
class PeerInfo(_Plain):
    kind: str                       # "embedded", "target" or "injected"; with --udp "own" or "target"
    address: str
    command: Optional[str] = None   # the equivalent `socktools serve ...` for the embedded sink
    pid: Optional[int] = None
    rcvbuf: Optional[int] = None    # effective SO_RCVBUF, when the peer reported it


@dataclass(frozen=True)
class FillResult(_Plain):
    """Sending until the first EAGAIN."""

    blocked: bool                   # False: the timeout passed and send() never refused
    bytes: int                      # accepted by send() before the first EAGAIN
    sends: int                      # successful send() calls
    partial_sends: int              # of which accepted less than the whole chunk
    seconds: float
    errno: Optional[int]
    errno_name: Optional[str]
    exception: Optional[str]        # "BlockingIOError"
    message: Optional[str]          # "[Errno 11] Resource temporarily unavailable"


@dataclass(frozen=True)
class SettleResult(_Plain):
    """Retrying after the first EAGAIN until the queues stop moving."""

    steady: bool                    # False: still changing when the timeout passed
    seconds: float
    extra_bytes: int                # accepted after the first EAGAIN
    extra_sends: int
    total_accepted: int


@dataclass(frozen=True)
class PersistState(_Plain):
    """The zero-window / persist-timer picture from our TCP_INFO."""

    zero_window: Optional[bool]     # the peer advertises no room (tcpi_snd_wnd == 0)
    probes: Optional[int]           # tcpi_probes: unanswered zero-window probes
    backoff: Optional[int]          # tcpi_backoff: persist timer doublings so far
    probing: Optional[bool]         # zero window with unsent data: the persist timer is running
    unavailable: str = ""


@dataclass(frozen=True)
class SenderView(_Plain):
    local: str
    remote: str
    sndbuf_requested: Optional[int]
    sndbuf: int                     # effective SO_SNDBUF (Linux doubles the requested value)
    rcvbuf: int
    send_q: Optional[int]           # SIOCOUTQ: not yet acknowledged by the peer
    unacked_bytes: Optional[int]    # of which sent (in flight / unacknowledged)
    notsent_bytes: Optional[int]    # SIOCOUTQNSD: of which not even sent
    recv_q: Optional[int]
    queues_unavailable: str
    tcp_info: Optional[tcpinfo.TcpInfo]
    tcp_info_unavailable: str
    persist: PersistState


@dataclass(frozen=True)
class ReceiverView(_Plain):
    found: bool
    reason: str                     # why it was not found
    local: Optional[str] = None
    remote: Optional[str] = None
    state: Optional[str] = None
    recv_q: Optional[int] = None
    send_q: Optional[int] = None
    pids: tuple = ()
    rcvbuf: Optional[int] = None
    rcvbuf_requested: Optional[int] = None
    rcvbuf_source: str = ""


@dataclass(frozen=True)
class TableRow(_Plain):
    """One line of the netstat-style table."""

    role: str                       # "receiver", "sender", "listener"
    proto: str
    recv_q: int
    send_q: Optional[int]
    local: str
    foreign: str
    state: str
    pids: tuple = ()

    @classmethod
    def from_entry(cls, e: socktable.SocketEntry, role: str, pids: tuple = ()) -> "TableRow":
        return cls(role=role, proto=e.proto, recv_q=e.recv_q, send_q=e.send_q,
                   local=_table_addr(e.local), foreign=_table_addr(e.remote), state=e.state,
                   pids=tuple(pids or e.pids))


def _table_addr(addr: Any) -> str:
    """Like netstat: a wildcard host or port is ``*``."""
    host, port = str(addr[0]), int(addr[1])
    wildcard = host in ("0.0.0.0", "::")
    return format_addr(("*" if wildcard else host, "*" if wildcard and port == 0 else port))


@dataclass(frozen=True)
class Arithmetic(_Plain):
    """accepted vs. receiver Recv-Q + sender Send-Q.

    ``difference`` = queues - accepted = the receiver's rcv_nxt - the sender's snd_una.
    Positive: bytes the receiver already holds whose ACK has not reached the sender yet
    (delayed or in flight; counted on both sides).  Negative: bytes in neither
    queue - in flight, or read by the peer application.  Zero at a true stall.
    """

    accepted: int
    receiver_recv_q: Optional[int]
    sender_send_q: Optional[int]
    in_queues: Optional[int]
    difference: Optional[int]
    #: Bytes travelling back to us (the peer's Send-Q + our Recv-Q): a peer that reads and
    #: answers, like an echo server, then stalls on *our* not reading.
    returning: Optional[int] = None
    #: What ``accepted`` counts: the bytes send() accepted, or over TLS the record bytes our
    #: kernel took (the queues hold records, not plaintext).
    counted: str = "accepted"

    @classmethod
    def of(cls, accepted: int, recv_q: Optional[int], send_q: Optional[int],
           returning: Optional[int] = None, counted: str = "accepted") -> "Arithmetic":
        total = None if recv_q is None or send_q is None else recv_q + send_q
        return cls(accepted, recv_q, send_q, total, None if total is None else total - accepted,
                   returning, counted)


@dataclass(frozen=True)
class Snapshot(_Plain):
    seconds: float                  # when taken, seconds after connect
    sender: SenderView
    receiver: ReceiverView
    table: list                     # [TableRow]: receiver, sender, listener (those found)
    table_source: str               # "netlink" or "proc"
    arithmetic: Arithmetic
    table_sender_send_q: Optional[int]  # our Send-Q as the socket table shows it (cross-check)


@dataclass(frozen=True)
class DrainSample(_Plain):
    t: float                        # seconds since the peer was told to read
    sender_send_q: Optional[int]
    sender_notsent: Optional[int]
    receiver_recv_q: Optional[int]
    writable: bool
    snd_wnd: Optional[int]


@dataclass(frozen=True)
class DrainResult(_Plain):
    completed: bool                 # writable and both queues empty before the timeout
    seconds: float
    writable_after: Optional[float]       # EVENT_WRITE first reported, seconds after drain()
    sender_empty_after: Optional[float]   # Send-Q first 0
    receiver_empty_after: Optional[float] # Recv-Q first seen 0 (sampled)
    final_writable: bool
    samples: list = field(default_factory=list)


@dataclass(frozen=True)
class PeerAnswer(_Plain):
    """The peer answered and closed or reset while we were filling: not a full-buffer case."""

    how: str                        # "closed" (its FIN, or TLS close_notify) or "reset" (RST)
    step: str                       # "fill" or "settle": when we noticed
    errno_name: Optional[str]       # what our send()/recv() met (ECONNRESET, EPIPE), None for a clean EOF
    bytes: int                      # bytes it answered (read by us, up to ANSWER_COUNTED)
    counted_all: bool               # False: more came than stall counts (ANSWER_COUNTED)
    first: str                      # its first bytes, printable (escapes for the rest)
    decoder: Optional[str]          # the mode whose reply parser framed them
    replies: tuple                  # the first replies, one line each
    accepted_before: int            # bytes send() had accepted when it closed


@dataclass(frozen=True)
class TlsView(_Plain):
    """The TLS layer between send() and the kernel (a nonblocking ``ssl.SSLSocket``)."""

    version: Optional[str]
    cipher: Optional[str]
    server_name: Optional[str]
    plaintext_accepted: int         # plaintext bytes SSLSocket.send() reported written
    ciphertext_written: Optional[int]   # TLS record bytes our kernel took after the handshake
    beyond_plaintext: Optional[int]     # ciphertext_written - plaintext_accepted
    held_by_tls: str                # what is and is not visible of the bytes OpenSSL holds
    records: int = 0                # TLS records of the accepted plaintext (RECORD_PLAINTEXT each)
    record_overhead: Optional[int] = None   # bytes a record adds (TLS 1.3 AEAD: 22); None: unknown
    refused_in_kernel: Optional[int] = None  # inferred: record bytes of the refused send() in the kernel
    held_by_openssl: Optional[int] = None    # inferred: the rest of its partly written record
    handshake_bytes: Optional[int] = None    # record bytes our kernel took for the handshake


#: What a run came to: the full-buffer case, a peer that kept reading, one that answered and
#: closed or reset.  (A failed connect is no report: the CLI's JSON says ``"outcome": "failed"``.)
OUTCOMES = ("stalled", "reading", "peer-closed")


@dataclass(frozen=True)
class StallReport(_Plain):
    """Everything ``socktools stall`` measured; ``to_dict()`` is its JSON."""

    config: StallConfig
    peer: PeerInfo
    local: str
    remote: str
    family: str
    fill: FillResult
    settle: Optional[SettleResult]
    snapshot: Optional[Snapshot]
    drain: Optional[DrainResult]
    transport: str = "tcp"          # "tcp", "tls" (TCP under TLS) or "unix"
    payload: str = "zeros"          # what was repeated, as typed
    whole_requests: Optional[int] = None    # requests send() took whole (None: no requests)
    answer: Optional[PeerAnswer] = None
    tls: Optional[TlsView] = None

    @property
    def outcome(self) -> str:
        if self.answer is not None:
            return "peer-closed"
        return "stalled" if self.fill.blocked else "reading"

    @property
    def ok(self) -> bool:
        """The full-buffer case was reproduced (the CLI exits 0)."""
        return self.outcome == "stalled"

    def to_dict(self) -> dict:
        # the config's own to_dict: the exchange as its summary (a --send-file's bytes are no JSON)
        return {"ok": self.ok, "outcome": self.outcome, **_plain(self), "config": self.config.to_dict()}

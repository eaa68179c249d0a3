"""Read what the kernel knows about one of our own TCP sockets: queues, buffers, ``TCP_INFO``.

Strategy
--------
* ``struct tcp_info`` (``include/uapi/linux/tcp.h``) only ever grows at the
  end; the kernel copies ``min(len you asked for, sizeof its struct)`` bytes.
  So we ask for more than any kernel has (512 bytes), and parse exactly the
  fields that fit in what came back.  A field the running kernel does not
  have is reported *missing*, never guessed (``tcpi_snd_wnd`` needs Linux
  5.4, ``tcpi_rcv_wnd`` 6.2, ``tcpi_total_rto`` 6.7).
* Offsets are computed from the declared order with C's natural alignment,
  which is what every Linux ABI uses for this struct (its 64-bit members were
  placed on 8-byte boundaries on purpose); a test pins the known sizes
  (104, 232, 248 bytes) so a typo in the table cannot slip through.
* The queue ioctls are Linux's: ``SIOCINQ`` (= ``FIONREAD``) is the receive
  queue, ``SIOCOUTQ`` (= ``TIOCOUTQ``) the send queue (unacknowledged + not
  yet sent), ``SIOCOUTQNSD`` the not-yet-sent part only.  These are exactly
  the Recv-Q / Send-Q that ``netstat`` and ``ss`` print for a connected socket.
* Everywhere else (macOS, the BSDs, Windows) the layout differs or the calls
  do not exist: every reader returns ``None`` with a reason instead of raising,
  so callers can print "unavailable on this platform".

Pure parsing (:func:`parse_tcp_info`) needs no socket and is unit-tested with
synthetic buffers.
"""

from __future__ import annotations

import array
import functools
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional

__all__ = [
    "IS_LINUX", "SIOCINQ", "SIOCOUTQ", "SIOCOUTQNSD", "TCP_INFO_FIELDS", "TcpInfoField",
    "TcpInfo", "parse_tcp_info", "read_tcp_info", "Queues", "read_queues", "Buffers",
    "read_buffers", "TCP_STATES", "CA_STATES", "UNAVAILABLE_PLATFORM",
]

IS_LINUX = sys.platform.startswith("linux")

#: From linux/sockios.h.  SIOCINQ is FIONREAD and SIOCOUTQ is TIOCOUTQ (asm-generic/ioctls.h).
SIOCINQ = 0x541B
SIOCOUTQ = 0x5411
SIOCOUTQNSD = 0x894B

#: ``TCP_INFO`` is option 11 on Linux; Python exposes it only where it exists.
_TCP_INFO = getattr(socket, "TCP_INFO", 11)

#: Larger than any kernel's struct tcp_info (280 bytes in 6.18), so we always get all of it.
_ASK_BYTES = 512

UNAVAILABLE_PLATFORM = f"unavailable on this platform ({sys.platform}): Linux only"

#: ``tcpi_state`` / ``/proc/net/tcp`` ``st`` values (include/net/tcp_states.h), named as ss names them.
TCP_STATES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
    7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW-SYN-RECV",
}

#: ``tcpi_ca_state``: the congestion-avoidance state machine (include/net/tcp.h).
CA_STATES = {0: "Open", 1: "Disorder", 2: "CWR", 3: "Recovery", 4: "Loss"}


@dataclass(frozen=True)
class TcpInfoField:
    """One member of ``struct tcp_info``: name without the ``tcpi_`` prefix, C type, unit, meaning."""

    name: str
    ctype: str          # "u8", "u16", "u32", "u64", or "bits" for a byte holding bitfields
    unit: str           # "", "bytes", "segments", "us", "ms", "bytes/s", "count"
    meaning: str
    since: str = ""     # first Linux version that has it, where it matters to users


_F = TcpInfoField
#: The members in declaration order (uapi/linux/tcp.h).  Append only, as the kernel does.
TCP_INFO_FIELDS: tuple[TcpInfoField, ...] = (
    _F("state", "u8", "", "TCP state (1 = ESTABLISHED, see TCP_STATES)"),
    _F("ca_state", "u8", "", "congestion-control state (0 = Open, see CA_STATES)"),
    _F("retransmits", "u8", "count", "retransmission timeouts in a row for the current segment"),
    _F("probes", "u8", "count", "unanswered zero-window / keepalive probes sent"),
    _F("backoff", "u8", "count", "exponential backoff of the retransmit/persist timer (doublings)"),
    _F("options", "u8", "", "negotiated options bitmask (1 timestamps, 2 SACK, 4 window scaling, 8 ECN)"),
    _F("wscale", "bits", "", "window-scale shifts: snd_wscale (peer's) and rcv_wscale (ours), 4 bits each"),
    _F("app_limited", "bits", "", "delivery_rate_app_limited:1, fastopen_client_fail:2"),
    _F("rto", "u32", "us", "retransmission timeout"),
    _F("ato", "u32", "us", "delayed-ACK timeout"),
    _F("snd_mss", "u32", "bytes", "maximum segment size we send"),
    _F("rcv_mss", "u32", "bytes", "maximum segment size we estimate we receive"),
    _F("unacked", "u32", "segments", "segments sent and not yet acknowledged (packets_out)"),
    _F("sacked", "u32", "segments", "segments selectively acknowledged"),
    _F("lost", "u32", "segments", "segments presumed lost"),
    _F("retrans", "u32", "segments", "segments retransmitted and not yet acknowledged"),
    _F("fackets", "u32", "segments", "(unused since Linux 4.15)"),
    _F("last_data_sent", "u32", "ms", "time since we last sent data"),
    _F("last_ack_sent", "u32", "ms", "(not tracked by Linux, always 0)"),
    _F("last_data_recv", "u32", "ms", "time since we last received data"),
    _F("last_ack_recv", "u32", "ms", "time since we last received an ACK"),
    _F("pmtu", "u32", "bytes", "path MTU"),
    _F("rcv_ssthresh", "u32", "bytes", "cap on the receive window we advertise"),
    _F("rtt", "u32", "us", "smoothed round-trip time"),
    _F("rttvar", "u32", "us", "round-trip time variation"),
    _F("snd_ssthresh", "u32", "segments", "slow-start threshold"),
    _F("snd_cwnd", "u32", "segments", "congestion window"),
    _F("advmss", "u32", "bytes", "MSS we advertised"),
    _F("reordering", "u32", "segments", "reordering tolerance"),
    _F("rcv_rtt", "u32", "us", "receiver-side RTT estimate"),
    _F("rcv_space", "u32", "bytes", "receive-buffer autotuning estimate"),
    _F("total_retrans", "u32", "segments", "retransmitted segments over the connection's life"),
    _F("pacing_rate", "u64", "bytes/s", "current pacing rate", "3.15"),
    _F("max_pacing_rate", "u64", "bytes/s", "pacing-rate cap (SO_MAX_PACING_RATE)", "3.15"),
    _F("bytes_acked", "u64", "bytes", "bytes the peer acknowledged", "4.1"),
    _F("bytes_received", "u64", "bytes", "bytes received", "4.1"),
    _F("segs_out", "u32", "segments", "segments sent", "4.2"),
    _F("segs_in", "u32", "segments", "segments received", "4.2"),
    _F("notsent_bytes", "u32", "bytes", "bytes in the send queue not yet sent", "4.6"),
    _F("min_rtt", "u32", "us", "minimum RTT seen", "4.6"),
    _F("data_segs_in", "u32", "segments", "segments received carrying data", "4.6"),
    _F("data_segs_out", "u32", "segments", "segments sent carrying data", "4.6"),
    _F("delivery_rate", "u64", "bytes/s", "most recent delivery-rate sample", "4.9"),
    _F("busy_time", "u64", "us", "time with data outstanding", "4.10"),
    _F("rwnd_limited", "u64", "us", "time sending was limited by the peer's receive window", "4.10"),
    _F("sndbuf_limited", "u64", "us", "time sending was limited by our send buffer", "4.10"),
    _F("delivered", "u32", "segments", "segments delivered", "4.18"),
    _F("delivered_ce", "u32", "segments", "segments delivered with ECN CE marks", "4.18"),
    _F("bytes_sent", "u64", "bytes", "bytes sent, including retransmissions", "4.19"),
    _F("bytes_retrans", "u64", "bytes", "bytes retransmitted", "4.19"),
    _F("dsack_dups", "u32", "segments", "duplicate segments reported by D-SACK", "4.19"),
    _F("reord_seen", "u32", "count", "reordering events seen", "4.19"),
    _F("rcv_ooopack", "u32", "segments", "out-of-order segments received", "5.4"),
    _F("snd_wnd", "u32", "bytes", "the peer's advertised receive window (0 = it is full)", "5.4"),
    _F("rcv_wnd", "u32", "bytes", "the receive window we advertise", "6.2"),
    _F("rehash", "u32", "count", "PLB or timeout-triggered rehash attempts", "6.2"),
    _F("total_rto", "u16", "count", "retransmission timeouts over the connection's life", "6.7"),
    _F("total_rto_recoveries", "u16", "count", "RTO recoveries", "6.7"),
    _F("total_rto_time", "u32", "ms", "time spent in RTO recovery", "6.7"),
    _F("received_ce", "u32", "segments", "segments received with ECN CE marks", "6.18"),
    _F("delivered_e1_bytes", "u32", "bytes", "AccECN: bytes delivered with ECT(1)", "6.18"),
    _F("delivered_e0_bytes", "u32", "bytes", "AccECN: bytes delivered with ECT(0)", "6.18"),
    _F("delivered_ce_bytes", "u32", "bytes", "AccECN: bytes delivered with CE", "6.18"),
    _F("received_e1_bytes", "u32", "bytes", "AccECN: bytes received with ECT(1)", "6.18"),
    _F("received_e0_bytes", "u32", "bytes", "AccECN: bytes received with ECT(0)", "6.18"),
    _F("received_ce_bytes", "u32", "bytes", "AccECN: bytes received with CE", "6.18"),
    _F("accecn_fail_mode", "u16", "", "AccECN failure mode", "6.18"),
    _F("accecn_opt_seen", "u16", "", "AccECN option seen", "6.18"),
)
del _F

_SIZES = {"u8": 1, "bits": 1, "u16": 2, "u32": 4, "u64": 8}
_CODES = {"u8": "B", "bits": "B", "u16": "H", "u32": "I", "u64": "Q"}
FIELDS_BY_NAME: Mapping[str, TcpInfoField] = {f.name: f for f in TCP_INFO_FIELDS}


def _layout(fields: tuple[TcpInfoField, ...]) -> tuple[tuple[str, int, str], ...]:
    """(name, offset, struct code) for each member, with C natural alignment."""
    out, offset = [], 0
    for f in fields:
        size = _SIZES[f.ctype]
        offset = (offset + size - 1) // size * size
        out.append((f.name, offset, "=" + _CODES[f.ctype]))
        offset += size
    return tuple(out)


_LAYOUT = _layout(TCP_INFO_FIELDS)
#: Offsets by name, e.g. ``OFFSETS["snd_wnd"] == 228``.
OFFSETS: Mapping[str, int] = {name: off for name, off, _ in _LAYOUT}


def struct_size(last_field: str) -> int:
    """Bytes of ``struct tcp_info`` up to and including ``last_field``."""
    for name, off, code in _LAYOUT:
        if name == last_field:
            return off + struct.calcsize(code)
    raise KeyError(last_field)


@dataclass(frozen=True)
class TcpInfo:
    """Parsed ``TCP_INFO``: ``values`` holds every field the kernel returned, ``missing`` the rest.

    ``info["rtt"]`` raises ``KeyError`` for a missing field; ``info.get("snd_wnd")`` returns None.
    Derived bitfields appear as ``snd_wscale``, ``rcv_wscale``, ``delivery_rate_app_limited``
    and ``fastopen_client_fail``; ``state_name`` and ``ca_state_name`` name the states.
    """

    length: int                     # bytes the kernel returned
    values: Mapping[str, int]
    missing: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def get(self, name: str, default: Optional[int] = None) -> Optional[int]:
        return self.values.get(name, default)

    @property
    def state_name(self) -> Optional[str]:
        st = self.get("state")
        return None if st is None else TCP_STATES.get(st, str(st))

    @property
    def ca_state_name(self) -> Optional[str]:
        st = self.get("ca_state")
        return None if st is None else CA_STATES.get(st, str(st))

    def unavailable_reason(self, name: str) -> str:
        """Why ``name`` is missing, in words a user can act on."""
        f = FIELDS_BY_NAME.get(name)
        since = f" (added in Linux {f.since})" if f and f.since else ""
        return f"not returned by this kernel: TCP_INFO was {self.length} bytes{since}"

    def to_dict(self) -> dict:
        return {"length": self.length, "values": dict(self.values), "missing": list(self.missing),
                "state_name": self.state_name, "ca_state_name": self.ca_state_name}


@functools.lru_cache(maxsize=8)
def _decoder(n: int) -> tuple[struct.Struct, tuple[str, ...], tuple[str, ...]]:
    """One ``Struct`` (with pad bytes) for the fields that fit in ``n`` bytes, and the rest.

    Built once per buffer length (a kernel returns one length), so that decoding
    the tcp_info of every socket in a 10,000-socket dump is one ``unpack`` each.
    """
    fmt, names, missing, pos = ["="], [], [], 0
    for name, off, code in _LAYOUT:
        size = struct.calcsize(code)
        if off + size > n:
            missing.append(name)
            continue
        fmt.append(f"{off - pos}x{code[1:]}" if off > pos else code[1:])
        names.append(name)
        pos = off + size
    return struct.Struct("".join(fmt)), tuple(names), tuple(missing)


def parse_tcp_info(buf: bytes) -> TcpInfo:
    """Parse a ``TCP_INFO`` buffer of any length; fields past its end are listed as missing."""
    n = len(buf)
    decoder, names, missing = _decoder(n)
    values: dict[str, int] = dict(zip(names, decoder.unpack_from(buf)))
    # Bitfields: C allocates the first-declared member in the low bits on little-endian ABIs
    # and in the high bits on big-endian ones.
    little = sys.byteorder == "little"
    if "wscale" in values:
        b = values.pop("wscale")
        lo, hi = b & 0x0F, b >> 4
        values["snd_wscale"], values["rcv_wscale"] = (lo, hi) if little else (hi, lo)
    if "app_limited" in values:
        b = values.pop("app_limited")
        if little:
            values["delivery_rate_app_limited"] = b & 1
            values["fastopen_client_fail"] = (b >> 1) & 3
        else:
            values["delivery_rate_app_limited"] = b >> 7
            values["fastopen_client_fail"] = (b >> 5) & 3
    return TcpInfo(length=n, values=values, missing=missing)


def read_tcp_info(sock: socket.socket) -> tuple[Optional[TcpInfo], str]:
    """``(TcpInfo, "")`` on Linux, or ``(None, reason)`` where ``TCP_INFO`` cannot be read."""
    if not IS_LINUX:
        return None, UNAVAILABLE_PLATFORM
    try:
        buf = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _ASK_BYTES)
    except OSError as exc:
        return None, f"getsockopt(TCP_INFO) failed: {exc}"
    return parse_tcp_info(buf), ""


@dataclass(frozen=True)
class Queues:
    """One socket's queues in bytes, as netstat/ss show them; None where unavailable.

    ``recv_q``: received, not yet read by the application (SIOCINQ).
    ``send_q``: written by the application, not yet acknowledged by the peer (SIOCOUTQ);
    this includes ``notsent`` (SIOCOUTQNSD), the part not even sent yet.
    """

    recv_q: Optional[int]
    send_q: Optional[int]
    notsent: Optional[int]
    reason: str = ""

    @property
    def unacked(self) -> Optional[int]:
        """Bytes sent but not yet acknowledged ("in flight")."""
        if self.send_q is None or self.notsent is None:
            return None
        return self.send_q - self.notsent


def _ioctl_int(sock: socket.socket, request: int) -> int:
    import fcntl  # not on Windows; only reached on Linux
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, buf, True)
    return buf[0]


def read_queues(sock: socket.socket) -> Queues:
    """Recv-Q, Send-Q and the not-yet-sent part of Send-Q of a connected TCP socket."""
    if not IS_LINUX:
        return Queues(None, None, None, UNAVAILABLE_PLATFORM)
    try:
        return Queues(_ioctl_int(sock, SIOCINQ), _ioctl_int(sock, SIOCOUTQ),
                      _ioctl_int(sock, SIOCOUTQNSD))
    except OSError as exc:
        return Queues(None, None, None, f"queue ioctl failed: {exc}")


@dataclass(frozen=True)
class Buffers:
    """Effective SO_SNDBUF / SO_RCVBUF as the kernel reports them (Linux doubles what you set)."""

    sndbuf: int
    rcvbuf: int


def read_buffers(sock: socket.socket) -> Buffers:
    return Buffers(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                   sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

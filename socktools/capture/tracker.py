"""TCP conversation tracking: relative seq/ack, scaled windows, troubleshooting marks.

For every segment :meth:`Tracker.process` returns a :class:`PacketRecord`
(data only; the CLI renders it).  The marks follow Wireshark's TCP analysis
(``tcp.analysis.*``), which is what people learn to read:

- ``ZeroWindow``: the sender's receive window is 0 (not on SYN/FIN/RST).
- ``Window Full``: this segment fills the peer's last advertised window.
- ``ZeroWindowProbe``: a probe of a zero window — one new byte at the next
  sequence number (RFC 9293), or, as Linux probes, an empty segment one byte
  below it (Wireshark calls that shape Keep-Alive; here the peer's zero
  window says which it is).
- ``ZeroWindowProbeAck``, ``Window Update``, ``Keep-Alive``, ``Dup ACK``.
- ``Retransmission``: sequence space this direction had already sent.
- ``RST``: the connection was reset.

Sequence numbers are shown relative to each direction's initial sequence
number, as tshark does; when the SYN was not captured the first byte seen is
numbered 1.  Windows are scaled when the handshake showed the scale factors.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from socktools.capture.dissect import (_FLAG_CACHE as _FLAG_NAMES, ACK, FIN, RST, SYN, Segment,
                                      flag_names, format_ip)
from socktools.capture.reassembly import MessageEvent, StreamDecoder, preview_bytes
from socktools.capture.tls_decrypt import TlsSession

__all__ = ["Tracker", "PacketRecord", "ConnectionSummary"]

_M = 0xFFFFFFFF
_EPHEMERAL = (32768, 60999)   # net.ipv4.ip_local_port_range default

#: Connections whose state is kept.  Each costs about a kilobyte, so 100,000 is
#: ~100 MB at most; past it the oldest finished ones are forgotten (and counted).
MAX_CONNECTIONS = 100_000


class PacketRecord(NamedTuple):
    """One packet as the view shows it.  TCP fields are None for other protocols."""

    number: int
    time: float                 # seconds since the first packet
    ts_ns: int                  # absolute kernel/file time stamp
    proto: str                  # "TCP", "UDP", "ICMP"...
    src: str
    sport: Optional[int]
    dst: str
    dport: Optional[int]
    flags: tuple
    seq: Optional[int]
    ack: Optional[int]
    window: Optional[int]
    length: int                 # TCP payload bytes
    marks: tuple
    conn: Optional[int]         # connection number (1, 2...), TCP only
    events: tuple = ()          # MessageEvent / Note completed by this packet
    preview: Optional[str] = None
    info: str = ""              # non-TCP: one-line description
    options: Optional[dict] = None
    frame: bytes = b""          # the frame as captured (link header included)
    linktype: int = 0           # its pcap link type (1 Ethernet, 113/276 Linux cooked...)
    tsval: Optional[int] = None     # TCP time stamp option (RFC 7323), when present
    tsecr: Optional[int] = None

    def to_scapy(self):
        """This packet as a scapy packet (imports scapy): ``rec.to_scapy().show()``."""
        from socktools.capture._scapy import packet
        return packet(self.frame, self.linktype)


_make_record = tuple.__new__


class ConnectionSummary(NamedTuple):
    """Totals for one TCP connection; ``client``/``server`` are "addr:port" strings."""

    id: int
    client: str
    server: str
    packets_c2s: int
    packets_s2c: int
    bytes_c2s: int
    bytes_s2c: int
    handshake_rtt: Optional[float]   # SYN -> ACK of the SYN-ACK, seconds
    duration: float
    resets: int
    zero_windows: int
    retransmissions: int
    requests: int
    responses: int
    state: str                       # open | closed | reset | half-closed


def _endpoint(addr: bytes, port: int) -> str:
    text = format_ip(addr)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


class _Half:
    """One direction of a connection (what one endpoint sent)."""

    __slots__ = ("base", "next", "syn", "fin", "scale_opt", "win", "ack", "packets", "bytes",
                 "last_zwp", "last_keepalive", "zwp_rel", "stream", "messages", "settled")

    def __init__(self) -> None:
        self.base: Optional[int] = None   # sequence number shown as 0 (the ISN)
        self.next = 0                     # next relative sequence number expected
        self.syn = False
        self.fin = False
        self.scale_opt: Optional[int] = None
        self.win: Optional[int] = None    # last advertised window (scaled when known)
        self.ack: Optional[int] = None    # last relative ack (in the other direction's space)
        self.packets = 0
        self.bytes = 0
        self.last_zwp = False
        self.last_keepalive = False
        self.zwp_rel: Optional[int] = None
        self.stream: Optional[StreamDecoder] = None
        self.messages = 0
        #: the fast lane may take this direction's next segment: the ISN is known and no
        #: zero-window probe or keep-alive is pending an answer (one test, not four)
        self.settled = False


class _Conn:
    __slots__ = ("id", "ends", "halves", "client", "syn_ts", "rtt", "first_ts", "last_ts",
                 "resets", "zero_windows", "retrans", "reset", "texts", "scaled",
                 "handshake_seen", "tls")

    def __init__(self, cid: int, a: tuple, b: tuple, ts: int) -> None:
        self.id = cid
        self.ends = (a, b)                # ((addr, port), (addr, port)); halves[i] is what ends[i] sent
        # addresses as text, per direction (src, dst): formatted once, not per packet
        ta, tb = format_ip(a[0]), format_ip(b[0])
        self.texts = ((ta, tb), (tb, ta))
        # kept as attributes (updated on SYNs), not properties: read on every packet
        self.scaled = False
        self.handshake_seen = False
        self.tls: Optional[TlsSession] = None   # made with the first stream decoder (TLS-aware modes)
        self.halves = (_Half(), _Half())
        self.client: Optional[int] = None
        self.syn_ts: Optional[int] = None
        self.rtt: Optional[float] = None
        self.first_ts = ts
        self.last_ts = ts
        self.resets = 0
        self.zero_windows = 0
        self.retrans = 0
        self.reset = False

    @property
    def finished(self) -> bool:
        return self.reset or (self.halves[0].fin and self.halves[1].fin)

    def client_index(self) -> int:
        if self.client is not None:
            return self.client
        # No SYN seen: the side on an ephemeral port (Linux's default range) is the
        # client; when that does not decide, the lower port is the server's.
        p0, p1 = self.ends[0][1], self.ends[1][1]
        e0, e1 = _EPHEMERAL[0] <= p0 <= _EPHEMERAL[1], _EPHEMERAL[0] <= p1 <= _EPHEMERAL[1]
        if e0 != e1:
            return 0 if e0 else 1
        return 0 if p0 >= p1 else 1

    def saw_syn(self) -> None:
        h0, h1 = self.halves
        # RFC 7323: window scaling is on only when both SYNs carried the option.
        self.scaled = h0.scale_opt is not None and h1.scale_opt is not None
        self.handshake_seen = h0.syn and h1.syn


_PORTS = struct.Struct("!HH")


def _fast_key(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The key of :attr:`Tracker.fast`: what an IPv4/TCP frame holds at offset 26."""
    return src + dst + _PORTS.pack(sport, dport)


#: Below this many bytes into a stream, :func:`unwrap` returns its 32-bit argument unchanged.
UNWRAP_FROM = 0x80000000


def unwrap(rel32: int, near: int) -> int:
    """32-bit relative sequence -> the 64-bit value closest to ``near``.

    The one unwrap of the tracker and the fast lane.  For ``near`` below 2 GiB the answer is
    ``rel32`` itself, so callers on a hot path call this only when ``near >= UNWRAP_FROM``.
    """
    v = (near & ~_M) | rel32
    if v < near - 0x80000000:
        v += 0x100000000
    elif v > near + 0x80000000 and v >= 0x100000000:
        v -= 0x100000000
    return v


class Tracker:
    """Turns segments into records and keeps per-connection state and totals."""

    def __init__(self, decode: str = "auto", *, max_connections: int = MAX_CONNECTIONS,
                 keylog=None) -> None:
        self.decode = decode
        #: TLS is looked for at the start of each stream in these cases: auto and tls
        #: always, and with a key log (--keylog) in every mode that decodes
        self.keylog = keylog
        self.tls_aware = decode in ("auto", "tls") or (keylog is not None and decode not in ("raw", "none"))
        self.max_connections = max_connections
        self._table: dict[tuple, tuple[_Conn, int]] = {}
        #: The same connections for the fast lane (``fastlane.py``), IPv4 only: keyed by
        #: the 12 bytes an Ethernet/IPv4/TCP frame holds at offset 26 (source and
        #: destination address, source and destination port), so the lane finds the
        #: connection with one slice and no tuple; the value is ``(conn, sent, received, i)``
        #: (the connection, the halves of this direction and the other, the index).
        self.fast: dict[bytes, tuple] = {}
        self._conns: list[_Conn] = []
        self._next_id = 0
        #: finished connections dropped from the table to bound memory
        self.forgotten = 0

    # -------------------------------------------------------------- per packet
    def process(self, number: int, ts: int, t0: int, seg: Segment, frame: bytes = b"",
                linktype: int = 0) -> PacketRecord:
        flags = seg.flags
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        entry = self._table.get(key)
        if entry is None or (flags & (SYN | ACK) == SYN and entry[0].finished):
            conn, i = self._new(key, ts), 0
        else:
            conn, i = entry
        d, r = conn.halves[i], conn.halves[1 - i]
        conn.last_ts = ts
        plen = seg.payload_len

        if flags & SYN:
            if not d.syn:
                d.base, d.next, d.syn = seg.seq, 0, True
                d.scale_opt = (seg.options or {}).get("WS")
                conn.saw_syn()
            if not flags & ACK and conn.client is None:   # the SYN's sender is the client
                conn.client, conn.syn_ts = i, ts
        if d.base is None:
            d.base, d.next = (seg.seq - 1) & _M, 1     # mid-stream: first byte seen is Seq=1
        # the 64-bit offsets nearest the expected ones (unwrap() is the identity below 2 GiB)
        rel = (seg.seq - d.base) & _M
        if d.next >= UNWRAP_FROM:
            rel = unwrap(rel, d.next)
        ack_rel = None
        if flags & ACK:
            if r.base is None:
                r.base, r.next = (seg.ack - 1) & _M, 1
            ack_rel = (seg.ack - r.base) & _M
            if r.next >= UNWRAP_FROM:
                ack_rel = unwrap(ack_rel, r.next)
        scale = d.scale_opt if conn.scaled else 1
        win = seg.window if flags & SYN else seg.window * scale
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        plain = not flags & (SYN | FIN | RST)

        marks = []
        zwp = keepalive = False
        if plain and plen <= 1 and rel == d.next - 1 and d.packets:
            if r.win == 0:
                zwp = True
            else:
                keepalive = True
        elif plain and plen == 1 and rel == d.next and r.win == 0:
            zwp = True
        if zwp:
            marks.append("ZeroWindowProbe")
            d.zwp_rel = rel if plen else None
        elif keepalive:
            marks.append("Keep-Alive")
        elif seglen and rel < d.next and not (d.zwp_rel == rel and plen > 1):
            marks.append("Retransmission")
            conn.retrans += 1
        if plen and not zwp and conn.handshake_seen and r.win is not None and r.ack is not None:
            if rel + plen >= r.ack + r.win:
                marks.append("Window Full")
        if plain and seg.window == 0:
            marks.append("ZeroWindow")
            conn.zero_windows += 1
            if r.last_zwp:
                marks.append("ZeroWindowProbeAck")
        elif plain and not plen and not keepalive and d.win is not None and ack_rel == d.ack \
                and rel == d.next:
            if r.last_keepalive:
                marks.append("Keep-Alive ACK")
            elif win != d.win:
                marks.append("Window Update")
            else:
                marks.append("Dup ACK")
        if flags & RST:
            marks.append("RST")
            conn.resets += 1
            conn.reset = True

        # handshake RTT: SYN -> the client's ACK of the SYN-ACK (Wireshark's iRTT)
        if (conn.rtt is None and conn.syn_ts is not None and i == conn.client and plain
                and ack_rel == 1 and r.syn):
            conn.rtt = (ts - conn.syn_ts) / 1e9

        if not (zwp and plen == 0):
            d.next = max(d.next, rel + seglen)
        if d.zwp_rel is not None and rel > d.zwp_rel and not zwp:
            d.zwp_rel = None
        d.win = win
        if ack_rel is not None:
            d.ack = ack_rel
        d.last_zwp, d.last_keepalive = zwp, keepalive
        d.settled = d.zwp_rel is None and not zwp and not keepalive
        d.packets += 1
        d.bytes += plen

        events: tuple = ()
        preview = None
        if self.decode != "none":
            stream = d.stream
            if stream is None and plen and not d.fin and not conn.reset:
                role = "request" if i == conn.client_index() else "response"
                if self.tls_aware and conn.tls is None:
                    # one per connection: its two directions share the hellos and keys
                    conn.tls = TlsSession(self.keylog)
                stream = d.stream = StreamDecoder(self.decode, role, session=conn.tls)
            if stream is not None:
                out = []
                if plen and seg.payload:
                    out = stream.feed(rel - 1, seg.payload, number)
                    if stream.showing_raw:
                        preview = preview_bytes(seg.payload)
                if flags & FIN:
                    out += stream.finish(number)
                    d.stream = None
                if out:
                    d.messages += sum(1 for e in out if type(e) is MessageEvent)
                    events = tuple(out)
            if flags & RST:
                # a TLS stream holding records for their key says how that ended (decrypted
                # after all, or no key); other decoders end silently, as they always have
                for half in (d, r):
                    if half.stream is not None:
                        gone = half.stream.abandon(number)
                        if gone:
                            half.messages += sum(1 for e in gone if type(e) is MessageEvent)
                            events += tuple(gone)
                d.stream = r.stream = None
        if flags & FIN:
            d.fin = True

        src, dst = conn.texts[i]
        # tuple.__new__ directly: a NamedTuple's generated __new__ with 23 arguments
        # costs 2 us, a sixth of the whole per-packet budget (measured)
        return _make_record(PacketRecord, (
            number, (ts - t0) / 1e9, ts, "TCP", src, seg.sport, dst, seg.dport,
            _FLAG_NAMES.get(flags) or flag_names(flags), rel, ack_rel, win, plen,
            tuple(marks) if marks else (), conn.id, events, preview, "", seg.options, frame,
            linktype, seg.tsval, seg.tsecr))

    def _new(self, key: tuple, ts: int) -> _Conn:
        if len(self._conns) >= self.max_connections:
            self._evict()
        self._next_id += 1
        conn = _Conn(self._next_id, (key[0], key[1]), (key[2], key[3]), ts)
        self._conns.append(conn)
        self._table[key] = (conn, 0)
        self._table[(key[2], key[3], key[0], key[1])] = (conn, 1)
        if len(key[0]) == 4:
            h0, h1 = conn.halves
            self.fast[_fast_key(key[0], key[1], key[2], key[3])] = (conn, h0, h1, 0)
            self.fast[_fast_key(key[2], key[3], key[0], key[1])] = (conn, h1, h0, 1)
        return conn

    def _evict(self) -> None:
        """Bound memory in long captures of many connections (a flood): forget the
        oldest quarter of the finished ones; they are counted in ``forgotten``."""
        budget = max(1, self.max_connections // 4)
        keep = []
        for c in self._conns:
            if budget and c.finished:
                budget -= 1
                self.forgotten += 1
                a, b = c.ends
                for k in ((a + b), (b + a)):
                    if self._table.get(k, (None,))[0] is c:
                        del self._table[k]
                    if len(k[0]) == 4:
                        fk = _fast_key(*k)
                        if self.fast.get(fk, (None,))[0] is c:
                            del self.fast[fk]
            else:
                keep.append(c)
        self._conns = keep

    # ------------------------------------------------------------------- totals
    def summaries(self) -> list[ConnectionSummary]:
        out = []
        for c in self._conns:
            ci = c.client_index()
            hc, hs = c.halves[ci], c.halves[1 - ci]
            if c.reset:
                state = "reset"
            elif hc.fin and hs.fin:
                state = "closed"
            elif hc.fin or hs.fin:
                state = "half-closed"
            else:
                state = "open"
            out.append(ConnectionSummary(
                c.id, _endpoint(*c.ends[ci]), _endpoint(*c.ends[1 - ci]), hc.packets, hs.packets,
                hc.bytes, hs.bytes, c.rtt, (c.last_ts - c.first_ts) / 1e9, c.resets,
                c.zero_windows, c.retrans, hc.messages, hs.messages, state))
        return out

"""flood's datagrams in a capture: requests matched to replies, and what never came back.

``flood --udp`` puts a header in every datagram (:mod:`socktools.wire.datagram`: ``sktU``,
the socket number, a sequence number, the send time) and an echo server sends it back as it
is.  So a capture alone can say, per flood socket, which datagrams went out, which came back,
and how long each round trip took -- and which sequence numbers never got a reply.

How a datagram is placed: the pair of endpoints and the header's socket number name one flood
socket (:class:`_Socket`); the side that sent a sequence number first is the client.  A
datagram from the other side carrying a sequence number the client sent and is still waiting
for is its reply, and its round trip is the capture time of the reply minus the capture time
of the request.  The send time in the header is *not* used for it: it is the sender's
monotonic clock (``perf_counter_ns``), which shares no origin with the capture's time stamps.

A capture that starts mid-run may see a reply first; the side that sent it is then taken for
the client until the real client's next request (a higher sequence number, from the other
side, before any reply matched) turns it round, and what it had sent is counted as replies
whose request is not in the capture.

What a loopback capture can and cannot see is in docs/sniff.md ("Datagrams"): sniff shows
the copy of a datagram that arrives on ``lo``, after the sender's buffer took it and after the
per-CPU backlog queue, before the receiving socket's buffer.  So a request seen with no reply
was lost at or after the receiver: dropped at its full receive buffer, or not answered.

Sans-I/O: :meth:`DatagramTracker.datagram` takes what a capture saw (time stamp, endpoints,
payload) and returns what to show; the tests feed it lists of datagrams.  Every table is
bounded by a named limit.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from socktools.capture.dissect import format_ip
from socktools.capture.events import DatagramEvent, Note
from socktools.wire import datagram as dg

__all__ = ["DatagramTracker", "SocketSummary", "MAX_SOCKETS", "MAX_WAITING", "MAX_WAITING_TOTAL",
           "RECENT_ANSWERED", "MAX_LISTED"]

#: flood sockets followed.  Each costs a few hundred bytes plus what it waits for; the same
#: bound as TCP connections (tracker.MAX_CONNECTIONS), past which a new socket's datagrams are
#: still shown on their lines but counted only as ``untracked``.
MAX_SOCKETS = 100_000

#: Requests one socket may wait on.  flood's closed loop keeps one in flight; its open loop at
#: a high --rate keeps a round trip's worth, plus every one that was lost.  flood's own ledger
#: remembers 4,096 (wire.datagram.WINDOW); past this many the oldest is given up as unanswered
#: (listed and counted like any other), so a reply later than that is counted as one whose
#: request is not in the capture, honestly, not matched.
MAX_WAITING = 4096

#: Requests waiting over all sockets: ~100 bytes each, so 262,144 is ~26 MB.  Past it, the
#: socket that sent the new request gives up its oldest, as above.
MAX_WAITING_TOTAL = 262_144

#: Sequence numbers a socket remembers after their reply, to tell a duplicated reply (an echo
#: answering twice) from a reply whose request the capture never saw.  Duplicates come right
#: behind the first copy; 64 is 64 round trips of history.
RECENT_ANSWERED = 64

#: Runs of unanswered sequence numbers listed per socket ("17-20, 96"); past it they are
#: counted.  20 runs is one or two lines of text.
MAX_LISTED = 20


class SocketSummary(NamedTuple):
    """One flood socket as the capture saw it; ``client``/``server`` are "addr:port"."""

    sock: int
    client: str
    server: str
    out: int                     # requests seen (each sequence number once)
    replies: int                 # replies matched to a request in the capture
    unanswered: int              # requests with no reply in the capture
    unanswered_seqs: tuple       # ((first, last), ...) runs, the first MAX_LISTED of them
    unanswered_unlisted: int     # unanswered sequence numbers past those runs
    duplicates: int              # a request or reply seen again
    unmatched_replies: int       # replies whose request is not in the capture
    rtt_min: Optional[float]     # seconds, from capture times
    rtt_avg: Optional[float]
    rtt_max: Optional[float]
    first_seq: Optional[int]
    last_seq: Optional[int]


def _endpoint(end: tuple) -> str:
    text = format_ip(end[0])
    return f"[{text}]:{end[1]}" if ":" in text else f"{text}:{end[1]}"


class _Socket:
    """One flood socket seen between two endpoints."""

    __slots__ = ("sock", "client", "server", "waiting", "recent", "out", "replies", "duplicates",
                 "unmatched", "given_up", "given_up_runs", "given_up_unlisted", "rtt_sum",
                 "rtt_min", "rtt_max", "first_seq", "last_seq")

    def __init__(self, sock: int, client: tuple, server: tuple) -> None:
        self.sock = sock
        self.client, self.server = client, server
        self.waiting: dict = {}            # seq -> (capture ts, packet number), oldest first
        self.recent: dict = {}             # seq -> None: answered lately (RECENT_ANSWERED)
        self.out = self.replies = self.duplicates = self.unmatched = 0
        self.given_up = 0                  # requests dropped from `waiting` by the bounds
        self.given_up_runs: list = []      # their runs, up to MAX_LISTED
        self.given_up_unlisted = 0
        self.rtt_sum = 0
        self.rtt_min: Optional[int] = None
        self.rtt_max: Optional[int] = None
        self.first_seq: Optional[int] = None
        self.last_seq: Optional[int] = None

    def request(self, seq: int, ts: int, number: int) -> None:
        self.waiting[seq] = (ts, number)
        self.out += 1
        if self.first_seq is None or seq < self.first_seq:
            self.first_seq = seq
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq

    def give_up_oldest(self) -> None:
        seq = next(iter(self.waiting))
        del self.waiting[seq]
        self.given_up += 1
        runs = self.given_up_runs
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        elif len(runs) < MAX_LISTED:
            runs.append([seq, seq])
        else:
            self.given_up_unlisted += 1

    def turn_round(self) -> None:
        """What this socket took for requests were replies to requests from before the
        capture (those waiting and those given up): the other side is the client."""
        gone = len(self.waiting) + self.given_up
        self.unmatched += gone
        self.out -= gone
        self.waiting.clear()
        self.given_up = self.given_up_unlisted = 0
        self.given_up_runs = []
        self.client, self.server = self.server, self.client
        self.first_seq = self.last_seq = None

    def answered(self, seq: int, ts: int) -> tuple:
        """The reply to ``seq`` came at ``ts``: (round trip in ns, the request's packet)."""
        sent, number = self.waiting.pop(seq)
        rtt = ts - sent
        self.replies += 1
        self.rtt_sum += rtt
        if self.rtt_min is None or rtt < self.rtt_min:
            self.rtt_min = rtt
        if self.rtt_max is None or rtt > self.rtt_max:
            self.rtt_max = rtt
        recent = self.recent
        recent[seq] = None
        if len(recent) > RECENT_ANSWERED:
            del recent[next(iter(recent))]
        return rtt, number

    def summary(self) -> SocketSummary:
        runs = [tuple(r) for r in self.given_up_runs]
        unlisted = self.given_up_unlisted
        for seq in sorted(self.waiting):
            if runs and runs[-1][1] == seq - 1:
                runs[-1] = (runs[-1][0], seq)
            elif len(runs) < MAX_LISTED:
                runs.append((seq, seq))
            else:
                unlisted += 1
        n = self.replies
        return SocketSummary(
            self.sock, _endpoint(self.client), _endpoint(self.server), self.out, self.replies,
            len(self.waiting) + self.given_up, tuple(runs), unlisted, self.duplicates,
            self.unmatched, None if self.rtt_min is None else self.rtt_min / 1e9,
            self.rtt_sum / n / 1e9 if n else None,
            None if self.rtt_max is None else self.rtt_max / 1e9, self.first_seq, self.last_seq)


class DatagramTracker:
    """Places every flood datagram a capture shows; sums up each socket at the end.

    ``decode``: ``auto`` decodes the datagrams that carry flood's header and previews the
    rest; ``datagram`` also says why one is not flood's; ``raw`` previews every payload;
    anything else (``none`` and the stream decoders) shows the line only.
    """

    def __init__(self, decode: str = "auto", *, max_sockets: int = MAX_SOCKETS,
                 max_waiting: int = MAX_WAITING, max_waiting_total: int = MAX_WAITING_TOTAL) -> None:
        self.decode = decode
        self.decoding = decode in ("auto", "datagram")
        self.previewing = decode in ("auto", "datagram", "raw")
        self.max_sockets = max_sockets
        self.max_waiting = max_waiting
        self.max_waiting_total = max_waiting_total
        self._socks: dict = {}             # (low end, high end, sock) -> _Socket
        self.waiting = 0                   # requests waiting over all sockets
        self.untracked = 0                 # flood datagrams of sockets past max_sockets
        self.seen = 0                      # flood datagrams seen

    def datagram(self, number: int, ts: int, src: tuple, dst: tuple, length: int,
                 payload: bytes) -> tuple:
        """One UDP datagram (``src``/``dst`` are (packed address, port); ``length`` the UDP
        payload length, ``payload`` what was captured of it): ``(events, show_preview)``."""
        if not self.decoding:
            return (), self.previewing and length > 0
        head = dg.decode(payload)
        if head is None:
            if payload[:4] == dg.MAGIC and len(payload) < dg.HEADER_SIZE:
                cut = "cut by the snap length" if length > len(payload) else "a short datagram"
                return (Note("datagram-cut", f"flood's header needs {dg.HEADER_SIZE} bytes, "
                                             f"{len(payload)} here ({cut}): not decoded"),), True
            if self.decode == "datagram":
                return (Note("not-datagram", "not one of flood's datagrams (no sktU header)"),), \
                    length > 0
            return (), length > 0
        self.seen += 1
        return (self._place(number, ts, src, dst, head),), False

    def _place(self, number: int, ts: int, src: tuple, dst: tuple, head) -> DatagramEvent:
        sock, seq = head.sock, head.seq
        key = (src, dst, sock) if src <= dst else (dst, src, sock)
        s = self._socks.get(key)
        if s is None:
            if len(self._socks) >= self.max_sockets:
                self.untracked += 1
                return _event(head, "untracked", None, None)
            s = self._socks[key] = _Socket(sock, src, dst)
            return self._request(s, seq, ts, number, head)
        if src == s.client:
            if seq in s.waiting or seq in s.recent:
                s.duplicates += 1
                return _event(head, "duplicate", None, None)
            return self._request(s, seq, ts, number, head)
        # from the server's side
        if seq in s.waiting:
            rtt, asked = s.answered(seq, ts)
            self.waiting -= 1
            return _event(head, "reply", rtt, asked)
        if seq in s.recent:
            s.duplicates += 1
            return _event(head, "duplicate-reply", None, None)
        if not s.replies and s.last_seq is not None and seq > s.last_seq:
            # what "the client" sent were replies to requests from before the capture: this
            # is the real client's next request (see the module's note)
            self.waiting -= len(s.waiting)
            s.turn_round()
            return self._request(s, seq, ts, number, head)
        s.unmatched += 1
        return _event(head, "unmatched-reply", None, None)

    def _request(self, s: _Socket, seq: int, ts: int, number: int, head) -> DatagramEvent:
        s.request(seq, ts, number)
        self.waiting += 1
        while len(s.waiting) > self.max_waiting or \
                (self.waiting > self.max_waiting_total and len(s.waiting) > 1):
            s.give_up_oldest()
            self.waiting -= 1
        return _event(head, "request", None, None)

    def summaries(self) -> list:
        """Every socket, in the order first seen."""
        return [s.summary() for s in self._socks.values()]


_TEXT = {
    "request": "", "duplicate": " [Duplicate]", "duplicate-reply": " reply [Duplicate]",
    "unmatched-reply": " reply (its request is not in the capture)",
    "untracked": " (past the bound on sockets followed: not matched)",
}


def _event(head, role: str, rtt: Optional[int], asked: Optional[int]) -> DatagramEvent:
    if role == "reply":
        text = f"flood sock={head.sock} seq={head.seq} reply to #{asked} RTT={_ms(rtt)}"
    else:
        text = f"flood sock={head.sock} seq={head.seq}{_TEXT[role]}"
    return DatagramEvent(head.sock, head.seq, head.sent_ns, role, rtt, asked, text)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms" if ns < 1_000_000_000 else f"{ns / 1e9:.3f} s"

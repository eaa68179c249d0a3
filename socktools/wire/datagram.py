"""flood's datagrams over UDP, and one socket's account of them: sans-I/O.

Every datagram flood sends carries a 24-byte header -- a magic, the number of the socket
that sent it, a sequence number and the send time -- padded to the size asked for.  An echo
server sends it back as it is, so the reply alone says which request it answers, when that
left and from which socket, whatever order the network returns things in.  ``sniff`` reads the
same header out of a capture (:func:`decode`).

A :class:`Ledger` is one socket's account: what it sent, and for every datagram that came
back, which of these it was::

    answered    the reply to a datagram still waiting, before its timeout
    late        the reply to one whose timeout had passed (it was lost, then it came)
    duplicated  a second reply to one already answered (or already late)
    reordered   answered, but after a reply to a later datagram (also counted answered)
    truncated   answered, but shorter than sent or cut by the kernel (also counted answered)
    foreign     not a reply to this socket: another header, another socket, a seq never sent
    stale       older than the window this ledger remembers: cannot be placed

and, for a datagram the kernel would not take on the way out (ENOBUFS, EAGAIN: the sender's
own buffer), ``refused`` -- it never left, so it is not counted sent (:meth:`Ledger.refused`);

and, for those that never came back before their timeout, ``lost`` (:meth:`Ledger.expire`).
The counts add up exactly: every datagram sent is answered, late, lost or still in flight::

    sent == answered + late + lost + in_flight

No socket, no clock: the caller passes ``now`` (ns), and the ledger is tested by feeding it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import NamedTuple, Optional

__all__ = ["HEADER", "HEADER_SIZE", "MAGIC", "MAX_DATAGRAM", "MIN_DATAGRAM", "WINDOW", "Header",
           "encode", "decode", "Ledger", "Unstamped", "COUNTS"]

#: Magic, socket number, sequence number, send time (ns, the sender's monotonic clock).
HEADER = struct.Struct("!4sIQQ")
HEADER_SIZE = HEADER.size
MAGIC = b"sktU"

#: The largest UDP payload over IPv4: 65,535 (the IP total length field) - 20 (IP header)
#: - 8 (UDP header).  IPv6 allows 65,527 without jumbograms; flood keeps one bound for both.
MAX_DATAGRAM = 65_507
#: The smallest datagram flood sends: its header, nothing else.
MIN_DATAGRAM = HEADER_SIZE

#: Sequence numbers a ledger remembers after they were answered or declared lost, to tell a
#: late reply and a duplicate from a foreign one.  Closed loop keeps one datagram in flight; at
#: --rate 100,000/s per socket with a 1 s timeout 4,096 is 40 ms of history past the timeout
#: -- a reply later than that is counted ``stale``, honestly, not guessed.  16 bytes an entry.
WINDOW = 4096

COUNTS = ("sent", "answered", "late", "lost", "duplicated", "reordered", "truncated", "foreign", "stale",
          "refused")

_ANSWERED, _LOST = 1, 2


class Header(NamedTuple):
    sock: int
    seq: int
    sent_ns: int


def encode(sock: int, seq: int, sent_ns: int, size: int = HEADER_SIZE) -> bytes:
    """Datagram ``seq`` of socket ``sock``, ``size`` bytes (header, then zero padding)."""
    if not MIN_DATAGRAM <= size <= MAX_DATAGRAM:
        raise ValueError(f"a datagram is {MIN_DATAGRAM} to {MAX_DATAGRAM} bytes, not {size}")
    head = HEADER.pack(MAGIC, sock, seq, sent_ns)
    return head if size == HEADER_SIZE else head + bytes(size - HEADER_SIZE)


def decode(data: bytes) -> Optional[Header]:
    """The header of one of flood's datagrams, or None when ``data`` is not one."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        return None
    _, sock, seq, sent_ns = HEADER.unpack_from(data)
    return Header(sock, seq, sent_ns)


class Ledger:
    """One socket's datagrams: what it sent and what every reply was.

    ``size`` is the size of every datagram sent (a shorter reply is truncated);
    ``timeout_ns`` is how long a datagram waits for its reply before it is lost."""

    __slots__ = ("sock", "size", "timeout_ns", "next_seq", "waiting", "settled", "highest",
                 "sent", "answered", "late", "lost", "duplicated", "reordered", "truncated",
                 "foreign", "stale", "refused", "latency_ns")

    def __init__(self, sock: int, size: int, timeout_ns: int) -> None:
        if timeout_ns <= 0:
            raise ValueError("a reply timeout must be above 0")
        self.sock = sock
        self.size = size
        self.timeout_ns = timeout_ns
        self.next_seq = 0
        self.waiting: "OrderedDict[int, int]" = OrderedDict()   # seq -> sent_ns, oldest first
        self.settled: "OrderedDict[int, int]" = OrderedDict()   # seq -> _ANSWERED/_LOST, last WINDOW
        self.highest = -1               # the highest seq answered so far (for reordered)
        self.sent = self.answered = self.late = self.lost = 0
        self.duplicated = self.reordered = self.truncated = self.foreign = self.stale = self.refused = 0
        self.latency_ns = 0             # of the last datagram answered

    @property
    def in_flight(self) -> int:
        return len(self.waiting)

    def send(self, now: int) -> bytes:
        """The next datagram to send at ``now``, counted sent and waiting from now."""
        seq = self.next_seq
        self.next_seq = seq + 1
        self.waiting[seq] = now
        self.sent += 1
        return encode(self.sock, seq, now, self.size)

    def refuse(self) -> None:
        """The kernel did not take the datagram :meth:`send` just made (ENOBUFS, EAGAIN): it
        never left.  Counted ``refused`` and no longer sent or waiting."""
        if self.waiting.pop(self.next_seq - 1, None) is not None:
            self.sent -= 1
            self.refused += 1

    def receive(self, data: bytes, now: int, cut: bool = False) -> str:
        """Account for one datagram received at ``now`` (``cut``: the kernel truncated it,
        MSG_TRUNC).  Returns what it was: one of ``answered``, ``late``, ``duplicated``,
        ``foreign``, ``stale`` (an answered one may also have been counted reordered or
        truncated).  For ``answered``, :attr:`latency_ns` is its round trip."""
        head = decode(data)
        if head is None or head.sock != self.sock or head.seq >= self.next_seq:
            self.foreign += 1
            return "foreign"
        seq = head.seq
        sent_ns = self.waiting.get(seq)
        if sent_ns is not None and sent_ns != head.sent_ns:
            self.foreign += 1           # our seq, another send time: not our datagram's echo
            return "foreign"
        if sent_ns is not None and now - sent_ns > self.timeout_ns:
            self.expire(now)            # its time ran out before we looked: it was lost
            sent_ns = None
        if sent_ns is not None:
            del self.waiting[seq]
            self._settle(seq, _ANSWERED)
            self.answered += 1
            self.latency_ns = now - sent_ns
            if seq < self.highest:
                self.reordered += 1
            else:
                self.highest = seq
            if cut or len(data) < self.size:
                self.truncated += 1
            return "answered"
        state = self.settled.get(seq)
        if state == _LOST:
            self.settled[seq] = _ANSWERED   # a second copy of it is a duplicate
            self.lost -= 1
            self.late += 1
            return "late"
        if state == _ANSWERED:
            self.duplicated += 1
            return "duplicated"
        self.stale += 1
        return "stale"

    def expire(self, now: int) -> int:
        """Declare lost every datagram whose timeout has passed at ``now``; how many."""
        waiting = self.waiting
        limit = now - self.timeout_ns
        n = 0
        while waiting:
            seq, sent_ns = next(iter(waiting.items()))
            if sent_ns >= limit:
                break
            del waiting[seq]
            self._settle(seq, _LOST)
            n += 1
        self.lost += n
        return n

    def next_deadline(self) -> Optional[int]:
        """When the oldest datagram waiting times out (ns), or None."""
        for sent_ns in self.waiting.values():
            return sent_ns + self.timeout_ns
        return None

    def counts(self) -> dict:
        return {name: getattr(self, name) for name in COUNTS}

    def _settle(self, seq: int, state: int) -> None:
        settled = self.settled
        settled[seq] = state
        if len(settled) > WINDOW:
            settled.popitem(last=False)


class Unstamped:
    """One socket's account when its datagrams carry no header of ours -- ``--mode raw`` or
    ``line``: the user's bytes as they are (a DNS query, a syslog line).  Nothing in a reply
    says which request it answers, so there is only ever one in flight: a datagram that
    arrives while one waits is its reply; one that arrives when none waits is counted ``late``
    while requests declared lost might still be answered (the oldest of them, as far as anyone
    can tell), else ``foreign`` (a second copy of an answer, or no answer at all: without a
    header the two look the same).  The same counts as :class:`Ledger`, and the same sum:
    ``sent == answered + late + lost + in_flight``.

    ``make(seq)`` gives request ``seq``'s bytes; ``match`` (a compiled bytes regex, or None)
    judges each reply: one that does not match still answers, and is counted ``mismatched``."""

    __slots__ = ("sock", "make", "match", "timeout_ns", "next_seq", "waiting_since", "owed_late",
                 "sent", "answered", "late", "lost", "duplicated", "reordered", "truncated",
                 "foreign", "stale", "refused", "mismatched", "latency_ns")

    def __init__(self, sock: int, make, timeout_ns: int, match=None) -> None:
        if timeout_ns <= 0:
            raise ValueError("a reply timeout must be above 0")
        self.sock = sock
        self.make = make
        self.match = match
        self.timeout_ns = timeout_ns
        self.next_seq = 0
        self.waiting_since: Optional[int] = None   # the one request in flight: when it left
        self.owed_late = 0              # requests declared lost whose reply may still come
        self.sent = self.answered = self.late = self.lost = 0
        self.duplicated = self.reordered = self.truncated = self.foreign = self.stale = self.refused = 0
        self.mismatched = 0
        self.latency_ns = 0

    @property
    def in_flight(self) -> int:
        return 0 if self.waiting_since is None else 1

    def send(self, now: int) -> bytes:
        """The next request, counted sent and waiting from ``now`` (only one may wait)."""
        if self.waiting_since is not None:
            raise RuntimeError("one request in flight at a time without a header to match replies")
        data = self.make(self.next_seq)
        self.next_seq += 1
        self.waiting_since = now
        self.sent += 1
        return data

    def refuse(self) -> None:
        """The kernel did not take the request :meth:`send` just made: it never left."""
        if self.waiting_since is not None:
            self.waiting_since = None
            self.sent -= 1
            self.refused += 1

    def receive(self, data: bytes, now: int, cut: bool = False) -> str:
        """``answered`` (the request waiting, in time), ``late`` (past its timeout, or after it:
        a request declared lost, then this came) or ``foreign`` (nothing was owed)."""
        if self.waiting_since is not None and now - self.waiting_since > self.timeout_ns:
            self.expire(now)
        if self.waiting_since is None:
            if self.owed_late:          # the reply to a request already declared lost
                self.owed_late -= 1
                self.lost -= 1
                self.late += 1
                return "late"
            self.foreign += 1           # nothing owed: a second copy, or not an answer at all
            return "foreign"
        self.latency_ns = now - self.waiting_since
        self.waiting_since = None
        self.answered += 1
        if cut:
            self.truncated += 1
        if self.match is not None and self.match.search(data) is None:
            self.mismatched += 1
        return "answered"

    def expire(self, now: int) -> int:
        if self.waiting_since is None or now - self.waiting_since <= self.timeout_ns:
            return 0
        self.waiting_since = None
        self.lost += 1
        self.owed_late += 1
        return 1

    def next_deadline(self) -> Optional[int]:
        return None if self.waiting_since is None else self.waiting_since + self.timeout_ns

    def counts(self) -> dict:
        return {name: getattr(self, name) for name in COUNTS}

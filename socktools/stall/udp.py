"""``stall --udp``: datagrams against a receiver that never reads -- the sender is never stopped.

Strategy
--------
TCP's stall ends in EAGAIN because the receiver's zero window holds the sender back.  UDP
has no window: each ``send()`` hands one datagram to the kernel and returns, and a datagram
that finds the receiver's buffer full is dropped there, counted in that socket's
``sk_drops`` and the machine's ``Udp: RcvbufErrors``.  Steps:

1. the receiver: :class:`OwnReceiver`, a socket stall binds on loopback and never reads
   (the simplest honest receiver: stall holds it, so it reads its counts with SO_MEMINFO and
   counts what it held by reading it at the end), or :class:`TargetReceiver`, another
   program's UDP server at ``--port``, seen only through the socket table (sock_diag: its
   sockets' Recv-Q and drops, no datagram);
2. its drops and the machine's UDP counters before;
3. send ``count`` datagrams of ``chunk`` bytes (each starts with its sequence number) on a
   nonblocking connected socket as fast as ``send()`` returns, counting refusals by errno --
   EAGAIN/ENOBUFS would mean our *own* send buffer was momentarily full; ECONNREFUSED that
   nobody is bound there (the ICMP port-unreachable), which ends the run;
4. settle: wait until the receiver's drops and Recv-Q stand still for ``settle`` seconds;
5. account: sent = reached the receiver + dropped by its kernel.  Stall's own receiver is
   read out and counted, so the equation is checked exactly; for another program's it is
   inferred, and its own count is the check.

Measured on Linux 6.x loopback: ``send()`` never refused, not even with SO_SNDBUF at its
minimum and 65,507-byte datagrams (100,000 datagrams of 1,472 bytes: 0 refused; 92 held, the
rest dropped).  Loopback's transmit orphans the datagram from the sending socket as it is
handed to the receiver (or dropped), so our send buffer is free again by the time ``send()``
returns; on a real NIC the datagram waits in the qdisc charged to our buffer, and a burst can
meet ENOBUFS/EAGAIN there.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from typing import Any, Callable, Optional

from socktools.addresses import format_addr, resolve
from socktools.errors import errno_name
from socktools.kernel import socktable, udpstats
from socktools.stall.config import StallConfig
from socktools.stall.results import PeerInfo
from socktools.stall.steps import StallError
from socktools.stall.udpresults import UdpAccount, UdpReceiver, UdpSend, UdpStallReport

__all__ = ["OwnReceiver", "TargetReceiver", "run_udp_stall", "SEQ", "READ_BACK_BUFFER"]

#: Each datagram starts with its sequence number (when it has room), so the datagrams read
#: back say which ones the full buffer kept: the first to arrive.
SEQ = struct.Struct("!I")
#: Reading the held datagrams back: the largest UDP payload fits, so none is cut.
READ_BACK_BUFFER = 65_536
#: How often the clock is read while sending: reading it per send() would cost as much as
#: the send on loopback; every 256 sends bounds the overshoot of --timeout to well under 1 ms.
CLOCK_EVERY = 256


class OwnReceiver:
    """A UDP socket stall binds on ``host`` and never reads until :meth:`read_back`."""

    kind = "own"

    def __init__(self, host: str, rcvbuf: Optional[int] = None) -> None:
        family, sockaddr = resolve(host, 0, passive=True)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind(sockaddr)
        except OSError:
            self.sock.close()
            raise
        self.address = self.sock.getsockname()

    def counts(self) -> tuple:
        """(drops, recv_q, rcvbuf, sockets, pids, why-not) now, from SO_MEMINFO."""
        mem = udpstats.socket_memory(self.sock)
        if mem is None:
            return None, None, None, 1, (), "this kernel has no SO_MEMINFO"
        return mem[2], mem[0], mem[1], 1, (), ""

    def read_back(self, sender: Any, limit: int) -> tuple:
        """Read every datagram the queue holds (nobody else sends to it: at most what was sent):
        (ours, their payload bytes, first seq, last seq, foreign)."""
        self.sock.setblocking(False)
        ours = nbytes = foreign = 0
        first = last = None
        buf = bytearray(READ_BACK_BUFFER)
        for _ in range(limit + 1):
            try:
                n, source = self.sock.recvfrom_into(buf)
            except BlockingIOError:
                break
            if source[:2] != sender[:2]:
                foreign += 1
                continue
            ours, nbytes = ours + 1, nbytes + n
            if n >= SEQ.size:
                seq = SEQ.unpack_from(buf)[0]
                first = seq if first is None else min(first, seq)
                last = seq if last is None else max(last, seq)
        return ours, nbytes, first, last, foreign

    def close(self) -> None:
        self.sock.close()


class TargetReceiver:
    """Another program's UDP server at ``address``: stall sees its sockets in the socket table
    (their Recv-Q, drops and owners), never its datagrams."""

    kind = "target"

    def __init__(self, address: tuple) -> None:
        self.address = address

    def counts(self) -> tuple:
        host, port = str(self.address[0]), int(self.address[1])
        try:
            rows = udpstats.bound_sockets(host, port, processes=True)
        except (socktable.SocketTableUnavailable, OSError) as exc:
            return None, None, None, 0, (), f"cannot read the socket table: {exc}"
        if not rows:
            return None, None, None, 0, (), (f"no UDP socket bound to {format_addr((host, port))} in this "
                                             "machine's socket table (another host or network namespace)")
        mems = [r.skmem for r in rows if r.skmem is not None]
        pids = tuple(dict.fromkeys(p for r in rows for p in r.pids))
        if len(mems) < len(rows):
            return (None, sum(r.recv_q for r in rows), None, len(rows), pids,
                    "the socket table gave no socket memory (sk_drops): /proc, not sock_diag")
        return (sum(m.drops for m in mems), sum(r.recv_q for r in rows), max(m.rcvbuf for m in mems),
                len(rows), pids, "")

    def close(self) -> None:
        pass


def _send_all(sock: socket.socket, config: StallConfig, clock: Callable[[], float]) -> UdpSend:
    """``config.datagrams`` send() calls, or fewer if ``config.timeout`` passes first."""
    payload = bytearray(config.chunk)
    seq = len(payload) >= SEQ.size
    refused: dict = {}
    sent = attempted = 0
    slowest = 0.0
    start = clock()
    deadline = start + config.timeout
    stopped_by = "count"
    for i in range(config.datagrams):
        if i % CLOCK_EVERY == 0 and i and clock() >= deadline:
            stopped_by = "timeout"
            break
        if seq:
            SEQ.pack_into(payload, 0, i)
        attempted += 1
        t = clock()
        try:
            sock.send(payload)
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise StallError("send", exc) from exc
            name = errno_name(exc.errno) if exc.errno else type(exc).__name__
            refused[name] = refused.get(name, 0) + 1
            continue
        finally:
            slowest = max(slowest, clock() - t)
        sent += 1
    return UdpSend(attempted=attempted, sent=sent, bytes=sent * config.chunk, refused=refused,
                   seconds=clock() - start, slowest=slowest, stopped_by=stopped_by)


def _settle(receiver: Any, config: StallConfig, clock: Callable[[], float]) -> tuple:
    """Wait until the receiver's (drops, Recv-Q) stand still for ``config.settle`` seconds:
    (settled, seconds, the counts then)."""
    start = clock()
    deadline = start + config.timeout
    last = receiver.counts()
    quiet_since = start
    while True:
        now = clock()
        if now - quiet_since >= config.settle:
            return True, now - start, last
        if now >= deadline:
            return False, now - start, last
        time.sleep(min(config.sample_interval, config.settle))
        counts = receiver.counts()
        if counts[:2] != last[:2]:
            last, quiet_since = counts, clock()


def run_udp_stall(config: StallConfig, *, clock: Callable[[], float] = time.perf_counter) -> UdpStallReport:
    """Send ``config.datagrams`` datagrams to a receiver that never reads; report the kernel's counts.

    Raises :class:`StallError` (cannot resolve, bind or connect; nobody bound at --port)."""
    with contextlib.ExitStack() as stack:
        try:
            if config.external:
                family, target = resolve(config.host, int(config.port))
                receiver: Any = TargetReceiver(target)
            else:
                receiver = OwnReceiver(config.host, config.rcvbuf)
                family, target = receiver.sock.family, receiver.address
        except OSError as exc:
            raise StallError(f"resolve {config.host!r}" if isinstance(exc, socket.gaierror)
                                else f"bind on {config.host}", exc) from exc
        stack.callback(receiver.close)
        sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
        try:
            if config.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.sndbuf)
            sock.connect(target)        # connected: ECONNREFUSED tells us nobody is bound there
        except OSError as exc:
            raise StallError(f"connect to {format_addr(target)}", exc) from exc
        sock.setblocking(False)
        local = sock.getsockname()
        before = receiver.counts()
        machine_before = udpstats.read_counters()
        sending = _send_all(sock, config, clock)
        settled, settle_seconds, after = _settle(receiver, config, clock)
        machine_after = udpstats.read_counters()
        drops_before, drops_after = before[0], after[0]
        dropped = None if drops_before is None or drops_after is None else drops_after - drops_before
        if receiver.kind == "own":
            ours, nbytes, first, last, foreign = receiver.read_back(local, sending.sent)
            account = UdpAccount(sending.sent, ours, dropped, True,
                                 None if dropped is None else sending.sent - ours - dropped,
                                 held_bytes=nbytes, held_first=first, held_last=last, foreign=foreign,
                                 **_machine(machine_before, machine_after))
        else:
            account = UdpAccount(sending.sent, None if dropped is None else sending.sent - dropped, dropped,
                                 False, None, **_machine(machine_before, machine_after))
        view = UdpReceiver(kind=receiver.kind, address=format_addr(target),
                           source="SO_MEMINFO" if receiver.kind == "own" else "sock_diag",
                           sockets=after[3], pids=after[4], rcvbuf=after[2], recv_q=after[1],
                           drops_before=drops_before, drops_after=drops_after, dropped=dropped,
                           unavailable=after[5] or before[5])
        peer = PeerInfo(kind=receiver.kind, address=format_addr(target),
                        rcvbuf=after[2])
        return UdpStallReport(config=config, peer=peer, local=format_addr(local), remote=format_addr(target),
                              family="IPv6" if family == socket.AF_INET6 else "IPv4", send=sending,
                              settled=settled, settle_seconds=settle_seconds, receiver=view, account=account)


def _machine(before: Optional[dict], after: Optional[dict]) -> dict:
    if before is None or after is None:
        return {}
    return {f"machine_{k.lower()}": after[n] - before[n]
            for k, n in (("rcvbuf_errors", "RcvbufErrors"), ("sndbuf_errors", "SndbufErrors"),
                         ("in_errors", "InErrors"))}

"""The ``--udp`` worker: one process's loop answering (echo) or counting (sink) datagrams.

A UDP server has no connections: one socket (the parent binds it; with several workers each
worker has its own on the same port, SO_REUSEPORT, and the kernel spreads the datagrams over
them by the 4-tuple's hash) and a datagram per ``recvfrom_into``, answered to its sender with
one ``sendto`` at once, or only counted (sink).

Nothing is buffered.  UDP has no back-pressure: a sender is never slowed down by its
receiver, so a server that queued the answers its own full send buffer refused would hold
unbounded memory against a fast client.  An answer the kernel will not take (EAGAIN, ENOBUFS:
our send buffer is full) is counted ``send_dropped`` and gone, as the network would have
lost it; any other failed ``sendto`` is counted by its errno name (``send_errors``).  What
the kernel drops before we read it (our receive buffer was full) is its own count, read from
the socket by the supervisor (``kernel_drops``; see ``supervisor.py``).

Measured (Python 3, loopback, 1,000 queued datagrams, best of 15, µs per datagram):
``recvfrom(65536)`` 0.58 / ``recvfrom_into`` a preallocated buffer 0.53 when only reading
(64 B), and with the echo's ``sendto`` 1.56 / 1.58 (64 B), 1.65 / 1.72 (1 KiB): the two
system calls are the cost; reading into one buffer allocates nothing per datagram, and its
answer is a memoryview slice of it, so one mechanism serves both modes.

Stopping: the first SIGTERM/SIGINT reads (and answers) what the kernel has queued for us,
up to :data:`FINAL_READ_LIMIT` datagrams, and stops -- so that at the end every datagram that
reached the socket was counted received or dropped by the kernel; the second (or the
supervisor's force signal) stops at once.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from typing import Callable, Optional

from socktools import errors
from socktools.core.loop import Loop
from socktools.serve.config import ServeConfig
from socktools.serve.stats import DatagramStats
from socktools.serve.worker import LoopWorker

__all__ = ["UdpWorker", "READ_BATCH", "FINAL_READ_LIMIT", "RECV_BUFFER"]

log = logging.getLogger("socktools.serve.worker")

#: Datagrams read per readiness event before the loop runs its timers and signals: each is
#: about 0.5 µs to read (1.5 µs with its answer), so 64 keep the loop responsive within
#: ~0.1 ms while saving the selector round trip for most of a burst.
READ_BATCH = 64

#: Datagrams read at the first stop signal: what was queued at the socket when the stop
#: came.  A receive buffer holds at most net.core.rmem_max * 2 bytes (425,984 by default; a
#: datagram costs at least ~768 bytes of it), so a few thousand at most; the cap bounds the
#: stop when a client keeps sending into a large buffer.
FINAL_READ_LIMIT = 65_536

#: The read buffer: the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6) fits,
#: so no datagram is ever cut.
RECV_BUFFER = 65_536

#: sendto's errors that mean "our own send buffer is full": the answer is dropped, counted.
SEND_BUFFER_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


class UdpWorker(LoopWorker):
    """Serve datagrams on ``sock`` until stopped: a :class:`~socktools.serve.worker.LoopWorker`
    like the TCP worker (``run``, ``request_stop``, ``snapshot``, ``loop``)."""

    def __init__(self, config: ServeConfig, sock: socket.socket, *, index: int = 0,
                 report: Optional[Callable[[str, dict], None]] = None,
                 report_interval: Optional[float] = None) -> None:
        self.config = config
        self.sock = sock
        self.index = index
        self.report = report
        self.report_interval = config.stats_interval if report_interval is None else report_interval
        self.loop = Loop()
        self.stats = DatagramStats()
        self.echo = config.mode == "echo"
        self.force_signal: Optional[int] = None
        self.stopped = False
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self._readable)

    def request_stop(self, force: bool = False) -> None:
        """Stop: the first time after reading what is queued; with ``force`` (or the second
        time) at once."""
        if not force and not self.stopped:
            self._read(FINAL_READ_LIMIT)
        self.stopped = True

    def snapshot(self) -> DatagramStats:
        return DatagramStats.from_dict(self.stats.to_dict())

    # ------------------------------------------------------------ datagrams
    def _readable(self) -> None:
        self._read(READ_BATCH)

    def _read(self, limit: int) -> None:
        """Up to ``limit`` datagrams: each counted, and answered in echo mode."""
        recv, send = self.sock.recvfrom_into, self.sock.sendto
        buf, view, echo, s = self._buf, self._view, self.echo, self.stats
        got = nbytes = answered = sent_bytes = 0
        try:
            for _ in range(limit):
                try:
                    n, peer = recv(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self._count(s.recv_errors, exc, "recvfrom")
                    continue
                got += 1
                nbytes += n
                if echo:
                    try:
                        sent_bytes += send(view[:n], peer)
                        answered += 1
                    except OSError as exc:
                        if exc.errno in SEND_BUFFER_FULL:
                            s.send_dropped += 1     # never queued: UDP has no back-pressure
                        else:
                            self._count(s.send_errors, exc, "sendto")
        finally:
            s.datagrams_in += got
            s.bytes_in += nbytes
            s.datagrams_out += answered
            s.bytes_out += sent_bytes

    def _count(self, table: dict, exc: OSError, call: str) -> None:
        key = errors.exception_key(exc)
        if key not in table:   # one line per kind: a peer that makes every answer fail would flood the log
            log.warning("worker %d: %s failed: %s (counted; logged once)", self.index, call,
                        errors.one_line(exc))
        table[key] = table.get(key, 0) + 1

    # ------------------------------------------------------------ signals
    def _on_signal(self, signum: int) -> None:
        if signum == self.force_signal:
            self.request_stop(force=True)
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.request_stop()

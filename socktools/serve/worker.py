"""The server worker: one process's event loop serving echo, framed or sink connections.

A worker owns a :class:`~socktools.core.loop.Loop`, adopts connections from a
listening socket it was handed (the parent binds; see ``supervisor.py``), and
keeps :class:`ServerStats`.  It never prints: log lines go to the
``socktools.serve.worker`` logger, statistics to a ``report`` callback.

Stop protocol (driven by signals queued through a wakeup fd, never handled
inside the signal handler itself):

* first SIGTERM/SIGINT: *drain* — stop accepting, close idle connections now,
  let connections mid-exchange finish for up to ``drain_timeout`` seconds;
* second one, or the drain deadline: abort whatever is left.

Accept-side resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) and the
``max_conns`` cap pause accepting instead of spinning: the listener leaves the
selector and comes back when a connection closes or after a short back-off,
so pending clients wait in the kernel's backlog rather than being dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from socktools import errors, protocol, reference
from socktools.addresses import format_addr
from socktools.core.loop import Connection, Loop, Protocol

__all__ = ["ServeConfig", "ServerStats", "Worker", "MODES"]

log = logging.getLogger("socktools.serve.worker")

MODES = ("echo", "framed", "sink")

#: Stop reading from a connection whose unsent output exceeds this; resume when
#: it drains.  Bounds memory per connection when a client sends but does not
#: read (echo) or pipelines many requests (framed).  256 KiB is a few socket
#: buffers' worth: enough to keep a fast pipe full.
HIGH_WATER = 256 * 1024

#: Accepts per readiness event: bounds how long one worker spends in accept()
#: before serving its connections, and leaves some for sibling workers.
ACCEPT_BATCH = 64

#: Back-off before retrying accept() after EMFILE and friends, when no
#: connection of ours closes first.
ACCEPT_RETRY = 0.25

_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``serve`` needs; frozen and picklable (workers receive a copy)."""

    mode: str = "echo"
    host: str = "127.0.0.1"
    port: int = 65432
    workers: int = 1
    max_conns: int = 0              # total across workers; 0 = no cap
    idle_timeout: Optional[float] = None
    max_content: int = protocol.DEFAULT_MAX_CONTENT
    rcvbuf: Optional[int] = None
    sndbuf: Optional[int] = None
    backlog: int = 4096             # the kernel caps it at net.core.somaxconn
    stats_interval: float = 10.0    # 0 = no periodic statistics
    drain_timeout: float = 5.0
    stop_on_stdin_eof: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    @property
    def per_worker_max_conns(self) -> int:
        if not self.max_conns:
            return 0
        return -(-self.max_conns // self.workers)  # ceil: the caps add up to >= max_conns


@dataclass
class ServerStats:
    """Counters of one worker, or of all merged.  Plain data: add, serialise, compare."""

    accepted: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    responses: int = 0
    idle_closed: int = 0
    accept_paused: int = 0
    protocol_errors: dict = field(default_factory=dict)   # kind -> count
    errors: dict = field(default_factory=dict)            # errno name -> count (connection errors)

    @property
    def open(self) -> int:
        return self.accepted - self.closed

    def add(self, other: "ServerStats") -> "ServerStats":
        out = ServerStats(**{k: getattr(self, k) + getattr(other, k) for k in _COUNTERS})
        for name in ("protocol_errors", "errors"):
            merged = dict(getattr(self, name))
            for k, v in getattr(other, name).items():
                merged[k] = merged.get(k, 0) + v
            setattr(out, name, merged)
        return out

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _COUNTERS}
        d["open"] = self.open
        d["protocol_errors"] = dict(self.protocol_errors)
        d["errors"] = dict(self.errors)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ServerStats":
        s = cls(**{k: d.get(k, 0) for k in _COUNTERS})
        s.protocol_errors = dict(d.get("protocol_errors", {}))
        s.errors = dict(d.get("errors", {}))
        return s


_COUNTERS = ("accepted", "closed", "bytes_in", "bytes_out", "requests", "responses",
             "idle_closed", "accept_paused")


def _bump(table: dict, key: str) -> None:
    table[key] = table.get(key, 0) + 1


# --------------------------------------------------------------------- protocols

class _Base(Protocol):
    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.worker.connection_closed(conn, exc)


class EchoProtocol(_Base):
    """Bytes back.  A half-close is answered by flushing what is owed, then closing."""

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.write(data)
        if conn._out is not None and len(conn._out) > HIGH_WATER:
            conn.pause_reading()  # the client sends faster than it reads: back-pressure

    def data_batch(self, conns: list, datas: list) -> None:
        # The steady state of a busy echo server: every ready connection read and
        # answered in one pass (iocore's batch path).  A partial write leaves that
        # connection buffering, and data_received above takes over for it.
        self.worker.loop.write_batch(conns, datas)

    def write_drained(self, conn: Connection) -> None:
        if not self.worker.draining:
            conn.resume_reading()


class FramedProtocol(_Base):
    """SPEC §1: decode requests, answer each in order, close unless keep-alive."""

    def connection_made(self, conn: Connection) -> None:
        conn.ctx = protocol.Decoder(self.worker.config.max_content)

    def data_received(self, conn: Connection, data: bytes) -> None:
        decoder: protocol.Decoder = conn.ctx
        decoder.receive_data(data)
        self._drain_decoder(conn, decoder)

    def eof_received(self, conn: Connection) -> None:
        decoder: protocol.Decoder = conn.ctx
        decoder.receive_data(b"")
        self._drain_decoder(conn, decoder)
        conn.close()

    def write_drained(self, conn: Connection) -> None:
        if not conn.closed and not self.worker.draining:
            conn.resume_reading()

    def _drain_decoder(self, conn: Connection, decoder: protocol.Decoder) -> None:
        stats = self.worker.stats
        while not conn.closed:
            try:
                event = decoder.next_event()
            except protocol.RemoteProtocolError as exc:
                self.worker.protocol_error(conn, exc)
                return
            if event is protocol.NEED_DATA:
                break
            if event is protocol.CLOSED:
                conn.close()
                return
            stats.requests += 1
            conn.write(reference.respond(event))
            stats.responses += 1
            if not event.keep_alive or self.worker.draining:
                conn.pause_reading()
                conn.close()  # one request per connection unless keep-alive (SPEC §1)
                return
        if conn.pending > HIGH_WATER:
            conn.pause_reading()  # pipelining faster than reading our answers


class SinkProtocol(_Base):
    """Accepts and never reads — until told to drain (SIGUSR1), then reads and discards."""

    def connection_made(self, conn: Connection) -> None:
        if not self.worker.sink_reading:
            conn.pause_reading()

    def data_received(self, conn: Connection, data: bytes) -> None:
        pass  # discarded: we only drain the queue


_PROTOCOLS = {"echo": EchoProtocol, "framed": FramedProtocol, "sink": SinkProtocol}


# --------------------------------------------------------------------- the worker

class Worker:
    """Serve connections from ``listener`` until stopped.

    ``report(kind, stats_dict)`` receives periodic (``"stats"``) and final
    (``"final"``) statistics; ``index`` identifies the worker in logs.
    """

    def __init__(self, config: ServeConfig, listener: socket.socket, *, index: int = 0,
                 report: Optional[Callable[[str, dict], None]] = None,
                 report_interval: Optional[float] = None) -> None:
        self.config = config
        self.listener = listener
        self.index = index
        self.report = report
        self.report_interval = config.stats_interval if report_interval is None else report_interval
        self.loop = Loop()
        self.stats = ServerStats()
        self.protocol = _PROTOCOLS[config.mode](self)
        self.max_conns = config.per_worker_max_conns
        self.accepting = False
        self.draining = False
        self.sink_reading = False
        self.stopped = False
        self._retry_timer = None
        self._drain_deadline = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._nodelay = config.mode != "sink"

    # ------------------------------------------------------------ lifecycle
    def run(self, *, install_signals: bool = True, handle_sigint: bool = True) -> ServerStats:
        """Serve until a stop signal (or :meth:`request_stop`) has been handled; return stats.

        A supervised worker passes ``handle_sigint=False``: a Ctrl-C on the
        terminal reaches the whole process group, and only the supervisor
        decides what it means (it then sends SIGTERM to its workers).
        """
        self.listener.setblocking(False)
        self._start_accepting()
        if install_signals:
            self._install_signals(handle_sigint)
        if self.config.idle_timeout:
            self.loop.set_idle_timeout(self.config.idle_timeout)
            self.loop.on_idle_close = self._idle_close
        if self.report and self.report_interval:
            self.loop.call_later(self.report_interval, self._periodic)
        if self.config.stop_on_stdin_eof:
            self._watch_stdin()
        try:
            self.loop.run(until=lambda: self.stopped)
        finally:
            self.loop.close()
            if install_signals:
                self._restore_signals()
        final = self.snapshot()
        if self.report:
            self.report("final", final.to_dict())
        return final

    def request_stop(self, force: bool = False) -> None:
        """First call drains; a second (or ``force``) aborts every connection."""
        if force or self.draining:
            self._abort_all()
        else:
            self._begin_drain()

    def snapshot(self) -> ServerStats:
        """Current statistics, including bytes of connections still open."""
        s = ServerStats.from_dict(self.stats.to_dict())
        s.bytes_in, s.bytes_out = self.loop.byte_totals()
        return s

    # ------------------------------------------------------------ accepting
    def _start_accepting(self) -> None:
        if not self.accepting and not self.draining:
            self.loop.add_reader(self.listener, self._on_acceptable)
            self.accepting = True

    def _pause_accepting(self, why: str) -> None:
        if self.accepting:
            self.loop.remove_reader(self.listener)
            self.accepting = False
            self.stats.accept_paused += 1
            log.warning("worker %d: accept paused: %s", self.index, why)

    def _on_acceptable(self) -> None:
        listener = self.listener
        conns = self.loop.connections
        for _ in range(ACCEPT_BATCH):
            if self.max_conns and len(conns) >= self.max_conns:
                self._pause_accepting(f"{len(conns)} connections open (--max-conns)")
                return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._pause_accepting(errors.one_line(exc))
                    self._schedule_accept_retry()
                    return
                # ECONNABORTED, EPROTO, EPERM (firewall): that one connection is gone.
                _bump(self.stats.errors, errors.exception_key(exc))
                continue
            self.stats.accepted += 1
            if self._nodelay:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            self.loop.add_connection(sock, self.protocol, peer)

    def _schedule_accept_retry(self) -> None:
        if self._retry_timer is None:
            self._retry_timer = self.loop.call_later(ACCEPT_RETRY, self._retry_accept)

    def _retry_accept(self) -> None:
        self._retry_timer = None
        if not self.accepting and not self.draining:
            log.info("worker %d: accept resumed", self.index)
            self._start_accepting()

    # ------------------------------------------------------------ connection events
    def connection_closed(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.stats.closed += 1
        if exc is not None and not isinstance(exc, (protocol.ProtocolError, TimeoutError)):
            _bump(self.stats.errors, errors.exception_key(exc))
        if not self.accepting and not self.draining and self._retry_timer is None:
            self._retry_accept()  # an fd or a slot just freed up
        if self.draining and not self.loop.connections:
            self.stopped = True

    def protocol_error(self, conn: Connection, exc: protocol.ProtocolError) -> None:
        """Reply ``{"error": ...}``, log naming the peer, close only this connection."""
        _bump(self.stats.protocol_errors, exc.kind)
        log.warning("worker %d: protocol error from %s: %s (%s); closing that connection",
                    self.index, format_addr(conn.peer), exc, exc.kind)
        conn.write(protocol.error_response(exc))
        conn.pause_reading()
        conn.close()

    def _idle_close(self, conn: Connection) -> None:
        self.stats.idle_closed += 1
        log.info("worker %d: closing %s: idle for more than %gs", self.index,
                 format_addr(conn.peer), self.config.idle_timeout)

    def start_sink_reading(self) -> None:
        """Sink mode: start reading (and discarding) on every connection, now and later."""
        self.sink_reading = True
        for conn in list(self.loop.connections.values()):
            conn.resume_reading()
        log.info("worker %d: sink draining %d connection(s)", self.index, len(self.loop.connections))

    # ------------------------------------------------------------ stopping
    def _begin_drain(self) -> None:
        self.draining = True
        if self.accepting:
            self.loop.remove_reader(self.listener)
            self.accepting = False
        for conn in list(self.loop.connections.values()):
            decoder = conn.ctx
            busy = conn.pending or (isinstance(decoder, protocol.Decoder) and decoder.buffered)
            if not busy:
                conn.close()
        if not self.loop.connections:
            self.stopped = True
            return
        log.info("worker %d: draining %d connection(s) for up to %gs", self.index,
                 len(self.loop.connections), self.config.drain_timeout)
        self._drain_deadline = self.loop.call_later(self.config.drain_timeout, self._abort_all)

    def _abort_all(self) -> None:
        self.draining = True
        if self.accepting:
            self.loop.remove_reader(self.listener)
            self.accepting = False
        for conn in list(self.loop.connections.values()):
            conn.abort()
        self.stopped = True

    def _install_signals(self, handle_sigint: bool) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._old_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            wanted = _noop_handler if (sig != signal.SIGINT or handle_sigint) else signal.SIG_IGN
            self._old_handlers[sig] = signal.signal(sig, wanted)
        self.loop.add_reader(self._wake_r, self._on_signal)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        for s in (self._wake_r, self._wake_w):
            s.close()

    def _on_signal(self) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGUSR1:
                if self.config.mode == "sink":
                    self.start_sink_reading()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.request_stop()

    def _periodic(self) -> None:
        if self.report:
            self.report("stats", self.snapshot().to_dict())
        self.loop.call_later(self.report_interval, self._periodic)

    def _watch_stdin(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return

        def on_stdin() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            if not data:
                self.loop.remove_reader(fd)
                log.info("stdin closed: stopping")
                self.request_stop()

        self.loop.add_reader(fd, on_stdin)


def _noop_handler(signum: int, frame: Any) -> None:
    """The work happens in the loop, woken by the wakeup fd; the handler only exists."""

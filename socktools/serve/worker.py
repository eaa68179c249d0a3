"""The server worker: one process's event loop serving echo, framed or sink connections.

A worker owns a :class:`~socktools.core.loop.Loop`, adopts connections from a
listening socket it was handed (the parent binds; see ``supervisor.py``), and
keeps :class:`~socktools.serve.stats.ServerStats`.  It never prints: log lines
go to the ``socktools.serve.worker`` logger, statistics to a ``report``
callback.  What is said on a connection lives in ``protocols.py``.

Stop protocol (signals queued through :class:`~socktools.core.signals.SignalQueue`,
never handled inside the signal handler itself):

* first SIGTERM/SIGINT: *drain* — stop accepting, close idle connections now,
  let connections mid-exchange finish for up to ``drain_timeout`` seconds;
* second one, or the drain deadline: abort whatever is left.

In framed mode a :class:`~socktools.serve.budget.RequestBudget` holds the
worker to ``--max-buffered`` bytes of incomplete requests (the newest holders
are refused first) and to ``--request-timeout`` from a request's first byte to
its last; each refusal is an error reply, a log line naming the peer and a
``protocol_errors`` count (``over-budget``, ``request-timeout``).

With ``--tls`` every accepted socket is handed to the core with the worker's server
context (``Loop.add_connection(..., tls=ctx)``): the core runs the handshake and calls the
protocol once it completed, so echo, framed and sink see plaintext as before.  A failed
handshake (a plaintext client, a missing client certificate) costs only that connection: a
log line naming the peer and the reason, and an ``errors`` count under the server-side key
(``errors.tls_server_key``).  ``handshakes`` counts the completed ones.

With ``--unix`` the listener is the one socket the supervisor bound (shared by all workers);
a peer has no address, so logs name it by its process (SO_PEERCRED).

Accept-side resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) and the
``max_conns`` cap pause accepting instead of spinning: the listener leaves the
selector and comes back when a connection closes or after a short back-off,
so pending clients wait in the kernel's backlog rather than being dropped.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import struct
from typing import Any, Callable, Optional

from socktools import errors, protocol
from socktools.addresses import format_addr
from socktools.core.accept import Acceptor
from socktools.core.loop import Connection, Loop
from socktools.core.signals import SignalQueue, watch_stdin_eof
from socktools.serve.budget import RequestBudget
from socktools.serve.config import ServeConfig
from socktools.serve.protocols import PROTOCOLS
from socktools.serve.stats import ServerStats
from socktools.tlsconf import server_context

__all__ = ["LoopWorker", "Worker", "stop_signals"]

log = logging.getLogger("socktools.serve.worker")

#: SO_PEERCRED's ``struct ucred``: pid, uid, gid (man 7 unix).
_UCRED = struct.Struct("3i")

#: How often, at most, request deadlines are checked: a late request is closed
#: within this (or a quarter of a short deadline) after its time is up.
DEADLINE_SWEEP = 1.0


class LoopWorker:
    """What every serve worker shares -- TCP connections (:class:`Worker`) or datagrams
    (:class:`socktools.serve.udp.UdpWorker`): a loop run until ``stopped``, the stop
    signals, periodic and final reports.  A subclass sets ``config``, ``report``,
    ``report_interval``, ``loop``, ``stopped`` and ``force_signal``, and gives
    :meth:`start`, :meth:`request_stop`, :meth:`snapshot` and :meth:`_on_signal`."""

    config: ServeConfig
    loop: Loop
    stopped: bool
    force_signal: Optional[int]
    report: Optional[Callable[[str, dict], None]]
    report_interval: Optional[float]

    def run(self, *, signals: Optional[SignalQueue] = None, install_signals: bool = True,
            handle_sigint: bool = True, force_signal: Optional[int] = None):
        """Serve until a stop signal (or :meth:`request_stop`) has been handled; return stats.

        ``signals`` is a queue the caller installed already (and closes); without
        one the worker installs its own for the run.  A supervised worker passes
        ``handle_sigint=False``: a Ctrl-C on the terminal reaches the whole
        process group, and only the supervisor decides what it means (it then
        sends SIGTERM to its workers).  It passes ``force_signal`` too: then only that
        signal aborts, and SIGTERM always means drain -- a SIGTERM to the whole process group
        (systemd, ``kill -- -PGID``) reaches a worker twice, itself and forwarded.
        """
        self.start()
        own = None
        if signals is None and install_signals:
            signals = own = stop_signals(handle_sigint, force_signal)
        self.force_signal = force_signal
        if signals is not None:
            signals.attach(self.loop, self._on_signal)
        if self.report and self.report_interval:
            self.loop.call_later(self.report_interval, self._periodic)
        if self.config.stop_on_stdin_eof:
            watch_stdin_eof(self.loop, self._stdin_closed)
        try:
            try:
                self.loop.run(until=lambda: self.stopped)
            finally:
                self.loop.close()
            final = self.snapshot()
            if self.report:
                self.report("final", final.to_dict())
        finally:
            # Only now: with the queue gone a stop signal has its default action again, and one
            # that came during the report (a stop sent twice) would kill the worker before its
            # final counts reached the supervisor.
            if own is not None:
                own.close()
        return final

    def start(self) -> None:
        """Register the worker's sockets and timers with the loop, before it runs."""
        raise NotImplementedError

    def request_stop(self, force: bool = False) -> None:
        raise NotImplementedError

    def snapshot(self):
        raise NotImplementedError

    def _on_signal(self, signum: int) -> None:
        raise NotImplementedError

    def _periodic(self) -> None:
        if self.report:
            self.report("stats", self.snapshot().to_dict())
        self.loop.call_later(self.report_interval, self._periodic)

    def _stdin_closed(self) -> None:
        log.info("stdin closed: stopping")
        self.request_stop()


class Worker(LoopWorker):
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
        self.protocol = PROTOCOLS[config.mode](self)
        self.max_conns = config.per_worker_max_conns
        self.acceptor = Acceptor(self.loop, listener, self._accepted, on_pause=self._accept_paused,
                                 on_error=self._accept_failed, room=self._room)
        self.draining = False
        self.force_signal: Optional[int] = None   # supervised: the signal that aborts (run)
        self.sink_reading = False
        self.stopped = False
        self._drain_deadline = None
        # Nagle off for answers (not for a sink, which sends nothing; not on AF_UNIX, which has none).
        self._nodelay = config.mode != "sink" and config.unix is None
        # Each worker makes its own context from the files (an SSLContext does not pickle).
        self.tls: Optional[ssl.SSLContext] = server_context(config.tls) if config.tls is not None else None
        self.budget: Optional[RequestBudget] = None
        if config.mode == "framed":
            self.budget = RequestBudget(config.buffer_budget, config.request_timeout)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.listener.setblocking(False)
        self.acceptor.start()
        if self.config.idle_timeout:
            self.loop.set_idle_timeout(self.config.idle_timeout)
            self.loop.on_idle_close = self._idle_close
        if self.budget is not None and self.budget.timeout:
            self.loop.call_later(self._sweep_every, self._sweep_deadlines)

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

    # ------------------------------------------------------------ accepting (core.accept.Acceptor)
    def _room(self) -> Optional[str]:
        if self.max_conns and len(self.loop.connections) >= self.max_conns:
            return f"{len(self.loop.connections)} connections open (--max-conns)"
        return None

    def _accept_paused(self, why: str) -> None:
        self.stats.accept_paused += 1
        log.warning("worker %d: accept paused: %s", self.index, why)

    def _accept_failed(self, exc: OSError) -> None:
        # ECONNABORTED, EPROTO, EPERM (firewall): that one connection is gone.
        self.stats.count_error(errors.exception_key(exc))

    def _accepted(self, sock: socket.socket, peer: Any) -> None:
        self.stats.accepted += 1
        if self._nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        elif self.config.unix is not None:
            peer = _unix_peer(sock)
        if self.tls is None:
            self.loop.add_connection(sock, self.protocol, peer)
        else:
            self.loop.add_connection(sock, self.protocol, peer, tls=self.tls)

    # ------------------------------------------------------------ connection events
    def connection_made(self, conn: Connection) -> None:
        """A connection is ready for its protocol (with TLS: its handshake completed)."""
        if self.tls is not None:
            self.stats.handshakes += 1

    def connection_closed(self, conn: Connection, exc: Optional[BaseException]) -> None:
        self.stats.closed += 1
        if self.budget is not None:
            self.budget.forget(conn)
        if exc is not None and self.tls is not None and conn.failed_in == errors.HANDSHAKE:
            key = errors.tls_server_key(exc) if isinstance(exc, ssl.SSLError) else errors.exception_key(exc)
            self.stats.count_error(key)
            log.warning("worker %d: TLS handshake with %s failed: %s (%s); closing that connection",
                        self.index, format_addr(conn.peer), key, getattr(exc, "reason", None) or exc)
        elif exc is not None and not isinstance(exc, (protocol.ProtocolError, TimeoutError)):
            self.stats.count_error(errors.exception_key(exc))
        self.acceptor.resume()        # an fd or a slot just freed up (if paused)
        if self.draining and not self.loop.connections:
            self.stopped = True

    def protocol_error(self, conn: Connection, exc: protocol.ProtocolError) -> None:
        """Reply ``{"error": ...}``, log naming the peer, close only this connection."""
        self.stats.count_protocol_error(exc.kind)
        log.warning("worker %d: protocol error from %s: %s (%s); closing that connection",
                    self.index, format_addr(conn.peer), exc, exc.kind)
        conn.write(protocol.error_response(exc))
        conn.pause_reading()
        conn.close()

    # ------------------------------------------------------------ the request budget
    def holding(self, conn: Connection, nbytes: int, *, new_request: bool = False) -> None:
        """``conn``'s decoder holds ``nbytes`` of a request not yet complete (framed mode)."""
        budget = self.budget
        if budget is None:
            return
        for victim in budget.update(conn, nbytes, self.loop.now, new_request=new_request):
            self.protocol_error(victim, protocol.RemoteProtocolError(
                f"over the buffer budget: this worker holds up to {budget.max_buffered:,} bytes of "
                f"incomplete requests in all (--max-buffered), and the newest are refused first",
                "over-budget"))

    @property
    def _sweep_every(self) -> float:
        return min(DEADLINE_SWEEP, self.budget.timeout / 4)

    def _sweep_deadlines(self) -> None:
        budget = self.budget
        for conn in budget.expired(self.loop.now):
            if not conn.closed:
                self.protocol_error(conn, protocol.RemoteProtocolError(
                    f"request not complete {budget.timeout:g}s after its first byte", "request-timeout"))
        if not self.stopped:
            self.loop.call_later(self._sweep_every, self._sweep_deadlines)

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
        self.acceptor.stop()
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
        self.acceptor.stop()
        for conn in list(self.loop.connections.values()):
            conn.abort()

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            if self.config.mode == "sink":
                self.start_sink_reading()
        elif signum == self.force_signal:
            self.request_stop(force=True)
        elif signum in (signal.SIGTERM, signal.SIGINT):
            if self.draining and self.force_signal is not None:
                return      # the same stop again (see run): only force_signal aborts
            self.request_stop()



def stop_signals(handle_sigint: bool, force_signal: Optional[int]) -> SignalQueue:
    """A worker's own signal queue, installed: SIGTERM and SIGUSR1, SIGINT unless supervised
    (then ignored: the supervisor decides what a Ctrl-C means), and the force signal."""
    queued = ((signal.SIGTERM, signal.SIGUSR1) + ((signal.SIGINT,) if handle_sigint else ())
              + ((force_signal,) if force_signal is not None else ()))
    return SignalQueue(queued, ignore=() if handle_sigint else (signal.SIGINT,)).install()


def _unix_peer(sock: socket.socket) -> Any:
    """A Unix-socket client has no address (accept() gives ''): name it by its process."""
    try:
        pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except (OSError, AttributeError, struct.error):
        return "a Unix-socket client"
    return f"pid {pid} (uid {uid})"

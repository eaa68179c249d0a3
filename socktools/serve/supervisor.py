"""Bind once, run one worker in-process or N supervised worker processes, report events.

``serve(config, on_event)`` is the one entry point the CLI calls.  Events are
plain dicts (``{"event": "listening", ...}``, ``"stats"``, ``"worker-exit"``,
``"summary"``) handed to ``on_event``; the CLI renders them for humans or as
JSON lines.  Nothing here prints or exits.

Supervision (uvicorn-style): the parent binds -- with several workers, one
SO_REUSEPORT socket per worker on the same port (see :func:`bind_listeners`);
with ``--unix``, one socket all workers share (see :func:`bind_unix`) --
and starts the workers through :class:`socktools.core.procs.Supervisor`,
each serving its own socket.  With ``--udp`` the sockets are UDP sockets and the workers
:class:`socktools.serve.udp.UdpWorker`: the same binding, supervision and signals.  Each worker sends its statistics to the parent
over its pipe every second, so a worker that dies loses at most a second of
counts; the parent reports the death, keeps the dead worker's last counts,
and starts a replacement on the same socket (unless workers keep dying right
after their start: then it stops).  Stop signals are queued and acted on by
the supervisor's loop: first SIGINT/SIGTERM → SIGTERM to every worker (each
drains), second → :data:`FORCE_SIGNAL` (each aborts), then SIGKILL after a
grace period.  A worker's own SIGTERM only ever drains: one sent to the whole
process group reaches it twice (directly and forwarded).  Workers die with the parent (parent-death signal SIGTERM, so they
drain; plus a parent-pid check every second).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import replace
from typing import Any, Callable, Optional

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.core import procs, unixpath
from socktools.core.signals import SignalQueue, watch_stdin_eof
from socktools.serve.config import ServeConfig
from socktools.kernel.udpstats import socket_drops
from socktools.serve.stats import DatagramStats, ServerStats, stats_class
from socktools.serve.worker import Worker
from socktools.tlsconf import fingerprint, server_context

__all__ = ["ServeError", "bind_listener", "bind_listeners", "bind_unix", "serve", "somaxconn"]

log = logging.getLogger("socktools.serve.worker")

#: How often a supervised worker sends its counters to the parent.
WORKER_REPORT_INTERVAL = 1.0
#: How often a supervised worker checks that its parent is still there (where
#: no parent-death signal exists, or it was armed too late).
PARENT_CHECK_INTERVAL = 1.0
#: The tally key (in the summary's ``errors``) of connections that were open in a worker
#: when it died: the kernel closed them with the process, nobody answered them.
WORKER_DIED = "worker-died"


class ServeError(Exception):
    """The server could not start; the message says why and what to do."""


def somaxconn() -> Optional[int]:
    from socktools.kernel.sysctl import somaxconn as read
    return read()


def bind_listener(config: ServeConfig, *, port: Optional[int] = None, reuseport: bool = False) -> socket.socket:
    """Create, configure, bind and listen; raise :class:`ServeError` with a clear message."""
    port = config.port if port is None else port
    try:
        family, sockaddr = resolve(config.host, port, passive=True)
    except OSError as exc:
        raise ServeError(errors.one_line(exc, f"resolve --host {config.host!r}")) from None
    sock = socket.socket(family, socket.SOCK_DGRAM if config.udp else socket.SOCK_STREAM)
    try:
        if not config.udp:
            # TCP: rebind over TIME-WAITs of a previous run.  Not for UDP, where it would let
            # a second server bind the same port and silently take half its datagrams.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _set_buffers(sock, config)
        sock.bind(sockaddr)
        if not config.udp:
            sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        where = format_addr(sockaddr)
        if exc.errno == errno.EADDRINUSE:
            find = "--udp" if config.udp else "--listen"
            raise ServeError(
                f"cannot listen on {where}: EADDRINUSE - address already in use: another process is "
                f"{'bound' if config.udp else 'listening'} there. Find it with `socktools sockets {find} "
                f"--port {port}`, stop it, or choose another port (--port 0 picks a free one).") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(f"cannot listen on {where}: {errors.one_line(exc, during='bind')}") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ServeError(f"cannot listen on {where}: {errors.one_line(exc)} "
                             f"(ports below 1024 need root or CAP_NET_BIND_SERVICE)") from None
        raise ServeError(f"cannot listen on {where}: {errors.one_line(exc)}") from None
    sock.setblocking(False)
    return sock


def _set_buffers(sock: socket.socket, config: ServeConfig) -> None:
    # Buffer sizes must be set before listen(): accepted sockets inherit them,
    # and (TCP) the window scale is negotiated in the handshake.
    if config.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.rcvbuf)
    if config.sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.sndbuf)


def bind_unix(config: ServeConfig) -> socket.socket:
    """The listening Unix-domain socket at ``config.unix``: one for every worker.

    SO_REUSEPORT spreads connections only over TCP and UDP sockets; two AF_UNIX sockets
    cannot share a path.  So the supervisor binds once and every worker accepts from this
    one socket: whichever worker the kernel wakes first takes a new connection, so the
    spread over workers is uneven, but every connection is served and no path is shared.

    An existing file at the path is replaced only when it is a socket nobody listens on
    (connecting to it is refused: the server that made it is gone) -- a stale file of a
    killed server; that is logged.  Anything else there is an error and is left alone.
    """
    path = config.unix
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _set_buffers(sock, config)
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            _remove_stale(path)
            sock.bind(path)
        sock.listen(config.backlog)
    except ServeError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        where = format_addr(path)
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"cannot listen on {where}: in use: it appeared again while serve replaced "
                             f"a stale socket there (another server starting?)") from None
        raise ServeError(f"cannot listen on {where}: {errors.one_line(exc, during='bind')}") from None
    sock.setblocking(False)
    return sock


def _remove_stale(path: str) -> None:
    """Remove the socket file at ``path`` if connecting to it is refused; else ServeError."""
    where = format_addr(path)
    try:
        removed = unixpath.clear_stale(path)
    except unixpath.PathTaken as exc:
        if exc.why == "not-a-socket":
            raise ServeError(f"cannot listen on {where}: it exists and is not a socket; serve replaces only "
                             f"a stale socket file, never other files") from None
        if exc.why == "probe-failed":
            raise ServeError(f"cannot listen on {where}: a socket file is there and connecting to it failed "
                             f"({errors.one_line(exc.cause)}); remove it if no server uses it") from None
        raise ServeError(f"cannot listen on {where}: in use: a server is listening there (it accepted a "
                         f"connection). Stop it, or choose another path.") from None
    if removed:
        log.warning("removed the stale socket %s: connecting to it was refused (no server listens there)",
                    where)


def _remove_own_path(path: str, ident) -> None:
    exc = unixpath.remove_if_ours(path, ident)
    if exc is not None:
        log.warning("could not remove %s: %s", format_addr(path), exc.strerror)


def bind_listeners(config: ServeConfig) -> list[socket.socket]:
    """One listening socket, or with several workers one SO_REUSEPORT socket per worker
    (with ``--udp``: UDP sockets, bound the same way; the kernel spreads datagrams over the
    group by the hash of their 4-tuple, so one client's datagrams all reach one worker).

    Per-worker sockets let the kernel spread new connections evenly over the
    workers by hashing the 4-tuple; one shared socket would let whichever
    worker wakes first take them all.  SO_REUSEPORT would also let a second
    server of the same user join the port silently, so the first socket is a
    plain one (which fails with EADDRINUSE if anybody holds the port) and is
    replaced by the SO_REUSEPORT group on the same port.
    """
    if config.unix is not None:
        return [bind_unix(config)]
    first = bind_listener(config)
    if config.workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [first]
    port = first.getsockname()[1]
    first.close()
    try:
        return [bind_listener(config, port=port, reuseport=True) for _ in range(config.workers)]
    except ServeError:
        log.info("SO_REUSEPORT group could not bind; workers share one socket")
        return [bind_listener(config, port=port)]


def _listening_event(config: ServeConfig, sock: socket.socket, tls: Optional[dict] = None) -> dict:
    addr = sock.getsockname()
    cap = somaxconn()
    where = {"unix": config.unix} if config.unix is not None else {"host": addr[0], "port": addr[1]}
    # a UDP socket has no accept queue: no backlog, and "udp" says what kind of server this is
    kind = {"udp": True} if config.udp else {"backlog": min(config.backlog, cap) if cap else config.backlog}
    return {"event": "listening", **where, "address": format_addr(addr if config.unix is None else config.unix),
            "mode": config.mode, "workers": config.workers, "pid": os.getpid(), **kind,
            "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            **({"tls": tls} if tls is not None else {})}


def _prepare_tls(config: ServeConfig) -> tuple[ServeConfig, Optional[dict], Optional[str]]:
    """With --tls: make the throwaway pair (--tls-self-signed), check that OpenSSL takes the
    files, and say what is served -- ``(config with cert/key set, the listening event's "tls",
    the folder to remove at exit or None)``.  Workers build their own context from the files."""
    tls = config.tls
    if tls is None:
        return config, None, None
    folder = None
    if tls.self_signed:
        from socktools.serve.selfsigned import ADDRESSES, NAMES, make_self_signed
        made = make_self_signed()
        folder = made.folder
        tls = replace(tls, self_signed=False, cert=made.cert, key=made.key)
        config = replace(config, tls=tls)
    try:
        server_context(tls)              # OptionError (a key not the cert's...): before any bind
    except BaseException:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    info = {"cert": tls.cert, "sha256": fingerprint(tls.cert), "self_signed": folder is not None,
            "client_ca": tls.client_ca, "tls_min": tls.tls_min, "tls_max": tls.tls_max, "alpn": list(tls.alpn)}
    if folder is not None:
        info["names"] = [*NAMES, *ADDRESSES]
    return config, info, folder


def serve(config: ServeConfig, on_event: Callable[[dict], None]) -> ServerStats:
    """Bind, serve until stopped, and return the final merged statistics."""
    # SIGUSR1's default action kills the process: ignore it until a worker's
    # loop handles it, so an early "start draining" cannot kill the server.
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    config, tls_info, made = _prepare_tls(config)
    try:
        socks = bind_listeners(config)
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise
    own_path = unixpath.identity(socks[0].getsockname()) if config.unix is not None else None
    started = time.monotonic()
    # Queue the signals before saying "listening": whoever reads that line may
    # signal at once, before the loop that acts on it runs.
    signals = SignalQueue((signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)).install()
    try:
        on_event(_listening_event(config, socks[0], tls_info))
        per_worker = None
        if config.workers == 1:
            total = _serve_in_process(config, socks[0], on_event, signals)
            restarts = 0
        else:
            sup = _Supervisor(config, socks, on_event, signals)
            total = sup.serve()
            restarts = sup.restarts
            per_worker = sup.per_worker() if config.udp else None
    finally:
        signals.close()
        for sock in socks:
            sock.close()
        if config.unix is not None:
            _remove_own_path(config.unix, own_path)   # ours still: a clean exit leaves no file behind
        if made:
            shutil.rmtree(made, ignore_errors=True)   # the throwaway certificate and its key
    summary = {"event": "summary", **total.to_dict(), "worker_restarts": restarts,
               "duration": round(time.monotonic() - started, 3),
               **({"workers_detail": per_worker} if per_worker is not None else {})}
    on_event(summary)
    return total


def _serve_in_process(config: ServeConfig, sock: socket.socket, on_event,
                      signals: SignalQueue) -> ServerStats:
    def report(kind: str, stats: dict) -> None:
        if kind == "stats":
            if config.udp:
                stats = with_kernel_drops(DatagramStats.from_dict(stats), [sock]).to_dict()
            on_event({"event": "stats", **stats})

    worker = _worker_class(config)(config, sock, index=0, report=report if config.stats_interval else None)
    return with_kernel_drops(worker.run(signals=signals), [sock])


def _worker_class(config: ServeConfig):
    """What serves a socket: TCP connections (:class:`Worker`) or datagrams (``--udp``)."""
    if config.udp:
        from socktools.serve.udp import UdpWorker
        return UdpWorker
    return Worker


def with_kernel_drops(stats, socks: list):
    """``stats`` with the datagrams the kernel dropped at ``socks`` (their full receive buffers:
    sk_drops, counted since each was bound) -- for ``--udp`` counts; TCP counts unchanged.  Read
    from the sockets the supervisor holds, not from the workers: a replacement worker serves
    the same socket, and a count per worker life would say those drops twice."""
    if isinstance(stats, DatagramStats):
        stats.kernel_drops = sum(socket_drops(sock) or 0 for sock in socks)
    return stats


# --------------------------------------------------------------------- workers

#: What the supervisor sends a worker to abort its connections (the second stop).  Not a
#: second SIGTERM: a SIGTERM to the process group reaches each worker twice already.
#: SIGUSR2 is free (SIGUSR1 starts a sink's reading); arriving before the worker's loop
#: runs, its default action ends the worker -- what "abort" asks for anyway.
FORCE_SIGNAL = signal.SIGUSR2


def _worker_main(pipe: Any, config: ServeConfig, sock: socket.socket, index: int) -> None:
    """Body of a worker process (run by :class:`~socktools.core.procs.Supervisor`)."""
    # The supervisor watches stdin; a worker's is /dev/null (epoll refuses it: EPERM).
    config = replace(config, stop_on_stdin_eof=False)

    def report(kind: str, stats: dict) -> None:
        try:
            pipe.send((kind, stats))
        except (BrokenPipeError, OSError):
            worker.request_stop(force=True)  # parent is gone

    worker = _worker_class(config)(config, sock, index=index, report=report,
                                   report_interval=WORKER_REPORT_INTERVAL)

    def check_parent() -> None:
        if procs.orphaned():
            log.warning("worker %d: supervisor is gone; stopping", index)
            worker.request_stop(force=True)
        else:
            worker.loop.call_later(PARENT_CHECK_INTERVAL, check_parent)

    worker.loop.call_later(PARENT_CHECK_INTERVAL, check_parent)
    worker.run(handle_sigint=False, force_signal=FORCE_SIGNAL)


class _Supervisor(procs.Supervisor):
    """serve's policy: restart a dead worker (unless it keeps dying), forward SIGUSR1, merge counts."""

    extra_signals = (signal.SIGUSR1,)

    def __init__(self, config: ServeConfig, socks: list, on_event: Callable[[dict], None],
                 signals: SignalQueue) -> None:
        super().__init__("socktools-serve", drain_grace=config.drain_timeout + procs.FORCE_GRACE,
                         signals=signals)
        self.config = config
        self.socks = socks
        self.on_event = on_event
        self.stats_class = stats_class(config.udp)
        self.counts: dict[int, ServerStats] = {}   # worker index -> its latest counts
        self.retired = self.stats_class()          # the last counts of workers that ended
        self.retired_by: dict[int, Any] = {}       # worker index -> the counts of its ended lives

    def serve(self) -> ServerStats:
        self.run(self._begin)
        return self.total()

    def total(self) -> ServerStats:
        total = self.retired
        for counts in self.counts.values():
            total = total.add(counts)
        return with_kernel_drops(total, self.socks)

    def per_worker(self) -> list:
        """Each worker's counts over all its lives, with the kernel's drops at its own socket
        (None when the workers share one socket: the kernel's count is not per worker then)."""
        own = len(self.socks) == self.config.workers
        out = []
        for i in range(self.config.workers):
            counts = self.retired_by.get(i, self.stats_class()).add(self.counts.get(i, self.stats_class()))
            row = {"worker": i, **counts.to_dict()}
            row["kernel_drops"] = (socket_drops(self.socks[i]) or 0) if own else None
            out.append(row)
        return out

    def _begin(self) -> None:
        for i in range(self.config.workers):
            self._start(i)
        if self.config.stats_interval:
            self.loop.call_later(self.config.stats_interval, self._periodic)
        if self.config.stop_on_stdin_eof:
            watch_stdin_eof(self.loop, self._stdin_closed)

    def _start(self, index: int) -> None:
        self.counts[index] = self.stats_class()
        self.spawn(index, _worker_main, self.config, self.socks[index % len(self.socks)], index)

    def _periodic(self) -> None:
        self.on_event({"event": "stats", **self.total().to_dict()})
        self.loop.call_later(self.config.stats_interval, self._periodic)

    def _stdin_closed(self) -> None:
        if not self.stopping:
            self.request_stop()

    # ------------------------------------------------------------ hooks
    def on_message(self, child: procs.Child, msg: Any) -> None:
        kind, data = msg
        self.counts[child.index] = self.stats_class.from_dict(data)

    def stop_child(self, child: procs.Child, force: bool) -> None:
        child.signal(FORCE_SIGNAL if force else signal.SIGTERM)

    def on_signal(self, signum: int) -> None:
        for child in list(self.children.values()):
            child.signal(signum)  # SIGUSR1: sink workers start reading

    def on_exit(self, child: procs.Child) -> None:
        last = self.counts.pop(child.index, self.stats_class())
        self.retired_by[child.index] = self.retired_by.get(child.index, self.stats_class()).add(last)
        lost = last.open
        if lost > 0:
            # Its last report still counts connections open that died with the process (the
            # kernel closed their sockets): count them closed, and lost, or the summary would
            # report them open forever.
            last.closed += lost
            last.errors[WORKER_DIED] = last.errors.get(WORKER_DIED, 0) + lost
        self.retired = self.retired.add(last)
        if child.crash:
            log.error("worker %d crashed: %s", child.index, child.crash)
        self.restart(child, self._start, self.on_event,
                     "starting a replacement on its socket" if self.config.udp else
                     f"its {lost} open connection(s) were lost; starting a replacement",
                     lost_connections=lost)

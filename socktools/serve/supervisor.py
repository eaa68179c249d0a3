"""Bind once, run one worker in-process or N supervised worker processes, report events.

``serve(config, on_event)`` is the one entry point the CLI calls.  Events are
plain dicts (``{"event": "listening", ...}``, ``"stats"``, ``"worker-exit"``,
``"summary"``) handed to ``on_event``; the CLI renders them for humans or as
JSON lines.  Nothing here prints or exits.

Supervision (uvicorn-style): the parent binds the listening socket and forks
workers that inherit it; they share the kernel's accept queue.  Each worker
sends its statistics to the parent over a pipe every second, so a worker that
dies loses at most a second of counts; the parent reports the death, keeps the
dead worker's last counts, and starts a replacement on the same socket.
Signal handlers only queue the signal (wakeup fd); the loop acts on it: first
SIGINT/SIGTERM → SIGTERM to every worker (each drains), second → SIGTERM again
(each aborts), then SIGKILL after a grace period.  Workers die with the parent
(PR_SET_PDEATHSIG on Linux, plus a parent-pid check everywhere).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.core.loop import Loop
from socktools.serve.worker import ServeConfig, ServerStats, Worker

__all__ = ["ServeError", "bind_listener", "bind_listeners", "serve", "somaxconn"]

log = logging.getLogger("socktools.serve.worker")

#: How often a supervised worker sends its counters to the parent.
WORKER_REPORT_INTERVAL = 1.0
#: After the second stop signal, how long workers get before SIGKILL.
FORCE_GRACE = 2.0
#: A worker dying sooner than this after its start counts as a crash loop.
CRASH_LOOP_WINDOW = 1.0
CRASH_LOOP_LIMIT = 5


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
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Buffer sizes must be set before listen(): accepted sockets inherit them,
        # and the window scale is negotiated in the handshake.
        if config.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.rcvbuf)
        if config.sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.sndbuf)
        sock.bind(sockaddr)
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        where = format_addr(sockaddr)
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"cannot listen on {where}: EADDRINUSE - address already in use: another process is "
                f"listening there. Find it with `socktools sockets --listen --port {port}`, "
                f"stop it, or choose another port (--port 0 picks a free one).") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ServeError(f"cannot listen on {where}: {errors.one_line(exc)} "
                             f"(ports below 1024 need root or CAP_NET_BIND_SERVICE)") from None
        raise ServeError(f"cannot listen on {where}: {errors.one_line(exc)}") from None
    sock.setblocking(False)
    return sock


def bind_listeners(config: ServeConfig) -> list[socket.socket]:
    """One listening socket, or with several workers one SO_REUSEPORT socket per worker.

    Per-worker sockets let the kernel spread new connections evenly over the
    workers by hashing the 4-tuple; one shared socket would let whichever
    worker wakes first take them all.  SO_REUSEPORT would also let a second
    server of the same user join the port silently, so the first socket is a
    plain one (which fails with EADDRINUSE if anybody holds the port) and is
    replaced by the SO_REUSEPORT group on the same port.
    """
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


def _listening_event(config: ServeConfig, sock: socket.socket) -> dict:
    addr = sock.getsockname()
    cap = somaxconn()
    return {"event": "listening", "host": addr[0], "port": addr[1], "address": format_addr(addr),
            "mode": config.mode, "workers": config.workers, "pid": os.getpid(),
            "backlog": min(config.backlog, cap) if cap else config.backlog,
            "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)}


def serve(config: ServeConfig, on_event: Callable[[dict], None]) -> ServerStats:
    """Bind, serve until stopped, and return the final merged statistics."""
    # SIGUSR1's default action kills the process: ignore it until a worker's
    # loop handles it, so an early "start draining" cannot kill the server.
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    socks = bind_listeners(config)
    started = time.monotonic()
    try:
        on_event(_listening_event(config, socks[0]))
        if config.workers == 1:
            total = _serve_in_process(config, socks[0], on_event)
            restarts = 0
        else:
            sup = _Supervisor(config, socks, on_event)
            total = sup.run()
            restarts = sup.restarts
    finally:
        for sock in socks:
            sock.close()
    summary = {"event": "summary", **total.to_dict(), "worker_restarts": restarts,
               "duration": round(time.monotonic() - started, 3)}
    on_event(summary)
    return total


def _serve_in_process(config: ServeConfig, sock: socket.socket, on_event) -> ServerStats:
    def report(kind: str, stats: dict) -> None:
        if kind == "stats":
            on_event({"event": "stats", **stats})

    worker = Worker(config, sock, index=0, report=report if config.stats_interval else None)
    return worker.run()


# --------------------------------------------------------------------- workers

def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


def _worker_entry(config: ServeConfig, sock: socket.socket, index: int, pipe: Any, parent: int) -> None:
    """Body of a worker process (runs after fork)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_pdeathsig()
    if os.getppid() != parent:  # parent died before prctl took effect
        os._exit(0)
    # The supervisor watches stdin; a worker's is /dev/null (epoll refuses it: EPERM).
    config = replace(config, stop_on_stdin_eof=False)

    def report(kind: str, stats: dict) -> None:
        try:
            pipe.send((kind, stats))
        except (BrokenPipeError, OSError):
            worker.request_stop(force=True)  # parent is gone

    worker = Worker(config, sock, index=index, report=report, report_interval=WORKER_REPORT_INTERVAL)

    def check_parent() -> None:
        if os.getppid() != parent:
            log.warning("worker %d: supervisor is gone; stopping", index)
            worker.request_stop(force=True)
        else:
            worker.loop.call_later(1.0, check_parent)

    worker.loop.call_later(1.0, check_parent)
    try:
        worker.run(handle_sigint=False)
    except Exception as exc:  # a bug: say so in one line; the supervisor reports and replaces us
        log.error("worker %d crashed: %s: %s", index, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        os._exit(70)
    finally:
        pipe.close()


@dataclass
class _Slot:
    index: int
    process: Any
    pipe: Any
    started: float
    last: ServerStats = field(default_factory=ServerStats)
    final: bool = False
    done: bool = False
    pipe_fd: int = -1


class _Supervisor:
    def __init__(self, config: ServeConfig, socks: list, on_event) -> None:
        self.config = config
        self.socks = socks
        self.on_event = on_event
        self.ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        self.loop = Loop()
        self.slots: dict[int, _Slot] = {}
        self.retired = ServerStats()
        self.restarts = 0
        self.stopping = 0          # 0 running, 1 draining, 2 forcing
        self.crashes: list[float] = []
        self._kill_timer = None

    # ------------------------------------------------------------ processes
    def _spawn(self, index: int) -> None:
        r, w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_entry, name=f"socktools-serve-{index}",
                                args=(self.config, self.socks[index % len(self.socks)], index, w, os.getpid()))
        proc.start()
        w.close()
        slot = _Slot(index, proc, r, time.monotonic())
        self.slots[index] = slot
        slot.pipe_fd = r.fileno()
        self.loop.add_reader(slot.pipe_fd, lambda: self._on_pipe(slot))
        self.loop.add_reader(proc.sentinel, lambda: self._on_exit(slot))

    def _on_pipe(self, slot: _Slot) -> None:
        if slot.done:
            return  # its exit was handled earlier in the same batch of events
        try:
            while slot.pipe.poll():
                kind, data = slot.pipe.recv()
                slot.last = ServerStats.from_dict(data)
                slot.final = kind == "final"
        except (EOFError, OSError):
            self.loop.remove_reader(slot.pipe_fd)

    def _on_exit(self, slot: _Slot) -> None:
        if slot.done:
            return
        self._on_pipe(slot)  # collect the final counts first
        slot.done = True
        self.loop.remove_reader(slot.pipe_fd)
        self.loop.remove_reader(slot.process.sentinel)
        slot.process.join()
        slot.pipe.close()
        del self.slots[slot.index]
        self.retired = self.retired.add(slot.last)
        code = slot.process.exitcode
        if self.stopping:
            if not self.slots:
                self.loop.stop()
            return
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 30] + ([now] if now - slot.started < CRASH_LOOP_WINDOW else [])
        if len(self.crashes) >= CRASH_LOOP_LIMIT:
            self.on_event({"event": "worker-exit", "worker": slot.index, "pid": slot.process.pid,
                           "how": how, "restarting": False,
                           "message": f"worker {slot.index} keeps dying right after start; stopping"})
            self._stop()
            return
        self.restarts += 1
        self.on_event({"event": "worker-exit", "worker": slot.index, "pid": slot.process.pid, "how": how,
                       "restarting": True, "lost_connections": slot.last.open,
                       "message": f"worker {slot.index} (pid {slot.process.pid}) died ({how}); "
                                  f"its {slot.last.open} open connection(s) were lost; starting a replacement"})
        self._spawn(slot.index)

    # ------------------------------------------------------------ stopping
    def _stop(self) -> None:
        self.stopping += 1
        for slot in list(self.slots.values()):
            if slot.process.is_alive():
                try:
                    os.kill(slot.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        grace = FORCE_GRACE if self.stopping > 1 else self.config.drain_timeout + FORCE_GRACE
        if self._kill_timer:
            self._kill_timer.cancel()
        self._kill_timer = self.loop.call_later(grace, self._kill_all)
        if not self.slots:
            self.loop.stop()

    def _kill_all(self) -> None:
        for slot in list(self.slots.values()):
            if slot.process.is_alive():
                log.warning("worker %d did not stop in time: SIGKILL", slot.index)
                slot.process.kill()

    def _on_signal(self) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self._stop()
            elif signum == signal.SIGUSR1:
                for slot in self.slots.values():
                    os.kill(slot.process.pid, signal.SIGUSR1)

    def _periodic(self) -> None:
        self.on_event({"event": "stats", **self.total().to_dict()})
        self.loop.call_later(self.config.stats_interval, self._periodic)

    def total(self) -> ServerStats:
        total = self.retired
        for slot in self.slots.values():
            total = total.add(slot.last)
        return total

    def _watch_stdin(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return

        def on_stdin() -> None:
            if not os.read(fd, 4096):
                self.loop.remove_reader(fd)
                if not self.stopping:
                    self._stop()

        self.loop.add_reader(fd, on_stdin)

    # ------------------------------------------------------------ run
    def run(self) -> ServerStats:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        try:
            for i in range(self.config.workers):
                self._spawn(i)
            self.loop.add_reader(self._wake_r, self._on_signal)
            if self.config.stats_interval:
                self.loop.call_later(self.config.stats_interval, self._periodic)
            if self.config.stop_on_stdin_eof:
                self._watch_stdin()
            self.loop.run(until=lambda: self.stopping and not self.slots)
        finally:
            for slot in list(self.slots.values()):  # only on an unexpected exit from the loop
                if slot.process.is_alive():
                    slot.process.kill()
                slot.process.join()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
            self._wake_r.close()
            self._wake_w.close()
        return self.total()

"""``proxy --workers N``: N worker processes forward; the parent owns the table and the API.

The parent is a :class:`~socktools.core.procs.Supervisor` (the one mechanism for child
processes: spawn, pipes, stop, the death of either side) and forwards nothing.  It holds

* **the table** -- every proxy and its toxics (:class:`TableServer`, a
  :class:`~socktools.proxy.runner.ProxyServer` whose proxies only hold listeners), which the
  HTTP API (``--api``, on the supervisor's loop) reads and changes;
* **the listeners** -- it binds every proxy's address itself, so an address in use is said
  at the start (and in the API, as Toxiproxy's 500 with the errno explained).  TCP: one
  SO_REUSEPORT socket per worker on the same port (the kernel spreads new connections over
  the workers by the hash of their 4-tuple, as ``serve --workers`` does); ``unix:PATH``: one
  socket all workers accept from.

Each worker (:class:`WorkerServer`) runs today's one-process engine on the sockets it was
given.  Workers forked at the start -- and a replacement forked after a crash -- inherit the
table and the sockets as they are at the fork.  A change made through the API after that is
applied to the parent's table, then sent to every live worker as the proxy's new
:class:`~socktools.proxy.config.ProxySpec` (or ``None``: deleted), with the worker's new
listening socket passed over its pipe (SCM_RIGHTS) when the proxy (re)started listening; the
worker makes its own proxy match it with the engine's own verbs (create, delete, stop/start,
add/update/remove a toxic) and acknowledges.  The API answers once every live worker has
acknowledged (a worker that dies meanwhile counts: its replacement is forked with the new
table), so a client that adds a toxic sees it on its very next connection, whichever worker
takes it -- Toxiproxy's semantics.  A worker that does not acknowledge within
:data:`ACK_TIMEOUT` turns the answer into a 500 naming it.

``/metrics`` asks every worker for its byte counts the same way and sums them.  Workers send
their counts every :data:`REPORT_INTERVAL` and once more as they exit; the summary is the
sum (a worker killed loses what it counted since its last report).  Connection and exchange
events travel over the pipes and are printed by the parent only: one writer, no interleaved
lines.  Stop: the first SIGINT/SIGTERM (or stdin's EOF) drains every worker, the second
aborts; workers die with the parent (procs).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Optional

from socktools.core import procs
from socktools.core.signals import SignalQueue, watch_stdin_eof
from socktools.addresses import format_addr
from socktools.proxy.config import ProxyConfig, ProxySpec, parse_hostport, unix_path
from socktools.proxy.listen import ProxyError, bind_listener, bind_unix_listener, close_listener
from socktools.proxy.runner import Proxy, ProxyServer
from socktools.proxy.stats import ProxyStats

__all__ = ["run_workers", "ProxySupervisor", "TableServer", "WorkerServer", "ACK_TIMEOUT",
           "REPORT_INTERVAL"]

log = logging.getLogger("socktools.proxy")

#: How long the API waits for every worker to acknowledge a change (or to send its counts for
#: /metrics) before it answers 500 naming the worker that did not.  A worker applies a change
#: between two reads, in well under a millisecond; one silent for 5 s is stuck (or stopped),
#: and a client's own HTTP timeout is longer than that.
ACK_TIMEOUT = 5.0
#: How often a worker sends its counts to the parent: the summary loses at most this much of
#: a worker that is killed (serve's workers report as often).
REPORT_INTERVAL = 1.0
#: Events (connection, exchange) one message from a worker carries at most: a worker forwarding
#: many short connections sends them in batches, not one pipe write each, and a batch stays
#: far below a pipe's buffer.
EVENTS_PER_MESSAGE = 256


def bind_group(listen: str, workers: int, ours: set) -> list:
    """A proxy's listening sockets: one per worker (TCP, SO_REUSEPORT), or one to share (Unix).

    The first socket is a plain one, so that an address somebody holds fails with EADDRINUSE
    (a SO_REUSEPORT socket of the same user would join it silently); it is then replaced by
    the group on the port it got.  If the group cannot bind (somebody took the port between),
    the workers share one plain socket.  ``ours``: the (host, port) this run bound before --
    a proxy started again there in the same API call (a new upstream, a /populate replacing
    it) binds its group at once, beside the sockets the workers still hold until they get
    the change (a plain socket would fail on those).
    """
    path = unix_path(listen)
    if path is not None:
        return [bind_unix_listener(path)]
    host, port = parse_hostport(listen, "listen")
    reuseport = hasattr(socket, "SO_REUSEPORT")
    again = bool(port) and (host, port) in ours and reuseport
    if not again:
        first = bind_listener(host, port)
        port = first.getsockname()[1]
        ours.add((host, port))
        if workers == 1 or not reuseport:
            return [first]
        first.close()
    group: list = []
    try:
        for _ in range(workers):
            group.append(bind_listener(host, port, reuseport=True))
    except ProxyError as exc:
        for sock in group:
            sock.close()
        if again:
            raise
        log.info("proxy on %s:%d: no SO_REUSEPORT group (%s); the workers share one socket", host, port, exc)
        return [bind_listener(host, port)]
    return group


# --------------------------------------------------------------------- the parent's table
class TableProxy(Proxy):
    """A proxy in the parent's table: its toxics and its listeners, never a connection."""

    def __init__(self, server: "TableServer", spec: ProxySpec) -> None:
        super().__init__(server, spec)
        self.socks: list = []
        # From one counter per run: which proxy this is (a name deleted and created again -- a
        # /populate replacing it -- is another one), and which listening sockets it has (new
        # ones each time it starts listening: the workers need theirs).
        self.serial = next(server.serials)
        self.generation = 0

    def spec(self) -> ProxySpec:
        return ProxySpec(self.name, self.listen, self.upstream, self.enabled, tuple(self.toxics),
                         self.listen_tls, self.upstream_tls)

    def sock_for(self, index: int) -> socket.socket:
        return self.socks[index % len(self.socks)]

    def start(self) -> None:
        if self.enabled:
            return
        self.socks = bind_group(self.listen, self.server.config.workers, self.server.bound)
        if unix_path(self.listen) is None:
            self.listen = format_addr(self.socks[0].getsockname())
        self.generation = next(self.server.serials)
        self.enabled = True
        self.server.event({"event": "listening", "proxy": self.name, "listen": self.listen,
                           "upstream": self.upstream, **self.tls_info(), "workers": self.server.config.workers})

    def stop(self, why: str = "proxy disabled", how: str = "proxy-disabled") -> None:
        for sock in self.socks:
            close_listener(sock)
        self.socks = []
        self.enabled = False

    def _stop_accepting(self) -> None:
        pass

    def byte_counts(self) -> dict:
        return self.server.gathered.get(self.name) or dict.fromkeys(
            ("from_client", "to_upstream", "from_upstream", "to_client"), 0)


class TableServer(ProxyServer):
    """The table the API changes, on the supervisor's loop; its proxies forward nothing."""

    proxy_class = TableProxy

    def __init__(self, sup: "ProxySupervisor", config: ProxyConfig, on_event: Callable[[dict], None]) -> None:
        self.serials = itertools.count(1)      # (before super(): it may create proxies)
        self.bound: set = set()                 # (host, port) this run's proxies listened on
        super().__init__(config, on_event, loop=sup.loop)
        self.sup = sup
        self.gathered: dict = {}     # proxy name -> byte counts summed over the workers (/metrics)

    def dispatch(self, method: str, path: str, body: bytes, respond: Callable[[int, Any], None]) -> None:
        self.sup.dispatch(method, path, body, respond)

    def snapshot(self) -> dict:
        return {name: (p.spec(), p.serial, p.generation) for name, p in self.proxies.items()}

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        if self.api is not None:
            self.api.close()
            self.api = None
        # (the loop is the supervisor's: it closes it)


# --------------------------------------------------------------------- a worker
class WorkerServer(ProxyServer):
    """One worker's engine: today's ProxyServer on the sockets the parent handed it."""

    def __init__(self, config: ProxyConfig, pipe: Any, index: int) -> None:
        super().__init__(config, self._emit)
        self.pipe = pipe
        self.index = index
        self.handed: Optional[socket.socket] = None    # the socket the next start() listens on
        self._events: list = []
        self._flush = None
        self._gone = False
        self._inbox: collections.deque = collections.deque()    # the parent's messages, read

    # ------------------------------------------------------------ the engine's hooks
    def bind(self, listen: str) -> socket.socket:
        sock, self.handed = self.handed, None
        if sock is None:
            raise ProxyError(f"worker {self.index}: no listening socket was handed for {listen}")
        sock.setblocking(False)
        return sock

    def unbind(self, sock: socket.socket) -> None:
        sock.close()        # the parent's to remove a Unix socket's file, not ours

    def _emit(self, ev: dict) -> None:
        if ev.get("event") in ("listening", "api"):
            return          # the parent says those, once
        self._events.append({**ev, "worker": self.index})
        if len(self._events) >= EVENTS_PER_MESSAGE:
            self.flush_events()
        elif self._flush is None:
            # Sent at the end of this pass of the loop: a burst of closes costs one write.
            self._flush = self.loop.call_later(0, self.flush_events)

    def flush_events(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        events, self._events = self._events, []
        if events:
            self.send(("events", events))

    def send(self, msg: Any) -> None:
        if self._gone:
            return
        try:
            self.pipe.send(msg)
        except (OSError, ValueError):
            self._parent_gone()

    def _parent_gone(self) -> None:
        if not self._gone:
            self._gone = True
            log.warning("worker %d: the supervisor is gone; stopping", self.index)
            self.request_stop(force=True)

    def _on_signal(self, signum: int) -> None:
        # A SIGTERM only ever drains: one sent to the whole process group reaches a worker
        # besides the parent's own "stop"; forcing is the parent's word.
        self.request_stop(force=False)

    # ------------------------------------------------------------ the parent's messages
    def listen_to_parent(self) -> None:
        """Read the parent's messages on a thread of their own, handed to the loop.

        Both directions of the pipe block when full.  Were the loop to read it, a worker
        waiting to send (its events, while the parent is busy) would stop reading, and the
        parent, sending it a large change, would wait for it: each for the other, for ever.
        The thread always reads, so the parent's send ends and the parent reads again.
        """
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.loop.add_reader(self._wake_r, self._take_inbox)
        threading.Thread(target=self._read_pipe, name=f"socktools-proxy-{self.index}-inbox",
                         daemon=True).start()

    def _read_pipe(self) -> None:
        """(The inbox thread.)  Messages, with the sockets that follow an ``apply``; None: EOF."""
        try:
            while True:
                msg = self.pipe.recv()
                if msg[0] == "apply":
                    msg = (*msg, receive_sockets(self.pipe, msg[3]) if msg[3] else [])
                self._post(msg)
        except (EOFError, OSError, ProxyError):
            self._post(None)

    def _post(self, msg: Any) -> None:
        self._inbox.append(msg)          # (a deque: appends and pops are atomic)
        try:
            self._wake_w.send(b"!")
        except OSError:                  # full: the loop has wake-ups to read already (or closed)
            pass

    def _take_inbox(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass
        while self._inbox:
            msg = self._inbox.popleft()
            if msg is None:
                self.loop.remove_reader(self._wake_r)
                self._parent_gone()
                return
            self.on_message(msg)

    def on_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "apply":
            _, seq, changes, _, socks = msg
            self.apply(changes, socks)
            self.send(("ack", seq, None))
        elif kind == "count":
            self.flush_events()     # the events of what is counted come first
            self.send(("ack", msg[1], {name: p.byte_counts() for name, p in self.proxies.items()}))
        elif kind == "stop":
            self.request_stop(force=msg[1])

    def apply(self, changes: list, socks: list) -> None:
        """Make each named proxy match its new spec (None: deleted); ``socks`` are the new
        listeners, in the order of the changes that carry one."""
        handed = iter(socks)
        for name, spec, fresh in changes:
            sock = next(handed) if fresh else None
            try:
                self._apply_one(name, spec, sock)
            except ProxyError as exc:       # (a bug: the parent bound the socket it handed)
                log.error("worker %d: proxy %s: %s", self.index, name, exc)

    def _apply_one(self, name: str, spec: Optional[ProxySpec], sock: Optional[socket.socket]) -> None:
        proxy = self.proxies.get(name)
        if spec is None:
            if proxy is not None:
                self.delete(name)
            return
        if proxy is None:
            self.handed = sock
            self.create(spec)
            return
        if proxy.enabled and (sock is not None or not spec.enabled):
            proxy.stop()                     # disabled, or listening anew (moved, restarted)
        proxy.listen, proxy.upstream = spec.listen, spec.upstream
        if spec.enabled and not proxy.enabled:
            self.handed = sock
            proxy.start()
        self.handed = None
        sync_toxics(proxy, spec.toxics)

    def close(self) -> None:
        super().close()
        for sock in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if sock is not None:
                sock.close()          # (the inbox thread's next wake-up finds it closed: ignored)

    def totals_report(self) -> dict:
        return {"proxies": {name: p.stats.to_dict() for name, p in self.proxies.items()},
                "total": self.totals()["total"]}

    def report(self) -> None:
        self.flush_events()
        self.send(("report", self.totals_report()))
        self.loop.call_later(REPORT_INTERVAL, self.report)


def sync_toxics(proxy: Proxy, want: tuple) -> None:
    """Make ``proxy``'s toxics ``want`` (same names, same order) with add/update/remove."""
    wanted = {t.name: t for t in want}
    for spec in list(proxy.toxics):
        new = wanted.get(spec.name)
        if new is None or (new.type, new.stream) != (spec.type, spec.stream):
            proxy.remove_toxic(spec.name)
        elif new != spec:
            proxy.update_toxic(new)
    have = {t.name for t in proxy.toxics}
    for spec in want:
        if spec.name not in have:
            proxy.add_toxic(spec)


def send_sockets(child: procs.Child, socks: list) -> None:
    """Pass ``socks`` to ``child`` over its pipe (a socketpair on Linux): SCM_RIGHTS."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(child.fd)) as pipe:
        socket.send_fds(pipe, [b"S"], [s.fileno() for s in socks])


def receive_sockets(conn: Any, n: int) -> list:
    """The ``n`` sockets :func:`send_sockets` passed, in order."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno())) as pipe:
        _, fds, _, _ = socket.recv_fds(pipe, 1, n)
    if len(fds) != n:
        for fd in fds:
            os.close(fd)
        raise ProxyError(f"expected {n} sockets from the supervisor, got {len(fds)}")
    return [socket.socket(fileno=fd) for fd in fds]


def _worker_main(pipe: Any, config: ProxyConfig, table: list, index: int, inherited: list) -> None:
    """Body of a worker process (run by :class:`~socktools.core.procs.Supervisor`)."""
    for fd in inherited:          # the parent's API sockets and the other workers' listeners
        try:
            os.close(fd)
        except OSError:
            pass
    from socktools.proxy import listen
    listen._OWN_PATHS.clear()     # the parent's Unix socket files: never a worker's to remove
    seed = None if config.seed is None else config.seed + index
    config = replace(config, stop_on_stdin_eof=False, seed=seed, workers=1)   # (proxies, api: unused)
    worker = WorkerServer(config, pipe, index)
    for spec, sock in table:
        worker.handed = sock
        worker.create(spec)
    worker.handed = None
    worker.listen_to_parent()
    worker.loop.call_later(REPORT_INTERVAL, worker.report)
    signals = SignalQueue((signal.SIGTERM,)).install()
    try:
        worker.run(signals)
        worker.flush_events()
        worker.send(("report", worker.totals_report()))
    finally:
        signals.close()      # (only now: a SIGTERM during the report would otherwise kill it first)


# --------------------------------------------------------------------- the parent
class _Waiting:
    """A request to the workers whose answers are awaited: who has not answered yet."""

    def __init__(self, children: set, done: Callable[[dict, list], None]) -> None:
        self.children = children       # procs.Child objects yet to answer
        self.answers: dict = {}        # worker index -> its answer
        self.done = done               # done(answers, late children)
        self.timer: Any = None


class ProxySupervisor(procs.Supervisor):
    """The parent: the table, the API, the listeners, the workers and their counts."""

    def __init__(self, config: ProxyConfig, on_event: Callable[[dict], None], signals: SignalQueue) -> None:
        super().__init__("socktools-proxy", drain_grace=config.drain_timeout + procs.FORCE_GRACE,
                         signals=signals)
        self.config = config
        self.on_event = on_event
        self.table = TableServer(self, config, on_event)
        self.seq = 0
        self.waiting: dict[int, _Waiting] = {}
        self.reports: dict[int, dict] = {}        # worker index -> its latest counts
        self.by_worker: dict[int, ProxyStats] = {}   # worker index -> counts of its ended lives
        self.by_proxy: dict[str, ProxyStats] = {}    # proxy name -> counts of ended worker lives
        self.total = ProxyStats()                    # every ended worker life's counts
        self.started = time.monotonic()

    # ------------------------------------------------------------ start and end
    def open(self) -> None:
        self.table.open()

    def serve(self) -> dict:
        self.run(self._begin)
        self.table.close()
        return self.summary()

    def _begin(self) -> None:
        for index in range(self.config.workers):
            self._start(index)
        if self.config.stop_on_stdin_eof:
            watch_stdin_eof(self.loop, self._stdin_closed)

    def _start(self, index: int) -> None:
        table = [(p.spec(), p.sock_for(index) if p.enabled else None) for p in self.table.proxies.values()]
        self.spawn(index, _worker_main, self.config, table, index, self._inherited(index))

    def _inherited(self, index: int) -> list:
        """The descriptors a worker forked now gets but must close: the API's (or the API
        port stays open in it after the parent closes it) and the other workers' listeners
        (or a proxy disabled in the parent still takes connections nobody accepts)."""
        if self.ctx.get_start_method() != "fork":
            return []
        fds = []
        api = self.table.api
        if api is not None:
            fds.append(api.listener.fileno())
            fds.extend(c.sock.fileno() for c in api.conns if not c.closed)
        for proxy in self.table.proxies.values():
            mine = proxy.sock_for(index).fileno() if proxy.enabled else None
            fds.extend(s.fileno() for s in proxy.socks if s.fileno() != mine)
        return fds

    def _stdin_closed(self) -> None:
        if not self.stopping:
            self.request_stop()

    def request_stop(self) -> None:
        if not self.stopping and self.table.api is not None:
            self.table.api.close()       # as in one process: the API goes with the first stop
            self.table.api = None
        super().request_stop()

    def stop_child(self, child: procs.Child, force: bool) -> None:
        child.send(("stop", force))

    # ------------------------------------------------------------ the API
    def dispatch(self, method: str, path: str, body: bytes, respond: Callable[[int, Any], None]) -> None:
        from socktools.proxy.api import handle
        if method.upper() == "GET":
            if path.split("?", 1)[0].strip("/") == "metrics":
                def counted(answers: dict, late: list) -> None:
                    if late:
                        respond(*self._late(late, "its counts"))
                        return
                    self._gather(answers)
                    respond(*handle(self.table, method, path, body))
                self._ask(lambda seq: ("count", seq), counted)
                return
            respond(*handle(self.table, method, path, body))
            return
        before = self.table.snapshot()
        status, doc = handle(self.table, method, path, body)
        changes = self._changes(before)
        if not changes:
            respond(status, doc)
            return
        fresh = [name for name, spec, new in changes if new]
        meta = [(name, spec, new) for name, spec, new in changes]

        def acked(answers: dict, late: list) -> None:
            respond(*(self._late(late, "the change") if late else (status, doc)))

        def send(child: procs.Child, seq: int) -> bool:
            if not child.send(("apply", seq, meta, len(fresh))):
                return False
            if fresh:
                try:
                    send_sockets(child, [self.table.proxies[n].sock_for(child.index) for n in fresh])
                except OSError:
                    return False
            return True

        self._ask(None, acked, send=send)

    def _changes(self, before: dict) -> list:
        """``[(name, spec or None, new listener?)]`` for every proxy the request changed."""
        after = self.table.snapshot()
        out = []
        for name in list(before) + [n for n in after if n not in before]:
            old, new = before.get(name), after.get(name)
            if old == new:
                continue
            if new is None:
                out.append((name, None, False))
                continue
            if old is not None and old[1] != new[1]:    # replaced: the workers delete theirs first
                out.append((name, None, False))
                old = None
            spec = new[0]
            out.append((name, spec, spec.enabled and (old is None or old[2] != new[2])))
        return out

    def _late(self, late: list, what: str) -> tuple:
        names = ", ".join(f"worker {c.index} (pid {c.pid})" for c in late)
        message = (f"{names} did not acknowledge {what} within {ACK_TIMEOUT:g}s; the table has it, "
                   f"that worker may not act on it yet")
        log.error("api: %s", message)
        return 500, {"error": message, "status": 500}

    def _ask(self, make: Optional[Callable[[int], tuple]], done: Callable[[dict, list], None],
             send: Optional[Callable[[procs.Child, int], bool]] = None) -> None:
        """Send every live worker a request; ``done(answers, late)`` once each has answered,
        ended, or :data:`ACK_TIMEOUT` passed."""
        self.seq += 1
        seq = self.seq
        waiting = _Waiting(set(), done)
        self.waiting[seq] = waiting
        for child in list(self.children.values()):
            if child.ended:
                continue
            sent = send(child, seq) if send is not None else child.send(make(seq))
            if sent:
                waiting.children.add(child)
        waiting.timer = self.loop.call_later(ACK_TIMEOUT, lambda: self._finish(seq))
        self._check(seq)

    def _check(self, seq: int) -> None:
        waiting = self.waiting.get(seq)
        if waiting is not None and not waiting.children:
            self._finish(seq)

    def _finish(self, seq: int) -> None:
        waiting = self.waiting.pop(seq, None)
        if waiting is None:
            return
        waiting.timer.cancel()
        waiting.done(waiting.answers, sorted(waiting.children, key=lambda c: c.index))

    def _gather(self, answers: dict) -> None:
        """/metrics: each proxy's bytes, summed over the workers' answers and ended lives."""
        keys = ("from_client", "to_upstream", "from_upstream", "to_client")
        gathered: dict = {}
        for name in self.table.proxies:
            retired = self.by_proxy.get(name)
            gathered[name] = {k: getattr(retired, k) if retired else 0 for k in keys}
        for counts in answers.values():
            for name, c in counts.items():
                if name in gathered:
                    for k in keys:
                        gathered[name][k] += c[k]
        self.table.gathered = gathered

    # ------------------------------------------------------------ the workers' messages
    def on_message(self, child: procs.Child, msg: Any) -> None:
        kind = msg[0]
        if kind == "events":
            for ev in msg[1]:
                self.on_event(ev)
        elif kind == "report":
            self.reports[child.index] = msg[1]
        elif kind == "ack":
            _, seq, answer = msg
            waiting = self.waiting.get(seq)
            if waiting is not None and child in waiting.children:
                waiting.children.discard(child)
                waiting.answers[child.index] = answer
                self._check(seq)

    def on_exit(self, child: procs.Child) -> None:
        self._retire(child.index, self.reports.pop(child.index, None))
        for seq in list(self.waiting):
            waiting = self.waiting[seq]
            if child in waiting.children:       # a worker that died counts as acknowledged:
                waiting.children.discard(child)  # its replacement is forked with the new table
                self._check(seq)
        if child.crash:
            log.error("worker %d crashed: %s", child.index, child.crash)
        self.restart(child, self._start, self.on_event,
                     "its open connections were lost; starting a replacement with the current table")

    def _retire(self, index: int, report: Optional[dict]) -> None:
        if report is None:
            return
        total = ProxyStats(**report["total"])
        self.total.add(total)
        self.by_worker.setdefault(index, ProxyStats()).add(total)
        for name, counts in report["proxies"].items():
            self.by_proxy.setdefault(name, ProxyStats()).add(ProxyStats(**counts))

    def summary(self) -> dict:
        proxies = {name: self.by_proxy.get(name, ProxyStats()).to_dict() for name in self.table.proxies}
        workers = [{"worker": i, **self.by_worker.get(i, ProxyStats()).to_dict()}
                   for i in range(self.config.workers)]
        return {"event": "summary", "proxies": proxies, "total": self.total.to_dict(), "workers": workers,
                "worker_restarts": self.restarts, "duration": round(time.monotonic() - self.started, 3)}


def run_workers(config: ProxyConfig, on_event: Callable[[dict], None]) -> dict:
    """``run_proxy`` with ``config.workers`` processes: bind, supervise, return the summary event."""
    # Queued before anything is said: whoever reads "listening" may signal at once.
    signals = SignalQueue((signal.SIGINT, signal.SIGTERM)).install()
    try:
        sup = ProxySupervisor(config, on_event, signals)
        try:
            sup.open()
        except ProxyError:
            sup.loop.close()
            raise
        summary = sup.serve()
    finally:
        signals.close()
    on_event(summary)
    return summary

"""The proxy's engine: listeners, proxied pairs, the toxics' table and the stop, on one loop.

``run_proxy(config, on_event)`` is the one entry point the CLI calls (with
``--workers N``: :func:`socktools.proxy.supervisor.run_workers`, the same shape).  Events
are plain dicts (``listening``, ``api``, ``connection``, ``summary``) handed to
``on_event``; nothing here prints or exits.

One process, one :class:`~socktools.core.loop.Loop`: the data path, the
toxics' timers and the HTTP API (:mod:`socktools.proxy.httpd`) share it, and
an API call is a few dictionary operations between two reads -- it never
blocks a connection.  The table the API changes (proxies, their toxics) lives
here, in :class:`ProxyServer`; a toxic added or removed acts on the
connections already open too, as in Toxiproxy.

Stop: the first SIGINT/SIGTERM (or stdin's EOF with ``stop_on_stdin_eof``)
stops accepting, lets every pair flush what its toxics still hold, closes the
pairs that hold nothing (FIN both ways), and aborts what is left after
``drain_timeout``; a second signal aborts at once.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import ssl
import time
from typing import Any, Callable, Optional

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.core.accept import Acceptor
from socktools.core.loop import Connection, Loop
from socktools.core.signals import SignalQueue, watch_stdin_eof
from socktools.proxy.config import (PROXY_FIELDS, ProxyConfig, ProxySpec, SpecError, ToxicSpec,
                                    check_address, check_fields, parse_hostport, unix_path)
from socktools.proxy.link import ClientSide, Pair, UpstreamSide
from socktools.proxy.listen import (Conflict, NotFound, ProxyError, bind_listener, bind_unix_listener,
                                    close_listener)
from socktools.proxy.splice import SpliceConnection
from socktools.proxy.stats import ProxyStats
from socktools.tlsconf import client_context, fingerprint, server_context, server_name

__all__ = ["ProxyServer", "Proxy", "run_proxy"]

log = logging.getLogger("socktools.proxy")

#: While draining, how often pairs are looked at for "nothing left in flight".
DRAIN_CHECK = 0.05
#: Longest TLS handshake, either side, from TCP up to the handshake's end.  A real one takes a
#: few round trips (milliseconds on loopback, under a second across the world); a client that
#: connects to a TLS listener and says nothing, or an upstream that never answers a
#: ClientHello (a plaintext port waiting for a line), would otherwise hold its socket for
#: ever.  10 s: what nginx's and haproxy's client handshake timeouts default to at most
#: (nginx ssl_handshake_timeout 60 s is for slow networks, not loopback tests).
HANDSHAKE_TIMEOUT = 10.0


class Proxy:
    """One proxy: a listener (while enabled), its open pairs, its toxics, its counts."""

    def __init__(self, server: "ProxyServer", spec: ProxySpec) -> None:
        self.server = server
        self.name = spec.name
        self.listen = spec.listen
        self.upstream = spec.upstream
        self.enabled = False
        self.toxics: list[ToxicSpec] = list(spec.toxics)
        self.listener: Optional[socket.socket] = None
        self.pairs: set = set()
        self.stats = ProxyStats()
        self.client_side = ClientSide(self)
        self.upstream_side = UpstreamSide(HANDSHAKE_TIMEOUT)
        self._numbers = 0
        self.acceptor: Optional[Acceptor] = None     # while listening (core.accept: bites, EMFILE pauses)
        # TLS: each process makes its own contexts from the spec's configs (a context does not
        # pickle); clients still in their handshake (not yet a pair) -> their deadline timer.
        self.listen_tls, self.upstream_tls = spec.listen_tls, spec.upstream_tls
        self.server_ctx: Optional[ssl.SSLContext] = None
        self.client_ctx: Optional[ssl.SSLContext] = None
        self.handshaking: dict = {}
        self._sha256: Optional[str] = None
        try:
            if spec.listen_tls is not None:
                if spec.listen_tls.self_signed:
                    raise ProxyError(f"proxy {self.name}: a self-signed listener's certificate is made by "
                                     f"the command line (socktools proxy --tls-self-signed) before it starts")
                self.server_ctx = server_context(spec.listen_tls)
                self._sha256 = fingerprint(spec.listen_tls.cert)
            if spec.upstream_tls is not None:
                self.client_ctx = client_context(spec.upstream_tls)
        except errors.OptionError as exc:
            raise ProxyError(f"proxy {self.name}: {exc.option}: {exc}") from None

    def to_json(self) -> dict:
        doc = {"name": self.name, "listen": self.listen, "upstream": self.upstream,
               "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics]}
        doc.update(self.tls_info())         # (beyond Toxiproxy's fields, and only when TLS is on)
        return doc

    def tls_info(self) -> dict:
        """Each TLS side's settings, as the listening event and the API show them."""
        out: dict = {}
        if self.listen_tls is not None:
            cfg = self.listen_tls
            out["listen_tls"] = {"cert": cfg.cert, "sha256": self._sha256, "client_ca": cfg.client_ca}
        if self.upstream_tls is not None:
            cfg = self.upstream_tls
            out["upstream_tls"] = {"sni": self.sni(), "verify": not cfg.insecure, "cafile": cfg.cafile,
                                   "capath": cfg.capath, "cert": cfg.cert}
        return out

    def sni(self) -> Optional[str]:
        """The name the upstream handshake sends and checks: upstream_tls' ``sni``, else the
        upstream's host (an address: checked against the certificate's IP SANs, no SNI sent)."""
        host = "" if unix_path(self.upstream) is not None else parse_hostport(self.upstream, "upstream")[0]
        return server_name(self.upstream_tls, host) or None

    # ------------------------------------------------------------ up and down
    def start(self) -> None:
        if self.enabled:
            return
        self.listener = self.server.bind(self.listen)
        if unix_path(self.listen) is None:
            # Toxiproxy shows the address it got: a port 0 becomes the real one.
            self.listen = format_addr(self.listener.getsockname())
        self.acceptor = Acceptor(self.server.loop, self.listener, self._accepted, on_pause=self._accept_paused)
        self.acceptor.start()
        self.enabled = True
        self.server.event({"event": "listening", "proxy": self.name, "listen": self.listen,
                           "upstream": self.upstream, **self.tls_info()})

    def stop(self, why: str = "proxy disabled", how: str = "proxy-disabled") -> None:
        """Stop listening and close every connection (Toxiproxy's ``enabled: false``)."""
        self._stop_accepting()
        if self.listener is not None:
            self.server.unbind(self.listener)
            self.listener = None
        self.enabled = False
        self.abort_handshakes()
        for pair in list(self.pairs):
            pair.close(why, how)

    def _stop_accepting(self) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()
            self.acceptor = None

    def _accept_paused(self, why: str) -> None:
        log.warning("proxy %s: accept paused: %s", self.name, why)

    def _accepted(self, sock: socket.socket, peer: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # (A Unix socket's client is unnamed: it is shown by the socket it came through.)
        # A TLS client is a TlsConnection (it never splices: its bytes are records).
        self.server.loop.add_connection(sock, self.client_side, peer or self.listen,
                                        tls=self.server_ctx, conn_class=SpliceConnection)

    # ------------------------------------------------------------ clients' TLS handshakes
    def handshake_begun(self, client: Connection) -> None:
        self.handshaking[client] = self.server.loop.call_later(HANDSHAKE_TIMEOUT,
                                                               lambda: self._handshake_late(client))

    def _handshake_late(self, client: Connection) -> None:
        if self.handshaking.pop(client, None) is None or client.closed:
            return
        self._count_tls_failure(errors.TIMEOUT)
        log.warning("proxy %s: TLS handshake with client %s: not done within %gs (timeout); closing that "
                    "connection", self.name, format_addr(client.peer), HANDSHAKE_TIMEOUT)
        client.abort()

    def handshake_failed(self, client: Connection, exc: Optional[BaseException]) -> None:
        """A client's connection ended before its handshake completed: that connection only."""
        timer = self.handshaking.pop(client, None)
        if timer is not None:
            timer.cancel()
        if exc is None:         # (we closed it: a stop, a timeout already said so)
            return
        key = errors.tls_server_key(exc) if isinstance(exc, ssl.SSLError) else errors.exception_key(exc)
        self._count_tls_failure(key)
        log.warning("proxy %s: TLS handshake with client %s failed: %s (%s); closing that connection",
                    self.name, format_addr(client.peer), key, getattr(exc, "reason", None) or exc)

    def _count_tls_failure(self, key: str) -> None:
        failed = self.stats.client_tls_failed
        failed[key] = failed.get(key, 0) + 1

    def abort_handshakes(self) -> None:
        """Close the clients still in their handshake (a stop: they have no bytes in flight)."""
        for client, timer in list(self.handshaking.items()):
            timer.cancel()
            client.abort()
        self.handshaking.clear()

    # ------------------------------------------------------------ pairs
    def adopt(self, client: Connection) -> None:
        timer = self.handshaking.pop(client, None)
        if timer is not None:
            timer.cancel()
        self._numbers += 1
        pair = Pair(self, client, self._numbers)
        client.ctx = pair
        self.pairs.add(pair)
        self.stats.accepted += 1
        path = unix_path(self.upstream)
        host, port = parse_hostport(self.upstream, "upstream") if path is None else ("", 0)
        try:
            family, address = resolve(host, port, unix=path)
        except OSError as exc:
            pair.upstream_failed(exc)
            return
        pair.start(address, family, self.sni() if self.client_ctx is not None else None)

    def pair_done(self, pair: Pair) -> None:
        self.pairs.discard(pair)
        counts = pair.counts()
        how = pair.how or "closed"
        self.stats.add_pair(how, counts)
        self.server.event({"event": "connection", "proxy": self.name, "number": pair.number,
                           "client": format_addr(pair.client.peer), "how": how,
                           "duration": round(time.monotonic() - pair.started, 6), **counts,
                           **pair.tls_info()})

    def byte_counts(self) -> dict:
        """Bytes each way so far: the closed connections' and the open ones'."""
        total = {k: getattr(self.stats, k) for k in ("from_client", "to_upstream", "from_upstream", "to_client")}
        for pair in self.pairs:
            for key, value in pair.counts().items():
                total[key] += value
        return total

    # ------------------------------------------------------------ toxics
    def toxic(self, name: str) -> ToxicSpec:
        for spec in self.toxics:
            if spec.name == name:
                return spec
        raise NotFound(f"toxic not found: {name!r} on proxy {self.name!r}")

    def _links(self, stream: str) -> list:
        links = []
        for pair in self.pairs:
            if pair.connected:
                links.append(pair.up if stream == "upstream" else pair.down)
        return links

    def add_toxic(self, spec: ToxicSpec) -> None:
        if any(t.name == spec.name for t in self.toxics):
            raise Conflict(f"toxic already exists: {spec.name!r} on proxy {self.name!r}")
        self.toxics.append(spec)
        for link in self._links(spec.stream):
            link.add(spec)

    def update_toxic(self, spec: ToxicSpec) -> None:
        self.toxics = [spec if t.name == spec.name else t for t in self.toxics]
        for link in self._links(spec.stream):
            link.update(spec)

    def remove_toxic(self, name: str) -> None:
        spec = self.toxic(name)
        self.toxics.remove(spec)
        for link in self._links(spec.stream):
            link.remove(name)


class ProxyServer:
    """Every proxy of a run, the loop they share, and the operations the API calls."""

    #: What :meth:`create` makes (the supervisor's table has its own, which forwards nothing).
    proxy_class = Proxy

    def __init__(self, config: ProxyConfig, on_event: Callable[[dict], None],
                 loop: Optional[Loop] = None) -> None:
        self.config = config
        self.on_event = on_event
        self.loop = loop or Loop()
        self.loop.count_each = True      # per-connection byte counts on the batch path too
        self.rng = random.Random(config.seed)
        self.clock = time.monotonic
        self.call_at = self.loop.call_at
        self.proxies: dict[str, Proxy] = {}
        # Proxies deleted through the API: their counts still go into the total (read at the end:
        # a connection closing after the delete -- flushing what it was owed -- still counts).
        self.retired: list = []
        self.draining = False
        self.stopped = False
        self.api: Any = None
        self._drain_deadline = None
        self._decoder: Any = None        # --decode's role -> parser, made at the first watch
        self.started = time.monotonic()

    def event(self, ev: dict) -> None:
        self.on_event(ev)

    def watch(self, pair: Pair) -> Any:
        """--decode: a :class:`~socktools.proxy.decode.Watch` for ``pair`` (None without it)."""
        if self.config.decode is None:
            return None
        from socktools.proxy.decode import Watch
        if self._decoder is None:     # built once: a plug-in is loaded and made once per run
            from socktools.wire.spec import stream_decoder
            self._decoder = stream_decoder(self.config.decode)

        def answered(ex: Any, done_at: float) -> None:
            up = None if ex.sent_at is None else round((ex.reply_read_at - ex.sent_at) * 1000, 3)
            self.event({"event": "exchange", "proxy": pair.proxy.name, "number": pair.number,
                        "request": ex.request, "reply": ex.reply, "upstream_ms": up,
                        "client_ms": round((done_at - ex.read_at) * 1000, 3)})

        def stopped(why: str) -> None:
            log.warning("proxy %s: connection %d: --decode %s stops on this connection (its bytes "
                        "still pass): %s", pair.proxy.name, pair.number, self.config.decode, why)

        return Watch(self._decoder, answered, self.clock, stopped)

    def bind(self, listen: str) -> socket.socket:
        """A listening socket for a proxy starting at ``listen`` (a worker is handed its own)."""
        path = unix_path(listen)
        if path is not None:
            return bind_unix_listener(path)
        return bind_listener(*parse_hostport(listen, "listen"))

    def unbind(self, sock: socket.socket) -> None:
        close_listener(sock)

    def dispatch(self, method: str, path: str, body: bytes, respond: Callable[[int, Any], None]) -> None:
        """One API request: ``respond(status, document)``, at once here (the supervisor's
        table answers a change once every worker has it)."""
        from socktools.proxy.api import handle
        respond(*handle(self, method, path, body))

    # ------------------------------------------------------------ the table (the API's verbs)
    def get(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise NotFound(f"proxy not found: {name!r}") from None

    def create(self, spec: ProxySpec) -> Proxy:
        if spec.name in self.proxies:
            raise Conflict(f"proxy already exists: {spec.name!r}")
        proxy = self.proxy_class(self, spec)
        if spec.enabled:
            proxy.start()
        self.proxies[spec.name] = proxy
        return proxy

    def update(self, name: str, doc: dict) -> Proxy:
        """Toxiproxy's ProxyUpdate: ``enabled``, ``listen``, ``upstream`` (a restart if they change)."""
        proxy = self.get(name)
        check_fields(doc, PROXY_FIELDS, f"proxy {name}")
        enabled = doc.get("enabled", proxy.enabled)
        if not isinstance(enabled, bool):
            raise SpecError(f"enabled: expected true or false, got {enabled!r}")
        listen = doc.get("listen", proxy.listen)
        upstream = doc.get("upstream", proxy.upstream)
        check_address(listen, "listen")
        check_address(upstream, "upstream")
        moved = listen != proxy.listen or upstream != proxy.upstream
        if moved or not enabled:
            if proxy.enabled:
                proxy.stop()
        proxy.listen, proxy.upstream = listen, upstream
        if enabled and not proxy.enabled:
            proxy.start()
        return proxy

    def delete(self, name: str) -> None:
        proxy = self.get(name)
        proxy.stop("proxy deleted", "proxy-deleted")
        del self.proxies[name]
        self.retired.append(proxy)

    def reset(self) -> None:
        """Toxiproxy's /reset: every proxy enabled, every toxic removed."""
        for proxy in self.proxies.values():
            if not proxy.enabled:
                proxy.start()
            for spec in list(proxy.toxics):
                proxy.remove_toxic(spec.name)

    def populate(self, specs: list) -> list:
        """Toxiproxy's /populate: create each proxy, or replace one whose listen/upstream differ."""
        out = []
        for spec in specs:
            old = self.proxies.get(spec.name)
            if old is not None and (old.upstream != spec.upstream or
                                    (spec.listen != old.listen and not spec.listen.endswith(":0"))):
                self.delete(spec.name)
                old = None
            if old is None:
                out.append(self.create(spec))
            else:
                out.append(self.update(spec.name, {"enabled": spec.enabled}))
        return out

    # ------------------------------------------------------------ running
    def open(self) -> None:
        """Start every configured proxy and the API (raises :class:`ProxyError`)."""
        try:
            for spec in self.config.proxies:
                self.create(spec)
            if self.config.api:
                from socktools.proxy.httpd import ApiServer
                self.api = ApiServer(self, self.config.api)
                self.event({"event": "api", "address": self.api.address})
        except ProxyError:
            self.close()
            raise

    def run(self, signals: Optional[SignalQueue] = None) -> None:
        if signals is not None:
            signals.attach(self.loop, self._on_signal)
        if self.config.stop_on_stdin_eof:
            watch_stdin_eof(self.loop, self.request_stop)
        try:
            self.loop.run(until=lambda: self.stopped)
        finally:
            self.close()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop("proxy stopped", "aborted")
        if self.api is not None:
            self.api.close()
            self.api = None
        self.loop.close()

    def _on_signal(self, signum: int) -> None:
        self.request_stop(force=self.draining)

    def request_stop(self, force: bool = False) -> None:
        if force:
            log.info("stopping now: aborting %d connection(s)", self._open_pairs())
            self._abort_all()
            return
        if self.draining:
            return
        self.draining = True
        for proxy in self.proxies.values():
            proxy._stop_accepting()
            proxy.abort_handshakes()
        if self.api is not None:
            self.api.close()
            self.api = None
        n = self._open_pairs()
        if n:
            log.info("draining %d connection(s) for up to %gs", n, self.config.drain_timeout)
        self._drain_deadline = self.loop.call_later(self.config.drain_timeout, self._abort_all)
        self._drain_check()

    def _open_pairs(self) -> int:
        return sum(len(p.pairs) for p in self.proxies.values())

    def _drain_check(self) -> None:
        """Close the pairs with nothing left in flight; stop when none is left."""
        for proxy in self.proxies.values():
            for pair in list(proxy.pairs):
                links = [pair.up] + ([pair.down] if pair.down is not None else [])
                if not any(link.held for link in links):
                    pair.close("drained", "drained")
        if not self._open_pairs():
            self.stopped = True
            return
        self.loop.call_later(DRAIN_CHECK, self._drain_check)

    def _abort_all(self) -> None:
        for proxy in self.proxies.values():
            for pair in list(proxy.pairs):
                pair.how = pair.how or "aborted"
                for conn in pair.connections:
                    conn.abort()
        self.stopped = True

    def totals(self) -> dict:
        out: dict = {"proxies": {name: p.stats.to_dict() for name, p in self.proxies.items()}}
        total = ProxyStats()
        for proxy in self.retired + list(self.proxies.values()):
            total.add(proxy.stats)
        out["total"] = total.to_dict()
        return out


def run_proxy(config: ProxyConfig, on_event: Callable[[dict], None]) -> dict:
    """Start the proxies (and the API), serve until stopped, return the summary event."""
    signals = SignalQueue((signal.SIGINT, signal.SIGTERM)).install()
    try:
        server = ProxyServer(config, on_event)
        server.open()
        server.run(signals)
    finally:
        signals.close()
    summary = {"event": "summary", **server.totals(), "duration": round(time.monotonic() - server.started, 3)}
    on_event(summary)
    return summary

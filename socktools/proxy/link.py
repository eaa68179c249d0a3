"""One proxied connection: the client's socket, the upstream's, and a toxic chain each way.

A :class:`Pair` is made when a client is accepted.  The client is not read
until the upstream connect finished (so nothing piles up for a server that may
refuse); a refused or failed connect closes the client, counted and logged.
Then two :class:`Link` objects carry the bytes, each through its chain of
stages (:mod:`socktools.proxy.toxics`) to the other socket.

Back-pressure, so that memory never grows with a slow side: a link sums what
it holds (bytes queued in its stages plus the destination's out-buffer) and
pauses reading its source above :data:`HIGH_WATER`, resumes below
:data:`LOW_WATER`.  The source's kernel buffers then fill and TCP's window
stops its sender, as it would with no proxy in between.

Ends are passed on as they came: an EOF becomes a half-close on the other side
(FIN one way keeps the other direction open), a reset (ECONNRESET, or any
error) becomes a reset of the other side (SO_LINGER 0, then close), and a
toxic's CLOSE or RESET ends both sides.

A *plain* link -- no toxic, no ``--decode`` watching it -- skips the chain.
With ``--splice auto`` (the default) its source joins the loop's batch path
(:meth:`Loop.write_batch`): the reads and writes of one poll's ready links run
as C-level loops, which is what small request/reply traffic needs; a read that
fills a whole :data:`SPLICE_AFTER` marks a bulk transfer, and that link then
splices (on Linux): its bytes go socket -> pipe -> socket without entering
Python (:mod:`socktools.proxy.splice`), as haproxy's ``option splice-auto``
does.  ``--splice always`` splices a plain link from its start, ``never``
never.  Anything but steady forwarding unsplices a link first, and the
copying path above takes over.
"""

from __future__ import annotations

import logging
import operator
import socket
import struct
import time
from typing import Any, Optional

from socktools import errors
from socktools.addresses import format_addr
from socktools.core.loop import READ_SIZE, Connection, Protocol, TlsConnection
from socktools.tlsconf import negotiated
from socktools.proxy import splice as _splice
from socktools.proxy.splice import SpliceConnection
from socktools.proxy.toxics import CLOSE, DATA, EOF, RESET, make_stage

__all__ = ["Pair", "Link", "HIGH_WATER", "LOW_WATER", "ClientSide", "UpstreamSide", "set_linger_zero"]

log = logging.getLogger("socktools.proxy")

#: A link pauses reading its source when it holds more than this (its toxics' queues plus
#: the destination's out-buffer): 1 MiB, the bandwidth-delay product of 100 Mbit/s over
#: 80 ms -- a latency toxic of L ms therefore caps one connection near 1 MiB / L per second.
#: Per connection and direction: memory stays bounded by connections x 2 x (HIGH + one read).
HIGH_WATER = 1 << 20
#: ... and resumes once it holds this little: a quarter, as asyncio's transports do (64 KiB
#: high, 16 KiB low), so a link does not flap between paused and reading on every write.
LOW_WATER = HIGH_WATER // 4

#: After a close, how long a peer gets to take what it is still owed before the rest is
#: dropped: a reader that takes nothing for this long is not coming back (nginx's
#: send_timeout is 60 s; a test suite's patience is shorter).
CLOSE_GRACE = 10.0

#: With ``--splice auto``: a batch read this big (the loop's whole read size: the kernel had at
#: least that much queued) marks a bulk transfer, and its link splices from then on.  Smaller
#: messages stay on the batch path, where a 64-byte round trip costs about half what two
#: splice calls and their event cost (bench_proxy.py).
SPLICE_AFTER = READ_SIZE

_LINGER_ZERO = struct.pack("ii", 1, 0)
_LINK = operator.attrgetter("link")
_DST = operator.attrgetter("dst")


def set_linger_zero(sock: socket.socket) -> None:
    """SO_LINGER on with a 0 s timeout: close() then sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except OSError:
        pass


class _Sink:
    """The end of a chain: what reaches it is done to the destination socket."""

    __slots__ = ("link",)

    def __init__(self, link: "Link") -> None:
        self.link = link

    def push(self, item: tuple) -> None:
        self.link.deliver(item)


class Link:
    """One direction of a pair: ``src`` is read, its bytes go through ``stages`` to ``dst``."""

    def __init__(self, pair: "Pair", stream: str, src: Connection) -> None:
        self.pair = pair
        self.stream = stream
        self.src = src
        self.dst: Optional[Connection] = None
        self.stages: list = []
        self.sink = _Sink(self)
        self.paused = False
        # Bytes handed on by the chain or the pipe: what --decode's Watch compares its offsets
        # to.  (The batch path, which no Watch sees, does not count them.)
        self.delivered = 0
        self.received = 0           # plaintext bytes read from src (not counted while spliced)
        self.pipe: Optional[_splice.Pipe] = None     # while spliced

    @property
    def head(self) -> Any:
        return self.stages[0] if self.stages else self.sink

    @property
    def held(self) -> int:
        return sum(s.held for s in self.stages) + (self.dst.pending if self.dst is not None else 0)

    @property
    def plain(self) -> bool:
        """Nothing needs to see this link's bytes and no pipe carries them: the batch path's.
        (A TLS destination is never plain: a TLS side's counts are the chain's plaintext.)"""
        return (not self.stages and self.pipe is None and isinstance(self.dst, SpliceConnection)
                and self.pair.watch is None)

    def settle(self) -> None:
        """The link became plain (its pair is up, or its last toxic went): splice it now with
        ``--splice always``; else its source joins the batch path until a bulk read."""
        if self.pair.proxy.server.config.splice == "always":
            self.splice()
        self._restate()

    def _restate(self) -> None:
        # The source's batch membership follows ``plain``: the loop re-reads it on _update.
        src = self.src
        if isinstance(src, SpliceConnection):
            src.refresh()

    # ------------------------------------------------------------ the chain
    def add(self, spec: Any) -> None:
        self.unsplice(deliver=True)      # the toxic sees every byte from now on
        server = self.pair.proxy.server
        stage = make_stage(spec, server.clock, self.pair.call_at, server.rng)
        stage.next = self.sink
        stage.wake = self.check
        if self.stages:
            self.stages[-1].next = stage
        self.stages.append(stage)
        self._restate()          # out of the batch path: the chain sees every read
        self.check()             # a stall pauses the source at once

    def update(self, spec: Any) -> None:
        for stage in self.stages:
            if stage.spec is not None and stage.spec.name == spec.name:
                stage.spec = spec

    def remove(self, name: str) -> None:
        for i, stage in enumerate(self.stages):
            if stage.spec is not None and stage.spec.name == name:
                items = stage.take()
                if i:
                    self.stages[i - 1].next = stage.next
                del self.stages[i]
                for item in items:          # what it held goes on: nothing is dropped
                    stage.next.push(item)
                self.check()
                if not self.stages:
                    self.settle()           # the last toxic gone: plain again
                return

    def stop(self) -> None:
        for stage in self.stages:
            stage.stop()
        self.unsplice(deliver=False)

    # ------------------------------------------------------------ zero copy
    def splice(self) -> None:
        """Forward with os.splice from now on, if nothing needs to see the bytes."""
        src, dst = self.src, self.dst
        if (not self.plain or not _splice.AVAILABLE or self.pair.proxy.server.config.splice == "never"
                or not isinstance(src, SpliceConnection) or not isinstance(dst, SpliceConnection)
                or not src.steady or not dst.steady):
            return
        try:
            self.pipe = _splice.Pipe(self)
        except OSError as exc:         # out of descriptors: this link copies, as before
            log.debug("proxy %s: connection %d: no pipe for splicing (%s); copying",
                      self.pair.proxy.name, self.pair.number, exc)
            return
        src.splice_out = dst.splice_in = self.pipe
        src.refresh()                  # out of the batch path: the pipe reads it now

    def unsplice(self, deliver: bool) -> None:
        """Back to the copying path; what the pipe holds is written to ``dst`` (or dropped)."""
        pipe = self.pipe
        if pipe is None:
            return
        self.pipe = None
        self.src.splice_out = None
        dst = self.dst
        dst.splice_in = None
        data = pipe.drain() if deliver and not dst.closed else b""
        pipe.close()
        if data:
            self.delivered += len(data)
            dst.write(data)
        dst.refresh()
        if not self.src.closed:
            self._restate()
            self.check()

    # ------------------------------------------------------------ the flow
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.pair.watch is not None:
            self.pair.watch.read(self.stream, data)
        self.head.push((DATA, data, self.pair.proxy.server.clock()))
        self.check()

    def feed_eof(self) -> None:
        self.head.push((EOF,))

    def deliver(self, item: tuple) -> None:
        kind = item[0]
        if self.pipe is not None:
            self.unsplice(deliver=True)     # (a reset peer's last words): the pipe's bytes first
        dst = self.dst
        if kind == DATA:
            self.delivered += len(item[1])
            if dst is not None:
                dst.write(item[1])
            if self.pair.watch is not None:
                self.pair.watch.delivered(self.stream, self.delivered)
            self.check()
        elif kind == EOF:
            if dst is not None:
                dst.shutdown_write()
        elif kind == CLOSE:
            self.pair.close(f"closed by a toxic on the {self.stream} stream")
        elif kind == RESET:
            self.pair.reset(f"reset by a toxic on the {self.stream} stream")

    def check(self) -> None:
        """Pause the source above the high-water mark; resume it below the low one."""
        held = self.held
        if held > HIGH_WATER:
            if not self.paused:
                self.paused = True
                self.src.pause_reading()
        elif self.paused and held <= LOW_WATER:
            self.paused = False
            if self.pair.connected:
                self.src.resume_reading()


class Pair:
    """A client, its upstream connection, and the two links between them."""

    def __init__(self, proxy: Any, client: Connection, number: int) -> None:
        self.proxy = proxy
        self.number = number
        self.client = client
        self.upstream: Optional[Connection] = None
        self.connected = False
        self.ending: Optional[str] = None     # why the pair is being ended by us, if it is
        self.how: Optional[str] = None         # how it ended: "closed", "reset", an error key
        self.started = time.monotonic()
        self.up = Link(self, "upstream", client)
        self.down: Optional[Link] = None
        self.open = True
        self.watch: Any = proxy.server.watch(self)     # --decode's Watch, or None
        # TLS: what each side's handshake settled (None: plaintext), and the upstream
        # handshake's deadline while it runs.
        self.client_tls: Optional[dict] = negotiated(client.tls) if client.tls is not None else None
        self.upstream_tls: Optional[dict] = None
        self.handshake_timer: Any = None
        self.handshake_late = False

    def call_at(self, when: float, callback: Any) -> Any:
        """The loop's ``call_at`` for this pair's toxics: a bug in a timer's work costs this
        pair (logged, both sides reset), not the loop -- the loop lets timers' errors through."""
        def guarded() -> None:
            try:
                callback()
            except Exception as exc:
                log.error("proxy %s: connection %d: a toxic's timer raised %s; resetting it",
                          self.proxy.name, self.number, type(exc).__name__, exc_info=exc)
                self.how = self.how or "internal-error"
                self.reset(f"internal error: {exc}")
        return self.proxy.server.call_at(when, guarded)

    @property
    def connections(self) -> list:
        return [c for c in (self.client, self.upstream) if c is not None]

    def start(self, address: Any, family: int, server_hostname: Optional[str] = None) -> None:
        """Connect to the upstream (with the proxy's client context, if it has one: a TLS
        handshake sending and checking ``server_hostname``)."""
        self.client.pause_reading()          # until the upstream answers
        try:
            self.upstream = self.proxy.server.loop.open_connection(
                address, self.proxy.upstream_side, family=family, ctx=self, setup=_nodelay,
                conn_class=SpliceConnection, tls=self.proxy.client_ctx, server_hostname=server_hostname)
        except (OSError, ValueError) as exc:    # (ValueError: a name the context cannot check)
            self.upstream_failed(exc)

    def handshake_begun(self, upstream: Connection, timeout: float) -> None:
        self.handshake_timer = self.proxy.server.loop.call_later(timeout, lambda: self._handshake_late(upstream, timeout))

    def _handshake_late(self, upstream: Connection, timeout: float) -> None:
        self.handshake_timer = None
        if not upstream.closed and not self.connected:
            self.handshake_late = True
            upstream.abort(TimeoutError(f"no TLS handshake within {timeout:g}s"))

    def tls_info(self) -> dict:
        out = {}
        if self.client_tls is not None:
            out["client_tls"] = self.client_tls
        if self.upstream_tls is not None:
            out["upstream_tls"] = self.upstream_tls
        return out

    def upstream_ready(self, upstream: Connection) -> None:
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        if upstream.tls is not None:
            self.upstream_tls = negotiated(upstream.tls)
        self.connected = True
        self.up.dst = upstream
        self.down = Link(self, "downstream", upstream)
        self.down.dst = self.client
        for conn, link in ((self.client, self.up), (upstream, self.down)):
            if isinstance(conn, SpliceConnection):
                conn.link = link
        for spec in self.proxy.toxics:
            (self.up if spec.stream == "upstream" else self.down).add(spec)
        self.up.settle()
        self.down.settle()
        if not self.up.paused:       # (a stall toxic upstream keeps the client unread)
            self.client.resume_reading()

    def upstream_failed(self, exc: BaseException, handshake: bool = False) -> None:
        """The upstream could not be reached (``handshake``: its TLS handshake failed, or took
        too long): the client is closed, the reason logged and counted."""
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        key = errors.exception_key(exc)
        self.proxy.stats.upstream_failed[key] = self.proxy.stats.upstream_failed.get(key, 0) + 1
        log.warning("proxy %s: connection %d from %s: upstream %s failed%s: %s; closing the client",
                    self.proxy.name, self.number, format_addr(self.client.peer), self.proxy.upstream,
                    " its TLS handshake" if handshake else "",
                    errors.one_line(exc, command="proxy", during=None if handshake else "connect"))
        self.how = f"upstream-{key}"
        self.ending = "upstream failed"
        self.client.close()

    # ------------------------------------------------------------ ends
    def close(self, why: str, how: str = "closed-by-toxic") -> None:
        """End both sides with FIN (what a toxic's close does): no more bytes either way."""
        if self.ending is None:
            self.ending = why
        if self.how is None:
            self.how = how
        for conn in self.connections:
            # What was handed on before the close is delivered first (Toxiproxy's writes are
            # blocking: all of it reached the kernel), then FIN; reading stops now.
            conn.close()
        if any(not c.closed for c in self.connections):
            self.proxy.server.loop.call_later(CLOSE_GRACE, self._abort_rest)

    def _abort_rest(self) -> None:
        for conn in self.connections:
            if not conn.closed:
                log.info("proxy %s: connection %d: %s still owed %d bytes %gs after the close; "
                         "dropping them", self.proxy.name, self.number,
                         "client" if conn is self.client else "upstream", conn.pending, CLOSE_GRACE)
                conn.abort()

    def reset(self, why: str) -> None:
        """End both sides with RST."""
        if self.ending is None:
            self.ending = why
        if self.how is None:
            self.how = "reset-by-toxic"
        self.proxy.stats.resets += 1
        for conn in self.connections:
            if not conn.closed:
                set_linger_zero(conn.sock)
                conn.abort()

    def lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        if not self.connected and conn is not self.client:
            # (Not ``conn is self.upstream``: a connect that fails at once reports it from
            # inside open_connection, before self.upstream is set.)  Unless we ended it.
            if self.ending is None:
                self.upstream_failed(exc or ConnectionAbortedError("upstream closed while connecting"),
                                     handshake=conn.failed_in == errors.HANDSHAKE or self.handshake_late)
        elif not self.connected:
            if self.upstream is not None and not self.upstream.closed:
                self.ending = self.ending or "the client went before its upstream answered"
                self.upstream.abort()
        elif exc is not None and self.ending is None:
            # An error on one side (ECONNRESET, EPIPE, ...) is passed on as a reset of the other.
            side = "client" if conn is self.client else "upstream"
            self.how = f"{side}-{errors.exception_key(exc)}"
            self.ending = f"{side}: {exc}"
            self.proxy.stats.resets += 1
            for other in self.connections:
                if other is not conn and not other.closed:
                    set_linger_zero(other.sock)
                    other.abort()
        if self.open and all(c.closed for c in self.connections):
            self.open = False
            self.up.stop()
            if self.down is not None:
                self.down.stop()
            self.proxy.pair_done(self)

    def counts(self) -> dict:
        """Bytes each way, plaintext: a plaintext side's are the kernel's counts (spliced bytes
        included); a TLS side's are the plaintext read from it or handed to it, not the records
        on the wire -- so the four figures compare, whichever side speaks TLS."""
        c, u, down = self.client, self.upstream, self.down
        if isinstance(c, TlsConnection):
            from_client, to_client = self.up.received, down.delivered if down is not None else 0
        else:
            from_client, to_client = c.bytes_in, c.bytes_out
        if u is None:
            to_upstream = from_upstream = 0
        elif isinstance(u, TlsConnection):
            to_upstream, from_upstream = self.up.delivered, down.received if down is not None else 0
        else:
            to_upstream, from_upstream = u.bytes_out, u.bytes_in
        return {"from_client": from_client, "to_upstream": to_upstream, "from_upstream": from_upstream,
                "to_client": to_client}


def _nodelay(sock: socket.socket) -> None:
    # Segments leave when the toxics say so: Nagle would merge a slicer's slices.
    if sock.family != socket.AF_UNIX:        # (a Unix socket has no Nagle to turn off)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def forward_batch(conns: list, datas: list) -> None:
    """The loop's batch path for plain links (``data_batch`` of both sides): each read goes to
    its link's destination in one C-level loop of writes; back-pressure and splice-auto are
    looked at only when a write was not whole or a read was bulk."""
    links = list(map(_LINK, conns))
    if not conns[0].loop.write_batch(list(map(_DST, links)), datas):
        for link in links:
            link.check()             # a destination buffers: pause its source above HIGH_WATER
    if max(map(len, datas)) >= SPLICE_AFTER:
        for link, data in zip(links, datas):
            if len(data) >= SPLICE_AFTER and link.pair.proxy.server.config.splice == "auto":
                link.splice()


class ClientSide(Protocol):
    """The accepted client's callbacks (one object per proxy)."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def tls_started(self, conn: Connection) -> None:
        self.proxy.handshake_begun(conn)

    def connection_made(self, conn: Connection) -> None:
        self.proxy.adopt(conn)

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.ctx.up.feed(data)

    data_batch = staticmethod(forward_batch)

    def eof_received(self, conn: Connection) -> None:
        conn.ctx.up.feed_eof()

    def write_drained(self, conn: Connection) -> None:
        pair = conn.ctx
        if pair.down is not None:
            pair.down.check()

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        if conn.ctx is None:        # a TLS client whose handshake did not complete: no pair yet
            self.proxy.handshake_failed(conn, exc)
            return
        conn.ctx.lost(conn, exc)


class UpstreamSide(Protocol):
    """The upstream connection's callbacks (one object per proxy)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout          # the longest TLS handshake (the runner's HANDSHAKE_TIMEOUT)

    def tls_started(self, conn: Connection) -> None:
        conn.ctx.handshake_begun(conn, self.timeout)

    def connection_made(self, conn: Connection) -> None:
        conn.ctx.upstream_ready(conn)

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.ctx.down.feed(data)

    data_batch = staticmethod(forward_batch)

    def eof_received(self, conn: Connection) -> None:
        conn.ctx.down.feed_eof()

    def write_drained(self, conn: Connection) -> None:
        conn.ctx.up.check()

    def connection_lost(self, conn: Connection, exc: Optional[BaseException]) -> None:
        conn.ctx.lost(conn, exc)

"""One nonblocking connection core, shared by the server and the load clients.

Strategy
--------
* A :class:`Loop` owns a poller, a timer heap and a coarse idle sweep.  Each
  registered file descriptor maps to one handler called with the ready mask:
  a :class:`Connection`'s event method, or a wrapper around a plain callback
  (listeners, pipes).  On Linux the poller is ``select.epoll`` used directly:
  the ``selectors`` layer costs a SelectorKey lookup and a tuple per event
  (~0.3 us), a quarter of flood's Python budget per round trip.  Elsewhere a
  ``selectors`` selector stands in, translated to the same bits (both in
  :mod:`socktools.core.pollers`).
* A :class:`Connection` is a socket plus an out-buffer plus an interest mask.
  ``write()`` tries ``send()`` at once; only what the kernel refuses
  (``BlockingIOError`` or a partial send) is buffered, and only then is
  write interest registered — the "careful" pattern, so an idle connection
  never spins the CPU.
* Protocol objects get callbacks, like asyncio's ``Protocol`` but synchronous:
  ``connection_made``, ``data_received``, ``eof_received``, ``write_drained``,
  ``connection_lost``.  One protocol object may serve many connections (state
  then lives in ``conn.ctx``), which keeps memory per connection small.
* Every error is caught at the connection that raised it and ends that
  connection only; ``conn.failed_in`` says in which phase ("socket",
  "connect", "send", "recv") so callers can tally failures by phase and errno.
  That includes bugs: an exception escaping a protocol callback is logged
  with its traceback and aborts that connection (phase "internal"), not the
  loop.  (For a batch, every connection of that ``data_batch`` call.)
  Exceptions from timers and plain fd callbacks (listeners, pipes) propagate:
  those are the program's own machinery.
* Idle timeouts cost one float per connection: ``last_active`` is stamped with
  the loop's per-iteration clock, and a sweep every ``idle_timeout / 4`` closes
  the stale ones (no per-connection heap entries).
* The read path is the hot path of every server and load generator built on
  this: one handler call, one ``recv``, one protocol call.  A protocol that
  defines ``data_batch`` gets its steady-state connections served in batches
  instead (see :meth:`Loop.write_batch`): the reads and writes of one poll's
  ready connections run as C-level ``map()`` loops, with no Python bytecode
  per event -- about 0.3 us less per round trip, measured with
  ``benchmarks/bench_serve.py``.  Anything unusual (EOF, an error, a partial
  write, a connection not in steady state) leaves the batch and takes the
  per-connection path, so the two paths behave the same.  ``read_size``
  (per connection) lets a protocol that knows how much it expects ask for
  exactly that, which keeps small reads out of 64 KiB allocations.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import operator
import os
import select
import selectors
import socket
import ssl
import time
from typing import Any, Callable, Optional

from socktools.core.pollers import IN, OUT, EpollPoller, SelectorPoller
from socktools.core.tls import WIRE_READ_SIZE, TlsTransport
from socktools.errors import CONNECT, HANDSHAKE, INTERNAL, RECV, SEND, SOCKET

#: Send errors that mean the peer is gone, its last bytes possibly still unread (_last_words).
_RESET = (ConnectionResetError, BrokenPipeError)

__all__ = ["Loop", "Connection", "TlsConnection", "Protocol", "Timer", "READ_SIZE", "INTERNAL"]

log = logging.getLogger("socktools.core.loop")

# ``failed_in`` names the phase; socktools.errors holds the names every command reports.

#: recv() size.  asyncio's selector transports ask for 256 KiB per recv() and
#: its streams buffer 64 KiB; we ask for 64 KiB: os.read() allocates the full
#: size before shrinking to what arrived, so a smaller request keeps small reads
#: cheap, and one read still drains a typical loopback queue.  A protocol that
#: knows how much it expects asks for less with ``Connection.read_size``.
READ_SIZE = 65536

# Connections read and write their fd with os.read()/os.write(): on a stream
# socket they are recv()/send() without flags, minus socket.recv's argument
# parsing and timeout machinery -- about 0.2 us less per round trip, which is
# 15 % of flood's Python time.  Same errors (EAGAIN, EPIPE, ECONNRESET...).
# POSIX only: Windows sockets are not file descriptors.
_read = os.read
_write = os.write

# Interest and readiness bits as the poller reports them (epoll's values; the
# selectors fallback translates to these).  Module globals, as before the split:
# the hot loop reads them with one LOAD_GLOBAL.
_IN = IN
_OUT = OUT
# Error and hang-up bits count as both readable and writable -- the next
# recv()/send() then raises the real error -- exactly as selectors maps them.
_READABLE = ~_OUT
_WRITABLE = ~_IN

_get_read_size = operator.attrgetter("read_size")
_get_fd = operator.attrgetter("fd")
#: A batch member's handler: members whose protocols share one ``data_batch`` (the same bound
#: method, or one function on several protocol classes) are served by one call.
_get_handler = operator.attrgetter("protocol.data_batch")

class Protocol:
    """Callbacks of a connection; subclass and override what you need.

    All callbacks receive the :class:`Connection`, so one protocol object can
    serve many connections.
    """

    def tls_started(self, conn: "Connection") -> None:
        """TLS connections only: the TCP connection is up (connected, or accepted) and the TLS
        handshake begins; ``connection_made`` follows once it completed."""

    def connection_made(self, conn: "Connection") -> None:
        """The socket is connected (accepted, or an outgoing connect finished; with TLS: the
        handshake completed too)."""

    def data_received(self, conn: "Connection", data: bytes) -> None:
        """Bytes arrived."""

    #: Optional batch form of ``data_received``: ``data_batch(conns, datas)``
    #: gets the connections (in steady state: open, reading, nothing buffered)
    #: that one poll found readable and the non-empty bytes read from each.  It
    #: must handle every pair -- typically by answering through
    #: :meth:`Loop.write_batch`.  ``None``: every event goes to ``data_received``.
    data_batch: Optional[Callable[[list, list], None]] = None

    def eof_received(self, conn: "Connection") -> None:
        """The peer half-closed (recv returned b"").  Default: close once our buffer is flushed."""
        conn.close()

    def write_drained(self, conn: "Connection") -> None:
        """The out-buffer, once non-empty, has been fully handed to the kernel."""

    def connection_lost(self, conn: "Connection", exc: Optional[BaseException]) -> None:
        """The connection is closed; ``exc`` is None for a clean close."""


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Connection:
    """A nonblocking stream socket registered with a :class:`Loop`.

    ``read_size`` is how many bytes one ``recv`` asks for (default
    :data:`READ_SIZE`); a protocol that knows its peer's message size may
    lower it.  ``tls`` is None: a :class:`TlsConnection` sets it once its handshake completed.
    """

    #: A plaintext connection in steady state may take the batch path; TLS ones never do.
    _batchable = True
    tls: Any = None

    __slots__ = ("loop", "sock", "fd", "protocol", "ctx", "peer", "_out", "_events",
                 "_reading", "_closing", "_shut_wr", "closed", "eof", "failed_in",
                 "bytes_in", "bytes_out", "last_active", "connecting", "read_size",
                 "__weakref__")

    def __init__(self, loop: "Loop", sock: socket.socket, protocol: Protocol, peer: Any = None) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol = protocol
        self.ctx: Any = None
        self.peer = peer
        self._out: Optional[bytearray] = None
        self._events = 0
        self._reading = True
        self._closing = False   # close requested; finish flushing first
        self._shut_wr = False   # shutdown(SHUT_WR) requested after flush
        self.closed = False
        self.eof = False
        self.failed_in: Optional[str] = None
        self.bytes_in = 0
        self.bytes_out = 0
        # A fresh clock, not loop.now: that is stale when the connection is made
        # outside run() (e.g. a long connect phase), and the first idle sweep
        # would close a brand-new connection.
        self.last_active = time.monotonic()
        self.connecting = False
        self.read_size = READ_SIZE

    # ------------------------------------------------------------- public API
    @property
    def pending(self) -> int:
        """Bytes waiting in our out-buffer (not yet accepted by the kernel)."""
        return len(self._out) if self._out else 0

    def write(self, data: bytes) -> None:
        """Send ``data`` now as far as the kernel takes it; buffer the rest."""
        if self._out is not None or self.connecting or self._closing or self._shut_wr or self.closed:
            if not (self.closed or self._closing or self._shut_wr):
                self._buffer(data)
            return
        try:
            n = _write(self.fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(exc, SEND)
            return
        self.bytes_out += n
        if n:
            # Progress that no event will report: without this, a connection that
            # only sends (and never fills its buffer) looks idle to the sweep.
            self.last_active = self.loop.now
        if n < len(data):
            self._buffer(data[n:] if n else data)

    def close(self) -> None:
        """Close once everything written so far has been sent."""
        if self.closed:
            return
        if self._out:
            self._closing = True
            self._reading = False
            self._update()
        else:
            self._finish(None)

    def shutdown_write(self) -> None:
        """Half-close (send FIN) once the out-buffer is flushed; keep reading."""
        if self.closed or self._shut_wr:
            return
        self._shut_wr = True
        self._update()
        if not self._out and not self.connecting:
            # (While connecting, _on_connected does it: shutdown() on a SYN_SENT
            # socket would abort the connect instead.)
            self._do_shutdown()

    def abort(self, exc: Optional[BaseException] = None) -> None:
        """Close now, dropping unsent data."""
        if not self.closed:
            self._finish(exc)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._update()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and not self.eof:
            self._reading = True
            self._update()

    # ------------------------------------------------------------- internals
    def _buffer(self, data: bytes) -> None:
        if not data:
            return
        if self._out is None:
            self._out = bytearray(data)
        else:
            self._out += data
        self._update()

    def _update(self) -> None:
        if self.closed:
            return
        want = 0
        if self._reading and not self.connecting:
            want |= _IN
        if self._out or self.connecting:
            want |= _OUT
        if want != self._events:
            self.loop._set_events(self, self._events, want)
            self._events = want
        # Steady state -- reading, nothing buffered, no close or half-close
        # pending -- is what the batch path assumes; every state change passes here.
        if want == _IN and self._batchable and self.protocol.data_batch is not None and not (
                self._closing or self._shut_wr or self.eof):
            if self.fd not in self.loop._batch:
                self.loop._batch_join(self)
        elif self.loop._batch.get(self.fd) is self:
            self.loop._batch_leave(self)

    def set_protocol(self, protocol: Protocol) -> None:
        """Hand the connection to another protocol object (no callback is made)."""
        if self.loop._batch.get(self.fd) is self:
            self.loop._batch_leave(self)
        self.protocol = protocol
        self._update()

    def _read_done(self, result: Any) -> None:
        """One recv() result of the batch path that the batch does not take: EOF or an error."""
        if self.closed:
            return
        if result.__class__ is bytes:
            if result:  # pragma: no cover - the batch keeps data
                self.bytes_in += len(result)
                self.protocol.data_received(self, result)
            else:
                self._on_eof()
        elif not isinstance(result, (BlockingIOError, InterruptedError)):
            self._fail(result, RECV)

    def _on_event(self, mask: int) -> None:
        # The hot path: keep it to attribute checks, one recv and one call.
        if self.closed:
            return
        if self.connecting:
            self._on_connected()
            return
        self.last_active = self.loop.now
        if self._out is not None and mask & _WRITABLE:
            self._on_writable()
            if self.closed:
                return
        if self._reading and mask & _READABLE:
            try:
                data = _read(self.fd, self.read_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc, RECV)
                return
            if data:
                self.bytes_in += len(data)
                self.protocol.data_received(self, data)
            else:
                self._on_eof()

    def _on_eof(self) -> None:
        self.eof = True
        self._reading = False
        self._update()
        self.protocol.eof_received(self)
        if self._shut_wr and not self._out and not self.closed:
            # Both directions are done: nothing more can happen.
            self._finish(None)

    def _flush(self) -> bool:
        """Hand the out-buffer to the kernel as far as it takes it: True once it is empty
        (False: the kernel refused the rest, or the send failed and ended the connection)."""
        out = self._out
        if out:
            try:
                n = _write(self.fd, out)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self._fail(exc, SEND)
                return False
            self.bytes_out += n
            del out[:n]
            if out:
                return False
        self._out = None
        return True

    def _on_writable(self) -> None:
        if self._flush():
            if self._closing:
                self._finish(None)
                return
            if self._shut_wr:
                self._do_shutdown()
                if self.closed:
                    return
            self._update()
            self.protocol.write_drained(self)

    def _do_shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc, SEND)
            return
        if self.eof:
            self._finish(None)

    def _on_connected(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.connecting = False
        if err:
            self._fail(OSError(err, os.strerror(err)), CONNECT)
            return
        self.last_active = self.loop.now
        self._update()
        self._made()

    def _made(self) -> None:
        """The connection is ready for its protocol (TLS: once the handshake completed)."""
        self.protocol.connection_made(self)
        if self._out and not self.closed:
            self._on_writable()
        elif self._shut_wr and not self.closed:
            self._do_shutdown()

    def _fail(self, exc: BaseException, phase: str) -> None:
        if self.closed:
            return
        if phase == SEND and exc.__class__ in _RESET and self._reading and not self._shut_wr:
            self._last_words()
            if self.closed:
                return
        self.failed_in = phase
        self._finish(exc)

    def _last_words(self) -> None:
        """A send found the peer gone (it reset the connection, or closed with our bytes
        unread -- as an HTTP server does after ``Connection: close`` with pipelined requests
        still coming): what it sent before is still in the kernel's receive queue (Linux keeps
        it readable after a reset).  Deliver it, nothing more can be written, so that a reply
        which announced the close counts as the peer meant it to; the protocol may then close
        the connection itself.  The queue cannot grow after a reset: the loop ends."""
        self._shut_wr = True
        self._out = None
        self._update()
        while not self.closed:
            try:
                data = _read(self.fd, self.read_size)
            except OSError:
                return
            if not data:
                return
            self.bytes_in += len(data)
            self.protocol.data_received(self, data)

    def _finish(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        loop = self.loop
        loop._forget(self, self._events)
        loop._closed_in += self.bytes_in
        loop._closed_out += self.bytes_out
        self._events = 0
        self._out = None
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - close() on a socket we own
            pass
        self.protocol.connection_lost(self, exc)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("connecting" if self.connecting else "open")
        return f"<Connection fd={self.fd} peer={self.peer} {state} out={self.pending}>"


class TlsConnection(Connection):
    """A :class:`Connection` that speaks TLS (:class:`~socktools.core.tls.TlsTransport`).

    The socket is read and written exactly as for plaintext -- the same out-buffer of wire
    bytes, the same interest mask, so want-write is "the kernel refused some records" and
    want-read is "a record is incomplete: wait for the socket" -- and ``bytes_in``/``bytes_out``
    count those wire bytes.  The protocol sees plaintext only: ``tls_started`` when the TCP
    connection is up, ``connection_made`` once the handshake completed (``conn.tls`` is then
    the ``ssl.SSLObject``), then ``data_received``/``write`` in plaintext.  A refused
    handshake ends the connection with ``failed_in`` "handshake" and the ``ssl.SSLError``
    (a socket error during the handshake too); our alert goes out first, best effort.
    Plaintext written before the handshake completed waits in ``_early``.  ``close()``
    sends close_notify first, best effort (nothing waits for the peer's); ``abort()`` does not.
    TLS connections never take the batch path (``_batchable``): every record is decrypted
    and encrypted one connection at a time.
    """

    _batchable = False

    __slots__ = ("tls", "_tx", "_early", "_shut_later")

    def __init__(self, loop: "Loop", sock: socket.socket, protocol: Protocol, peer: Any,
                 transport: TlsTransport) -> None:
        super().__init__(loop, sock, protocol, peer)
        self.tls = None
        self._tx = transport
        self._early: Optional[bytearray] = None
        self._shut_later = False

    @property
    def handshaking(self) -> bool:
        return self._tx.handshaking

    @property
    def pending(self) -> int:
        """Bytes not yet accepted by the kernel: records in the out-buffer, plus plaintext
        written before the handshake completed."""
        return (len(self._out) if self._out else 0) + (len(self._early) if self._early else 0)

    def write(self, data: bytes) -> None:
        if self.closed or self._closing or self._shut_wr or self._shut_later:
            return
        tx = self._tx
        if tx.handshaking:
            if data:
                if self._early is None:
                    self._early = bytearray(data)
                else:
                    self._early += data
            return
        try:
            wire = tx.encrypt(data)
        except ssl.SSLError as exc:
            self._fail(exc, SEND)
            return
        Connection.write(self, wire)

    def close(self) -> None:
        if self.closed:
            return
        if self._tx.handshaking:
            self._finish(None)      # nothing was said yet: nothing to flush
            return
        if not self._shut_wr:
            self._send_quietly(self._tx.close_notify())
        Connection.close(self)

    def shutdown_write(self) -> None:
        if self.closed or self._shut_wr:
            return
        if self._tx.handshaking:
            self._shut_later = True   # after the handshake and what was written before it
            return
        self._send_wire(self._tx.close_notify())
        Connection.shutdown_write(self)

    def _do_shutdown(self) -> None:
        if self.eof:
            # The peer's stream ended first: ours ends with the close_notify just sent and the
            # close that follows anyway.  No shutdown() before it: a peer that closed entirely
            # answers close_notify with a reset, and shutdown() would then fail (ENOTCONN) --
            # a failure of nothing but the courtesy alert (a proxy would report it as one).
            self._finish(None)
            return
        Connection._do_shutdown(self)

    def resume_reading(self) -> None:
        was = self._reading
        Connection.resume_reading(self)
        if not was and self._reading and not self._tx.handshaking and self._tx.buffered():
            # Records already read from the socket: no readiness event will announce them.
            self.loop.call_later(0, self._deliver)

    # ------------------------------------------------------------- internals
    def _send_wire(self, wire: bytes) -> None:
        if wire:
            Connection.write(self, wire)

    def _send_quietly(self, wire: bytes) -> None:
        """TLS's own bytes once the handshake is done -- session tickets, the answer to a key
        update, our close_notify: best effort.  A peer already gone (EPIPE, ECONNRESET: a
        Unix socket says so at once) is not a failure of ours; its EOF or reset, read next,
        ends the connection as it would have without them.  Behind bytes still owed they
        queue as any write (their failure is those bytes')."""
        if not wire:
            return
        if self._out is not None or self.connecting:
            Connection.write(self, wire)
            return
        try:
            n = _write(self.fd, wire)
        except (BlockingIOError, InterruptedError):
            n = 0
        except (BrokenPipeError, ConnectionResetError):
            return
        except OSError as exc:
            self._fail(exc, SEND)
            return
        self.bytes_out += n
        if n < len(wire):
            self._buffer(wire[n:] if n else wire)

    def _fail(self, exc: BaseException, phase: str) -> None:
        if self._tx.handshaking and phase in (SEND, RECV):
            phase = HANDSHAKE       # a reset or an EOF in the middle of the handshake
        Connection._fail(self, exc, phase)

    def _made(self) -> None:
        """TCP is up: the handshake begins (the client speaks first)."""
        self.protocol.tls_started(self)
        if not self.closed:
            self._handshake()

    def _handshake(self) -> None:
        tx = self._tx
        try:
            done = tx.handshake()
        except ssl.SSLError as exc:
            self._send_wire(tx.to_send())   # our alert, if the kernel takes it now
            self._fail(exc, HANDSHAKE)
            return
        self._send_wire(tx.to_send())
        if not done or self.closed:
            return
        self.tls = tx.obj
        self.protocol.connection_made(self)
        if self.closed:
            return
        early, self._early = self._early, None
        if early:
            self.write(bytes(early))
        if self._shut_later and not self.closed:
            self._shut_later = False
            self.shutdown_write()

    def _on_event(self, mask: int) -> None:
        # Connection._on_event's steps, with the read going through the TLS layer.  (Not one
        # shared method with a hook for the bytes read: that would cost plaintext's hot path
        # one more call per event.)
        if self.closed:
            return
        if self.connecting:
            self._on_connected()
            return
        self.last_active = self.loop.now
        if self._out is not None and mask & _WRITABLE:
            self._on_writable()
            if self.closed:
                return
        if self._reading and mask & _READABLE:
            try:
                wire = _read(self.fd, WIRE_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc, RECV)
                return
            tx = self._tx
            if wire:
                self.bytes_in += len(wire)
                tx.feed(wire)
            else:
                tx.feed_eof()
            if tx.handshaking:
                self._handshake()
                if self.closed or tx.handshaking:
                    return
            self._deliver()

    def _deliver(self) -> None:
        """Hand the plaintext decrypted so far to the protocol (until it pauses reading)."""
        tx = self._tx
        while self._reading and not self.closed:
            try:
                data = tx.read()
            except ssl.SSLError as exc:     # a corrupt or forged record, an alert from the peer
                self._fail(exc, RECV)
                return
            if data is None:
                break
            if not data:
                self._on_eof()
                return
            self.protocol.data_received(self, data)
            if not tx.more():
                break
        if not self.closed:
            self._send_quietly(tx.to_send())   # post-handshake messages: tickets, a key update's answer

    def _on_writable(self) -> None:
        if not self._tx.handshaking:
            Connection._on_writable(self)
        elif self._flush():     # handshake records: no protocol to tell, nothing to close yet
            self._update()

    def _last_words(self) -> None:
        # As Connection's, through the TLS layer: what the peer sent before it went away.
        self._shut_wr = True
        self._out = None
        self._update()
        tx = self._tx
        while not self.closed and not tx.handshaking:
            try:
                wire = _read(self.fd, WIRE_READ_SIZE)
            except OSError:
                return
            if not wire:
                return
            self.bytes_in += len(wire)
            tx.feed(wire)
            self._deliver()


def _fileno(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


class Loop:
    """An event loop with timers and an idle sweep.

    ``now`` is a monotonic time stamped once per iteration (cheap to read in
    callbacks); use :meth:`clock` for a fresh reading.  Pass a ``selectors``
    selector to use it instead of epoll.
    """

    def __init__(self, selector: Optional[selectors.BaseSelector] = None) -> None:
        if selector is None and hasattr(select, "epoll"):
            self._poller: Any = EpollPoller()
        else:
            self._poller = SelectorPoller(selector or selectors.DefaultSelector())
        self.now = time.monotonic()
        self.connections: dict[int, Connection] = {}
        self._handlers: dict[int, Callable[[int], Any]] = {}
        # fds registered while a batch of events is being dispatched: a stale
        # event of that batch may belong to a closed socket whose fd number was
        # just reused, so it must not reach the new owner.
        self._fresh: set[int] = set()
        self._timers: list = []
        self._seq = itertools.count()
        self._stopping = False
        self.idle_timeout: Optional[float] = None
        self._idle_timer: Optional[Timer] = None
        self.on_idle_close: Optional[Callable[[Connection], None]] = None
        # The batch path: steady-state connections of protocols with data_batch,
        # the fds it served since the last idle sweep, and the bytes it moved
        # (bytes of closed connections are kept too, for byte_totals()).
        self._batch: dict[int, Connection] = {}
        self._batch_handlers: dict[Any, int] = {}  # data_batch -> members: usually one handler
        self._batch_keys: dict[int, Any] = {}       # fd -> its member's data_batch at its join
        self._batch_gen = 0                         # bumped whenever a member leaves
        self._batch_read: Optional[tuple] = None    # (conns, gen, fds) of the batch being delivered
        self._touched: set[int] = set()
        self._batch_in = self._batch_out = 0
        self._closed_in = self._closed_out = 0
        #: True: the batch path adds each connection's bytes to its own ``bytes_in`` and
        #: ``bytes_out`` (a proxy reports them per connection) instead of the loop's totals
        #: alone -- a Python step per connection, which serve and flood do not pay.
        self.count_each = False

    def byte_totals(self) -> tuple[int, int]:
        """(received, sent) bytes of every connection this loop has had, open or closed."""
        live = self.connections.values()
        return (self._closed_in + self._batch_in + sum(c.bytes_in for c in live),
                self._closed_out + self._batch_out + sum(c.bytes_out for c in live))

    # ------------------------------------------------------------- timers
    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Close connections with no I/O for ``seconds`` (None disables)."""
        if self._idle_timer:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.idle_timeout = seconds
        if seconds:
            self._idle_timer = self.call_later(max(seconds / 4, 0.01), self._sweep_idle)

    def _sweep_idle(self) -> None:
        limit = self.now - self.idle_timeout
        touched, self._touched = self._touched, set()
        for conn in [c for c in self.connections.values() if c.last_active < limit]:
            if conn.fd in touched:
                # Served by the batch path since the last sweep, which stamps no
                # per-connection clock: active within the last sweep interval.
                conn.last_active = self.now
                continue
            if self.on_idle_close:
                self.on_idle_close(conn)
            conn.abort(TimeoutError(f"idle for more than {self.idle_timeout:g}s"))
        self._idle_timer = self.call_later(max(self.idle_timeout / 4, 0.01), self._sweep_idle)

    # ------------------------------------------------------------- registration
    def add_reader(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` whenever ``fileobj`` (or fd) is readable (listeners, pipes)."""
        fd = _fileno(fileobj)
        if fd in self._handlers:
            raise KeyError(f"fd {fd} is already registered")
        self._poller.register(fd, _IN)
        self._handlers[fd] = lambda mask: callback()
        self._fresh.add(fd)

    def remove_reader(self, fileobj: Any) -> None:
        try:
            fd = _fileno(fileobj)
        except (OSError, ValueError):  # closed file object
            return
        if self._handlers.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def add_connection(self, sock: socket.socket, protocol: Protocol, peer: Any = None, *,
                       tls: Optional[ssl.SSLContext] = None, conn_class: type = Connection) -> Connection:
        """Adopt a connected socket (e.g. from accept()) and call ``connection_made``.

        ``conn_class``: a :class:`Connection` subclass for a plaintext connection (the proxy's
        splicing one).

        With ``tls`` (a server context, ``ssl.PROTOCOL_TLS_SERVER``): ``tls_started`` now, the
        handshake driven by the loop, ``connection_made`` once it completed."""
        sock.setblocking(False)
        if tls is None:
            conn = conn_class(self, sock, protocol, peer)
        else:
            conn = TlsConnection(self, sock, protocol, peer, TlsTransport(tls, server_side=True))
        self.connections[conn.fd] = conn
        conn._update()
        try:
            if tls is None:
                protocol.connection_made(conn)
            else:
                conn._made()
        except Exception as exc:
            self._protocol_failed([conn], exc)
        return conn

    def open_connection(self, address: Any, protocol: Protocol, *, family: int = socket.AF_INET,
                        source: Any = None, setup: Optional[Callable[[socket.socket], None]] = None,
                        ctx: Any = None, tls: Optional[ssl.SSLContext] = None,
                        server_hostname: Optional[str] = None,
                        tls_session: Optional[ssl.SSLSession] = None,
                        conn_class: type = Connection) -> Connection:
        """Start a nonblocking connect; ``connection_made`` or ``connection_lost`` follows.

        Errors from socket()/bind() raise at once (``OSError`` with
        ``failed_in`` set as attribute ``phase``: "socket"), because no
        connection exists yet to report them on.  ``ctx`` becomes
        ``conn.ctx`` before any callback, even an immediate failure's.

        With ``tls`` (a client context): once connected, ``tls_started`` and the handshake,
        which sends and checks ``server_hostname``; ``connection_made`` once it completed.
        ``tls_session`` (an earlier connection's ``conn.tls.session``) asks to resume it.
        Bad TLS arguments (``server_hostname`` missing while the context checks it) raise
        ``ValueError`` here, before any socket exists.
        """
        transport = None if tls is None else TlsTransport(tls, server_hostname=server_hostname,
                                                           session=tls_session)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            exc.phase = SOCKET  # type: ignore[attr-defined]
            raise
        try:
            sock.setblocking(False)
            if setup:
                setup(sock)
            if source is not None:
                sock.bind(source)
            rc = sock.connect_ex(address)
        except OSError as exc:
            sock.close()
            exc.phase = CONNECT  # type: ignore[attr-defined]
            raise
        conn = conn_class(self, sock, protocol, address) if transport is None else \
            TlsConnection(self, sock, protocol, address, transport)
        conn.ctx = ctx
        self.connections[conn.fd] = conn
        if rc in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            conn.connecting = True
            conn._update()
        else:
            conn._events = 0
            conn._fail(OSError(rc, os.strerror(rc)), CONNECT)
        return conn

    def _set_events(self, conn: Connection, old: int, new: int) -> None:
        fd = conn.fd
        if old == 0:
            self._poller.register(fd, new)
            self._handlers[fd] = conn._on_event
            self._fresh.add(fd)
        elif new == 0:
            self._poller.unregister(fd)
            self._handlers.pop(fd, None)
        else:
            self._poller.modify(fd, new)

    def _forget(self, conn: Connection, events: int) -> None:
        fd = conn.fd
        if events:
            self._poller.unregister(fd)
            self._handlers.pop(fd, None)
        if self.connections.get(fd) is conn:
            del self.connections[fd]
        if self._batch.get(fd) is conn:
            self._batch_leave(conn)

    # ------------------------------------------------------------- running
    def stop(self) -> None:
        self._stopping = True

    def run(self, until: Optional[Callable[[], bool]] = None, timeout: Optional[float] = None) -> None:
        """Run until :meth:`stop`, ``until()`` is true, or ``timeout`` seconds pass."""
        self._stopping = False
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = self._poller.poll
        handlers = self._handlers
        get = handlers.get
        fresh = self._fresh
        batch = self._batch
        timers = self._timers
        monotonic = time.monotonic
        while not self._stopping:
            if until is not None and until():
                break
            now = monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = None if deadline is None else deadline - now
            if timers:
                first = timers[0][0] - now
                wait = first if wait is None or first < wait else wait
                if wait < 0:
                    wait = 0
            if wait is None and not handlers:
                break  # nothing to wait for: would block forever
            fresh.clear()
            events = poll(wait)
            self.now = now = monotonic()
            if batch and events:
                hot = [fd for fd, mask in events if mask == _IN and fd in batch]
                if hot:
                    if len(hot) < len(events):
                        hot_set = set(hot)
                        events = [ev for ev in events if ev[0] not in hot_set]
                    else:
                        events = ()
                    self._run_batch(hot)
            for fd, mask in events:
                handler = get(fd)
                if handler is not None and not (fresh and fd in fresh):
                    try:
                        handler(mask)
                    except Exception as exc:  # free when nothing is raised (3.11+)
                        owner = getattr(handler, "__self__", None)
                        if not isinstance(owner, Connection):
                            raise  # a listener's or a pipe's callback: the program's own
                        self._protocol_failed([owner], exc)
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    timer.callback()

    # ------------------------------------------------------------- batch path
    def _batch_join(self, conn: Connection) -> None:
        self._batch[conn.fd] = conn
        handlers = self._batch_handlers
        # The key is kept: the protocol's data_batch may be another object by the time it leaves.
        key = self._batch_keys[conn.fd] = conn.protocol.data_batch
        handlers[key] = handlers.get(key, 0) + 1

    def _batch_leave(self, conn: Connection) -> None:
        del self._batch[conn.fd]
        self._batch_gen += 1
        handlers = self._batch_handlers
        key = self._batch_keys.pop(conn.fd)
        left = handlers[key] - 1
        if left:
            handlers[key] = left
        else:
            del handlers[key]

    def _run_batch(self, fds: list) -> None:
        """Read every ready steady-state connection; hand the data to ``data_batch``."""
        conns = list(map(self._batch.__getitem__, fds))
        datas: list = []
        reads = map(_read, fds, map(_get_read_size, conns))
        odd = False
        while True:
            try:
                datas.extend(reads)  # a failed read leaves the ones before it in datas
                break
            except OSError as exc:
                datas.append(exc)
                odd = True
        if self.idle_timeout:
            self._touched.update(fds)
        if odd or not all(datas):
            # EOF (b"") or an error: those connections take the per-connection path.
            keep_c, keep_d = [], []
            for conn, data in zip(conns, datas):
                if data.__class__ is bytes and data:
                    keep_c.append(conn)
                    keep_d.append(data)
                else:
                    conn._read_done(data)
            conns, datas = keep_c, keep_d
            if not conns:
                return
            fds = list(map(_get_fd, conns))
        if self.count_each:
            for conn, data in zip(conns, datas):
                conn.bytes_in += len(data)
        else:
            self._batch_in += sum(map(len, datas))
        if len(self._batch_handlers) == 1:
            # Until a member leaves (_batch_gen), write_batch may trust these are steady.
            self._batch_read = (conns, self._batch_gen, fds)
            try:
                conns[0].protocol.data_batch(conns, datas)
            except Exception as exc:
                self._protocol_failed(conns, exc)
            finally:
                self._batch_read = None
            return
        # (Not _batch_keys: a member that a callback above moved out of the batch still gets
        # the bytes already read for it.)
        keys = list(map(_get_handler, conns))
        for handler in set(keys):  # rare: members of several handlers
            pairs = [(c, d) for c, d, k in zip(conns, datas, keys) if k == handler]
            try:
                handler([c for c, _ in pairs], [d for _, d in pairs])
            except Exception as exc:
                self._protocol_failed([c for c, _ in pairs], exc)

    def _protocol_failed(self, conns: list, exc: Exception) -> None:
        """A protocol callback raised: log it and abort the connection(s) it was handling."""
        live = [c for c in conns if not c.closed]
        log.error("%s raised %s: closing %d connection(s) (%s)", type(conns[0].protocol).__name__,
                  type(exc).__name__, len(live), ", ".join(str(c.peer) for c in live[:3]) +
                  (", ..." if len(live) > 3 else ""), exc_info=exc)
        for conn in live:
            try:
                conn._fail(exc, INTERNAL)
            except Exception as again:  # connection_lost raised too: the connection is closed anyway
                log.error("%s.connection_lost raised %s", type(conn.protocol).__name__,
                          type(again).__name__, exc_info=again)

    def write_batch(self, conns: list, datas: list) -> bool:
        """``conn.write(data)`` for each pair, as one C-level loop when all are in steady state.

        Meant for ``data_batch`` implementations; any connection that is not in
        steady state any more (closed, buffering, half-closed...) makes the
        whole call fall back to ``conn.write``, which is always correct.
        True: every byte reached the kernel; False: some were buffered (or a
        send failed), so a caller that bounds its buffers looks at them.
        """
        read = self._batch_read
        if read is not None and read[0] is conns and read[1] == self._batch_gen:
            fds = read[2]  # the connections just delivered, none has left the batch since
        else:
            fds = list(map(_get_fd, conns))
            if list(map(self._batch.get, fds)) != conns:
                for conn, data in zip(conns, datas):
                    conn.write(data)
                return False
        sent: list = []
        writes = map(_write, fds, datas)
        while True:
            try:
                sent.extend(writes)
                break
            except OSError as exc:
                sent.append(exc)
        if sent == list(map(len, datas)):
            if self.count_each:
                for conn, n in zip(conns, sent):
                    conn.bytes_out += n
            else:
                self._batch_out += sum(sent)
            return True
        # A partial write or an error: buffer the rest / fail that connection.
        for conn, data, n in zip(conns, datas, sent):
            if n.__class__ is int:
                if self.count_each:
                    conn.bytes_out += n
                else:
                    self._batch_out += n
                if n < len(data) and not conn.closed:  # (a failure's callbacks may close others)
                    conn._buffer(data[n:])
            elif isinstance(n, (BlockingIOError, InterruptedError)):
                if not conn.closed:
                    conn._buffer(data)
            else:
                conn._fail(n, SEND)
        return False

    def close(self) -> None:
        """Abort every connection and close the poller."""
        for conn in list(self.connections.values()):
            conn.abort()
        self._handlers.clear()
        self._poller.close()

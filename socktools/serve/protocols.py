"""What a server worker says on a connection: echo, the framed protocol (docs/protocol.md), or a sink.

Each protocol is one object per worker, shared by all of that worker's
connections (per-connection state lives in ``conn.ctx``); it calls back into
its :class:`~socktools.serve.worker.Worker` for statistics, errors and the
drain state.
"""

from __future__ import annotations

from typing import Any, Optional

from socktools import protocol, reference
from socktools.core.loop import Connection, Protocol
from socktools.serve.config import HIGH_WATER

__all__ = ["EchoProtocol", "FramedProtocol", "SinkProtocol", "PROTOCOLS"]


class _Base(Protocol):
    def __init__(self, worker: Any) -> None:
        self.worker = worker  # the serve Worker (not imported: it imports us)

    def connection_made(self, conn: Connection) -> None:
        self.worker.connection_made(conn)

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
    """docs/protocol.md: decode requests, answer each in order, close unless keep-alive."""

    def connection_made(self, conn: Connection) -> None:
        self.worker.connection_made(conn)
        conn.ctx = protocol.Decoder(self.worker.config.max_content)

    def data_received(self, conn: Connection, data: bytes) -> None:
        decoder: protocol.Decoder = conn.ctx
        decoder.receive_data(data)
        answered = self._drain_decoder(conn, decoder)
        if answered is not None:
            # What this connection now holds of a request not yet complete, for the
            # worker's budget (bytes and deadline); a new request began if one was answered.
            self.worker.holding(conn, decoder.buffered, new_request=answered > 0)

    def eof_received(self, conn: Connection) -> None:
        decoder: protocol.Decoder = conn.ctx
        decoder.receive_data(b"")
        self._drain_decoder(conn, decoder)
        conn.close()

    def write_drained(self, conn: Connection) -> None:
        if not conn.closed and not self.worker.draining:
            conn.resume_reading()

    def _drain_decoder(self, conn: Connection, decoder: protocol.Decoder) -> Optional[int]:
        """Answer every complete request buffered: how many, or None once the connection is ending."""
        stats = self.worker.stats
        answered = 0
        while not conn.closed:
            try:
                event = decoder.next_event()
            except protocol.RemoteProtocolError as exc:
                self.worker.protocol_error(conn, exc)
                return None
            if event is protocol.NEED_DATA:
                break
            if event is protocol.CLOSED:
                conn.close()
                return None
            answered += 1
            stats.requests += 1
            conn.write(reference.respond(event))
            stats.responses += 1
            if not event.keep_alive or self.worker.draining:
                conn.pause_reading()
                conn.close()  # one request per connection unless keep-alive (docs/protocol.md)
                return None
        if conn.closed:
            return None
        if conn.pending > HIGH_WATER:
            conn.pause_reading()  # pipelining faster than reading our answers
        return answered


class SinkProtocol(_Base):
    """Accepts and never reads — until told to drain (SIGUSR1), then reads and discards."""

    def connection_made(self, conn: Connection) -> None:
        self.worker.connection_made(conn)
        if not self.worker.sink_reading:
            conn.pause_reading()     # with TLS: after the handshake, which needed reading

    def data_received(self, conn: Connection, data: bytes) -> None:
        pass  # discarded: we only drain the queue


PROTOCOLS = {"echo": EchoProtocol, "framed": FramedProtocol, "sink": SinkProtocol}

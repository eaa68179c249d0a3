"""The one threaded loopback test server: each connection's behaviour is a plain function.

For peers that misbehave on purpose (answer once, never answer, close mid-reply, send garbage):
``ThreadServer(handle)`` listens on 127.0.0.1 on a free port, runs ``handle(conn)`` in a
thread per accepted connection (``conn`` has a 5 s timeout; ``accepted`` counts them), keeps every connection open until :meth:`close` unless the handler closes it, and
stops when closed (or at the end of a ``with`` block).  An ``OSError`` in a handler is the
peer's doing and ends only that connection.  Real servers (redis, nginx) live in tests/peers.py.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

__all__ = ["ThreadServer", "answer_framed", "read_until"]

#: How long the accept loop waits before it looks at ``stopping`` again (and so the longest
#: close() waits for it).
ACCEPT_POLL = 0.1
#: A handler's socket timeout: a test peer that waits longer than this is stuck, not patient.
HANDLER_TIMEOUT = 5.0


def read_until(conn, suffix: bytes, chunk: int = 65536) -> bytes:
    """Read ``conn`` until what came ends with ``suffix`` (or the peer closed): all of it."""
    got = b""
    while not got.endswith(suffix):
        data = conn.recv(chunk)
        if not data:
            break
        got += data
    return got


def answer_framed(conn) -> bytes:
    """Read one framed request from ``conn`` (a socket, TLS or not) and answer it as the
    reference server does; the answer's bytes (b"" if the peer closed first)."""
    from socktools import protocol, reference
    decoder = protocol.Decoder()
    while True:
        decoder.receive_data(conn.recv(65536))
        event = decoder.next_event()
        if isinstance(event, protocol.Message):
            reply = reference.respond(event)
            conn.sendall(reply)
            return reply
        if event is protocol.CLOSED:
            return b""


class ThreadServer:
    def __init__(self, handle: Callable[[socket.socket], None], *, backlog: int = 256,
                 start: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(ACCEPT_POLL)
        self.address = self.sock.getsockname()
        self.port = self.address[1]
        self.handle = handle
        self.conns: list = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if start:
            self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            # (inside the try: close() may have closed a connection accepted just before it)
            conn.settimeout(HANDLER_TIMEOUT)
            self.handle(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.stopping = True
        if self.thread.is_alive():
            self.thread.join(ACCEPT_POLL * 50)
        with self.lock:
            for c in self.conns:
                c.close()
        self.sock.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

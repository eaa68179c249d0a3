"""One blocking client connection under a deadline, plaintext or TLS, for request and ping.

The nonblocking loop (:mod:`socktools.core.loop`) is for servers and load; a single exchange
or a ping probe reads best as straight-line blocking code with one deadline.  TLS here is the
loop's own sans-I/O :class:`~socktools.core.tls.TlsTransport` (``ssl.SSLObject`` + two
``MemoryBIO``s) over the plain socket, not ``SSLContext.wrap_socket``: one TLS mechanism in the
core, and every byte that crosses the socket passes through :meth:`Stream._wire`, so the TLS
records can be counted and named as they went (``request --show-bytes``) while the caller
still reads and writes plaintext.  The same class carries plaintext with the TLS parts left
out, so callers have one path.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Callable, Optional

from socktools.core.tls import TlsTransport

__all__ = ["Stream", "READ_SIZE"]

#: One recv(): 256 KiB drains a large reply in few calls (a small one fits either way).
READ_SIZE = 256 << 10


class Stream:
    """A connected socket and a deadline.  ``tls_handshake()`` (once, optional) puts TLS under
    it; then ``send``/``recv`` carry plaintext either way.  ``on_wire(direction, data)`` sees
    the bytes as the kernel carried them (``"out"``/``"in"``; TLS records when TLS is on).

    Every wait takes what is left of the deadline; running out raises ``socket.timeout``.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout_text: str,
                 on_wire: Optional[Callable[[str, bytes], None]] = None) -> None:
        self.sock = sock
        self.deadline = deadline               # time.monotonic() value
        self.timeout_text = timeout_text       # "no answer within 5s": the timeout's words
        self.on_wire = on_wire
        self.tls: Optional[ssl.SSLObject] = None
        self._tx: Optional[TlsTransport] = None
        self.wire_in = 0                       # bytes the kernel carried, each way
        self.wire_out = 0

    # ------------------------------------------------------------------ the socket itself
    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(self.timeout_text)
        self.sock.settimeout(left)

    def _wire(self, direction: str, data: bytes) -> None:
        if direction == "in":
            self.wire_in += len(data)
        else:
            self.wire_out += len(data)
        if self.on_wire is not None and data:
            self.on_wire(direction, data)

    def _send_raw(self, data: bytes) -> None:
        if data:
            self._arm()
            self.sock.sendall(data)
            self._wire("out", data)

    def _recv_raw(self) -> bytes:
        self._arm()
        data = self.sock.recv(READ_SIZE)
        self._wire("in", data)
        return data

    # ------------------------------------------------------------------ TLS
    def tls_handshake(self, context: ssl.SSLContext, server_hostname: Optional[str]) -> ssl.SSLObject:
        """The client handshake; raises ``ssl.SSLError`` (a refused certificate, an alert, not
        TLS at all) or ``OSError``/``socket.timeout``."""
        self._tx = tx = TlsTransport(context, server_hostname=server_hostname)
        while True:
            try:
                done = tx.handshake()
            except ssl.SSLError:
                self._flush_quietly()          # our alert (unknown_ca...) tells the server why
                raise
            self._flush()                      # our flight (TLS 1.3: the client's Finished)
            if done:
                break
            self._fill()
        self.tls = tx.obj
        return self.tls

    def _flush(self) -> None:
        self._send_raw(self._tx.to_send())

    def _flush_quietly(self) -> None:
        try:
            self._flush()
        except OSError:
            pass

    def _fill(self) -> bool:
        """Read once from the socket into the TLS layer; False at the peer's close."""
        data = self._recv_raw()
        if data:
            self._tx.feed(data)
            return True
        self._tx.feed_eof()
        return False

    # ------------------------------------------------------------------ plaintext either way
    def send(self, data: bytes) -> None:
        if self._tx is None:
            self._send_raw(data)
            return
        self._send_raw(self._tx.encrypt(data))  # a memory BIO takes it all at once

    def recv(self) -> bytes:
        """The next plaintext bytes; ``b""`` when the peer closed (with close_notify or, as
        ``SSLSocket``'s ``suppress_ragged_eofs`` does, without)."""
        if self._tx is None:
            return self._recv_raw()
        while True:
            data = self._tx.read()
            if data is not None:
                return data
            self._flush()                      # a key update may want an answer
            self._fill()

    def ready(self, wait: float) -> bytes:
        """Plaintext the peer has sent already (waiting at most ``wait`` seconds for the first
        bytes), without blocking for more; ``b""``: none yet, or only its close.  TLS: bytes
        that are only the server's session tickets (TLS 1.3 sends them after the handshake)
        give no plaintext and count as none."""
        tx = self._tx
        if tx is not None:
            data = tx.read()
            if data is not None:
                return data
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(int(wait * 1000)):
            return b""
        self.sock.settimeout(0.0)              # readable: take what is there, never wait for more
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return b""
        self._wire("in", data)
        if tx is None:
            return data
        if not data:
            tx.feed_eof()
            return b""
        tx.feed(data)
        return tx.read() or b""

    def close_notify(self) -> None:
        """TLS: send close_notify, best effort, without waiting for the server's."""
        if self._tx is None:
            return
        try:
            data = self._tx.close_notify()
            if data:
                self.sock.settimeout(0.0)
                self.sock.send(data)
                self._wire("out", data)
        except OSError:
            pass

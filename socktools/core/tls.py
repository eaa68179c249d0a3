"""TLS for the I/O core, sans-I/O: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO``.

The loop's :class:`~socktools.core.loop.TlsConnection` reads and writes the socket as for
plaintext (``os.read``/``os.write``, the same out-buffer and interest mask) and passes the
bytes through a :class:`TlsTransport`: wire bytes in with :meth:`~TlsTransport.feed`,
plaintext out with :meth:`~TlsTransport.read`; plaintext in with
:meth:`~TlsTransport.encrypt`, wire bytes out.  Nothing here touches a socket, so the
handshake, partial records, close_notify and a hostile peer's bytes are all testable fed
whole, byte by byte or at random splits.

Why ``SSLObject`` and not a non-blocking ``SSLSocket`` (figures in docs/tls.md): the CPU
per small round trip is the same within noise, and only the memory BIOs see the wire --
``bytes_in``/``bytes_out`` count the TLS records the kernel carried, there is never
plaintext hidden inside OpenSSL that a level-triggered epoll cannot see (an ``SSLSocket``
may hold a decrypted record after ``recv``), and want-read/want-write are just "feed more"
and "the out-buffer is not empty", as for plaintext.
"""

from __future__ import annotations

import ssl
from typing import Optional

__all__ = ["TlsTransport", "WIRE_READ_SIZE"]

#: How much plaintext one ``read`` asks OpenSSL for: one full TLS record (2^14 bytes, RFC 8446
#: 5.1) at most comes out per call anyway; asking for more only allocates more.
PLAIN_READ_SIZE = 16384

#: How many wire bytes one os.read() asks for on a TLS connection: a protocol's
#: ``read_size`` is a plaintext size (a reply it expects), smaller than the records that
#: carry it, so TLS reads ask for the loop's full size (64 KiB: a loopback queue's worth).
WIRE_READ_SIZE = 65536


class TlsTransport:
    """One TLS session's state machine: client (``server_hostname`` given, checked by the
    context) or server (``server_side``).  ``session``: an ``ssl.SSLSession`` to resume."""

    __slots__ = ("obj", "_in", "_out", "handshaking", "notified", "eof")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool = False,
                 server_hostname: Optional[str] = None, session: Optional[ssl.SSLSession] = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self._in, self._out, server_side=server_side,
                                    server_hostname=server_hostname, session=session)
        self.handshaking = True
        self.notified = False    # our close_notify is written
        self.eof = False         # the peer's stream ended (close_notify or TCP EOF)

    def feed(self, wire: bytes) -> None:
        """Bytes read from the socket."""
        self._in.write(wire)

    def feed_eof(self) -> None:
        """The socket read EOF: no more bytes will come."""
        self._in.write_eof()

    def handshake(self) -> bool:
        """Take the handshake as far as the bytes fed allow: True once it is complete.
        A refused handshake raises ``ssl.SSLError`` (``SSLCertVerificationError``: our side
        refused the peer's certificate; ``SSLEOFError``: the peer closed in the middle)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.handshaking = False
        return True

    def to_send(self) -> bytes:
        """Wire bytes OpenSSL wrote (handshake messages, records, alerts) since last asked."""
        return self._out.read() if self._out.pending else b""

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext in, the records that carry it out (the handshake must be complete)."""
        self.obj.write(data)
        return self._out.read()

    def read(self) -> Optional[bytes]:
        """Plaintext that the bytes fed so far decrypt to: ``None`` when a record is still
        incomplete (want-read), ``b""`` once the peer's stream ended -- by close_notify, or by
        a TCP EOF without one (a "ragged" EOF: many servers close so; it ends the stream here
        as a plaintext EOF does).  A corrupt record raises ``ssl.SSLError``."""
        if self.eof:
            return b""
        try:
            return self.obj.read(PLAIN_READ_SIZE)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.eof = True
            return b""

    def more(self) -> bool:
        """Could :meth:`read` give anything now: plaintext decrypted and not read, wire bytes
        not yet consumed, or an EOF not yet reported?  Asked before each further read, it
        spares the read that would only raise want-read (a Python exception: about a
        microsecond, on every round trip)."""
        return bool(self.obj.pending() or self._in.pending or self._in.eof) and not self.eof

    def buffered(self) -> bool:
        """Is there input not yet turned into plaintext (a record decrypted but not read, or
        wire bytes fed but not yet decrypted)?"""
        return bool(self.obj.pending() or self._in.pending)

    def close_notify(self) -> bytes:
        """Our close_notify alert, once (``b""`` after the first call, or when the session is
        already broken): best effort, nothing waits for the peer's."""
        if self.notified or self.handshaking:
            return b""
        self.notified = True
        try:
            self.obj.unwrap()
        except ssl.SSLError:        # want-read (the peer's close_notify is not here yet), or broken
            pass
        return self.to_send()

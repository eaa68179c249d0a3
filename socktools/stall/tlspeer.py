"""stall's own TLS peer: a throwaway certificate, and a sink that completes the handshake and
then does not read.

``socktools stall --tls`` without a target needs a peer that speaks TLS and never reads.  The
embedded ``serve --mode sink`` speaks plaintext, so stall runs this one in its own process (a
thread per connection): it accepts, completes the handshake (so the client's ``send()`` goes
through OpenSSL), then reads nothing until :meth:`TlsSink.drain` -- like the sink's SIGUSR1.

The certificate is made here, for ``127.0.0.1``, ``::1`` and ``localhost``, valid for a day,
written to a private temporary directory removed on exit; stall's client trusts exactly it.
Making it needs the ``cryptography`` package; without it :class:`MissingPackage` says how to
get it (exit 3).  (A local helper: ``serve --tls-self-signed`` makes its own certificate too;
one maker for both is the coordinator's to choose.)
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import select
import shutil
import socket
import ssl
import tempfile
import threading
from typing import Any, Optional

from socktools.optional import MissingPackage

__all__ = ["throwaway_certificate", "TlsSink", "CERT_DAYS", "HANDSHAKE_TIMEOUT", "ACCEPT_POLL",
           "FEATURE"]

#: How the install hint names what needs ``cryptography``.
FEATURE = "stall --tls"
#: The throwaway certificate's life: a run lasts seconds; a day forgives a skewed clock.
CERT_DAYS = 1
#: A peer that connects and never finishes the handshake holds one thread this long at most.
HANDSHAKE_TIMEOUT = 10.0
#: How often the accept loop looks at its stop flag: the delay a stop can take.
ACCEPT_POLL = 0.05
#: Bytes per read once told to drain: as the plaintext sink reads.
READ_SIZE = 1 << 16


def throwaway_certificate(directory: str) -> tuple:
    """A self-signed certificate for 127.0.0.1, ::1 and localhost and its key, as PEM files in
    ``directory``: ``(certfile, keyfile, sha256 fingerprint as AA:BB:...)``."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise MissingPackage("tls", FEATURE) from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socktools stall throwaway")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    der = cert.public_bytes(serialization.Encoding.DER)
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    digest = hashlib.sha256(der).hexdigest().upper()
    return certfile, keyfile, ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class TlsSink:
    """A TLS peer on ``host`` (a free port) that handshakes and does not read until drain().

    ``with TlsSink("127.0.0.1") as sink: sink.address, sink.cafile ...``; ``rcvbuf`` sets the
    listening socket's SO_RCVBUF (accepted sockets inherit it), as ``serve --rcvbuf`` does.
    """

    def __init__(self, host: str = "127.0.0.1", rcvbuf: Optional[int] = None) -> None:
        self.host = host
        self.requested_rcvbuf = rcvbuf
        self.address: Any = None
        self.rcvbuf: Optional[int] = None
        self.cafile = ""
        self.fingerprint = ""
        self.display_command = ""
        self.errors: list = []          # handshakes that failed: (peer, reason)
        self._dir = ""
        self._listener: Optional[socket.socket] = None
        self._conns: list = []
        self._threads: list = []
        self._stop = threading.Event()
        self._drain = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> "TlsSink":
        self._dir = tempfile.mkdtemp(prefix="socktools-stall-tls-")
        try:
            certfile, keyfile, self.fingerprint = throwaway_certificate(self._dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            if self.requested_rcvbuf:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.requested_rcvbuf)
            listener.bind((self.host, 0))
            listener.listen()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._listener, self._ctx, self.cafile = listener, ctx, certfile
        self.address = listener.getsockname()[:2]
        self.rcvbuf = listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # as the embedded sink's "listening" event says it (stall's describe_peer reads it)
        self.events = [{"event": "listening", "pid": os.getpid(), "rcvbuf": self.rcvbuf}]
        self.display_command = (f"an in-process TLS sink (throwaway certificate, SHA-256 "
                                f"{self.fingerprint[:23]}...)")
        thread = threading.Thread(target=self._accept_loop, name="stall-tls-sink", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], ACCEPT_POLL)
            if not ready:
                continue
            try:
                raw, peer = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self._conns.append(raw)
            t = threading.Thread(target=self._serve, args=(raw, peer), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket, peer: Any) -> None:
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT)
            conn = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ValueError) as exc:
            self.errors.append((peer, str(exc)))
            return
        with self._lock:    # wrap_socket took the descriptor over: stop() must reach it here
            self._conns = [conn if c is raw else c for c in self._conns]
            if self._stop.is_set():
                return
        conn.settimeout(None)
        self._drain.wait()          # the point: no read until told
        try:
            while not self._stop.is_set() and conn.recv(READ_SIZE):
                pass
        except (OSError, ValueError):
            pass                    # closed under us (stop) or by the peer: the sink is done

    def drain(self) -> None:
        """Start reading (and keep reading) on every connection."""
        self._drain.set()

    def stop(self) -> None:
        self._stop.set()
        self._drain.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for raw in conns:
            try:    # wakes a thread blocked in recv (close alone does not, on Linux)
                socket.socket.shutdown(raw, socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(HANDSHAKE_TIMEOUT + 1)
        for raw in conns:
            raw.close()
        if self._listener is not None:
            self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "TlsSink":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

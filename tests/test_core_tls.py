"""TLS in the I/O core: the sans-I/O transport (socktools/core/tls.py) fed whole, byte by byte
and at random splits, and TlsConnection on real loopback sockets -- client side against a
Python ``ssl`` server, server side against a Python ``ssl`` client -- with trustme certificates
(tests/peers.py ``Certs``): handshake order, wire-byte counts, failures by their key, want-write
(a full kernel buffer), partial records, EOF with and without close_notify, hostile peers."""

from __future__ import annotations

import random
import os
import socket
import ssl
import threading
from typing import Optional

import pytest

from socktools import errors
from socktools.core.loop import Connection, Loop, Protocol, TlsConnection
from socktools.core.tls import TlsTransport
from tests.conftest import wait_until
from tests.peers import Certs
from tests.threadserver import ThreadServer

pytestmark = pytest.mark.timeout(60)

#: One loop run that should end much sooner.
RUN_LIMIT = 10.0


@pytest.fixture(scope="module")
def expired(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("expired"), expired=True)


def server_ctx(c: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(c.cert), str(c.key))
    return ctx


class Log(Protocol):
    """Every callback in order; echoes when ``echo``; closes on EOF."""

    def __init__(self, echo: bool = False) -> None:
        self.calls: list = []
        self.data = bytearray()
        self.exc: Optional[BaseException] = None
        self.echo = echo
        self.tls_at_made = None

    def tls_started(self, conn):
        self.calls.append("tls")

    def connection_made(self, conn):
        self.calls.append("made")
        self.tls_at_made = conn.tls
        self.version = conn.tls.version() if conn.tls is not None else None   # (None once closed)

    def data_received(self, conn, data):
        if not self.calls or self.calls[-1] != "data":
            self.calls.append("data")
        self.data += data
        if self.echo:
            conn.write(data)

    def eof_received(self, conn):
        self.calls.append("eof")
        conn.close()

    def connection_lost(self, conn, exc):
        self.calls.append("lost")
        self.exc = exc


def run(lp: Loop, until) -> None:
    lp.run(until=until, timeout=RUN_LIMIT)
    assert until(), "the loop ran out of time"


# ----------------------------------------------------------------- sans-I/O transport

def _pair(certs, **client_kw):
    client = TlsTransport(certs.client_context(), server_hostname="127.0.0.1", **client_kw)
    server = TlsTransport(server_ctx(certs), server_side=True)
    return client, server


def _pump(src: TlsTransport, dst: TlsTransport, split) -> None:
    wire = src.to_send()
    for piece in split(wire):
        dst.feed(piece)
        if dst.handshaking:
            try:
                dst.handshake()
            except ssl.SSLWantWriteError:  # pragma: no cover - memory BIOs never refuse
                raise


def _whole(b):
    return [b] if b else []


def _bytewise(b):
    return [b[i:i + 1] for i in range(len(b))]


def _random(seed):
    rng = random.Random(seed)

    def split(b):
        out, i = [], 0
        while i < len(b):
            n = rng.randint(1, 300)
            out.append(b[i:i + n])
            i += n
        return out
    return split


@pytest.mark.parametrize("split", [_whole, _bytewise, _random(1), _random(2)],
                         ids=["whole", "bytewise", "random1", "random2"])
def test_transport_handshake_data_and_close_notify_at_any_split(certs, split):
    client, server = _pair(certs)
    assert client.handshake() is False
    for _ in range(10):
        _pump(client, server, split)
        _pump(server, client, split)
        if not client.handshaking and not server.handshaking:
            break
        if client.handshaking:
            client.handshake()
    assert not client.handshaking and not server.handshaking
    payload = bytes(range(256)) * 200     # more than one record (16 KiB)
    for piece in split(client.encrypt(payload)):
        server.feed(piece)
    got = bytearray()
    while (data := server.read()) is not None and data:
        got += data
    assert bytes(got) == payload
    # a record cut short decrypts to nothing yet: want-read, not an error
    wire = server.encrypt(b"reply")
    client.feed(wire[:-1])
    assert client.read() is None
    client.feed(wire[-1:])
    assert client.read() == b"reply"
    for piece in split(client.close_notify()):
        server.feed(piece)
    assert server.read() == b""          # the stream ended cleanly
    assert client.close_notify() == b""  # once only


def test_transport_ragged_eof_ends_the_stream(certs):
    client, server = _pair(certs)
    client.handshake()
    while client.handshaking or server.handshaking:
        _pump(client, server, _whole)
        _pump(server, client, _whole)
        if client.handshaking:
            client.handshake()
    client.feed(server.encrypt(b"last"))
    client.feed_eof()                    # TCP EOF without close_notify
    assert client.read() == b"last"
    assert client.read() == b""


def test_transport_garbage_instead_of_server_hello_is_a_named_failure(certs):
    client = TlsTransport(certs.client_context(), server_hostname="127.0.0.1")
    client.handshake()
    client.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ssl.SSLError) as info:
        client.handshake()
    assert errors.exception_key(info.value) == errors.TLS_TO_PLAINTEXT


# ----------------------------------------------------------------- client side, real sockets

def ssl_server(certs, handle, *, ctx=None):
    """A ThreadServer whose handler gets the socket wrapped by a Python ``ssl`` server."""
    context = ctx or server_ctx(certs)

    def wrapped(raw):
        try:
            s = context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        except (ssl.SSLError, OSError):
            return
        handle(s)
    return ThreadServer(wrapped)


def test_client_handshake_then_made_then_plaintext_both_ways(certs):
    seen = {}

    def echo_then_wait_close(s):
        data = s.recv(65536)
        s.sendall(data.upper())
        try:
            seen["end"] = s.recv(1)       # b"": our close_notify; SSLEOFError: a ragged close
        except ssl.SSLEOFError:
            seen["end"] = "ragged"

    with ssl_server(certs, echo_then_wait_close) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        assert isinstance(conn, TlsConnection) and conn.tls is None
        conn.write(b"hello over tls")               # before the handshake: waits for it
        run(lp, lambda: bytes(proto.data) == b"HELLO OVER TLS")
        assert proto.calls[:3] == ["tls", "made", "data"]
        assert proto.tls_at_made is conn.tls and conn.tls.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.tls.getpeercert()["subjectAltName"]
        # the kernel carried records: more than the plaintext, both ways
        assert conn.bytes_out > len(b"hello over tls") + 200 and conn.bytes_in > len(b"HELLO OVER TLS")
        conn.close()
        assert conn.closed
        assert wait_until(lambda: "end" in seen, 5)
        assert seen["end"] == b""                    # close_notify went out before the FIN
        lp.close()


def test_plaintext_connection_has_no_tls_and_no_tls_started():
    def echo(s):
        s.sendall(s.recv(100))
    with ThreadServer(echo) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto)
        conn.write(b"x")
        run(lp, lambda: bytes(proto.data) == b"x")
        assert type(conn) is Connection and conn.tls is None and "tls" not in proto.calls
        lp.close()


@pytest.mark.parametrize("case", ["unknown-ca", "hostname", "expired"])
def test_client_verification_failures_are_handshake_failures_with_their_key(certs, expired, case):
    ctx, name, server_certs = certs.client_context(), "127.0.0.1", certs
    if case == "unknown-ca":
        ctx = ssl.create_default_context()           # the system store: trustme's CA is unknown
        key = "tls-unknown-ca"
    elif case == "hostname":
        name, key = "wrong.example", "tls-hostname-mismatch"
    else:
        ctx, server_certs, key = expired.client_context(), expired, "tls-expired"
    with ssl_server(server_certs, lambda s: s.recv(1)) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto, tls=ctx, server_hostname=name)
        run(lp, lambda: conn.closed)
        assert proto.calls == ["tls", "lost"]            # never made
        assert conn.failed_in == errors.HANDSHAKE
        assert isinstance(proto.exc, ssl.SSLCertVerificationError)
        assert errors.exception_key(proto.exc) == key
        lp.close()


def test_client_tls_to_a_plaintext_port_and_garbage_instead_of_server_hello(certs):
    def http_server(s):
        s.recv(65536)
        s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def garbage(s):
        s.recv(65536)
        s.sendall(bytes(random.Random(7).getrandbits(8) for _ in range(4096)))

    for handler in (http_server, garbage):
        with ThreadServer(handler) as srv:
            lp = Loop()
            proto = Log()
            conn = lp.open_connection(srv.address, proto, tls=certs.client_context(),
                                      server_hostname="127.0.0.1")
            run(lp, lambda: conn.closed)
            assert conn.failed_in == errors.HANDSHAKE and "made" not in proto.calls
            key = errors.exception_key(proto.exc)
            assert key.startswith("tls-") and key in errors.EXPLANATIONS
            if handler is http_server:
                assert key == errors.TLS_TO_PLAINTEXT
            lp.close()


def test_peer_closing_in_the_middle_of_the_handshake(certs):
    with ThreadServer(lambda s: (s.recv(65536), s.close())) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        run(lp, lambda: conn.closed)
        assert conn.failed_in == errors.HANDSHAKE
        assert errors.exception_key(proto.exc) in ("tls-eof-in-handshake", "ECONNRESET")
        lp.close()


def test_a_stalled_handshake_costs_only_its_own_connection(certs):
    """One peer accepts and never answers the ClientHello; another is a good TLS server.  The
    good connection completes; the stalled one ends by the idle timeout, never made."""
    stall = threading.Event()
    with ThreadServer(lambda s: stall.wait(10)) as bad, ssl_server(certs, lambda s: s.sendall(s.recv(10))) as good:
        lp = Loop()
        lp.set_idle_timeout(1.0)
        stuck, ok = Log(), Log()
        c1 = lp.open_connection(bad.address, stuck, tls=certs.client_context(), server_hostname="127.0.0.1")
        c2 = lp.open_connection(good.address, ok, tls=certs.client_context(), server_hostname="127.0.0.1")
        c2.write(b"ping")
        run(lp, lambda: c1.closed and bytes(ok.data) == b"ping")
        assert stuck.calls == ["tls", "lost"] and isinstance(stuck.exc, TimeoutError)
        assert c1.handshaking and "made" in ok.calls and c2.failed_in is None
        stall.set()
        lp.close()


def test_large_writes_fill_the_kernel_buffer_and_all_arrive(certs):
    """8 MiB written at once to a server that does not read yet: records wait in the out-buffer
    (want-write), then all of them go, in order."""
    payload = bytes(random.Random(3).getrandbits(8) for _ in range(1 << 16)) * 128
    go = threading.Event()
    got = {}

    def slow_reader(s):
        go.wait(10)
        buf = bytearray()
        while len(buf) < len(payload):
            data = s.recv(1 << 20)
            if not data:
                break
            buf += data
        got["data"] = bytes(buf)
        s.sendall(b"done")

    with ssl_server(certs, slow_reader) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1",
                                  setup=lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096))
        run(lp, lambda: "made" in proto.calls)
        conn.write(payload)
        assert conn.pending > 0                     # the kernel refused some: buffered records
        go.set()
        run(lp, lambda: bytes(proto.data) == b"done")
        assert got["data"] == payload
        assert conn.bytes_out > len(payload)        # records: plaintext plus their overhead
        lp.close()


def test_reads_that_arrive_as_partial_records(certs):
    """The server's records reach us a few bytes at a time: the plaintext comes out whole."""
    reply = b"partial-records " * 2000

    def dribble(raw):
        ctx = server_ctx(certs)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    raw.sendall(out.read())
                data = raw.recv(65536)
                if not data:
                    return
                inc.write(data)
        raw.sendall(out.read())
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        obj.write(reply)
        wire = out.read()
        for i in range(0, len(wire), 7):    # 7-byte segments: every record split many times
            raw.sendall(wire[i:i + 7])
        raw.recv(1)

    with ThreadServer(dribble) as srv:
        lp = Loop()
        proto = Log()
        lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        run(lp, lambda: len(proto.data) >= len(reply))
        assert bytes(proto.data) == reply
        lp.close()


@pytest.mark.parametrize("clean", [True, False], ids=["close_notify", "ragged"])
def test_eof_from_the_server_with_and_without_close_notify(certs, clean):
    def answer_and_close(s):
        s.sendall(b"bye")
        if clean:
            s.unwrap().close()      # close_notify, then FIN
        else:
            s.shutdown(socket.SHUT_RDWR)

    with ssl_server(certs, answer_and_close) as srv:
        lp = Loop()
        proto = Log()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        run(lp, lambda: conn.closed)
        assert bytes(proto.data) == b"bye"
        assert proto.calls[-2:] == ["eof", "lost"] and proto.exc is None and conn.failed_in is None
        lp.close()


def test_pause_reading_keeps_decrypted_records_until_resumed(certs):
    """Two records read from the socket in one go, the protocol pausing after the first: the
    second waits in the TLS layer and is delivered on resume, though the socket has nothing
    more to announce."""
    class Pauser(Log):
        def data_received(self, conn, data):
            super().data_received(conn, data)
            conn.pause_reading()

    sent, done = threading.Event(), threading.Event()

    def two_records(s):
        s.sendall(b"a" * 20000)     # two records (16 KiB of plaintext at most each)
        sent.set()
        done.wait(20)               # and nothing more: no EOF either, until the test is over

    def queued(sock) -> int:
        try:
            return len(sock.recv(1 << 20, socket.MSG_PEEK))
        except BlockingIOError:
            return 0

    with ssl_server(certs, two_records) as srv:
        lp = Loop()
        proto = Pauser()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        run(lp, lambda: "made" in proto.calls)
        conn.pause_reading()
        assert sent.wait(5)
        assert wait_until(lambda: queued(conn.sock) >= 20000 + 2 * 22, 5)   # both records, whole
        conn.resume_reading()
        run(lp, lambda: len(proto.data) > 0)
        assert 0 < len(proto.data) < 20000 and conn._tx.buffered()   # one record delivered, one kept
        assert queued(conn.sock) == 0                               # ... and nothing left in the kernel
        conn.resume_reading()
        run(lp, lambda: len(proto.data) == 20000)
        assert bytes(proto.data) == b"a" * 20000
        done.set()
        lp.close()


# ----------------------------------------------------------------- server side, real sockets

def _listen():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.setblocking(False)
    return lsock


def _accepting(lp, lsock, proto, ctx, conns):
    def accept():
        try:
            sock, peer = lsock.accept()
        except BlockingIOError:
            return
        conns.append(lp.add_connection(sock, proto, peer, tls=ctx))
    lp.add_reader(lsock, accept)


def test_server_side_against_a_python_ssl_client(certs):
    lp = Loop()
    lsock = _listen()
    proto, conns = Log(echo=True), []
    _accepting(lp, lsock, proto, server_ctx(certs), conns)
    result = {}

    def client():
        with socket.create_connection(lsock.getsockname(), timeout=5) as raw:
            with certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"echo me")
                result["reply"] = s.recv(100)
                result["version"] = s.version()
    t = threading.Thread(target=client)
    t.start()
    run(lp, lambda: "reply" in result)
    t.join(5)
    assert result["reply"] == b"echo me"
    assert proto.calls[:3] == ["tls", "made", "data"]
    assert conns[0].tls is not None and proto.version == result["version"]
    lp.remove_reader(lsock)
    lsock.close()
    lp.close()


def test_server_side_plaintext_http_to_the_tls_listener_is_named(certs):
    """A client speaking plain HTTP to the TLS port: only its connection ends, as a handshake
    failure under "plaintext spoken to a TLS port"; a TLS client right after is served."""
    lp = Loop()
    lsock = _listen()
    proto, conns = Log(echo=True), []
    _accepting(lp, lsock, proto, server_ctx(certs), conns)
    plain = socket.create_connection(lsock.getsockname(), timeout=5)
    plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    run(lp, lambda: conns and conns[0].closed)
    assert conns[0].failed_in == errors.HANDSHAKE
    assert errors.exception_key(proto.exc) == errors.TLS_PLAINTEXT_TO_TLS
    plain.close()
    result = {}

    def client():
        with socket.create_connection(lsock.getsockname(), timeout=5) as raw:
            with certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"fine")
                result["reply"] = s.recv(100)
    t = threading.Thread(target=client)
    t.start()
    run(lp, lambda: "reply" in result)
    t.join(5)
    assert result["reply"] == b"fine"
    lp.remove_reader(lsock)
    lsock.close()
    lp.close()


def test_tls_connections_never_join_the_batch_path(certs):
    class Batching(Log):
        def data_batch(self, conns, datas):    # pragma: no cover - must never be called for TLS
            raise AssertionError("TLS took the batch path")

    with ssl_server(certs, lambda s: (s.sendall(s.recv(10)), s.recv(1))) as srv:
        lp = Loop()
        proto = Batching()
        conn = lp.open_connection(srv.address, proto, tls=certs.client_context(), server_hostname="127.0.0.1")
        conn.write(b"twice")
        run(lp, lambda: bytes(proto.data) == b"twice")
        assert conn.fd not in lp._batch
        lp.close()


def test_session_resumption_through_open_connection(certs):
    """TLS 1.2: the session of a first connection, given to the next, is resumed."""
    ctx = certs.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with ssl_server(certs, lambda s: (s.sendall(s.recv(10)), s.recv(1))) as srv:
        lp = Loop()
        first, second = Log(), Log()
        c1 = lp.open_connection(srv.address, first, tls=ctx, server_hostname="127.0.0.1")
        c1.write(b"one")
        run(lp, lambda: bytes(first.data) == b"one")
        session = c1.tls.session
        assert c1.tls.session_reused is False
        c2 = lp.open_connection(srv.address, second, tls=ctx, server_hostname="127.0.0.1", tls_session=session)
        c2.write(b"two")
        run(lp, lambda: bytes(second.data) == b"two")
        assert c2.tls.session_reused is True
        lp.close()


def test_a_peer_gone_without_close_notify_is_closed_quietly_over_a_unix_socket(certs):
    """The peer hangs up without a close_notify; we answer its EOF with close().  Our own
    close_notify then meets a closed socket (EPIPE at once on AF_UNIX): best effort, so the
    connection ends cleanly -- not a send failure.  (serve --unix --tls counted it as EPIPE.)"""
    lp = Loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proto = Log(echo=True)
    conn = lp.add_connection(ours, proto, "peer", tls=server_ctx(certs))
    done = {}

    def client():
        ctx = certs.client_context()
        with ctx.wrap_socket(theirs, server_hostname="127.0.0.1") as s:
            s.sendall(b"hello")
            done["reply"] = s.recv(100)     # (and the session tickets: nothing left unread)
            os.close(s.detach())    # the raw socket closes: no close_notify
    t = threading.Thread(target=client)
    t.start()
    run(lp, lambda: conn.closed)
    t.join(5)
    assert done["reply"] == b"hello" and proto.calls[-2:] == ["eof", "lost"]
    assert conn.failed_in is None and proto.exc is None, (conn.failed_in, proto.exc)
    lp.close()

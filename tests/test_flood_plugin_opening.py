"""A plug-in's own opening conversation in flood: challenge-response (the server's nonce decides
what the client sends), run on every connection before the measured requests -- flood's side is
generic.  The peer is a loopback test server that counts logins and requests itself."""

from __future__ import annotations

import hashlib
import threading

import pytest

from socktools.flood.config import FloodConfig
from socktools.flood.worker import run_worker
from socktools.wire.base import WireError, WireProtocol
from socktools.wire.opening import Opening, OpeningFailed
from socktools.wire.raw import line_stream_parser
from socktools.wire.spec import WireOptionError, WireSpec, build
from threadserver import ThreadServer, read_until

pytestmark = pytest.mark.timeout(60)

SECRET = b"s3cret"


def proof(nonce: bytes, secret: bytes) -> bytes:
    return hashlib.sha256(nonce + secret).hexdigest().encode()


class ChallengeOpening(Opening):
    """Reads ``NONCE n``, answers ``HASH sha256(n + secret)``, expects ``OK``; sans-I/O."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.buf = b""
        self.out = b""
        self.step = "nonce"
        self.done = False
        self.rest = b""

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        return out

    def receive_data(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf and not self.done:
            line, self.buf = self.buf.split(b"\n", 1)
            if self.step == "nonce":
                if not line.startswith(b"NONCE "):
                    raise WireError(f"expected a NONCE line, got {line[:20]!r}")
                self.out += b"HASH " + proof(line[6:], self.secret) + b"\n"
                self.step = "verdict"
            elif line == b"OK":
                self.done = True
                self.rest, self.buf = self.buf, b""
            else:
                raise OpeningFailed(line.decode(), "login")

    def leftover(self) -> bytes:
        return self.rest

    def describe(self) -> str:
        return "challenge-response login"


class Challenge(WireProtocol):
    """PING/PONG lines after a challenge-response login; ``--command`` gives the secret."""

    name = "challenge"
    fixed_request = b"PING\n"
    shared_requests = True

    def __init__(self, commands: tuple) -> None:
        self.secret = (commands[0] if commands else "s3cret").encode()

    def request(self, seq: int, conn: int) -> bytes:
        return b"PING\n"

    def parser(self):
        return line_stream_parser("response")

    def opening(self):
        return ChallengeOpening(self.secret)


class Broken(Challenge):
    def opening(self):
        raise RuntimeError("no opening today")


class Server:
    """Sends a nonce, checks the proof, then answers each PING; counts logins and PINGs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.logins = self.refused = self.pings = 0
        self.nonces = 0

    def handle(self, conn) -> None:
        with self.lock:
            self.nonces += 1
            nonce = b"%08d" % self.nonces
        conn.sendall(b"NONCE " + nonce + b"\n")
        line = read_until(conn, b"\n", 1)
        if line.strip() != b"HASH " + proof(nonce, SECRET):
            with self.lock:
                self.refused += 1
            conn.sendall(b"DENIED bad hash\n")
            return
        with self.lock:
            self.logins += 1
        conn.sendall(b"OK\n")
        while True:
            request = read_until(conn, b"\n", 5)
            if not request:
                return
            n = request.count(b"PING\n")
            with self.lock:
                self.pings += n
            conn.sendall(b"PONG\n" * n)


def run(port: int, secret: str, **kw):
    spec = WireSpec(plugin=f"{__name__}:{kw.pop('cls', 'Challenge')}", commands=(secret,))
    cfg = FloodConfig(address=("127.0.0.1", port), port=port, mode="plugin", wire=spec, workers=1,
                      conns=kw.pop("conns", 3), duration=None, requests=kw.pop("requests", 300), **kw)
    return run_worker(cfg, 0)


def test_every_connection_logs_in_before_its_requests_and_the_counts_agree():
    server = Server()
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, "s3cret")
    assert stats.opened == server.logins == 3 and stats.refused == 0
    assert stats.requests == server.pings == 303
    assert stats.traffic_responses == 300 and not stats.errors


def test_churn_logs_in_again_on_every_new_connection():
    server = Server()
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, "s3cret", churn=4, requests=200)
    assert stats.requests == server.pings == 203
    assert stats.opened == stats.established + stats.reconnects >= 203 // 4 and not stats.errors
    # the server counts a login as it checks the proof: a replacement the run's end closed before
    # the OK came back logged in without being through its opening
    assert stats.opened <= server.logins <= stats.connected


def test_a_refused_login_ends_the_connection_with_the_servers_words():
    server = Server()
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, "wrong")
    assert server.refused == 3 and server.logins == 0
    assert stats.refusals == {"DENIED bad hash": 3} and stats.failed == 3
    assert stats.errors == {"open": {"opening-refused": 3}}


def test_a_plug_in_whose_opening_raises_is_a_usage_error_naming_protocol():
    with pytest.raises(WireOptionError) as caught:
        build(WireSpec(plugin=f"{__name__}:Broken"))
    assert caught.value.flag == "--protocol" and "opening() failed: RuntimeError: no opening today" in str(caught.value)

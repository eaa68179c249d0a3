"""Which closes flood reconnects after, on real loopback sockets: only those a complete HTTP
response announced.  A close in the middle of a response, or one no response announced, is
still a failure (nginx's ``Connection: close`` is in test_flood_peers.py)."""

from __future__ import annotations

import socket
import threading

import pytest

from socktools.flood.config import FloodConfig
from socktools.flood.worker import run_worker
from socktools.wire.spec import WireSpec
from tests.threadserver import ThreadServer

pytestmark = pytest.mark.timeout(60)


def _read_request(conn) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def _serving(response: bytes, per_connection: int = 1):
    def handle(conn) -> None:
        for _ in range(per_connection):
            if not _read_request(conn):
                return
            conn.sendall(response)
        conn.close()
    return handle


def _run(server: ThreadServer, **kw):
    host, port = server.address
    spec = WireSpec(mode="http", host="x", paths=("/",))
    kw.setdefault("conns", 2)
    return run_worker(FloodConfig(address=(host, port), port=port, mode="http", wire=spec, workers=1,
                                  duration=10.0, **kw), 0)


def test_http_1_0_responses_without_keep_alive_are_followed_by_a_reconnect():
    srv = ThreadServer(_serving(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    try:
        stats = _run(srv, requests=30)
    finally:
        srv.close()
    assert stats.traffic_responses == 30 and not stats.errors and stats.reply_classes == {"2xx": 30}
    assert stats.confirm_reply_classes == {"2xx": 2}
    # each of the 30 requests goes out on a new connection (the first 2 replace the confirmed ones)
    assert stats.reconnects == 30 and len(srv.conns) == 2 + stats.reconnects


def test_a_close_in_the_middle_of_an_announced_close_is_truncated_not_a_reconnect():
    srv = ThreadServer(_serving(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhello"))
    try:
        stats = _run(srv, requests=10)
    finally:
        srv.close()
    assert stats.reconnects == 0 and stats.established == 0
    assert stats.protocol_errors == {"truncated": 2}


def test_a_close_no_response_announced_is_peer_closed():
    # keep-alive responses, then the server closes after the second one without saying so
    srv = ThreadServer(_serving(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", per_connection=2))
    try:
        stats = _run(srv, requests=10)
    finally:
        srv.close()
    assert stats.reconnects == 0 and stats.traffic_responses == 2
    # the close races flood's third request: the kernel says peer-closed, or ECONNRESET when
    # that request reached the server unread
    assert set(stats.errors) == {"recv"} and set(stats.errors["recv"]) <= {"peer-closed", "ECONNRESET"}
    assert sum(stats.errors["recv"].values()) == 2 == stats.lost


def test_a_reconnection_the_server_refuses_is_lost_and_the_run_ends():
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    both_in = threading.Barrier(2, timeout=10)
    srv = None

    def handle(conn):
        # Once both connections are in, the listener closes before either answers: by the time
        # flood reconnects (after both confirming replies) every reconnection is refused.
        if both_in.wait() == 0:
            srv.stopping = True
            srv.sock.shutdown(socket.SHUT_RDWR)   # stops listening now (a blocked accept holds it)
            srv.sock.close()
        both_in.wait()
        _serving(closing)(conn)
    srv = ThreadServer(handle)
    try:
        stats = _run(srv, requests=10)
    finally:
        srv.close()
    assert stats.established == 2 and stats.traffic_responses == 0
    assert stats.reconnects == 0 and stats.lost == 2      # reconnects are connections made
    assert stats.errors == {"connect": {"ECONNREFUSED": 2}}

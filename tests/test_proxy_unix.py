"""`socktools proxy` with a Unix-domain socket on either side (``unix:PATH``), against a real
redis-server listening on its unixsocket."""

from __future__ import annotations

import os
import socket
import time

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.peers import Redis
from tests.proxy_helpers import ProxyProcess, recv_exactly

PING = b"*1\r\n$4\r\nPING\r\n"


def unix_connect(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def set_get(sock: socket.socket, value: bytes) -> bytes:
    sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(value), value))
    assert recv_exactly(sock, 5) == b"+OK\r\n"
    sock.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    head = b"$%d\r\n" % len(value)
    return recv_exactly(sock, len(head) + len(value) + 2)[len(head):-2]


@pytest.fixture
def unix_redis(tmp_path):
    with Redis(tmp_path, unix=True) as r:
        yield r


def test_tcp_clients_reach_a_redis_on_its_unix_socket(unix_redis):
    value = os.urandom(200_000).hex().encode()          # big enough to take several reads
    with ProxyProcess("--listen", "127.0.0.1:0", "--to", f"unix:{unix_redis.unix}") as px:
        with socket.create_connection(("127.0.0.1", px.port), timeout=10) as c:
            assert set_get(c, value) == value
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "closed" and ev["to_upstream"] == ev["from_client"] > len(value)
    assert unix_redis.command("STRLEN", "k") == len(value)     # redis' own word


def test_a_unix_listener_in_front_of_redis_on_its_unix_socket_with_a_toxic(unix_redis, tmp_path):
    path = tmp_path / "proxy.sock"
    with ProxyProcess("--listen", f"unix:{path}", "--to", f"unix:{unix_redis.unix}",
                      "--toxic", "latency:latency=50", expect=0) as px:
        ev = px.wait_event(lambda e: e["event"] == "listening")
        assert ev["listen"] == f"unix:{path}"
        with unix_connect(path) as c:
            start = time.perf_counter()
            c.sendall(PING)
            assert recv_exactly(c, 7) == b"+PONG\r\n"
            assert time.perf_counter() - start >= 0.050          # the toxic acts on Unix links too
            assert set_get(c, b"over unix") == b"over unix"
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["client"] == f"unix:{path}" and ev["how"] == "closed"
        px.stop()
    assert not path.exists()                                      # its socket file goes with it


def test_a_unix_listener_in_front_of_a_tcp_redis(tmp_path):
    path = tmp_path / "proxy.sock"
    with Redis(tmp_path) as redis, ProxyProcess("--listen", f"unix:{path}", "--to",
                                                f"127.0.0.1:{redis.port}", expect=0) as px:
        px.wait_event(lambda e: e["event"] == "listening")
        with unix_connect(path) as c:
            # half-close over the Unix side: the reply still comes back
            c.sendall(PING)
            c.shutdown(socket.SHUT_WR)
            assert recv_exactly(c, 7) == b"+PONG\r\n"


def test_a_stale_socket_file_is_replaced_and_a_live_one_or_another_file_is_not(tmp_path):
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()                                       # the file stays, nobody listens: stale
    with ProxyProcess("--listen", f"unix:{stale}", "--to", "127.0.0.1:9", expect=0) as px:
        px.wait_event(lambda e: e["event"] == "listening")
        # a second proxy on the same path: a live listener is never taken over
        res = CliRunner().invoke(main, ["proxy", "--listen", f"unix:{stale}", "--to", "127.0.0.1:9"])
        assert res.exit_code == 1 and "another process listens there" in res.output
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    res = CliRunner().invoke(main, ["proxy", "--listen", f"unix:{plain}", "--to", "127.0.0.1:9"])
    assert res.exit_code == 1 and "not a socket" in res.output
    assert plain.read_text() == "mine"


@pytest.mark.parametrize("args, words", [
    (["--listen", "unix:", "--to", "127.0.0.1:6379"], ["--listen", "unix:PATH"]),
    (["--listen", "127.0.0.1:0", "--to", "unix:" + "x" * 200], ["--to", "at most 107 bytes"]),
    (["--listen", "nowhere", "--to", "127.0.0.1:6379"], ["--listen", "HOST:PORT or unix:PATH"]),
])
def test_bad_unix_addresses_are_usage_errors_naming_the_option(args, words):
    res = CliRunner().invoke(main, ["proxy", *args])
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output

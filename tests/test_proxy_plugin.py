"""The pytest plugin, used as a user would: a test file of theirs, run by pytest in a child,
testing a small redis client's timeouts and retries against a real redis-server behind the proxy."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from importlib import metadata

from tests.peers import Redis

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: The user's test file (docs/proxy.md shows the same client and tests).
USER_TESTS = r'''
import os
import socket
import time

import pytest

REDIS = ("127.0.0.1", int(os.environ["REDIS_PORT"]))


def get(address, key, *, timeout=0.3, attempts=3, tries=None):
    """A small redis client: GET with a timeout, retried on timeouts, resets and refusals."""
    last = None
    for _ in range(attempts):
        if tries is not None:
            tries.append(time.monotonic())
        try:
            with socket.create_connection(address, timeout=timeout) as s:
                s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()))
                buf = b""
                while not (buf.startswith(b"$-1\r\n") or (buf.count(b"\r\n") >= 2)):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionResetError("closed before the reply")
                    buf += chunk
                return None if buf.startswith(b"$-1") else buf.split(b"\r\n")[1].decode()
        except (TimeoutError, ConnectionError) as exc:
            last = exc
    raise last


def set_direct(key, value):
    with socket.create_connection(REDIS, timeout=5) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key.encode(), len(value), value.encode()))
        assert s.recv(100) == b"+OK\r\n"


def test_reads_through_a_healthy_link(socktools_proxy):
    proxy = socktools_proxy(REDIS)
    set_direct("greeting", "hello")
    assert get(proxy.address, "greeting") == "hello"


def test_gives_up_after_three_slow_attempts(socktools_proxy):
    proxy = socktools_proxy(REDIS)
    set_direct("slow", "eventually")
    tries = []
    with proxy.latency(1000):
        with pytest.raises(TimeoutError):
            get(proxy.address, "slow", timeout=0.2, tries=tries)
    assert len(tries) == 3
    assert get(proxy.address, "slow", timeout=5) == "eventually"     # the toxic is gone


def test_a_reset_mid_reply_is_retried_then_reported(socktools_proxy):
    proxy = socktools_proxy(REDIS)
    tries = []
    with proxy.reset_peer(after=0):
        with pytest.raises(ConnectionResetError):
            get(proxy.address, "greeting", tries=tries)
    assert len(tries) == 3


def test_a_cut_reply_is_retried(socktools_proxy):
    proxy = socktools_proxy(REDIS)
    set_direct("long", "x" * 100)
    tries = []
    with proxy.limit_data(10):
        with pytest.raises(ConnectionResetError):
            get(proxy.address, "long", tries=tries)
    assert len(tries) == 3
    assert get(proxy.address, "long") == "x" * 100


def test_a_link_down_is_refused(socktools_proxy):
    proxy = socktools_proxy(REDIS)
    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            get(proxy.address, "greeting")
    set_direct("greeting", "back")
    assert get(proxy.address, "greeting") == "back"


def test_an_embedded_echo_server_behind_a_slow_link(socktools_server, socktools_proxy):
    server = socktools_server("echo")
    proxy = socktools_proxy(server.address)
    with proxy.latency(100, stream="upstream"):
        with socket.create_connection(proxy.address, timeout=5) as s:
            start = time.monotonic()
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
            assert time.monotonic() - start >= 0.100
'''


def _entry_point_installed() -> bool:
    return any(ep.value == "socktools.proxy.pytest_plugin" for ep in metadata.entry_points(group="pytest11"))


def test_the_plugin_in_a_users_suite(tmp_path):
    with Redis(tmp_path) as redis:
        (tmp_path / "test_my_client.py").write_text(USER_TESTS)
        # Installed, the pytest11 entry point loads the plugin; from a checkout, -p names it.
        load = [] if _entry_point_installed() else ["-p", "socktools.proxy.pytest_plugin"]
        env = {**os.environ, "REDIS_PORT": str(redis.port), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *load,
                               "test_my_client.py"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "6 passed" in proc.stdout

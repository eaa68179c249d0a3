"""flood against hostile or hopeless situations (issue 12): exit codes, advice, the plan.

Loopback only; every server a test starts, it stops.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from socktools import errors

pytestmark = pytest.mark.timeout(60)


class EchoOnceServer:
    """Answers the first chunk of each connection, then closes it: every confirmed connection is lost."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(conn.recv(65536))
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def flood(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "socktools", "flood", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


def test_every_connection_lost_exits_1_and_does_not_advise_keep_alive():
    server = EchoOnceServer()
    try:
        proc = flood("--port", str(server.port), "--conns", "4", "--workers", "1", "--duration", "1s")
    finally:
        server.stop()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "flood: every connection was lost (4 of 4" in proc.stderr
    assert "keep-alive" not in proc.stdout + proc.stderr
    assert "4 of 4 established" in proc.stdout


def test_flood_advice_names_only_flood_options():
    for key in (errors.TIMEOUT, errors.PROTOCOL_ERROR, errors.PEER_CLOSED, "ETIMEDOUT"):
        fix = errors.lookup(key, command="flood").fix
        assert "--timeout" not in fix.replace("--connect-timeout", "")
        assert "--show-bytes" not in fix
        assert "keep-alive" not in fix
    assert "--connect-timeout" in errors.lookup(errors.TIMEOUT, command="flood").fix
    assert "--timeout" in errors.lookup(errors.TIMEOUT, command="request").fix
    assert "--show-bytes" in errors.lookup(errors.PROTOCOL_ERROR, command="request").fix


def test_eaddrnotavail_on_bind_says_the_address_is_not_here():
    exc = OSError(99, "Cannot assign requested address")
    line = errors.one_line(exc, "bind 10.99.99.1", during="bind")
    assert "that address is not on this machine" in line
    assert "ephemeral" not in line and "--source" not in line
    assert "no free local port" in errors.one_line(exc, "connect")  # connect() keeps its meaning


def test_source_not_on_this_machine_is_a_usage_error_before_any_connection():
    # 192.0.2.1 (TEST-NET-1) is not on this machine: bind() refuses it locally, nothing is sent.
    proc = flood("--port", "9", "--source", "192.0.2.1", "--conns", "1")
    assert proc.returncode == 2
    assert "--source" in proc.stderr and "that address is not on this machine" in proc.stderr

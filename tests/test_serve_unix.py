"""`socktools serve --unix PATH`: echo, framed and sink on a Unix-domain socket, end to end.

Clients are the project's own `request --unix` and `flood --unix` and a plain Python AF_UNIX
socket; the server's own counts (its JSON summary) must equal what they sent.  The path rules:
an existing non-socket is refused (usage error, the file untouched), a stale socket of a dead
server is removed only when connecting to it is refused, a live one is left alone (exit 1), and
the socket file goes when the server exits cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest
from click.testing import CliRunner

from socktools import protocol, reference
from socktools.cli import main
from socktools.core.embedded import EmbeddedServer
from tests.conftest import children_of, socktools_cmd, started_servers, wait_until


class UnixServer(EmbeddedServer):
    """The real `socktools serve --unix PATH --json` in a child; ``.path`` is its socket."""

    def __init__(self, path, *args: str) -> None:
        super().__init__(args=list(args))
        self.path = str(path)
        self.listening: dict = {}
        self.start()

    def _command(self) -> list:
        return socktools_cmd("serve", "--json", "--stop-on-stdin-eof", "--unix", self.path,
                             "--stats-interval", "0", *self.args)

    def _listening(self, line: str):
        event = self._parse(line)
        if event and event.get("event") == "listening":
            self.listening = event
            return "localhost", 0           # EmbeddedServer wants a (host, port); the path is ours
        return None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM):
        summary = super().stop(timeout=timeout, sig=sig)
        assert not self.forced, f"server did not stop within {timeout}s: {self.stderr}"
        assert self.returncode == 0, self.stderr
        return summary


@pytest.fixture
def unix_server(tmp_path):
    yield from started_servers(lambda *args, path=None: UnixServer(path or tmp_path / "serve.sock", *args))


def _client(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, f"closed after {len(got)} of {n} bytes"
        got += chunk
    return got


# --------------------------------------------------------------------- the three modes

def test_echo_over_unix_socket_with_a_plain_client_counts_what_it_sent(unix_server):
    srv = unix_server("--mode", "echo")
    assert srv.listening["unix"] == srv.path and srv.listening["address"] == srv.path
    assert "port" not in srv.listening
    assert os.path.exists(srv.path)
    sent = 0
    for i in range(3):
        with _client(srv.path) as s:
            payload = b"x" * (1000 + i) + bytes(range(256))
            s.sendall(payload)
            assert _recv_exactly(s, len(payload)) == payload
            sent += len(payload)
    summary = srv.stop()
    assert summary["accepted"] == 3 and summary["closed"] == 3
    assert summary["bytes_in"] == sent and summary["bytes_out"] == sent
    assert summary["errors"] == {}
    assert not os.path.exists(srv.path), "the socket file outlived a clean exit"


def test_framed_over_unix_socket_answers_request_unix(unix_server):
    srv = unix_server("--mode", "framed")
    for _ in range(2):
        out = subprocess.run(socktools_cmd("request", "--unix", srv.path, "search", "morpheus"),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Follow the white rabbit. \U0001f430\n"
    # and a plain client speaking the framed protocol, keep-alive, three requests on one connection
    with _client(srv.path) as s:
        for _ in range(3):
            s.sendall(reference.make_request("search", "ring", keep_alive=True))
            dec = protocol.Decoder()
            while True:
                dec.receive_data(s.recv(65536))
                event = dec.next_event()
                if event is not protocol.NEED_DATA:
                    break
            assert event.value == {"result": "In the caves beneath the Misty Mountains. \U0001f48d"}
    summary = srv.stop()
    assert summary["requests"] == 5 and summary["responses"] == 5
    assert summary["accepted"] == 3 and summary["protocol_errors"] == {}


def test_sink_over_unix_socket_holds_bytes_until_sigusr1(unix_server):
    srv = unix_server("--mode", "sink")
    with _client(srv.path) as s:
        s.sendall(b"y" * 5000)
        srv.drain()                               # SIGUSR1: start reading and discarding
        s.shutdown(socket.SHUT_WR)
        assert s.recv(16) == b""                  # the sink read to our EOF and closed
    summary = srv.stop()
    assert summary["bytes_in"] == 5000 and summary["bytes_out"] == 0


def test_flood_unix_against_serve_unix_with_two_workers_sharing_one_listener(unix_server):
    """Two workers accept from the one socket the supervisor bound: both exist, and together
    they count exactly what flood sent and received."""
    srv = unix_server("--mode", "echo", "--workers", "2")
    assert wait_until(lambda: len(children_of(srv.pid)) == 2)
    out = subprocess.run(socktools_cmd("flood", "--unix", srv.path, "--mode", "echo", "--conns", "4",
                                       "--workers", "1", "--requests", "400", "--size", "32", "--json"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    flood = json.loads(out.stdout)
    assert flood["requests"]["traffic_answered"] == 400
    summary = srv.stop()
    assert summary["bytes_in"] == flood["bytes"]["sent"]
    assert summary["bytes_out"] == flood["bytes"]["received"] == flood["bytes"]["sent"]
    assert summary["accepted"] == flood["connections"]["connected"] == 4
    assert summary["errors"] == {}
    assert not os.path.exists(srv.path)


# --------------------------------------------------------------------- the path's rules

def test_a_stale_socket_of_a_dead_server_is_removed_and_said(unix_server, tmp_path):
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()                                  # the file stays; connecting to it is refused
    with pytest.raises(ConnectionRefusedError):
        _client(str(path))
    srv = unix_server("--mode", "echo", path=path)
    with _client(srv.path) as s:
        s.sendall(b"ok")
        assert _recv_exactly(s, 2) == b"ok"
    srv.stop()
    assert "stale" in srv.stderr and "refused" in srv.stderr, srv.stderr


def test_a_live_server_socket_is_left_alone(tmp_path):
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        out = subprocess.run(socktools_cmd("serve", "--unix", str(path), "--stats-interval", "0"),
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 1, out
        assert "in use" in out.stderr and str(path) in out.stderr
        assert os.path.exists(path)
        with _client(str(path)):                  # still the other server's
            conn, _ = live.accept()
            conn.close()


def test_an_existing_file_that_is_not_a_socket_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    r = CliRunner().invoke(main, ["serve", "--unix", str(path)])
    assert r.exit_code == 2, r.output
    assert "--unix" in r.output and "not a socket" in r.output
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("args,option", [(["--host", "127.0.0.1"], "--host"), (["--port", "9"], "--port")])
def test_unix_with_host_or_port_is_a_usage_error(tmp_path, args, option):
    r = CliRunner().invoke(main, ["serve", "--unix", str(tmp_path / "s.sock"), *args])
    assert r.exit_code == 2, r.output
    assert "--unix" in r.output and option in r.output
    assert not (tmp_path / "s.sock").exists()


def test_a_path_too_long_or_in_a_missing_folder_is_a_usage_error(tmp_path):
    long_path = str(tmp_path / ("x" * 120))
    r = CliRunner().invoke(main, ["serve", "--unix", long_path])
    assert r.exit_code == 2 and "--unix" in r.output and "108" in r.output, r.output
    r = CliRunner().invoke(main, ["serve", "--unix", str(tmp_path / "nowhere" / "s.sock")])
    assert r.exit_code == 2 and "--unix" in r.output and "folder" in r.output, r.output

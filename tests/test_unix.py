"""Unix-domain sockets as targets (``--unix PATH``): request and flood against redis-server and
nginx listening on a Unix socket only, and the bad-input cases (usage errors naming the option).

Counts are the servers' own: redis' INFO commandstats, nginx's access log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd, wait_until
from tests.peers import Nginx, Redis
from tests.threadserver import answer_framed


@pytest.fixture
def redis_unix(tmp_path):
    with Redis(tmp_path, unix=True) as server:
        yield server


@pytest.fixture
def nginx_unix(tmp_path):
    with Nginx(tmp_path, unix=True) as server:
        yield server


def test_request_redis_over_unix_socket_counted_by_redis(redis_unix):
    redis_unix.reset()
    out = subprocess.run(socktools_cmd("request", "--unix", str(redis_unix.unix), "--mode", "redis",
                                       "--command", "PING"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PONG"
    assert "leaves the machine" not in out.stderr
    assert redis_unix.calls().get("ping") == 1


def test_request_json_names_the_path(redis_unix):
    r = CliRunner().invoke(main, ["request", "--unix", str(redis_unix.unix), "--mode", "redis",
                                  "--command", "PING", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["address"] == str(redis_unix.unix)
    assert doc["reply"]["value"] == "PONG"


def test_request_http_over_unix_socket(nginx_unix):
    out = subprocess.run(socktools_cmd("request", "--unix", str(nginx_unix.unix), "--mode", "http",
                                       "--path", "/", "--show-bytes"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 200" in out.stdout
    assert "Host: localhost\\r\\n" in out.stdout          # the trace shows the request's Host header
    assert f"connected to {nginx_unix.unix}" in out.stdout
    assert wait_until(lambda: nginx_unix.log_lines() == 1)


def test_request_framed_over_unix_socket(tmp_path):
    """The framed protocol (the default mode) over a Unix socket: a tiny server thread answers."""
    import threading

    from socktools import protocol
    path = tmp_path / "f.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        listener.settimeout(20)

        def serve():
            conn, _ = listener.accept()
            with conn:
                answer.append(answer_framed(conn))

        answer: list = []
        t = threading.Thread(target=serve)
        t.start()
        r = CliRunner().invoke(main, ["request", "--unix", str(path), "search", "morpheus"])
        t.join(20)
    assert r.exit_code == 0, r.output
    decoder = protocol.Decoder()
    decoder.receive_data(answer[0])
    assert r.output.strip() == decoder.next_event().value["result"]


def _usage(args, env=None):
    r = CliRunner().invoke(main, args, env=env)
    assert r.exit_code == 2, r.output
    return r.output


@pytest.mark.parametrize("command", ["request", "flood"])
def test_unix_with_host_or_port_is_a_usage_error(command, redis_unix):
    for other in (["--host", "127.0.0.1"], ["--port", "6379"]):
        out = _usage([command, "--unix", str(redis_unix.unix), *other, "--mode", "redis"])
        assert "--unix" in out and other[0] in out


@pytest.mark.parametrize("command", ["request", "flood"])
def test_a_path_in_host_points_to_unix(command, tmp_path):
    out = _usage([command, "--host", str(tmp_path / "x.sock"), "--mode", "redis"])
    assert "--host" in out and "--unix" in out


@pytest.mark.parametrize("command", ["request", "flood"])
def test_a_missing_or_non_socket_path_names_unix_and_the_reason(command, tmp_path):
    out = _usage([command, "--unix", str(tmp_path / "nope.sock"), "--mode", "redis"])
    assert "--unix" in out and "No such file or directory" in out
    plain = tmp_path / "plain"
    plain.write_text("x")
    out = _usage([command, "--unix", str(plain), "--mode", "redis"])
    assert "--unix" in out and "not a socket" in out
    out = _usage([command, "--mode", "redis"], env={f"SOCKTOOLS_{command.upper()}_UNIX": str(plain)})
    assert "not a socket" in out


def test_the_variable_reaches_request(redis_unix):
    r = CliRunner().invoke(main, ["request", "--mode", "redis", "--command", "PING"],
                           env={"SOCKTOOLS_REQUEST_UNIX": str(redis_unix.unix)})
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "PONG"


def test_a_path_of_any_bytes_works(tmp_path):
    """File names may be any bytes: a socket whose name is not UTF-8 is reached."""
    name = os.path.join(os.fsencode(tmp_path), b"s\xff.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(name)
        listener.listen()
        r = CliRunner().invoke(main, ["request", "--unix", os.fsdecode(name), "--mode", "raw",
                                      "--send", "x", "--no-reply", "--timeout", "2s"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output


# ----------------------------------------------------------------- flood

def _flood(*args):
    return subprocess.run(socktools_cmd("flood", *args), capture_output=True, text=True, timeout=60)


def test_flood_redis_over_unix_socket_equals_commandstats(redis_unix):
    from tests.test_json_schemas import validate
    redis_unix.reset()
    out = _flood("--unix", str(redis_unix.unix), "--mode", "redis", "--command", "PING",
                 "--conns", "3", "--workers", "1", "--requests", "90", "--json")
    assert out.returncode == 0, out.stderr
    assert "leaves the machine" not in out.stderr
    doc = json.loads(out.stdout)
    validate(doc, "flood")
    assert doc["target"] == str(redis_unix.unix)
    # 90 traffic requests + one confirming PING per connection: redis counted each
    assert doc["requests"]["sent"] == 93 == redis_unix.calls()["ping"]
    assert doc["requests"]["traffic_answered"] == 90


def test_flood_http_over_unix_socket_equals_the_access_log(nginx_unix):
    out = _flood("--unix", str(nginx_unix.unix), "--mode", "http", "--path", "/",
                 "--conns", "2", "--workers", "1", "--requests", "30")
    assert out.returncode == 0, out.stderr
    assert f"flood {nginx_unix.unix}:" in out.stdout and "2xx 30" in out.stdout
    assert wait_until(lambda: nginx_unix.log_lines() == 32)      # 30 + the 2 confirming requests
    assert nginx_unix.statuses() == {"200": 32}


def test_flood_connect_mode_over_unix_socket(tmp_path):
    """--mode connect against an echo server on a Unix socket: every cycle the server accepted."""
    import socketserver
    import threading

    accepted = []

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            accepted.append(1)
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    path = str(tmp_path / "echo.sock")
    server = socketserver.ThreadingUnixStreamServer(path, Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever)
    t.start()
    try:
        out = _flood("--unix", path, "--mode", "connect", "--conns", "2", "--workers", "1",
                     "--requests", "20", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["target"] == path
        assert doc["connections"]["cycles"] == 20
        assert wait_until(lambda: len(accepted) == 20)
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)


def test_the_planner_says_nothing_of_ports_for_a_unix_socket():
    """60,000 connections to one TCP port would overflow one ephemeral port range; to a Unix
    socket they take no port: no port note, no problem, no source spreading."""
    from socktools.flood.config import FloodConfig
    from socktools.flood.limits import plan
    tcp = FloodConfig(conns=60000, port=9, address=("127.0.0.1", 9), family=socket.AF_INET, embedded=False)
    unix = FloodConfig(conns=60000, port=0, address="/x.sock", family=socket.AF_UNIX, embedded=False)
    said = lambda p: " ".join(p.notes + p.problems)                       # noqa: E731
    assert "local port" in said(plan(tcp))                                # the check can fail
    p = plan(unix)
    assert "port" not in said(p) and not p.config.sources and p.port_range is None


@pytest.mark.parametrize("option", [["--source", "127.0.0.2"], ["--cluster", "local:2"]])
def test_flood_unix_with_source_or_cluster_is_a_usage_error(option, redis_unix):
    out = _usage(["flood", "--unix", str(redis_unix.unix), *option, "--mode", "redis"])
    assert option[0] in out and "--unix" in out


# ----------------------------------------------------------------- ping

def _connections(redis) -> int:
    info = redis.command("INFO", "stats")
    return int(next(line.split(":")[1] for line in info.splitlines()
                    if line.startswith("total_connections_received:")))


def test_ping_times_connects_to_a_unix_socket_and_redis_counts_them(redis_unix):
    before = _connections(redis_unix)                  # (this INFO's own connection included)
    r = CliRunner().invoke(main, ["ping", "--unix", str(redis_unix.unix), "--count", "3",
                                  "--interval", "10ms", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    from tests.test_json_schemas import validate
    validate(doc, "ping")
    assert doc["target"]["address"] == str(redis_unix.unix) and doc["target"]["mode"] == "unix"
    assert [p["ok"] for p in doc["probes"]] == [True, True, True]
    assert _connections(redis_unix) == before + 3 + 1   # the 3 probes and the INFO that counts them


@pytest.mark.parametrize("other", [["127.0.0.1"], ["--port", "6379"], ["--icmp"]])
def test_ping_unix_with_a_host_port_or_icmp_is_a_usage_error(other, redis_unix):
    out = _usage(["ping", "--unix", str(redis_unix.unix), *other])
    assert "--unix" in out and ("--icmp" if other == ["--icmp"] else "the whole target") in out


def test_ping_a_path_as_host_points_to_unix(tmp_path):
    out = _usage(["ping", str(tmp_path / "x.sock")])
    assert "HOST" in out and "--unix" in out


def test_ping_a_unix_socket_whose_backlog_is_full_fails_the_probe(tmp_path):
    """A nonblocking connect() to a Unix socket with a full backlog returns EAGAIN and connects
    nothing (unlike TCP's EINPROGRESS): the probe fails, it is not timed as a connect."""
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as filler:
        listener.bind(path)
        listener.listen(0)                       # one pending connection fills it (Linux: > backlog)
        filler.setblocking(False)
        filler.connect(path)
        r = CliRunner().invoke(main, ["ping", "--unix", path, "--count", "1", "--json"])
    assert r.exit_code == 1, r.output
    probe = json.loads(r.output)["probes"][0]
    assert probe["ok"] is False and probe["error"] == "EAGAIN", probe


def test_ping_text_names_the_path_not_a_host(redis_unix):
    r = CliRunner().invoke(main, ["ping", "--unix", str(redis_unix.unix), "--count", "1"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"PING {redis_unix.unix}: Unix connect, 1 probe"
    assert f"--- {redis_unix.unix} unix ping statistics ---" in lines


@pytest.mark.parametrize("args", [["/tmp/x.sock", "6379", "search", "x"], ["--mode", "redis", "/tmp/x.sock", "6379"]])
def test_a_path_in_request_host_words_points_to_unix(args):
    out = _usage(["request", *args])
    assert "HOST" in out and "--unix" in out

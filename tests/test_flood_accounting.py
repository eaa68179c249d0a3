"""flood's counting, against real servers: what a CI gate reads must be exact.

A run whose every reply failed must fail ``errors==0``; requests sent again after a
close are the very requests the close cut off; the confirming round trips are
counted apart from the traffic; reconnects are connections made; a run where
nothing was answered exits 1.  Each server is started by its test on a free
loopback port and stopped by it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading

import pytest

from peers import Nginx, Redis, _Peer, free_port
from socktools.flood.worker import run_worker
from socktools.wire.spec import WireSpec
from conftest import socktools_cmd, wait_until
from test_flood_peers import config, flood_cli

pytestmark = pytest.mark.timeout(90)


flood = flood_cli


@pytest.fixture
def nginx(tmp_path):
    with Nginx(tmp_path) as server:
        yield server


class PyHttpServer(_Peer):
    """``python3 -m http.server``: HTTP/1.0, one request per connection, a log line per request."""

    name = "python3 -m http.server"

    def __init__(self, tmp) -> None:
        self.port = free_port()
        (tmp / "www").mkdir(exist_ok=True)
        self.cmd = [sys.executable, "-u", "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                    "--directory", str(tmp / "www")]

    log = ""

    def paths(self) -> list:
        """The request paths it logged, in order (stops it first)."""
        self.stop()
        return re.findall(r'"GET (\S+) HTTP/1\.1"', self.log)

    def stop(self) -> None:   # and keep its log (stderr) for paths()
        proc = getattr(self, "proc", None)
        if proc is None or proc.stderr.closed:
            return
        if proc.poll() is None:
            proc.terminate()
            proc.wait(5)
        self.log = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()


# ----------------------------------------------------------------- 1. failures fail the gate

def test_every_reply_a_500_fails_errors_and_error_rate_and_reply_failures(nginx):
    out = flood("--port", str(nginx.port), "--mode", "http", "--path", "/fail", "--conns", "2",
                "--workers", "1", "--requests", "50", "--json",
                "--threshold", "errors==0", "--threshold", "error_rate<0.01",
                "--threshold", "reply_failures==0", "--threshold", "failed_replies<1")
    assert out.returncode == 99, out.stderr
    doc = json.loads(out.stdout)
    assert [c["passed"] for c in doc["thresholds"]] == [False, False, False, False]
    assert doc["reply_failures"] == {"http-5xx": {"500": 50}}
    assert doc["failures_total"] == 52     # the 50 traffic replies and the 2 confirming ones
    assert doc["thresholds"][0]["actual"] == 52 and doc["thresholds"][2]["actual"] == 50


def test_every_redis_reply_noauth_fails_errors(tmp_path):
    server = Redis(tmp_path)
    server.cmd += ["--requirepass", "secret"]
    with server:
        out = flood("--port", str(server.port), "--mode", "redis", "--command", "GET k", "--conns", "2",
                    "--workers", "1", "--requests", "30", "--json", "--threshold", "errors==0")
    assert out.returncode == 99, out.stderr
    doc = json.loads(out.stdout)
    assert doc["thresholds"][0]["actual"] == 32 and not doc["thresholds"][0]["passed"]
    assert list(doc["reply_failures"]) == ["server-error"]


def test_the_html_report_shows_reply_failures_with_their_kinds(nginx, tmp_path):
    pytest.importorskip("matplotlib", reason="the HTML report needs matplotlib (pip install matplotlib)")
    page = tmp_path / "r.html"
    out = flood("--port", str(nginx.port), "--mode", "http", "--path", "/", "--path", "/nope",
                "--conns", "2", "--workers", "1", "--requests", "40", "--report", str(page))
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    assert "No failures" not in html
    assert "http-4xx" in html and "404" in html


# ----------------------------------------------------------------- 2. the very requests, again

def test_requests_cut_off_by_a_close_are_sent_again_as_they_were(tmp_path):
    server = PyHttpServer(tmp_path)
    with server:
        stats = run_worker(config(server.port, WireSpec(mode="http", host="x", paths=("/a{seq}", "/b{seq}")),
                                  conns=1, pipeline=2, requests=12, duration=None), 0)
    assert stats.traffic_responses == 12 and stats.resent > 0
    # One connection: seq 0 confirmed it, then 1..12, each handled once by the server (one
    # request per connection: what it never read, it never logged), in order, none skipped.
    assert server.paths() == [("/a%d" if i % 2 == 0 else "/b%d") % i for i in range(13)]


def test_rotating_paths_keep_rotating_across_closes(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hi\n")
    server = PyHttpServer(tmp_path)
    with server:
        stats = run_worker(config(server.port, WireSpec(mode="http", host="x", paths=("/", "/nope")),
                                  conns=1, pipeline=2, requests=40, duration=None), 0)
    # One connection (how a shared quota splits over several is timing): seq 0, "/", confirmed
    # it; then seq 1..40 answered in turn, /nope and / alternately, each close notwithstanding.
    assert stats.traffic_responses == 40 and stats.resent > 0
    assert stats.reply_classes == {"2xx": 20, "4xx": 20}


# ----------------------------------------------------------------- 3. --accept-status adds

def test_accept_status_adds_to_the_default(nginx):
    spec = WireSpec(mode="http", host="x", paths=("/",), accept_status=("404",))
    stats = run_worker(config(nginx.port, spec, requests=20, duration=None), 0)
    assert not stats.reply_failures and stats.traffic_responses == 20


def test_accept_status_can_reject_2xx(nginx):
    spec = WireSpec(mode="http", host="x", paths=("/",), accept_status=("!2xx",))
    stats = run_worker(config(nginx.port, spec, requests=20, duration=None), 0)
    assert stats.reply_failures == {"http-2xx": {"200": 20}}


def test_request_accept_status_404_on_a_200_exits_0(nginx):
    out = subprocess.run(socktools_cmd("request", "--port", str(nginx.port),
                          "--mode", "http", "--path", "/", "--accept-status", "404"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------- 4, 16. the confirming round trips apart

def test_confirming_round_trips_are_counted_apart(nginx):
    spec = WireSpec(mode="http", host="x", paths=("/fail",))
    stats = run_worker(config(nginx.port, spec, conns=4, requests=20, duration=None), 0)
    assert stats.traffic_responses == 20
    assert stats.reply_failures == {"http-5xx": {"500": 20}}
    assert stats.confirm_reply_failures == {"http-5xx": {"500": 4}}
    assert stats.reply_classes == {"5xx": 20} and stats.confirm_reply_classes == {"5xx": 4}


# ----------------------------------------------------------------- 5. reconnects are connections made

class CloseAfter:
    """Answers each request with ``Connection: close``; after ``accepts`` connections it stops
    listening, so flood's next reconnects are refused."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    def __init__(self, accepts: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepts = accepts
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(self.accepts):
            conn, _ = self.sock.accept()
            if i == self.accepts - 1:
                self.sock.close()    # before the last reply: the reconnect after it is refused
            with conn:
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                conn.sendall(self.REPLY)

    def close(self) -> None:
        self.thread.join(10)
        self.sock.close()


def test_reconnects_count_connections_made_not_attempts():
    server = CloseAfter(accepts=6)
    try:
        stats = run_worker(config(server.port, WireSpec(mode="http", host="x", paths=("/",)),
                                  conns=1, requests=100, duration=None), 0)
    finally:
        server.close()
    assert stats.errors          # the refused reconnect is a failure...
    assert stats.reconnects == stats.connected - 1 == 5    # ...but not a reconnect


# ----------------------------------------------------------------- 6. protocol-error names the mode's rules

@pytest.mark.parametrize("mode, args, says", [
    ("redis", ("--command", "PING"), "RESP"),
    ("raw", ("--send", "x", "--reply-bytes", "4"), "reply framing"),
])
def test_protocol_error_is_explained_in_the_modes_own_terms(nginx, mode, args, says):
    out = flood("--port", str(nginx.port), "--mode", mode, *args, "--conns", "1", "--workers", "1",
                "--requests", "5", "--json")
    doc = json.loads(out.stdout)
    meaning = [e["meaning"] for e in doc["errors"] if e["error"] == "protocol-error"]
    assert meaning and says in meaning[0] and "framed protocol" not in meaning[0]


# ----------------------------------------------------------------- issue 21.5: nothing answered

class AnswerOnce:
    """Answers the first line on each connection, then reads and never answers again."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        got = b""
        try:
            while b"\n" not in got:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                got += chunk
            conn.sendall(b"pong\n")
            while conn.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_run_where_nothing_was_answered_exits_1_and_names_the_unanswered():
    server = AnswerOnce()
    try:
        out = flood("--port", str(server.port), "--mode", "line", "--send", "ping", "--conns", "4",
                    "--workers", "1", "--duration", "0.3", "--json")
    finally:
        server.close()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no request was answered" in out.stderr
    doc = json.loads(out.stdout)
    assert doc["requests"]["traffic_answered"] == 0 and doc["requests"]["unanswered"] == 4
    assert [(e["error"], e["count"]) for e in doc["errors"]] == [("no-reply", 4)]


# ----------------------------------------------------------------- issue 21.17: the schedule is kept

def test_the_open_loop_schedule_is_complete_when_the_duration_ends(nginx):
    # A clock at half speed: by the loop's timer the duration is over when only half the schedule
    # was due by the pacer's clock.  Every request scheduled in [start, start + duration) still goes.
    import time
    base = time.perf_counter_ns()
    clock = lambda: base + (time.perf_counter_ns() - base) // 2   # noqa: E731
    spec = WireSpec(mode="http", host="x", paths=("/",))
    stats = run_worker(config(nginx.port, spec, conns=2, rate=1000.0, duration=0.2), 0, clock=clock)
    assert stats.scheduled == 200
    assert stats.traffic_responses + stats.unanswered == 200
    assert wait_until(lambda: nginx.log_lines() == stats.requests, 10)


# ----------------------------------------------------------------- counted where they happen

def test_a_write_only_run_counts_no_answers():
    server = AnswerOnce()      # reads and, with no newline in what it got, never answers
    try:
        out = flood("--port", str(server.port), "--mode", "raw", "--send", "x", "--no-reply", "--conns", "2",
                    "--workers", "1", "--rate", "100", "--duration", "0.2", "--json")
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["requests"]["answered"] == 0 and doc["requests"]["traffic_sent"] == doc["requests"]["sent"] == 20

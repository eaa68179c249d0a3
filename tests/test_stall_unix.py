"""stall --unix: the full-buffer case over a Unix-domain socket, with the queues as Linux
reports them for AF_UNIX (SIOCINQ/SIOCOUTQ, unix_diag's RQLEN), and redis on its unixsocket."""

from __future__ import annotations

import array
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import socktools_cmd
from tests.peers import Redis

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="stall reads Linux's queue ioctls and unix_diag")

SIOCINQ = 0x541B


def _stall(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("stall", *args), capture_output=True, text=True, timeout=60)


class UnixSink:
    """Listens on a Unix socket, accepts one connection and never reads it."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen()
        self.conn = None
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn, _ = self.listener.accept()
        except OSError:
            return
        self.accepted.set()

    def recv_q(self) -> int:
        buf = array.array("i", [0])
        fcntl.ioctl(self.conn.fileno(), SIOCINQ, buf, True)
        return buf[0]

    def close(self) -> None:
        try:    # wakes the accept() of a sink nobody connected to (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        if self.conn is not None:
            self.conn.close()
        self.thread.join(10)


@pytest.fixture
def sink(tmp_path):
    s = UnixSink(tmp_path / "sink.sock")
    yield s
    s.close()


def test_unix_full_buffer_with_the_receivers_queue_checked_by_ioctl(sink):
    r = _stall("--unix", sink.path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sink.accepted.wait(10)
    assert doc["outcome"] == "stalled" and doc["transport"] == "unix" and doc["family"] == "Unix"
    assert doc["fill"]["exception"] == "BlockingIOError" and doc["fill"]["errno_name"] == "EAGAIN"
    snap = doc["snapshot"]
    accepted = doc["settle"]["total_accepted"]
    # unix_diag's RQLEN, the receiver's own SIOCINQ and what send() accepted all agree:
    # AF_UNIX has no send queue, every byte waits in the receiver's queue
    assert snap["receiver"]["found"] and snap["receiver"]["recv_q"] == accepted == sink.recv_q()
    assert snap["arithmetic"]["difference"] == 0
    # our SIOCOUTQ is memory (truesize), not bytes: more than the bytes it stands for
    assert snap["sender"]["send_q"] > accepted
    assert snap["sender"]["tcp_info"] is None and "TCP only" in snap["sender"]["tcp_info_unavailable"]
    roles = {row["role"] for row in snap["table"]}
    assert roles == {"receiver", "sender", "listener"}
    from tests.test_json_schemas import validate
    validate(doc, "stall")


def test_unix_text_report(sink):
    r = _stall("--unix", sink.path)
    assert r.returncode == 0, r.stderr
    assert "SIOCOUTQ on a Unix socket: memory, not bytes" in r.stdout
    assert "a Unix socket has no send queue of its own" in r.stdout
    assert "persist timer probes" not in r.stdout and "zero window" not in r.stdout


def test_unix_redis_closes_at_its_output_buffer_limit(tmp_path):
    with Redis(tmp_path, unix=True) as redis:
        redis.command("CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0")
        r = _stall("--unix", str(redis.unix), "--mode", "redis", "--command", "SET k v", "--timeout", "20s",
                   "--json")
        calls = redis.calls().get("set", 0)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "peer-closed" and doc["answer"]["replies"][0] == "OK"
    assert 0 < calls <= doc["whole_requests"]


@pytest.mark.parametrize("args,words", [
    (["--port", "80"], "--unix names the whole target"),
    (["--drain"], "--drain"),
    (["--rcvbuf", "4k"], "--rcvbuf"),
])
def test_unix_usage_errors(sink, args, words):
    r = _stall("--unix", sink.path, *args)
    assert r.returncode == 2 and words in r.stderr


def test_unix_path_that_is_not_a_socket(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    r = _stall("--unix", str(f))
    assert r.returncode == 2 and "not a socket" in r.stderr


@pytest.fixture
def socat(tmp_path):
    """socat copying a Unix socket to a pipe nobody reads: once the pipe is full it stops
    reading the socket -- another program that reads a little, then stalls."""
    from tests.conftest import wait_until
    from tests.peers import skip_unless
    binary = skip_unless("socat")
    path = tmp_path / "socat.sock"
    proc = subprocess.Popen([binary, f"UNIX-LISTEN:{path}", "STDOUT"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_until(path.exists), "socat did not listen"
        yield proc, str(path)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_unix_against_socat_that_stops_reading_when_its_stdout_is_full(socat):
    proc, path = socat
    r = _stall("--unix", path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "stalled"
    snap = doc["snapshot"]
    assert [pid for pid, name in snap["receiver"]["pids"]] == [proc.pid]
    # socat read what filled its stdout pipe: the peer's reads are the negative difference
    assert snap["arithmetic"]["difference"] < 0
    assert doc["settle"]["total_accepted"] == snap["receiver"]["recv_q"] - snap["arithmetic"]["difference"]


def test_unix_text_against_socat_speaks_of_a_unix_socket(socat):
    _, path = socat
    r = _stall("--unix", path)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "tcp_wmem" not in text and "TCP flow control" not in text
    assert "not set: net.core.wmem_default" in text and "read by the peer" in text
    assert "every byte the peer has not read is there" in text


def test_unix_path_that_is_not_utf8_is_shown_in_json(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/s\xff.sock"
    sink = UnixSink(os.fsdecode(raw))
    try:
        r = subprocess.run(socktools_cmd("stall", "--unix", os.fsdecode(raw), "--json"), capture_output=True,
                           timeout=60)
    finally:
        sink.close()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["config"]["unix"].endswith("/s\\xff.sock") and doc["remote"].endswith("/s\\xff.sock")

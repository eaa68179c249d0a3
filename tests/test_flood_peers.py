"""flood and request against the real servers: redis-server, nginx, memcached.

Each test starts its server (tests/peers.py) on a free loopback port with a
config it writes, and stops it.  The check is always the server's own count:
redis ``INFO commandstats``, nginx's access log, memcached's ``stats``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from peers import NGINX_BIG, Memcached, Nginx, Redis
from socktools.flood.config import FloodConfig
from socktools.flood.runner import run_flood
from socktools.flood.worker import run_worker
from socktools.wire.spec import WireSpec
from conftest import after_second_fin, can_capture, socktools_cmd, wait_until
from threadserver import ThreadServer, read_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def redis(tmp_path):
    with Redis(tmp_path) as server:
        server.reset()
        yield server


@pytest.fixture
def nginx(tmp_path):
    with Nginx(tmp_path) as server:
        yield server


@pytest.fixture
def memcached(tmp_path):
    with Memcached(tmp_path) as server:
        yield server


def config(port, spec, **kw):
    kw.setdefault("conns", 4)
    kw.setdefault("workers", 1)
    kw.setdefault("duration", 20.0)
    return FloodConfig(address=("127.0.0.1", port), port=port, mode=spec.name, wire=spec, **kw)


def flood_cli(*args):
    return subprocess.run(socktools_cmd("flood", *args), capture_output=True,
                          text=True, timeout=60)


# ----------------------------------------------------------------- redis

def test_redis_rotating_commands_over_two_workers_equal_commandstats(redis):
    spec = WireSpec(mode="redis", commands=("SET key:{seq} v", "GET key:{seq}"))
    result = run_flood(config(redis.port, spec, conns=6, workers=2, requests=600, pipeline=4))
    c = result.totals.counters
    assert c["traffic_responses"] == 600 == c["traffic_requests"]
    calls = redis.calls()
    assert calls["set"] + calls["get"] == c["requests"] == 606   # 6 confirming requests included
    assert not result.totals.errors and not result.totals.reply_failures


def test_redis_errors_are_tallied_by_text_and_the_connection_goes_on(redis):
    redis.command("SET", "text", "not a number")
    redis.reset()
    stats = run_worker(config(redis.port, WireSpec(mode="redis", commands=("INCR text",)), requests=40), 0)
    assert stats.requests == 44 == redis.calls()["incr"]
    assert stats.reply_failures == {"server-error": {"ERR value is not an integer or out of range": 40}}
    assert stats.confirm_reply_failures == {"server-error": {"ERR value is not an integer or out of range": 4}}
    assert stats.traffic_responses == 40 and not stats.errors


def test_redis_open_loop_with_pipeline_counts_every_request(redis):
    spec = WireSpec(mode="redis")
    stats = run_worker(config(redis.port, spec, rate=2000, duration=0.3, pipeline=2), 0)
    assert stats.scheduled == stats.traffic_requests + stats.unanswered
    assert stats.requests == redis.calls()["ping"]
    assert stats.traffic_responses == stats.traffic_requests and 0 < stats.traffic_requests <= 600


def test_raw_mode_against_redis_and_a_wrong_reply_shown(redis):
    ok = WireSpec(mode="raw", sends=("PING\\r\\n",), reply_until="\\r\\n", reply_match=r"^\+PONG")
    stats = run_worker(config(redis.port, ok, requests=50, pipeline=3), 0)
    assert stats.requests == 54 == redis.calls()["ping"] and not stats.reply_failures
    wrong = WireSpec(mode="raw", sends=("PING\\r\\n",), reply_until="\\r\\n", reply_match="^-")
    stats = run_worker(config(redis.port, wrong, requests=10), 0)
    assert stats.reply_failures == {"wrong-reply": {"did not match --reply-match": 10}}
    assert stats.confirm_reply_failures == {"wrong-reply": {"did not match --reply-match": 4}}
    assert stats.samples["wrong-reply"] == "+PONG\r\n"


def test_no_reply_streams_at_the_rate_and_redis_sees_each(redis):
    spec = WireSpec(mode="raw", sends=("PING\\r\\n",), no_reply=True)
    stats = run_worker(config(redis.port, spec, rate=1000, duration=0.3), 0)
    assert stats.confirm_requests == 0 and stats.established == 4
    # 300 are due in 0.3 s; a pacer starved of CPU may send fewer, never more.
    assert 0 < stats.requests == stats.scheduled <= 300 and stats.bytes_out == 6 * stats.requests
    assert wait_until(lambda: redis.calls().get("ping") == stats.requests, 10)


def test_cli_redis_json_counts_and_schemas(redis):
    from tests.test_json_schemas import validate
    out = flood_cli("--port", str(redis.port), "--mode", "redis", "--command", "SET a b", "--command", "INCR a",
                    "--conns", "3", "--workers", "1", "--requests", "90", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    validate(doc, "flood")
    calls = redis.calls()
    assert doc["requests"]["sent"] == 93 == calls["set"] + calls["incr"]
    assert doc["config"]["exchange"] == "redis, `SET a b` / `INCR a`"
    # every INCR of a non-number fails: our tally of -ERR equals redis's count of INCR calls
    assert doc["reply_failures"] == {"server-error": {"ERR value is not an integer or out of range":
                                                      calls["incr"]}} and calls["incr"] > 0
    for args in (["--command", "GET a"], ["--command", "NOSUCH"]):
        out = subprocess.run(socktools_cmd("request", "--port", str(redis.port),
                              "--mode", "redis", *args, "--json"), capture_output=True, text=True)
        doc = json.loads(out.stdout)
        validate(doc, "request")
        assert doc["ok"] is (args[1] == "GET a") and doc["mode"] == "redis"


def test_commands_with_spaces_from_the_environment(redis):
    import os
    env = dict(os.environ, SOCKTOOLS_FLOOD_COMMAND="SET a b\nINCR n\n")
    out = subprocess.run(socktools_cmd("flood", "--port", str(redis.port), "--mode",
                          "redis", "--conns", "2", "--workers", "1", "--requests", "40", "--json"),
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    calls = redis.calls()
    assert calls["set"] + calls["incr"] == doc["requests"]["sent"] == 42 and calls["incr"] >= 20
    assert doc["config"]["exchange"] == "redis, `SET a b` / `INCR n`" and doc["errors_total"] == 0


def test_request_redis_info_and_an_error(redis):
    out = subprocess.run(socktools_cmd("request", "--port", str(redis.port),
                          "--mode", "redis", "--command", "INFO server"), capture_output=True, text=True)
    assert out.returncode == 0 and "redis_version:" in out.stdout
    out = subprocess.run(socktools_cmd("request", "--port", str(redis.port),
                          "--mode", "redis", "--command", "NOSUCH"), capture_output=True, text=True)
    assert out.returncode == 1 and "server-error" in out.stderr and "unknown command" in out.stdout


def test_request_raw_show_bytes(redis):
    out = subprocess.run(socktools_cmd("request", "--port", str(redis.port),
                          "--mode", "raw", "--send", "PING\\r\\n", "--reply-until", "\\r\\n", "--show-bytes"),
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert "b'PING\\r\\n'" in out.stdout and "b'+PONG\\r\\n'" in out.stdout


# ----------------------------------------------------------------- nginx

def test_http_paths_rotate_and_equal_the_access_log(nginx):
    spec = WireSpec(mode="http", host=f"127.0.0.1:{nginx.port}", paths=("/", "/big", "/chunked"))
    stats = run_worker(config(nginx.port, spec, requests=90, pipeline=2), 0)
    assert stats.traffic_responses == 90 and not stats.errors and not stats.reply_failures
    assert wait_until(lambda: nginx.log_lines() == stats.requests == 94, 10)
    assert stats.reply_classes == {"2xx": 90} and stats.confirm_reply_classes == {"2xx": 4}
    assert stats.bytes_in > 30 * NGINX_BIG


def test_http_500_is_a_failure_by_status_and_404_can_be_accepted(nginx):
    spec = WireSpec(mode="http", host="x", paths=("/fail", "/"))
    stats = run_worker(config(nginx.port, spec, requests=40), 0)
    assert wait_until(lambda: nginx.log_lines() == stats.requests, 10)
    fails = nginx.statuses()["500"]
    # (every connection's confirming request was /fail: seq 0)
    assert stats.confirm_reply_failures == {"http-5xx": {"500": 4}}
    # (how many traffic requests were /fail depends on how the 40 spread over the connections:
    # flood's tally equals nginx's own)
    assert stats.reply_failures == {"http-5xx": {"500": fails - 4}} and fails - 4 > 0
    spec = WireSpec(mode="http", host="x", paths=("/nothing-here",), accept_status=("404",))
    stats = run_worker(config(nginx.port, spec, requests=10), 0)
    assert not stats.reply_failures and stats.reply_classes == {"4xx": 10}


def test_cli_http_and_request_http(nginx):
    out = flood_cli("--port", str(nginx.port), "--mode", "http", "--path", "/", "--conns", "2",
                    "--workers", "1", "--requests", "30")
    assert out.returncode == 0, out.stderr
    assert "http, GET /" in out.stdout and "2xx 30" in out.stdout     # (not the 2 confirming replies)
    out = subprocess.run(socktools_cmd("request", "--port", str(nginx.port),
                          "--mode", "http", "--path", "/chunked"), capture_output=True, text=True)
    assert out.returncode == 0 and "HTTP 200" in out.stdout and "<p>one</p>two<p>three</p>" in out.stdout


def test_http_connection_close_reconnects_and_counts_equal_the_access_log(nginx):
    spec = WireSpec(mode="http", host="x", paths=("/close",))
    stats = run_worker(config(nginx.port, spec, conns=3, requests=60), 0)
    assert not stats.errors and not stats.protocol_errors and not stats.reply_failures
    assert stats.traffic_responses == 60 and stats.reply_classes == {"2xx": 60}
    # every reply closes its connection: each of the 60 requests goes out on a new one (the
    # first 3 replace the confirmed connections), none opened only to be closed unused
    assert stats.reconnects == 60 and stats.connected == 3 + stats.reconnects
    assert wait_until(lambda: nginx.log_lines() == stats.requests == 63, 10)
    from socktools.flood.stats import decode
    assert decode(stats.histograms["connect"]).get_total_count() == stats.connected


def test_http_connection_close_in_open_loop_and_from_the_cli(nginx):
    from tests.test_json_schemas import validate
    out = flood_cli("--port", str(nginx.port), "--mode", "http", "--path", "/close", "--conns", "2",
                    "--workers", "1", "--rate", "200", "--duration", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    validate(doc, "flood")
    assert doc["errors_total"] == 0 and doc["requests"]["traffic_answered"] == doc["requests"]["traffic_sent"] > 0
    assert doc["connections"]["reconnects"] >= doc["requests"]["traffic_answered"]
    assert wait_until(lambda: nginx.log_lines() == doc["requests"]["sent"], 10)


@pytest.mark.parametrize("extra", [{"requests": 200}, {"rate": 5000.0, "duration": 0.2}])
def test_requests_pipelined_past_an_announced_close_are_sent_again_and_every_one_is_accounted(nginx, extra):
    # nginx answers the first of each pipelined batch and closes: the other three were never
    # answered, and go out again on the next connection (open loop: from their scheduled times).
    spec = WireSpec(mode="http", host="x", paths=("/close",))
    stats = run_worker(config(nginx.port, spec, conns=2, pipeline=4, **extra), 0)
    # (A send the server's reset refused is not in the bytes sent, but goes out again too.)
    assert not stats.errors and not stats.protocol_errors
    assert wait_until(lambda: nginx.log_lines() == stats.responses, 10)
    if "rate" in extra:      # every scheduled request answered, however many went out twice
        # The schedule is complete when the duration ends: R x D requests, however late the loop
        # ran the duration's timer (Session.time_up sends what was still due in the window;
        # 998 was a timer that fired before the pacer's last two sends).  And none unanswered:
        # that would be a no-reply error above.
        assert stats.traffic_responses == stats.scheduled == 1000 and stats.unanswered == 0
    else:                    # four at once on every connection: three of them cut off each time
        assert stats.traffic_requests == stats.traffic_responses + stats.resent + stats.unanswered
        assert stats.resent >= 3 * stats.reconnects // 2 and stats.traffic_responses == 200
        assert stats.unanswered == 0       # those cut off in the drain went out again as well


def test_raw_until_close_against_nginx_http10_counts_equal_the_access_log(nginx):
    # HTTP/1.0 without keep-alive: nginx answers and closes, each request on its own connection.
    spec = WireSpec(mode="raw", sends=("GET / HTTP/1.0\\r\\n\\r\\n",), reply_until_close=True,
                    reply_match="^HTTP/1\\.[01] 200 .*\r\n\r\nok\n$")
    stats = run_worker(config(nginx.port, spec, conns=3, requests=30), 0)
    assert not stats.errors and not stats.protocol_errors and not stats.reply_failures
    assert stats.traffic_responses == 30 and stats.reconnects == 30
    assert wait_until(lambda: nginx.log_lines() == stats.requests == 33, 10)


def one_shot(reply: bytes) -> ThreadServer:
    """A server that reads one request (up to a newline), answers ``reply`` and closes -- the
    shape of many hand-written servers.  Counts what it answered (``answered``)."""

    def handle(conn) -> None:
        with conn:
            if not read_until(conn, b"\n").endswith(b"\n"):
                return                       # the peer closed before a whole request
            conn.sendall(reply)
        with server.lock:
            server.answered += 1

    server = ThreadServer(handle)
    server.answered = 0
    return server


def test_http_bodies_framed_by_the_close_confirm_and_count(tmp_path):
    # No Content-Length, not chunked: the body runs to the close -- the confirming reply too.
    with one_shot(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, no length") as server:
        spec = WireSpec(mode="http", host="x", paths=("/",))
        stats = run_worker(config(server.port, spec, conns=3, requests=20), 0)
        assert not stats.errors and not stats.protocol_errors and not stats.reply_failures
        assert stats.established == 3 and stats.traffic_responses == 20 and stats.reply_classes == {"2xx": 20}
        assert wait_until(lambda: server.answered == stats.requests == 23, 10)
    with one_shot(b"HTTP/1.1 500 Oops\r\n\r\nbroken") as server:   # and a failure is tallied as such
        stats = run_worker(config(server.port, spec, conns=2, requests=5), 0)
        assert not stats.errors and stats.reply_failures == {"http-5xx": {"500": 5}}
        assert stats.confirm_reply_failures == {"http-5xx": {"500": 2}}


def test_raw_until_close_from_the_cli_counts_wrong_replies_and_request_shows_the_reply():
    with one_shot(b"hello\n") as server:
        out = flood_cli("--port", str(server.port), "--mode", "raw", "--send", "hi\\n", "--reply-until-close",
                        "--reply-match", "^bye", "--conns", "2", "--workers", "1", "--requests", "10", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["requests"]["traffic_answered"] == 10 and doc["errors_total"] == 0
        assert doc["reply_failures"] == {"wrong-reply": {"did not match --reply-match": 10}}
        assert doc["confirm_reply_failures"] == {"wrong-reply": {"did not match --reply-match": 2}}
        assert wait_until(lambda: server.answered == 12, 10)
        out = subprocess.run(socktools_cmd("request", "--port", str(server.port), "--mode",
                              "raw", "--send", "hi\\n", "--reply-until-close"), capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "hello" in out.stdout, out.stderr
    bad = flood_cli("--port", "9", "--mode", "raw", "--send", "x", "--reply-until-close", "--pipeline", "2")
    assert bad.returncode == 2 and "--pipeline" in bad.stderr and "Traceback" not in bad.stderr


def test_http_head_has_no_body_whatever_its_content_length(nginx):
    spec = WireSpec(mode="http", host="x", method="HEAD", paths=("/", "/big", "/nothing-here"),
                    accept_status=("2xx", "404"))
    stats = run_worker(config(nginx.port, spec, requests=60, pipeline=2), 0)
    assert stats.traffic_responses == 60 and not stats.errors and not stats.protocol_errors
    assert wait_until(lambda: nginx.log_lines() == stats.requests == 64, 10)
    codes = nginx.statuses()
    assert stats.confirm_reply_classes == {"2xx": 4}     # seq 0, the first path: /
    # Each connection's requests rotate over the three paths from its own seq 0, so how many were
    # /nothing-here depends on how the 60 spread over the connections: what is exact is that
    # flood's tally equals nginx's own.
    assert stats.reply_classes == {"2xx": codes["200"] - 4, "4xx": codes["404"]} and codes["404"] > 0
    assert stats.bytes_in < 64 * 400   # heads only: /big's 'Content-Length' bytes never came
    out = subprocess.run(socktools_cmd("request", "--port", str(nginx.port),
                          "--mode", "http", "--method", "HEAD", "--path", "/big"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HTTP 200" in out.stdout


# ----------------------------------------------------------------- memcached (the plug-in example)

def test_memcached_plugin_counts_equal_memcached_stats(memcached):
    spec = WireSpec(mode="plugin", plugin="socktools.examples.memcached:Memcached",
                    commands=("set key:{conn} hello", "get key:{conn}"))
    result = run_flood(config(memcached.port, spec, conns=4, workers=2, requests=400, pipeline=2))
    c = result.totals.counters
    assert c["traffic_responses"] == 400 and not result.totals.errors
    stats = memcached.stats()
    assert int(stats["cmd_get"]) + int(stats["cmd_set"]) == c["requests"] == 404
    assert int(stats["get_hits"]) > 0


def test_memcached_plugin_from_the_cli_and_request(memcached):
    out = flood_cli("--port", str(memcached.port), "--protocol", "socktools.examples.memcached:Memcached",
                    "--command", "get nothing", "--conns", "2", "--workers", "1", "--requests", "20")
    assert out.returncode == 0, out.stderr
    assert int(memcached.stats()["cmd_get"]) == 22
    out = subprocess.run(socktools_cmd("request", "--port", str(memcached.port),
                          "--protocol", "socktools.examples.memcached:Memcached", "--command", "set k v"),
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "STORED"


# ----------------------------------------------------------------- sniff --decode on a real exchange

@pytest.mark.skipif(not can_capture(), reason="live capture needs root or CAP_NET_RAW (packet sockets)")
@pytest.mark.parametrize("mode", ["redis", "line"])
def test_sniff_decodes_a_real_redis_exchange(redis, mode):
    from tests.livesniff import LiveSniff
    with LiveSniff("--port", str(redis.port), "--decode", mode) as sniff:
        assert "Capturing on" in sniff.first
        if mode == "redis":
            args = ["--mode", "redis", "--command", "SET greeting hello"]
        else:
            args = ["--mode", "line", "--send", "PING", "--eol", "crlf"]
        out = subprocess.run(socktools_cmd("request", "--port", str(redis.port), *args),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        sniff.stop(after_second_fin, timeout=10)
    text = sniff.out
    if mode == "redis":
        assert "request #1: redis" in text and "['SET', 'greeting', 'hello']" in text
        assert "response #1: redis" in text and "content OK" in text
    else:
        assert "request #1: line" in text and "response #1: line" in text and "+PONG" in text


def test_ctrl_c_in_redis_mode_still_reports_and_counts_equal_the_servers(redis):
    import os
    import signal
    proc = subprocess.Popen(socktools_cmd("flood", "--port", str(redis.port),
                             "--mode", "redis", "--conns", "4", "--workers", "2", "--duration", "60s",
                             "--interval", "100ms", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        while not any('"phase": "traffic"' in ln for ln in lines):   # NDJSON rows: into the traffic
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        os.killpg(proc.pid, signal.SIGINT)   # like a terminal: the whole process group
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    doc = json.loads(out.splitlines()[-1])
    assert doc["stopped_early"] and doc["requests"]["sent"] > 4
    assert doc["requests"]["sent"] == redis.calls()["ping"]
    assert "Traceback" not in err


def test_a_bare_plugin_without_the_base_classes_loads_redis(redis):
    """tests/test_wire.py's BarePlugin sends inline ECHO n / PING lines, in turn on each connection."""
    spec = WireSpec(mode="plugin", plugin="tests.test_wire:BarePlugin")
    stats = run_worker(config(redis.port, spec, requests=30, pipeline=2), 0)
    assert stats.traffic_responses == 30 and not stats.errors
    calls = redis.calls()
    assert stats.requests == 34 == calls["ping"] + calls["echo"]

"""flood --churn N: a new connection after every N requests, in every mode, against real servers
(nginx's access log and its $connection numbers; redis' commandstats; exim's log), and its
usage errors."""

from __future__ import annotations

import pytest

from conftest import flood_once, wait_until
from peers import Exim, Nginx, Redis

pytestmark = pytest.mark.timeout(120)


def test_http_churn_1_is_one_request_per_connection_as_nginx_counts_them(tmp_path):
    with Nginx(tmp_path) as nginx:
        doc, out = flood_once("--port", str(nginx.port), "--mode", "http", "--churn", "1", "--conns", "4",
                              "--requests", "400")
        assert out.returncode == 0, out.stderr
        sent = doc["requests"]["sent"]
        assert sent == 404 and doc["requests"]["answered"] == 404
        assert wait_until(lambda: nginx.log_lines() >= sent, 10)
        assert nginx.log_lines() == sent
        c = doc["connections"]
        # one connection per request: the 4 confirmed ones and a new one for each request after
        assert nginx.connections() == sent == c["established"] + c["reconnects"]
        assert doc["churn"] == {"every": 1, "connections": c["reconnects"],
                                "per_second": doc["churn"]["per_second"], "handshakes_per_second": None}
        assert doc["churn"]["per_second"] > 0 and doc["failures_total"] == 0


def test_http_churn_with_a_rate_keeps_the_schedule_and_the_count(tmp_path):
    with Nginx(tmp_path) as nginx:
        doc, out = flood_once("--port", str(nginx.port), "--mode", "http", "--churn", "2", "--conns", "4",
                              "--rate", "400", "--duration", "1s")
        assert out.returncode == 0, out.stderr
        r = doc["requests"]
        assert r["scheduled"] == 400 and r["traffic_sent"] == r["traffic_answered"]
        assert wait_until(lambda: nginx.log_lines() >= r["sent"], 10)
        assert nginx.log_lines() == r["sent"]
        # at most 2 requests on any connection: nginx saw at least half as many connections
        assert nginx.connections() * 2 >= r["sent"]


def test_churn_in_echo_mode_against_flood_s_own_server():
    doc, out = flood_once("--mode", "echo", "--churn", "5", "--conns", "3", "--requests", "300")
    assert out.returncode == 0, out.stderr
    c, r = doc["connections"], doc["requests"]
    assert r["sent"] == r["answered"] == 303
    # 303 requests, at most 5 a connection: 61 connections at least, each but the last full
    assert c["established"] + c["reconnects"] >= 61
    assert doc["server_check"]["equal"]


def test_connect_mode_is_one_echo_per_connection():
    doc, out = flood_once("--mode", "connect", "--conns", "3", "--requests", "60")
    assert out.returncode == 0, out.stderr
    assert doc["connections"]["cycles"] == 60 and doc["requests"]["sent"] == 60


def test_redis_churn_with_rate_logs_in_each_time(tmp_path):
    with Redis(tmp_path, password="pw") as redis:
        redis.reset()
        doc, out = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH pw", "--churn", "4",
                              "--conns", "2", "--rate", "300", "--duration", "1s")
        assert out.returncode == 0, out.stderr
        calls = redis.calls()
    assert calls["ping"] == doc["requests"]["sent"]
    assert doc["requests"]["traffic_sent"] == doc["requests"]["traffic_answered"] == 300
    opening, c = doc["opening"], doc["connections"]
    assert calls["auth"] - 1 == opening["opened"] == c["connected"]     # (calls() logs in too)
    assert opening["refused"] == 0 and doc["failures_total"] == 0


@pytest.mark.parametrize("args,option,words", [
    (["--churn", "0"], "--churn", "churn must be >= 1"),
    (["--mode", "connect", "--churn", "2"], "--churn", "connect mode is churn already"),
    (["--churn", "2", "--pipeline", "4"], "--pipeline", "more than a connection carries"),
    (["--port", "9", "--mode", "raw", "--send", "x", "--no-reply", "--rate", "10", "--churn", "2"], "--churn",
     "no --churn with --no-reply"),
    (["--port", "9", "--mode", "raw", "--send", "x", "--no-reply", "--rate", "10", "--setup", "hi"], "--setup",
     "not with --no-reply"),
    (["--port", "9", "--mode", "raw", "--send", "x", "--no-reply", "--rate", "10", "--greeting"], "--greeting",
     "not with --no-reply"),
    (["--port", "9", "--mode", "line", "--send", "x", "--greeting-match", "(["], "--greeting-match",
     "not a regular expression"),
    (["--setup", "x"], "--setup", "not for --mode echo"),
    (["--port", "9", "--udp", "--churn", "2"], "--churn", "not with --udp"),
    (["--port", "9", "--mode", "http", "--setup", "x"], "--setup", "only for --mode raw and line and redis"),
])
def test_bad_churn_and_opening_options_are_usage_errors_naming_the_option(args, option, words):
    _, out = flood_once(*args, "--requests", "1", json_doc=False)
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and words in out.stderr


# ------------------------------------------------------------------ exim: greets, and churns
def test_exim_greets_and_churn_stays_inside_its_ten_non_mail_commands(tmp_path):
    with Exim(tmp_path) as exim:
        # exim logs each connection as it takes it (before its greeting): the start's probe is in
        assert wait_until(lambda: exim.connections() >= 1, 10)
        probes = exim.connections()
        # 10 NOOPs a connection (the confirming one included): exim's limit of non-mail commands
        doc, out = flood_once("--port", str(exim.port), "--mode", "line", "--greeting-match", "^220 ", "--send",
                              "NOOP", "--eol", "crlf", "--reply-match", "^250 ", "--churn", "10",
                              "--conns", "3", "--requests", "197")
        assert out.returncode == 0, out.stderr
        r, c = doc["requests"], doc["connections"]
        assert r["sent"] == r["answered"] == 200
        assert doc["failures_total"] == 0 and c["lost"] == 0
        assert c["established"] + c["reconnects"] == doc["opening"]["opened"] >= 20
        # and flood's: one per opening, and perhaps a replacement per connection number that
        # the run's end closed as it came up (accepted by exim, closed before its greeting)
        assert wait_until(lambda: exim.connections() - probes >= doc["opening"]["opened"], 10)
        assert doc["opening"]["opened"] <= exim.connections() - probes <= doc["opening"]["opened"] + 3

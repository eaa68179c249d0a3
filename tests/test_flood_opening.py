"""flood's opening conversation against real servers: redis-server with requirepass (TCP and a
Unix socket), vsftpd (a server that greets first).  The check is the server's own count
(redis INFO commandstats; vsftpd's protocol log)."""

from __future__ import annotations

import pytest

from conftest import flood_once, wait_until
from peers import Redis, Vsftpd, greets

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret"


@pytest.fixture
def redis(tmp_path):
    with Redis(tmp_path, password=PASSWORD) as server:
        server.reset()
        yield server


def test_without_the_login_every_reply_is_noauth_and_the_run_says_so(redis):
    _, out = flood_once("--port", str(redis.port), "--mode", "redis", "--conns", "3", "--requests", "200",
                        json_doc=False)
    assert "NOAUTH Authentication required." in out.stdout
    assert "hint: the server wants a password: give --setup 'AUTH PASSWORD'" in out.stdout
    doc, _ = flood_once("--port", str(redis.port), "--mode", "redis", "--conns", "3", "--requests", "200")
    assert doc["reply_failures"] == {"server-error": {"NOAUTH Authentication required.": 200}}
    assert doc["opening"] is None and doc["hints"]


def test_with_setup_auth_the_counts_equal_commandstats(redis):
    doc, out = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                          "--setup", "SELECT 2", "--command", "SET k:{seq} v", "--conns", "5",
                          "--requests", "1000")
    assert out.returncode == 0, out.stderr
    calls = redis.calls()
    assert doc["opening"]["opened"] == 5 and doc["opening"]["refused"] == 0
    # every connection logged in (and selected) once; every request measured is a SET
    assert calls["auth"] - 1 == 5           # (calls() logs in too; the reset zeroed its own)
    assert calls["select"] == 5
    assert calls["set"] == doc["requests"]["sent"] == 1000 + 5
    assert doc["reply_failures_total"] == 0 and doc["confirm_reply_failures_total"] == 0
    assert doc["open_us"]["count"] == 5
    assert doc["latency_us"]["count"] == 1000       # the opening is not in the request latency
    assert doc["connect_us"]["count"] == 5
    # the database the SETs went to is the one SELECT chose
    assert redis.command("SELECT", "2") == "OK"


def test_churn_logs_in_on_every_new_connection(redis):
    doc, out = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                          "--churn", "3", "--conns", "4", "--requests", "300")
    assert out.returncode == 0, out.stderr
    calls = redis.calls()
    c, opening = doc["connections"], doc["opening"]
    assert calls["ping"] == doc["requests"]["sent"] == 300 + 4
    assert doc["requests"]["answered"] == 304 and doc["requests"]["unanswered"] == 0
    # each connection opened carries at most 3 requests: 304 needs at least 102 of them
    assert opening["opened"] >= 102 and c["established"] + c["reconnects"] == opening["opened"]
    assert doc["churn"]["connections"] == c["reconnects"] and doc["churn"]["every"] == 3
    # AUTH reached the server once per opening: the drain waits for those under way as the
    # traffic ends (calls() logs in too)
    assert calls["auth"] - 1 == opening["opened"] == c["connected"]
    assert c["attempted"] == c["established"] + c["failed"] + c["cancelled"]


def test_a_wrong_password_is_tallied_by_the_servers_words(redis):
    doc, out = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH wrong",
                          "--conns", "4", "--requests", "100")
    assert out.returncode == 1
    assert doc["opening"]["refusals"] == {"WRONGPASS invalid username-password pair or user is disabled.": 4}
    assert doc["connections"]["failed"] == 4 and doc["connections"]["established"] == 0
    assert {(e["phase"], e["error"], e["count"]) for e in doc["errors"]} == {("open", "opening-refused", 4)}
    assert "no connection could be established" in out.stderr
    _, run = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH wrong", "--conns", "2",
                        "--requests", "10", json_doc=False)
    text = run.stdout
    assert "2 refused by the server:" in text and "WRONGPASS invalid username-password pair" in text


def test_redis_over_a_unix_socket_with_setup(tmp_path):
    with Redis(tmp_path, unix=True, password=PASSWORD) as server:
        server.reset()
        doc, out = flood_once("--unix", str(server.unix), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                              "--setup", "HELLO 3", "--conns", "3", "--requests", "300")
        assert out.returncode == 0, out.stderr
        calls = server.calls()
    assert calls["hello"] == 3 and calls["auth"] - 1 == 3
    assert calls["ping"] == doc["requests"]["sent"] == 303
    assert doc["reply_failures_total"] == 0


# ------------------------------------------------------------------ vsftpd: the server speaks first
@pytest.fixture
def vsftpd(tmp_path):
    with Vsftpd(tmp_path) as server:
        assert wait_until(lambda: greets(server.port), 10), "vsftpd did not greet"
        yield server


def test_vsftpd_greets_first_and_every_noop_is_answered_530(vsftpd):
    port = vsftpd.port
    doc, out = flood_once("--port", str(port), "--mode", "line", "--greeting", "--greeting-match", "^220",
                          "--send", "NOOP", "--eol", "crlf", "--reply-match", "^530 ", "--conns", "3",
                          "--requests", "150")
    assert out.returncode == 0, out.stderr
    assert doc["opening"]["opened"] == 3 and doc["opening"]["described"] == "greeting"
    assert doc["requests"]["sent"] == doc["requests"]["answered"] == 153
    assert doc["reply_failures_total"] == 0 and doc["confirm_reply_failures_total"] == 0
    assert doc["protocol_errors"] == {}
    # vsftpd's own log: each NOOP it read, and each 530 it said
    assert wait_until(lambda: vsftpd.logged('"NOOP"') >= 153, 10)
    assert vsftpd.logged('"NOOP"') == 153
    assert vsftpd.logged('"530 Please login with USER and PASS."') == 153


def test_without_greeting_the_banner_is_not_taken_for_an_answer(vsftpd):
    port = vsftpd.port
    doc, out = flood_once("--port", str(port), "--mode", "line", "--send", "NOOP", "--eol", "crlf",
                          "--reply-match", "^530 ", "--conns", "2", "--requests", "20")
    # the 220 banner comes back as the "reply" to the first NOOP: flood names it wrong-reply
    assert doc["confirm_reply_failures"].get("wrong-reply")


def test_a_greeting_that_does_not_match_refuses_with_the_greeting(vsftpd):
    port = vsftpd.port
    doc, out = flood_once("--port", str(port), "--mode", "line", "--greeting-match", "^230", "--send", "NOOP",
                          "--conns", "2", "--requests", "10")
    assert out.returncode == 1
    [(words, n)] = doc["opening"]["refusals"].items()
    assert n == 2 and words.startswith("220 (vsFTPd")


@pytest.mark.parametrize("stages", ["0.5s:4,0.5s:4", "0.5s:4:400,0.5s:4:400"], ids=["closed", "rate"])
def test_the_ramp_s_connections_log_in_as_they_join(redis, stages):
    doc, out = flood_once("--port", str(redis.port), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                          "--stages", stages)
    assert out.returncode == 0, out.stderr
    calls = redis.calls()
    c = doc["connections"]
    # every connection of the ramp went through its opening before its first request
    assert doc["opening"]["opened"] == c["established"] == 4 and doc["opening"]["refused"] == 0
    assert calls["auth"] - 1 == 4
    assert calls["ping"] == doc["requests"]["sent"] and doc["failures_total"] == 0
    if doc["requests"]["scheduled"] is not None:   # the pacer's requests waited for the login
        assert doc["requests"]["traffic_sent"] == doc["requests"]["traffic_answered"]
        assert doc["requests"]["traffic_sent"] + doc["requests"]["late"] == doc["requests"]["scheduled"]

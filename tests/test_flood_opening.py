"""flood's opening conversation against real servers: redis-server with requirepass (TCP and a
Unix socket), vsftpd (a server that greets first).  The check is the server's own count
(redis INFO commandstats; vsftpd's protocol log)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import socktools_cmd, wait_until
from peers import greets, Redis, free_port, skip_unless

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret"


def flood(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", "--workers", "1", *args), capture_output=True, text=True,
                          timeout=90)


def flood_json(*args: str) -> tuple:
    out = flood(*args, "--json")
    assert out.stdout, out.stderr
    return json.loads(out.stdout), out


@pytest.fixture
def redis(tmp_path):
    with Redis(tmp_path, password=PASSWORD) as server:
        server.reset()
        yield server


def test_without_the_login_every_reply_is_noauth_and_the_run_says_so(redis):
    out = flood("--port", str(redis.port), "--mode", "redis", "--conns", "3", "--requests", "200")
    assert "NOAUTH Authentication required." in out.stdout
    assert "hint: the server wants a password: give --setup 'AUTH PASSWORD'" in out.stdout
    doc, _ = flood_json("--port", str(redis.port), "--mode", "redis", "--conns", "3", "--requests", "200")
    assert doc["reply_failures"] == {"server-error": {"NOAUTH Authentication required.": 200}}
    assert doc["opening"] is None and doc["hints"]


def test_with_setup_auth_the_counts_equal_commandstats(redis):
    doc, out = flood_json("--port", str(redis.port), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
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
    doc, out = flood_json("--port", str(redis.port), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                          "--churn", "3", "--conns", "4", "--requests", "300")
    assert out.returncode == 0, out.stderr
    calls = redis.calls()
    c, opening = doc["connections"], doc["opening"]
    assert calls["ping"] == doc["requests"]["sent"] == 300 + 4
    assert doc["requests"]["answered"] == 304 and doc["requests"]["unanswered"] == 0
    # each connection opened carries at most 3 requests: 304 needs at least 102 of them
    assert opening["opened"] >= 102 and c["established"] + c["reconnects"] == opening["opened"]
    assert doc["churn"]["connections"] == c["reconnects"] and doc["churn"]["every"] == 3
    # AUTH reached the server once per opening done -- and perhaps on a replacement the run's
    # end closed before its answer came back (made, but never through its opening)
    logins = calls["auth"] - 1
    assert opening["opened"] <= logins <= c["connected"]
    assert c["attempted"] == c["established"] + c["failed"] + c["cancelled"]


def test_a_wrong_password_is_tallied_by_the_servers_words(redis):
    doc, out = flood_json("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH wrong",
                          "--conns", "4", "--requests", "100")
    assert out.returncode == 1
    assert doc["opening"]["refusals"] == {"WRONGPASS invalid username-password pair or user is disabled.": 4}
    assert doc["connections"]["failed"] == 4 and doc["connections"]["established"] == 0
    assert {(e["phase"], e["error"], e["count"]) for e in doc["errors"]} == {("open", "opening-refused", 4)}
    assert "no connection could be established" in out.stderr
    text = flood("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH wrong", "--conns", "2",
                 "--requests", "10").stdout
    assert "2 refused by the server:" in text and "WRONGPASS invalid username-password pair" in text


def test_redis_over_a_unix_socket_with_setup(tmp_path):
    with Redis(tmp_path, unix=True, password=PASSWORD) as server:
        server.reset()
        doc, out = flood_json("--unix", str(server.unix), "--mode", "redis", "--setup", f"AUTH {PASSWORD}",
                              "--setup", "HELLO 3", "--conns", "3", "--requests", "300")
        assert out.returncode == 0, out.stderr
        calls = server.calls()
    assert calls["hello"] == 3 and calls["auth"] - 1 == 3
    assert calls["ping"] == doc["requests"]["sent"] == 303
    assert doc["reply_failures_total"] == 0


# ------------------------------------------------------------------ vsftpd: the server speaks first
VSFTPD_CONF = """listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=/var/run/vsftpd/empty
local_enable=NO
seccomp_sandbox=NO
max_clients=2000
max_per_ip=2000
secure_chroot_dir=/var/run/vsftpd/empty
log_ftp_protocol=YES
xferlog_enable=YES
xferlog_std_format=NO
vsftpd_log_file={log}
"""


@pytest.fixture
def vsftpd(tmp_path):
    binary = skip_unless("vsftpd")
    if os.geteuid() != 0:
        pytest.skip("vsftpd runs as root here (it changes to its secure_chroot_dir)")
    os.makedirs("/var/run/vsftpd/empty", exist_ok=True)
    port = free_port()
    log = tmp_path / "vsftpd.log"
    conf = tmp_path / "vsftpd.conf"
    conf.write_text(VSFTPD_CONF.format(port=port, log=log))
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: greets(port), 10), "vsftpd did not start"
        yield port, log
    finally:
        proc.terminate()
        proc.wait(10)


def _ftp_log(log: Path, what: str) -> int:
    try:
        return sum(1 for line in log.read_text(errors="replace").splitlines() if what in line)
    except FileNotFoundError:
        return 0


def test_vsftpd_greets_first_and_every_noop_is_answered_530(vsftpd):
    port, log = vsftpd
    doc, out = flood_json("--port", str(port), "--mode", "line", "--greeting", "--greeting-match", "^220",
                          "--send", "NOOP", "--eol", "crlf", "--reply-match", "^530 ", "--conns", "3",
                          "--requests", "150")
    assert out.returncode == 0, out.stderr
    assert doc["opening"]["opened"] == 3 and doc["opening"]["described"] == "greeting"
    assert doc["requests"]["sent"] == doc["requests"]["answered"] == 153
    assert doc["reply_failures_total"] == 0 and doc["confirm_reply_failures_total"] == 0
    assert doc["protocol_errors"] == {}
    # vsftpd's own log: each NOOP it read, and each 530 it said
    assert wait_until(lambda: _ftp_log(log, '"NOOP"') >= 153, 10)
    assert _ftp_log(log, '"NOOP"') == 153
    assert _ftp_log(log, '"530 Please login with USER and PASS."') == 153


def test_without_greeting_the_banner_is_not_taken_for_an_answer(vsftpd):
    port, _ = vsftpd
    doc, out = flood_json("--port", str(port), "--mode", "line", "--send", "NOOP", "--eol", "crlf",
                          "--reply-match", "^530 ", "--conns", "2", "--requests", "20")
    # the 220 banner comes back as the "reply" to the first NOOP: flood names it wrong-reply
    assert doc["confirm_reply_failures"].get("wrong-reply")


def test_a_greeting_that_does_not_match_refuses_with_the_greeting(vsftpd):
    port, _ = vsftpd
    doc, out = flood_json("--port", str(port), "--mode", "line", "--greeting-match", "^230", "--send", "NOOP",
                          "--conns", "2", "--requests", "10")
    assert out.returncode == 1
    [(words, n)] = doc["opening"]["refusals"].items()
    assert n == 2 and words.startswith("220 (vsFTPd")

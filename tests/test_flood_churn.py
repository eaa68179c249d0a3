"""flood --churn N: a new connection after every N requests, in every mode, against real servers
(nginx's access log and its $connection numbers; redis' commandstats; exim's log), and its
usage errors."""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import socktools_cmd, wait_until
from peers import greets, Nginx, Redis, free_port, skip_unless

pytestmark = pytest.mark.timeout(120)


def flood(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", "--workers", "1", *args), capture_output=True, text=True,
                          timeout=90)


def flood_json(*args: str) -> tuple:
    out = flood(*args, "--json")
    assert out.stdout, out.stderr
    return json.loads(out.stdout), out


def test_http_churn_1_is_one_request_per_connection_as_nginx_counts_them(tmp_path):
    with Nginx(tmp_path) as nginx:
        doc, out = flood_json("--port", str(nginx.port), "--mode", "http", "--churn", "1", "--conns", "4",
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
                                "per_second": doc["churn"]["per_second"]}
        assert doc["churn"]["per_second"] > 0 and doc["failures_total"] == 0


def test_http_churn_with_a_rate_keeps_the_schedule_and_the_count(tmp_path):
    with Nginx(tmp_path) as nginx:
        doc, out = flood_json("--port", str(nginx.port), "--mode", "http", "--churn", "2", "--conns", "4",
                              "--rate", "400", "--duration", "1s")
        assert out.returncode == 0, out.stderr
        r = doc["requests"]
        assert r["scheduled"] == 400 and r["traffic_sent"] == r["traffic_answered"]
        assert wait_until(lambda: nginx.log_lines() >= r["sent"], 10)
        assert nginx.log_lines() == r["sent"]
        # at most 2 requests on any connection: nginx saw at least half as many connections
        assert nginx.connections() * 2 >= r["sent"]


def test_churn_in_echo_mode_against_flood_s_own_server():
    doc, out = flood_json("--mode", "echo", "--churn", "5", "--conns", "3", "--requests", "300")
    assert out.returncode == 0, out.stderr
    c, r = doc["connections"], doc["requests"]
    assert r["sent"] == r["answered"] == 303
    # 303 requests, at most 5 a connection: 61 connections at least, each but the last full
    assert c["established"] + c["reconnects"] >= 61
    assert doc["server_check"]["equal"]


def test_connect_mode_is_one_echo_per_connection():
    doc, out = flood_json("--mode", "connect", "--conns", "3", "--requests", "60")
    assert out.returncode == 0, out.stderr
    assert doc["connections"]["cycles"] == 60 and doc["requests"]["sent"] == 60


def test_redis_churn_with_rate_logs_in_each_time(tmp_path):
    with Redis(tmp_path, password="pw") as redis:
        redis.reset()
        doc, out = flood_json("--port", str(redis.port), "--mode", "redis", "--setup", "AUTH pw", "--churn", "4",
                              "--conns", "2", "--rate", "300", "--duration", "1s")
        assert out.returncode == 0, out.stderr
        calls = redis.calls()
    assert calls["ping"] == doc["requests"]["sent"]
    assert doc["requests"]["traffic_sent"] == doc["requests"]["traffic_answered"] == 300
    opening, c = doc["opening"], doc["connections"]
    assert opening["opened"] <= calls["auth"] - 1 <= c["connected"]
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
    (["--port", "9", "--mode", "http", "--setup", "x"], "--setup", "only for --mode raw and line and redis"),
])
def test_bad_churn_and_opening_options_are_usage_errors_naming_the_option(args, option, words):
    out = flood(*args, "--requests", "1")
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and words in out.stderr


# ------------------------------------------------------------------ exim: greets, and churns
EXIM_CONF = """primary_hostname = test.invalid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
smtp_accept_max = 500
smtp_accept_max_per_host = 500
spool_directory = {tmp}/spool
log_file_path = {tmp}/log/%slog
pid_file_path = {tmp}/exim.pid
log_selector = +smtp_connection
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  deny
"""


def test_exim_greets_and_churn_stays_inside_its_ten_non_mail_commands(tmp_path):
    binary = skip_unless("exim4")
    if os.geteuid() != 0:
        pytest.skip("exim's daemon runs as root here (it hands its spool to Debian-exim)")
    try:
        exim_user = pwd.getpwnam("Debian-exim")
    except KeyError:
        pytest.skip("no Debian-exim user (apt-get install exim4-daemon-light)")
    port = free_port()
    # exim's processes run as Debian-exim: pytest's tmp_path (mode 700 above it) is out of their
    # reach, so the spool and the log go in a directory of their own that they can enter
    home = pathlib.Path(tempfile.mkdtemp(prefix="socktools-exim-"))
    home.chmod(0o755)
    for d in ("spool", "log"):
        (home / d).mkdir()
        os.chown(home / d, exim_user.pw_uid, exim_user.pw_gid)
    conf = tmp_path / "exim.conf"
    conf.write_text(EXIM_CONF.format(port=port, tmp=home))
    proc = subprocess.Popen([binary, "-bdf", "-C", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: greets(port), 15), "exim did not start"

        def logged():
            try:
                return (home / "log" / "mainlog").read_text().count("(TCP/IP connection count")
            except FileNotFoundError:
                return 0
        # exim logs each connection as it takes it (before its greeting): the probes' are in
        assert wait_until(lambda: logged() >= 1, 10)
        probes = logged()
        # 10 NOOPs a connection (the confirming one included): exim's limit of non-mail commands
        doc, out = flood_json("--port", str(port), "--mode", "line", "--greeting-match", "^220 ", "--send",
                              "NOOP", "--eol", "crlf", "--reply-match", "^250 ", "--churn", "10",
                              "--conns", "3", "--requests", "197")
        assert out.returncode == 0, out.stderr
        r, c = doc["requests"], doc["connections"]
        assert r["sent"] == r["answered"] == 200
        assert doc["failures_total"] == 0 and c["lost"] == 0
        assert c["established"] + c["reconnects"] == doc["opening"]["opened"] >= 20
        # and flood's (one perhaps closed by the run's end before its greeting was read)
        assert wait_until(lambda: logged() - probes >= doc["opening"]["opened"], 10)
        assert doc["opening"]["opened"] <= logged() - probes <= c["connected"]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)

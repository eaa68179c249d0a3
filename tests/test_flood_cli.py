"""`socktools flood` as a user runs it: options, output, JSON, NDJSON, Ctrl-C, EMFILE."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.core.embedded import EmbeddedServer
from tests.conftest import socktools_cmd

pytestmark = pytest.mark.timeout(90)


def run_cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", *args), capture_output=True, text=True,
                          timeout=timeout, **kw)


# ----------------------------------------------------------------- options

def test_help_shows_a_runnable_example():
    result = CliRunner().invoke(main, ["flood", "--help"])
    assert result.exit_code == 0
    assert "socktools flood --conns 500" in result.output
    for option in ("--conns", "--workers", "--mode", "--rate", "--connect-rate", "--source",
                   "--interval", "--json", "--requests", "--duration", "--connect-timeout"):
        assert option in result.output


@pytest.mark.parametrize("args, names", [
    (["--mode", "connect", "--rate", "10"], "--rate"),
    (["--source", "127.0.0.9-127.0.0.2"], "--source"),
    (["--source", "::1"], "--source"),
    (["--duration", "0"], "--duration"),
    (["--conns", "0"], "--conns"),
    (["--rate", "-5"], "--rate"),
    (["--mode", "ping"], "--mode"),
    (["--port", "9", "--server-workers", "2"], "--server-workers"),
])
def test_bad_options_are_usage_errors_naming_the_option(args, names):
    result = CliRunner().invoke(main, ["flood", *args])
    assert result.exit_code == 2
    assert names in result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------- real runs

def test_out_of_the_box_run_prints_a_report_against_its_own_server():
    proc = run_cli("--conns", "30", "--duration", "0.5s")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "30 of 30 established" in out and "failures     none" in out
    assert "p99" in out and "round trip" in out
    assert ": equal" in out  # bytes sent by flood == bytes received by the server
    assert "flood: started `socktools serve --mode echo" in proc.stderr


def test_json_against_a_framed_server_the_user_started(start_server):
    srv = start_server("--mode", "framed", json_events=True)
    proc = run_cli("--port", str(srv.port), "--mode", "framed", "--conns", "8", "--workers", "2",
                   "--requests", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["event"] == "result" and doc["mode"] == "framed"
    assert doc["target"] == f"127.0.0.1:{srv.port}" and doc["server"] is None
    assert doc["connections"]["established"] == 8
    assert doc["requests"]["traffic_sent"] == 300 == doc["requests"]["traffic_answered"]
    assert doc["errors"] == [] and doc["errors_total"] == 0
    assert doc["latency_us"]["count"] == 300 and doc["latency_us"]["hdr"].startswith("HISTF")
    srv.stop()
    assert srv.final_summary()["requests"] == doc["requests"]["sent"] == 308  # exact, same run


def test_interval_prints_ndjson_then_the_result():
    proc = run_cli("--conns", "4", "--duration", "1s", "--interval", "0.25s", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "result"
    ticks = lines[:-1]
    assert len(ticks) >= 3 and all(t["event"] == "interval" for t in ticks)
    assert {"t", "phase", "open", "requests", "rps", "latency", "errors"} <= set(ticks[0])


def test_refused_port_reports_econnrefused_and_fails():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        proc = run_cli("--port", str(s.getsockname()[1]), "--conns", "3", "--duration", "0.2s")
    finally:
        s.close()
    assert proc.returncode == 1
    assert "ECONNREFUSED" in proc.stdout and "connection refused" in proc.stdout
    assert "fix: start the server" in proc.stdout


def test_fd_limit_too_low_is_said_before_and_emfile_tallied_with_its_fix():
    """A run that cannot fit a lowered fd limit: warned up front, EMFILE in the tally, with the hint."""
    limit = 48

    def lower_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with EmbeddedServer("echo") as srv:  # the server keeps the normal limit
        proc = run_cli("--port", str(srv.address[1]), "--conns", "80", "--workers", "1",
                       "--duration", "0.3s", "--json", preexec_fn=lower_limit)
    assert proc.returncode == 0, proc.stderr  # some connections worked: a result, not an error
    assert "will not fit" in proc.stderr and "EMFILE" in proc.stderr
    doc = json.loads(proc.stdout)
    emfile = [e for e in doc["errors"] if e["error"] == "EMFILE"]
    assert emfile and emfile[0]["phase"] == "socket"
    assert "ulimit -n" in emfile[0]["fix"] and "file-descriptor limit" in emfile[0]["meaning"]
    established = doc["connections"]["established"]
    assert 0 < established < 80
    assert established + emfile[0]["count"] == 80
    assert doc["limits"]["fd_limit"] == limit and doc["limits"]["problems"]


def test_ctrl_c_stops_early_and_still_prints_the_results():
    proc = subprocess.Popen(socktools_cmd("flood", "--conns", "10", "--duration", "60s",
                                          "--interval", "0.1s"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        seen = []
        # An interval row of the traffic phase: requests are flowing (the rows go to stdout).
        while proc.poll() is None and not (seen and " traffic " in seen[-1]):
            seen.append(proc.stdout.readline())
        os.killpg(proc.pid, signal.SIGINT)  # like a terminal: the whole process group
        out, err = proc.communicate(timeout=30)
        out = "".join(seen) + out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped early (Ctrl-C)" in out
    assert "10 of 10 established" in out and "round trip" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

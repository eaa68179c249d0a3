"""Careless-user input at the CLI (issue 12): exposure warnings, stdout errors, advice, explain.

Network rule: nothing here sends to a non-loopback address.  The warning tests
use 192.0.2.1 (TEST-NET-1, RFC 5737) with the engine replaced, so the command
stops before any socket is opened.
"""

from __future__ import annotations

import pytest

from tests.conftest import socktools_cmd
from click.testing import CliRunner

from socktools import addresses
from socktools.cli import main

TEST_NET = "192.0.2.1"  # documentation address: never routed, and never contacted here


@pytest.fixture(autouse=True)
def _restore_socktools_logger():
    """Commands run in-process call setup_logging (propagate=False on the "socktools" logger);
    put it back so later tests' caplog still sees socktools' records."""
    import logging
    log = logging.getLogger("socktools")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


# ------------------------------------------------------------- wildcard and loopback, parsed

@pytest.mark.parametrize("host", ["0", "0x0", "0.0", "0.0.0.0", "::", "::0", "[::0]",
                                  "0:0:0:0:0:0:0:0", "", "::ffff:0.0.0.0"])
def test_every_spelling_of_the_wildcard_is_a_wildcard(host):
    assert addresses.is_wildcard(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "::1", "[::1]", "localhost", "0177.0.0.1",
                                  "::ffff:127.0.0.1", TEST_NET, "10.0.0.1", "fe80::1"])
def test_other_addresses_are_not_wildcards(host):
    assert not addresses.is_wildcard(host)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.1", True), ("0x7f000001", True),
                                            ("::1", True), ("[::1]", True), ("localhost", True),
                                            ("::ffff:127.0.0.1", True), (("127.0.0.5", 80), True),
                                            (TEST_NET, False), (("::2", 80, 0, 0), False)])
def test_loopback_is_parsed_after_resolution(host, loopback):
    assert addresses.is_loopback(host) is loopback


def test_target_warning_only_for_non_loopback():
    assert addresses.target_warning("flood", ("127.0.0.1", 9)) is None
    assert addresses.target_warning("flood", ("0.0.0.0", 9)) is None  # connects to this host
    line = addresses.target_warning("flood", (TEST_NET, 9))
    assert line.startswith("socktools flood: warning: 192.0.2.1:9 is not a loopback address")
    assert "\n" not in line


class Stop(Exception):
    pass


@pytest.mark.parametrize("host", ["0", "0x0", "::0", "0:0:0:0:0:0:0:0"])
def test_serve_warns_for_every_wildcard_spelling(monkeypatch, host):
    import socktools.serve.supervisor as sup

    def fake_serve(config, on_event):
        raise sup.ServeError("not started in this test")

    monkeypatch.setattr(sup, "serve", fake_serve)
    result = CliRunner().invoke(main, ["serve", "--host", host, "--port", "0"])
    assert f"--host {host} binds every interface" in result.output
    assert result.exit_code == 1


def test_flood_warns_for_a_non_loopback_target(monkeypatch):
    import socktools.flood.runner as runner

    seen = {}

    def fake_run_flood(config, **kw):
        seen["config"] = config
        raise runner.FloodError("engine not run in this test")

    monkeypatch.setattr(runner, "run_flood", fake_run_flood)
    result = CliRunner().invoke(main, ["flood", "--host", TEST_NET, "--port", "9", "--conns", "1"])
    warning = [l for l in result.output.splitlines() if "warning" in l]
    assert warning == ["socktools flood: warning: 192.0.2.1:9 is not a loopback address: this traffic "
                       "leaves the machine (make sure you may load that host)"]
    assert seen["config"].address[0] == TEST_NET  # a warning, not a refusal
    quiet = CliRunner().invoke(main, ["flood", "--host", "127.0.0.1", "--port", "9", "--conns", "1"])
    assert "warning" not in quiet.output


def test_request_warns_for_a_non_loopback_target(monkeypatch):
    import socktools.request.client as client

    def fake_request(host, port, action, value, timeout):
        raise client.RequestError("connect", ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(client, "request", fake_request)
    result = CliRunner().invoke(main, ["request", TEST_NET, "9", "search", "x"])
    assert result.exit_code == 1, result.output
    assert "socktools request: warning: 192.0.2.1 is not a loopback address" in result.output


def test_ping_warns_for_a_non_loopback_target(monkeypatch):
    import socktools.ping.probe as probe

    monkeypatch.setattr(probe, "probes", lambda config, target: iter(()))
    result = CliRunner().invoke(main, ["ping", TEST_NET, "--port", "9", "--count", "1"])
    assert "socktools ping: warning: 192.0.2.1:9 is not a loopback address" in result.output


def test_stall_warns_for_a_non_loopback_target(monkeypatch):
    import socktools.stall.steps as steps

    def fake_run_stall(config):
        raise steps.StallError("not run in this test")

    monkeypatch.setattr(steps, "run_stall", fake_run_stall)
    result = CliRunner().invoke(main, ["stall", "--host", TEST_NET, "--port", "9"])
    assert "socktools stall: warning: 192.0.2.1 is not a loopback address" in result.output


# ------------------------------------------------------------- stdout errors (item 8)

import os  # noqa: E402
import subprocess  # noqa: E402

OUTPUT_COMMANDS = [["--help"], ["explain", "--list"], ["explain", "ECONNRESET", "--json"], ["sockets"],
                   ["serve", "--help"]]


def _socktools(args, stdout):
    return subprocess.run(socktools_cmd(*args), stdout=stdout,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_full_disk_on_stdout_is_one_line_and_exit_1(args):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = _socktools(args, full)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err == "socktools: cannot write output: ENOSPC (errno 28) - No space left on device\n"


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_closed_pipe_on_stdout_ends_quietly_with_141(args):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before we write: like `| head -c1` after its byte
    try:
        proc = _socktools(args, w)
    finally:
        os.close(w)
    err = proc.stderr.decode()
    # A reader that has what it wanted (`| head`) is a normal end: quiet, 128 + SIGPIPE, as ss and grep.
    assert proc.returncode == 141, err
    assert err == ""


# ------------------------------------------------------------- explain reads Python's words (item 9)

@pytest.mark.parametrize("typed, name", [
    ("TimeoutError: timed out", "timeout"), ("timed out", "timeout"), ("socket.timeout: timed out", "timeout"),
    ("Connection refused", "ECONNREFUSED"), ("[Errno 111] Connection refused", "ECONNREFUSED"),
    ("ConnectionRefusedError: [Errno 111] Connection refused", "ECONNREFUSED"),
    ("ConnectionResetError: Connection reset by peer", "ECONNRESET"), ("Broken pipe", "EPIPE"),
    ("OSError: [Errno 99] Cannot assign requested address", "EADDRNOTAVAIL"),
    ("Connection timed out", "ETIMEDOUT"),
])
def test_explain_understands_pythons_messages(typed, name):
    result = run("explain", typed, "--json")
    assert result.exit_code == 0, result.output
    import json
    assert json.loads(result.output)["name"] == name


@pytest.mark.parametrize("typed, near", [("ECONREFUSED", "ECONNREFUSED"), ("conection refused", "ECONNREFUSED"),
                                         ("EADDRINUS", "EADDRINUSE"), ("time out", "timeout")])
def test_explain_suggests_the_nearest_entry(typed, near):
    result = CliRunner().invoke(main, ["explain", typed])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line
    assert f"did you mean {near}" in line and "socktools explain --list" in line

"""flood against hostile or hopeless situations (issue 12): exit codes, advice, the plan.

Loopback only; every server a test starts, it stops.
"""

from __future__ import annotations

import subprocess
import itertools

import pytest

from socktools import errors
from tests.threadserver import ThreadServer

pytestmark = pytest.mark.timeout(60)


def echo_once(conn) -> None:
    """Answers the first chunk of each connection, then closes it: every confirmed connection is lost."""
    with conn:
        conn.sendall(conn.recv(65536))


def flood(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", *args), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


def test_every_connection_lost_exits_1_and_does_not_advise_keep_alive():
    server = ThreadServer(echo_once)
    try:
        proc = flood("--port", str(server.port), "--conns", "4", "--workers", "1", "--duration", "1s")
    finally:
        server.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "flood: every connection was lost (4 of 4" in proc.stderr
    assert "keep-alive" not in proc.stdout + proc.stderr
    assert "4 of 4 established" in proc.stdout


def test_flood_advice_names_only_flood_options():
    for key in (errors.TIMEOUT, errors.PROTOCOL_ERROR, errors.PEER_CLOSED, "ETIMEDOUT"):
        fix = errors.lookup(key, command="flood").fix
        assert "--timeout" not in fix.replace("--connect-timeout", "")
        assert "--show-bytes" not in fix
        assert "keep-alive" not in fix
    assert "--connect-timeout" in errors.lookup(errors.TIMEOUT, command="flood").fix
    assert "--timeout" in errors.lookup(errors.TIMEOUT, command="request").fix
    assert "--show-bytes" in errors.lookup(errors.PROTOCOL_ERROR, command="request").fix


def test_eaddrnotavail_on_bind_says_the_address_is_not_here():
    exc = OSError(99, "Cannot assign requested address")
    line = errors.one_line(exc, "bind 10.99.99.1", during="bind")
    assert "that address is not on this machine" in line
    assert "ephemeral" not in line and "--source" not in line
    assert "no free local port" in errors.one_line(exc, "connect")  # connect() keeps its meaning


def test_source_not_on_this_machine_is_a_usage_error_before_any_connection():
    # 192.0.2.1 (TEST-NET-1) is not on this machine: bind() refuses it locally, nothing is sent.
    proc = flood("--port", "9", "--source", "192.0.2.1", "--conns", "1")
    assert proc.returncode == 2
    assert "--source" in proc.stderr and "that address is not on this machine" in proc.stderr


# ------------------------------------------------------------- the plan, before anything starts

import resource  # noqa: E402

from socktools.flood import limits  # noqa: E402
from socktools.flood.config import FloodConfig  # noqa: E402


@pytest.fixture
def machine(monkeypatch):
    """A pretend machine: set .fds, .cpus, .mem; limits.plan reads them (nothing is raised for real)."""
    class M:
        fds, cpus, mem = 20_000, 2, 8 << 30
    m = M()
    monkeypatch.setattr(limits, "fd_limits", lambda: (m.fds, m.fds))
    monkeypatch.setattr(limits, "cpu_count", lambda: m.cpus)
    monkeypatch.setattr(limits, "mem_available", lambda: m.mem)
    return m


def test_plan_refuses_51_workers_on_2_cpus(machine):
    plan = limits.plan(FloodConfig(conns=1_000_000, workers=0, embedded=True))
    assert plan.processes == 102
    [line] = [r for r in plan.refusals if "CPU" in r]
    assert line.startswith("51 flood worker processes and 51 server processes on 2 CPU(s)")


def test_plan_only_notes_many_workers_the_user_asked_for(machine):
    plan = limits.plan(FloodConfig(conns=1000, workers=16, port=9, address=("127.0.0.1", 9)))
    assert not plan.refusals
    assert any("16 flood worker processes on 2 CPU(s)" in n for n in plan.notes)


def test_plan_refuses_more_memory_than_available(machine):
    machine.fds, machine.mem = 1 << 20, 1 << 30
    plan = limits.plan(FloodConfig(conns=500_000, workers=0, embedded=True))
    [line] = [r for r in plan.refusals if "available" in r]
    assert "need about" in line and "1.0 GiB is available" in line


def test_plan_refuses_a_descriptor_limit_the_runner_itself_cannot_live_with(machine):
    machine.fds = 40
    plan = limits.plan(FloodConfig(conns=200, workers=0, embedded=True))
    assert len(plan.refusals) == 1  # one cause, one line (the CPU count follows from it)
    assert "flood itself needs" in plan.refusals[0] and "the limit is 40" in plan.refusals[0]
    machine.fds = 20
    plan = limits.plan(FloodConfig(conns=200, workers=0, embedded=True))
    assert plan.refusals == (plan.refusals[0],) and "no room for connections" in plan.refusals[0]


def test_a_small_run_is_not_refused(machine):
    plan = limits.plan(FloodConfig(conns=500, workers=0, embedded=True))
    assert plan.refusals == ()
    assert plan.memory < 200 << 20


def _nofile(n):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def test_low_fd_limit_refuses_in_one_line_before_anything_starts():
    # Issue 12 item 6: `prlimit --nofile=40:40 socktools flood --conns 200` ended in a traceback.
    proc = flood("--conns", "200", "--duration", "1s", preexec_fn=_nofile(40))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "flood: will not start: flood itself needs" in proc.stderr
    assert "started `socktools serve" not in proc.stderr  # nothing was started
    assert proc.stdout == ""


def test_low_fd_limit_with_yes_fails_in_one_line_not_a_traceback():
    proc = flood("--conns", "200", "--duration", "1s", "--yes", preexec_fn=_nofile(40))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    assert "running anyway: --yes" in proc.stderr


# ------------------------------------------------------------- Ctrl-C in the connect phase

import signal  # noqa: E402

from tests.conftest import socktools_cmd, wait_until  # noqa: E402


def half_answering(answer: int) -> ThreadServer:
    """Echoes on the first ``answer`` connections; the others are accepted and never answered."""
    taken = itertools.count()

    def handle(conn) -> None:
        if next(taken) < answer:          # itertools.count is atomic under the GIL
            conn.sendall(conn.recv(64))
            with server.lock:
                server.answered += 1

    server = ThreadServer(handle)
    server.answered = 0
    return server


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_ctrl_c_in_the_connect_phase_reports_consistent_counts(as_json):
    # Issue 12 item 10: first round trips exceeded established connections, no connect phase, "0/s".
    server = half_answering(answer=5)
    proc = subprocess.Popen(socktools_cmd("flood", "--port", str(server.port),
                             "--conns", "10", "--workers", "1", "--connect-timeout", "30s",
                             "--duration", "30s", *(["--json"] if as_json else [])),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: server.accepted >= 10 and server.answered >= 5, timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.close()
    assert "Traceback" not in err
    if as_json:
        import json
        doc = json.loads(out)
        conns = doc["connections"]
        assert doc["stopped_early"]
        assert conns["established"] == 5
        assert "connect" in doc["phases"]  # the phase that ran is reported...
        assert conns["per_second"] > 0     # ...with its rate
    else:
        assert "stopped early (Ctrl-C)" in out
        assert "connections  5 of 10 established" in out
        assert " 0/s" not in out.split("connections", 1)[1].splitlines()[0]
        assert "phases  connect " in out
        assert "not counting the 5 first round trips that confirmed the connections, nor 5 first " \
               "requests never answered" in out

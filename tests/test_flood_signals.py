"""flood and signals, end to end: SIGTERM reports like Ctrl-C, and no worker outlives flood."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import alive, children_of, socktools_cmd, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc (Linux)")

TRAFFIC_ROW = re.compile(r"\s*[0-9.]+-[0-9.]+s\s+traffic\s")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class _Flood:
    """`socktools flood` on its own embedded server, a progress row per interval on stdout."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            socktools_cmd("flood", "--conns", "10", "--workers", "2", "--duration", "60s",
                          "--interval", "0.2s", *args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.server = None

    def wait_for_traffic(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if TRAFFIC_ROW.match(line):  # "  0.20-0.40s traffic  10  ..." (--interval rows)
                return
        raise AssertionError(f"flood never reached its traffic phase: {self.proc.stderr.read()}")

    def workers(self) -> list:
        kids = children_of(self.proc.pid)
        self.server = next((k for k in kids if " serve " in _cmdline(k)), None)
        self.started = [k for k in kids if " flood " in _cmdline(k)]
        return self.started

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in getattr(self, "started", []):  # a failed test leaves no worker behind either
            if alive(pid) and " flood " in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)  # (a live worker would hold our stdout open)
        # the embedded server stops on stdin EOF by itself; never leave it behind
        if self.server and not wait_until(lambda: not alive(self.server), timeout=15):
            os.kill(self.server, signal.SIGKILL)


def test_kill_9_of_flood_leaves_no_worker_after_one_second():
    flood = _Flood()
    try:
        flood.wait_for_traffic()
        workers = flood.workers()
        assert len(workers) == 2, workers
        os.kill(flood.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        flood.proc.wait(timeout=10)
        gone = wait_until(lambda: not any(alive(w) for w in workers), timeout=1.0, interval=0.01)
        assert gone, f"flood workers still alive {time.monotonic() - killed:.2f}s after kill -9 of flood"
        assert flood.server is not None
        assert wait_until(lambda: not alive(flood.server), timeout=15), "embedded server outlived flood"
    finally:
        flood.cleanup()


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_stops_drains_prints_the_report_and_exits_143(to):
    """SIGTERM to flood alone (kill PID) or to its whole process group (as a service
    manager may send it): the workers leave it to the runner, which stops them in order."""
    flood = _Flood()
    try:
        flood.wait_for_traffic()
        workers = flood.workers()
        if to == "group":
            os.killpg(flood.proc.pid, signal.SIGTERM)
        else:
            os.kill(flood.proc.pid, signal.SIGTERM)
        out, err = flood.proc.communicate(timeout=30)
    finally:
        flood.cleanup()
    assert flood.proc.returncode == 143, err
    assert "stopped early (SIGTERM): figures cover the run so far" in out
    assert "10 of 10 established" in out and "round trip" in out
    assert "worker trouble" not in out, out
    assert "Traceback" not in err
    assert not any(alive(w) for w in workers)

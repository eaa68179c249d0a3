"""Shared fixtures: start the real `socktools serve` CLI on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

LISTENING = re.compile(r"listening on (\[[0-9a-f:]+\]|[0-9.]+):(\d+)")


def socktools_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "socktools", *args]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), to prove none is left behind."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ServerProcess:
    """A `socktools serve` child: ``.host``, ``.port``, ``.stop()`` -> (rc, stdout, stderr)."""

    def __init__(self, *args: str, preexec_fn=None, json_events: bool = False) -> None:
        cmd = socktools_cmd("serve", "--port", "0", "--stats-interval", "0", *args)
        if json_events:
            cmd.append("--json")
        self.json_events = json_events
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=preexec_fn)
        self.first_line = self.proc.stdout.readline()
        if json_events:
            ev = json.loads(self.first_line)
            self.host, self.port = ev["host"], ev["port"]
        else:
            m = LISTENING.search(self.first_line)
            if not m:
                self.proc.kill()
                out, err = self.proc.communicate()
                raise RuntimeError(f"server did not start: {self.first_line!r} {err!r}")
            self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
        self.pid = self.proc.pid
        self.stdout = ""
        self.stderr = ""
        self.returncode = None

    @property
    def address(self):
        return (self.host, self.port)

    def workers(self) -> list[int]:
        return children_of(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0):
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                out, err = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                raise AssertionError(f"server did not stop within {timeout}s: {err}")
            self.stdout, self.stderr, self.returncode = out, err, self.proc.returncode
        return self.returncode, self.stdout, self.stderr

    def summary(self) -> dict:
        assert self.json_events, "summary() needs json_events=True"
        for line in self.stdout.splitlines():
            ev = json.loads(line)
            if ev.get("event") == "summary":
                return ev
        raise AssertionError(f"no summary in {self.stdout!r}")


@pytest.fixture
def start_server():
    """``start_server("--mode", "framed")`` -> ServerProcess; every one is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, **kw) -> ServerProcess:
        srv = ServerProcess(*args, **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        if srv.returncode is None:
            if srv.proc.poll() is None:
                srv.proc.kill()
            srv.proc.communicate()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

"""Shared fixtures: the real `socktools serve` on a free loopback port, a refused port, IPv6 probe."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import pytest

from socktools.core.embedded import EmbeddedServer, EmbeddedServerError

# The I/O core's pair factories and loop fixtures (make_pair, loop, default_loop, plain_loop).
pytest_plugins = ["tests.loop_helpers"]

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


class ServerProcess(EmbeddedServer):
    """A `socktools serve` child: ``.host``, ``.port``, ``.stop()`` -> (rc, stdout, stderr).

    The product's own :class:`EmbeddedServer`, started from the test's CLI
    arguments; without ``json_events`` the server prints its human lines.
    """

    def __init__(self, *args: str, preexec_fn=None, json_events: bool = False) -> None:
        # stderr stays a pipe here: tests read the server's log lines as they come.
        popen_kw = {"stderr": subprocess.PIPE, **({"preexec_fn": preexec_fn} if preexec_fn else {})}
        super().__init__(args=["--port", "0", "--stats-interval", "0", *args], popen_kw=popen_kw)
        self.json_events = json_events
        self.first_line = ""
        self.log_seen = ""
        try:
            self.start()
        except EmbeddedServerError as exc:
            raise RuntimeError(f"server did not start: {exc}") from None
        self.host, self.port = self.address

    def _command(self) -> list[str]:
        cmd = socktools_cmd("serve", "--stop-on-stdin-eof", *self.args)
        return cmd + ["--json"] if self.json_events else cmd

    def _listening(self, line: str):
        self.first_line = self.first_line or line
        if self.json_events:
            return super()._listening(line)
        m = LISTENING.search(line)
        return (m.group(1).strip("[]"), int(m.group(2))) if m else None

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> bool:
        """Read the server's stderr (its log) until ``needle`` appears; False at the deadline.
        What was read is kept in ``log_seen``."""
        import select
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        while needle not in self.log_seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self.log_seen += chunk.decode("utf-8", "replace")
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0):
        if self.returncode is None:
            super().stop(timeout=timeout, sig=sig)
            if self.forced:
                raise AssertionError(f"server did not stop within {timeout}s: {self.stderr}")
        return self.returncode, self.stdout, self.stderr

    def final_summary(self) -> dict:
        assert self.json_events, "final_summary() needs json_events=True"
        if self.summary is None:
            raise AssertionError(f"no summary in {self.stdout!r}")
        return self.summary


def started_servers(make):
    """For a fixture: ``yield from started_servers(make)`` gives the test ``start(*args, **kw)``
    (``make``'s server, remembered) and kills every one it started at teardown."""
    started: list = []

    def start(*args, **kw):
        srv = make(*args, **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        if srv.proc is not None:
            srv.proc.kill()
            srv.proc.communicate()


@pytest.fixture
def start_server():
    """``start_server("--mode", "framed")`` -> ServerProcess; every one is stopped at teardown."""
    yield from started_servers(ServerProcess)


def can_capture() -> bool:
    """Live capture is possible here: a packet socket opens (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return True
    except (PermissionError, AttributeError, OSError):
        return False


def after_second_fin(lines: list) -> bool:
    """A capture's lines show a whole close: both FINs and a packet after the second (the
    last ACK), so that stopping the capture now loses none of the connection's lines."""
    fins = [i for i, line in enumerate(list(lines)) if "FIN" in line]
    return len(fins) >= 2 and len(lines) > fins[1] + 1


def server_recv_queues(port: int) -> Optional[int]:
    """Bytes in the receive queues of the established sockets whose local port is ``port``
    (a server's accepted connections), from /proc/net/tcp{,6}; None when there is none."""
    total = None
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total = (total or 0) + int(fields[4].split(":")[1], 16)
    return total


def ipv6_loopback_available() -> bool:
    """True if this Python has IPv6 and ``::1`` can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def skip_without_ipv6() -> None:
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and its server and client pairs (tests.peers.Certs), one per test module:
    tests only read the files."""
    from tests.peers import Certs
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def closed_port():
    """A loopback ``(host, port)`` bound but not listening: connecting is refused (RST).

    Keeping it bound for the test means nothing else can start listening there.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(autouse=True)
def _socktools_logger_restored():
    """A command run in-process (CliRunner) sets up the "socktools" logger for a terminal --
    its own handler, no propagation -- and that would outlive the test: a later test's
    ``caplog`` would then see nothing.  Put it back as it was."""
    import logging
    logger = logging.getLogger("socktools")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def flood_once(*args: str, json_doc: bool = True):
    """``socktools flood --workers 1 ARGS [--json]`` as a subprocess (one worker: counts a test
    holds against a server's own): (the JSON document, or None without ``json_doc``; the run)."""
    import json
    out = subprocess.run(socktools_cmd("flood", "--workers", "1", *args, *(["--json"] if json_doc else [])),
                         capture_output=True, text=True, timeout=90)
    if not json_doc:
        return None, out
    assert out.stdout, out.stderr
    return json.loads(out.stdout), out

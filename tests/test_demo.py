"""`socktools demo` end to end: runs to the end and leaves no process or socket behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from socktools.kernel import socktable
from tests.conftest import socktools_cmd

NOBODY = 65534


def _processes_with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _run_demo(preexec_fn=None):
    marker = f"SOCKTOOLS_DEMO_TEST={uuid.uuid4().hex}"
    env = dict(os.environ, SOCKTOOLS_DEMO_TEST=marker.split("=", 1)[1], PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run(socktools_cmd("demo", "--conns", "100", "--duration", "1s"), capture_output=True,
                         text=True, timeout=180, env=env, preexec_fn=preexec_fn)
    return out, marker


def _assert_clean(out, marker):
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert "Follow the white rabbit. \U0001f430" in out.stdout
    assert "BlockingIOError" in out.stdout
    assert not _processes_with_marker(marker), "the demo left a process behind"
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", out.stdout).group(1))
    left = [e for e in socktable.read_sockets(port=port) if e.state in ("LISTEN", "ESTABLISHED")]
    assert not left, f"the demo left sockets behind: {left}"


@pytest.mark.skipif(os.geteuid() != 0, reason="the capture step needs root; this run is unprivileged")
def test_demo_as_root_runs_every_step():
    out, marker = _run_demo()
    _assert_clean(out, marker)
    assert "response #1" in out.stdout  # the capture step decoded the exchange


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_demo_as_unprivileged_user_skips_capture_with_a_reason():
    try:
        probe = subprocess.run([sys.executable, "-c", "import socktools.cli"],
                               preexec_fn=lambda: os.setuid(NOBODY), capture_output=True)
    except PermissionError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("user 'nobody' cannot read this checkout or its Python environment")
    out, marker = _run_demo(preexec_fn=lambda: os.setuid(NOBODY))
    _assert_clean(out, marker)
    assert "skipped: live capture needs root or the CAP_NET_RAW capability" in out.stdout

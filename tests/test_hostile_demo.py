"""demo: a bad --duration stops before any step; Ctrl-C during the flood step leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd, wait_until

pytestmark = pytest.mark.timeout(120)


def test_bad_duration_is_a_usage_error_before_any_step():
    result = CliRunner().invoke(main, ["demo", "--duration", "xyz", "--no-capture"])
    assert result.exit_code == 2
    assert "--duration" in result.output and "is not a duration" in result.output
    assert "──" not in result.output  # no step heading was printed: nothing ran


def _marked(marker: str, word: str = "") -> list:
    """Live processes whose environment carries ``marker`` (and whose cmdline holds ``word``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if word in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("target", ["group", "process"])
def test_ctrl_c_during_the_flood_step_leaves_no_flood_running(target):
    """``group``: the terminal's Ctrl-C (SIGINT to the job's process group); ``process``: SIGINT to
    the demo alone (``kill -INT``, a supervisor), which the tour must forward to its step."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCKTOOLS_HOSTILE_TEST=marker)
    # Its own session and group, like a shell job: the "terminal's" Ctrl-C goes to that group.
    demo = subprocess.Popen(socktools_cmd("demo", "--no-capture", "--conns", "20",
                             "--duration", "30s"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        # The flood step has started once its workers (children of the flood process) exist.
        assert wait_until(lambda: len(_marked(marker, "flood")) >= 2, timeout=60), "flood step never started"
        if target == "group":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            os.kill(demo.pid, signal.SIGINT)
        demo.wait(timeout=30)  # output is small: the pipes cannot fill
        # The moment the tour has exited, its flood step must be gone too (not still printing).
        left = _marked(marker, "flood")
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, out[-2000:] + err[-2000:]
    assert "demo interrupted" in err
    assert "Traceback" not in out + err
    assert not left, f"flood still running after the demo exited: {left}"
    assert "stopped early (Ctrl-C)" in out  # the tour waited for flood's results
    # At once: the tour waited for its step (a killed group's last exits get a moment to be reaped).
    assert wait_until(lambda: not _marked(marker), timeout=0.5), f"left behind: {_marked(marker)}"

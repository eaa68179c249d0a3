"""The memcached plug-in example in `flood --help` and `request --help` works from any directory.

It used to name ``examples.memcached_plugin``, a folder of the checkout, importable only
with the checkout root as the working directory; an installed socktools has no such folder.
The example now ships in the package (``socktools.examples``).  These runs start from an
empty directory with only the ``socktools`` package on the path -- as after a wheel install
-- against a real memcached on a free loopback port.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

import pytest

from tests.conftest import socktools_cmd
from click.testing import CliRunner

from peers import Memcached
from socktools.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: flood's example runs 10 s by default; bounded by count here (the NETWORK RULE: loops stop by themselves).
BOUND = ["--requests", "20", "--conns", "2", "--workers", "1"]


@pytest.fixture
def memcached(tmp_path):
    with Memcached(tmp_path) as server:
        yield server


def help_example(command: str) -> list:
    """The words of the memcached line in ``socktools COMMAND --help`` (without ``socktools``)."""
    text = CliRunner().invoke(main, [command, "--help"]).output
    lines = [line for line in text.splitlines() if "--port 11211" in line]
    assert len(lines) == 1, text
    words = shlex.split(lines[0].split("#")[0])
    assert words[:2] == ["socktools", command]
    return words[1:]


def run_elsewhere(tmp_path, words: list) -> subprocess.CompletedProcess:
    """``python -m socktools WORDS`` from an empty directory; only the package is importable
    from this checkout (a symlink to it), not the checkout's root."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    if not (site / "socktools").exists():
        (site / "socktools").symlink_to(ROOT / "socktools")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(socktools_cmd(*words), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_help_examples_run_from_any_directory(memcached, tmp_path):
    port = str(memcached.port)
    words = [port if w == "11211" else w for w in help_example("request")]
    # request's example reads a key: store it first with the same plug-in
    stored = run_elsewhere(tmp_path, [*words[:words.index("--command")], "--command", "set k hello"])
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == "STORED"
    got = run_elsewhere(tmp_path, words)
    assert got.returncode == 0, got.stderr
    assert "hit k" in got.stdout or "hello" in got.stdout, got.stdout

    words = [port if w == "11211" else w for w in help_example("flood")]
    gets_before = int(memcached.stats()["cmd_get"])
    out = run_elsewhere(tmp_path, [*words, *BOUND])
    assert out.returncode == 0, out.stderr
    # 20 requests and one confirming request per connection, every one a get
    assert int(memcached.stats()["cmd_get"]) - gets_before == 22

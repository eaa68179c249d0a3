"""The pre-rendered top-level help: identical to click's, current, and printed without click."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from socktools import _help_text
from socktools.cli import helpcache


def test_the_cached_text_is_what_click_renders_now():
    """Fails when a command's one-line help changed without `python -m socktools.cli.helpcache --write`."""
    assert helpcache.TARGET.read_text(encoding="utf-8") == helpcache.module_text()
    assert set(_help_text.TEXT) == {78, 98}


def _script() -> str:
    path = pathlib.Path(sys.executable).parent / "socktools"
    if not path.exists():
        pytest.skip("the socktools script is not installed next to this Python (pip install -e .)")
    return str(path)


@pytest.mark.parametrize("columns", [80, 120, 60])
def test_the_script_prints_what_click_would(columns):
    """80 and 120 columns come from the cache, 60 from click itself: the same screen either way."""
    env = dict(os.environ, COLUMNS=str(columns))
    out = subprocess.run([_script(), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == helpcache.render(columns)


def test_help_from_the_cache_does_not_import_click():
    code = ("import sys; sys.argv = ['socktools', '--help']; "
            "import socktools.__main__ as m; m.main(); "
            "sys.stderr.write('CLICK=%s' % ('click' in sys.modules))")
    env = dict(os.environ, COLUMNS="80")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == _help_text.TEXT[78]
    assert out.stderr.endswith("CLICK=False")
    # Anything else goes to click, which does import it.
    code = code.replace("'--help'", "'--version'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "socktools, version" in out.stdout


def test_output_errors_on_the_cached_path_end_in_one_line():
    out = subprocess.run(f"'{_script()}' --help > /dev/full", shell=True, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, COLUMNS="80"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "ENOSPC" in out.stderr, out.stderr

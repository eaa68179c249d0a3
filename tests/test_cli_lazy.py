"""``socktools --help`` builds every subcommand but loads no engine (not timed: see
benchmarks/bench_help.py for the milliseconds)."""

from __future__ import annotations

import re
import subprocess
import sys

from click.testing import CliRunner

from socktools.cli import COMMANDS, main

#: What `--help` must not import: every engine, the I/O core, the protocol, and the
#: heavy third-party modules behind them.
ENGINES = ("socktools.serve", "socktools.flood", "socktools.stall", "socktools.capture",
           "socktools.core", "socktools.protocol", "socktools.reference", "socktools.request",
           "socktools.ping", "socktools.kernel", "socktools.wire", "hdrh", "scapy", "multiprocessing")

_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|(\s*)(\S+)\s*$")


def imported_by(*argv: str, ok=(0,)) -> list[str]:
    """Module names Python imported while running ``python -X importtime -m socktools ARGV``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "socktools", *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in ok, proc.stderr[-2000:]
    names = [m.group(2) for m in map(_IMPORT_LINE.match, proc.stderr.splitlines()) if m]
    assert "socktools.cli" in names, "no -X importtime output parsed"
    return names


def _engines_in(names: list[str]) -> list[str]:
    return [n for n in names if any(n == e or n.startswith(e + ".") for e in ENGINES)]


def modules_after(*argv: str) -> list[str]:
    """``sys.modules`` after ``socktools ARGV``: also lists what ``importlib`` loaded, which
    ``-X importtime`` does not time (the CLI loads its subcommand modules that way)."""
    code = ("import sys\nfrom socktools.cli import main\n"
            f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return proc.stderr.split()


def test_help_imports_no_engine():
    assert _engines_in(imported_by("--help")) == []
    loaded = modules_after("--help")
    for cmd in COMMANDS:                       # every subcommand module was loaded for its help line
        assert f"socktools.cli.{cmd}" in loaded
    assert _engines_in(loaded) == []


def test_the_check_sees_an_engine_when_one_is_imported():
    """`doctor` runs its engine, and `serve --help` shows serve's modes: both checks see them."""
    assert "socktools.kernel.doctor" in _engines_in(imported_by("doctor", "--json", ok=(0, 1)))
    assert "socktools.serve.config" in _engines_in(modules_after("serve", "--help"))


def test_lazy_choices_and_defaults_are_the_engines_own():
    from socktools.protocol import DEFAULT_MAX_CONTENT
    from socktools.serve.config import MODES
    out = CliRunner().invoke(main, ["serve", "--help"]).output
    assert f"[{'|'.join(MODES)}]" in out and f"{DEFAULT_MAX_CONTENT}" in out
    bad = CliRunner().invoke(main, ["serve", "--mode", "nope"])
    assert bad.exit_code == 2 and "'--mode'" in bad.output

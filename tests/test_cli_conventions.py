"""click conventions: SOCKTOOLS_<CMD>_<OPT> variables, documented; shell completion works."""

from __future__ import annotations

import json
import re
import os
import pathlib
import socket
import subprocess

import click
from click.testing import CliRunner

from socktools.cli import COMMANDS, main
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def all_options():
    ctx = click.Context(main, info_name="socktools")
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                yield name, param


def test_every_option_has_a_variable_named_after_its_flag():
    seen = 0
    for name, param in all_options():
        flag = max(param.opts, key=len)
        assert param.envvar == f"SOCKTOOLS_{name.upper()}_{flag.lstrip('-').upper().replace('-', '_')}"
        seen += 1
    assert seen > 50


def test_every_variable_is_documented():
    """docs/environment.md's tables are generated from the commands and must be current."""
    from socktools.cli import envdoc

    path = DOCS / "environment.md"
    text = path.read_text(encoding="utf-8")
    assert envdoc.BEGIN in text
    assert text == envdoc.document(path), (
        "docs/environment.md is stale: run `python -m socktools.cli.envdoc --write`")
    for _name, param in all_options():
        assert f"`{param.envvar}`" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_variable_reaches_the_command():
    """SOCKTOOLS_PING_COUNT sets --count; the command line still wins over it."""
    port = _closed_port()
    env = {"SOCKTOOLS_PING_COUNT": "3", "SOCKTOOLS_PING_INTERVAL": "10ms", "SOCKTOOLS_PING_JSON": "1"}
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "-p", str(port)], env=env)
    doc = json.loads(r.stdout)
    assert len(doc["probes"]) == 3
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "-p", str(port), "--count", "2"], env=env)
    assert len(json.loads(r.stdout)["probes"]) == 2


def test_a_bad_variable_is_a_usage_error_naming_the_option():
    r = CliRunner().invoke(main, ["flood"], env={"SOCKTOOLS_FLOOD_CONNS": "0"})
    assert r.exit_code == 2 and "--conns" in r.output
    r = CliRunner().invoke(main, ["flood"], env={"SOCKTOOLS_FLOOD_THRESHOLD": "p99<5ms bogus<1"})
    assert r.exit_code == 2 and "--threshold" in r.output and "bogus" in r.output


def socktools_script() -> str:
    """The installed `socktools` script: completion keys on the program's name."""
    path = pathlib.Path(sys.executable).parent / "socktools"
    if not path.exists():
        pytest.skip("the socktools script is not installed next to this Python (pip install -e .)")
    return str(path)


def test_shell_completion_scripts_and_answers():
    for shell in ("bash", "zsh", "fish"):
        proc = subprocess.run([socktools_script()], env={**os.environ, "_SOCKTOOLS_COMPLETE": f"{shell}_source"},
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and "_SOCKTOOLS_COMPLETE" in proc.stdout, shell
    # what bash's completion function asks: the words so far, the index of the one being completed
    env = {**os.environ, "_SOCKTOOLS_COMPLETE": "bash_complete", "COMP_WORDS": "socktools flood --mo",
           "COMP_CWORD": "2"}
    proc = subprocess.run([socktools_script()], env=env, capture_output=True, text=True, timeout=30)
    assert "--mode" in proc.stdout
    text = (DOCS / "completion.md").read_text(encoding="utf-8")
    for shell in ("bash_source", "zsh_source", "fish_source"):
        assert f"_SOCKTOOLS_COMPLETE={shell} socktools" in text


# ------------------------------------------------------------------ serve's stats lines

def _stats(**kw):
    ev = {"event": "stats", "open": 0, "accepted": 0, "closed": 0, "bytes_in": 0, "bytes_out": 0,
          "requests": 0, "responses": 0, "protocol_errors": {}, "errors": {}}
    ev.update(kw)
    return ev


def test_serve_stats_lines_have_time_and_rates_and_stay_quiet_when_idle():
    from socktools.serve.report import HumanView
    now = [100.0]
    lines = []
    view = HumanView(lambda text="", **kw: lines.append(text), clock=lambda: now[0])
    now[0] += 10
    view(_stats(open=2, accepted=20, bytes_in=10_240, bytes_out=10_240, requests=50))
    now[0] += 10
    view(_stats(open=2, accepted=20, bytes_in=10_240, bytes_out=10_240, requests=50))   # nothing new
    now[0] += 10
    view(_stats(open=2, accepted=20, bytes_in=10_240, bytes_out=10_240, requests=50))   # still nothing
    now[0] += 5
    view(_stats(open=0, accepted=30, closed=30, bytes_in=20_480, bytes_out=20_480, requests=100))
    assert len(lines) == 3, lines
    first, idle, third = lines
    assert re.match(r"^\d\d:\d\d:\d\d stats: ", first)
    assert "2.0 conn/s" in first and "1.0 KiB/s" in first and "5.0 req/s" in first
    assert "idle" in idle
    # rates over the 5 s since the previous stats event (idle ones included): 10 conns, 50 requests
    assert "2.0 conn/s" in third and "10.0 req/s" in third and "errors 0" in third


# ------------------------------------------------------------------ help: one way to write a duration

_DEFAULT = re.compile(r"\[default: ([^;\]]+)")


def test_every_duration_default_in_help_is_written_with_its_unit():
    """`60s`, as the user types it, never `60.0` (serve printed `60.0` where others wrote `60s`)."""
    from socktools.cli._common import Duration, parse_duration
    ctx = click.Context(main, info_name="socktools")
    seen = 0
    for name, param in all_options():
        if not isinstance(param.type, Duration):
            continue
        command = main.get_command(ctx, name)
        record = param.get_help_record(click.Context(command, info_name=name, parent=ctx))
        m = _DEFAULT.search(record[1] if record else "")
        if m is None or not m.group(1)[0].isdigit():
            continue            # no default, or one in words ("as fast as they confirm")
        text = m.group(1).strip()
        assert re.fullmatch(r"\d+(\.\d+)?(ms|s|m|h)", text), f"{name} {param.opts[0]}: [default: {text}]"
        default = param.get_default(ctx)
        if default is not None:   # else the help states a default the command applies itself
            assert parse_duration(text) == param.type.convert(default, param, ctx)
        seen += 1
    assert seen >= 10


# ------------------------------------------------------------------ short flags: one meaning each

#: Commands that stand in for a system tool take their short flags from that tool (a user of
#: ss types `-t`, of tcpdump `-w FILE`, of ping `-c 4`), so theirs follow the tool, not the
#: rest of socktools.
IMITATES = {"sockets": "ss", "ping": "ping", "sniff": "tcpdump"}


def short_flag_conflicts(flags: dict) -> list:
    """``{command: {short: long}}`` -> a line per short flag meaning two long options, or a long
    option spelled with two short flags, across the commands given."""
    by_short, by_long = {}, {}
    for command, pairs in flags.items():
        for short, long in pairs.items():
            by_short.setdefault(short, {}).setdefault(long, []).append(command)
            by_long.setdefault(long, {}).setdefault(short, []).append(command)
    bad = [f"{s} means {m}" for s, m in by_short.items() if len(m) > 1]
    bad += [f"{l} is spelled {m}" for l, m in by_long.items() if len(m) > 1]
    return sorted(bad)


def test_the_conflict_check_can_fail():
    assert short_flag_conflicts({"flood": {"-n": "--requests"}, "doctor": {"-n": "--conns"}}) == [
        "-n means {'--requests': ['flood'], '--conns': ['doctor']}"]
    assert short_flag_conflicts({"flood": {"-c": "--conns"}, "doctor": {"-n": "--conns"}}) == [
        "--conns is spelled {'-c': ['flood'], '-n': ['doctor']}"]
    assert short_flag_conflicts({"flood": {"-c": "--conns"}, "doctor": {"-c": "--conns"}}) == []


def test_one_short_flag_means_one_long_option_in_every_command():
    flags = {}
    for name, param in all_options():
        longs = [o for o in param.opts if o.startswith("--")]
        for short in (o for o in param.opts + param.secondary_opts if not o.startswith("--")):
            if name not in IMITATES and longs:
                flags.setdefault(name, {})[short] = longs[0]
    assert len(flags) >= 4
    assert short_flag_conflicts(flags) == []


def test_tests_launch_the_cli_one_way():
    """Every test that runs the real command builds its command line with conftest's
    socktools_cmd (one place to change how the CLI is launched); test_cli_lazy alone adds
    the interpreter's -X importtime in front."""
    import pathlib
    here = pathlib.Path(__file__).parent
    own = [p.name for p in sorted(here.glob("test_*.py"))
           if '"-m", "socktools"' in p.read_text() and p.name not in ("test_cli_lazy.py", "test_cli_conventions.py")]
    assert own == []

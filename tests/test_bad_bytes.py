"""Bytes that are not UTF-8, through every text option and argument of every command: no traceback.

On Linux an argument is bytes; Python hands them over surrogate-escaped (PEP 383).  An option
whose value goes on the wire sends the bytes as typed; one that needs text refuses them with a
usage error naming it.  The commands and their options are read from the click tree, so a new
option is swept without a word here.  Everything runs in-process (CliRunner) against a refused
loopback port, with a deadline per invocation: nothing listens, captures or waits.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import click
import pytest
from click.testing import CliRunner

from socktools.cli import COMMANDS, main

#: What a command line can carry that is not UTF-8: two invalid bytes, a truncated sequence,
#: the UTF-8 form of a lone surrogate (U+D800), and -- in-process only -- the surrogate itself.
BAD = [os.fsdecode(b"\xff\xfe"), os.fsdecode(b"\xc3"), os.fsdecode(b"x\xed\xa0\x80y"), "\ud800"]

#: Seconds one invocation may take: each ends at a refused port or a failed check at once.
DEADLINE = 20
#: The whole sweep, on a shared 2-core machine.
SWEEP_BUDGET = 50


class _Overran(BaseException):
    """Raised by the alarm inside an invocation that did not end in time (CliRunner keeps
    Exceptions as results; this one stops the test)."""


def _alarm(signum, frame):
    raise _Overran(f"an invocation ran past {DEADLINE} s")


def _base(command: str, port: int, empty: str) -> list:
    """Options that make each command end at once, put before the one under test."""
    return {
        "report": ["--output", "out.html"],
        "request": ["--port", str(port), "--timeout", "2s"],
        "flood": ["--port", str(port), "--conns", "1", "--workers", "1", "--requests", "1",
                  "--duration", "2s", "--connect-timeout", "1s"],
        "stall": ["--port", str(port), "--timeout", "1s", "--settle", "100ms"],
        "ping": ["--port", str(port), "--count", "1", "--timeout", "200ms", "--interval", "10ms"],
        "sniff": ["--read", empty],           # never a live capture
        "serve": ["--max-buffered", "1"],     # fails the config's check before anything binds
        "demo": [],
    }.get(command, [])


#: Options after the one under test that stop the command before it runs for long, should
#: the value pass (click checks them in command-line order, the value first).
_AFTER = {"demo": ["--conns", "0"], "serve": ["--port", "99999"]}

#: Arguments a command needs, given when an option is under test (FILE: not a flood result).
_POSITIONAL = {"report": ["notaresult.json"]}

#: What each mode needs besides the option under test.
_MODE_NEEDS = {"raw": ["--send", "x", "--reply-until", "\\n"], "line": ["--send", "x"], "redis": [],
               "http": [], "framed": [], "echo": [], "connect": []}


def _mode_for(command: click.Command, param: click.Parameter) -> list:
    """``--mode M`` (and what M needs) for an option whose help starts ``M:`` or ``M/N:``."""
    modes = next((p.type.choices for p in command.params if p.name == "mode"
                  and isinstance(p.type, click.Choice)), ())
    lead = re.match(r"\s*([a-z/]+)(?: \([^)]*\))?:", getattr(param, "help", None) or "")
    if not lead:
        return []
    for mode in lead.group(1).split("/"):
        if mode in modes:
            return ["--mode", mode] + _MODE_NEEDS.get(mode, [])
    return []


def _value_params(command: click.Command):
    for p in command.params:
        if isinstance(p, click.Option) and (p.is_flag or p.count or p.hidden or p.name == "help"):
            continue
        yield p


def _cases():
    ctx = click.Context(main, info_name="socktools")
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        for param in _value_params(command):
            yield name, command, param


def _names(output: str, command: click.Command, param: click.Parameter) -> bool:
    """Does a usage error name ``param`` (as an option, its variable, or an argument's metavar)?"""
    if isinstance(param, click.Argument):
        return param.make_metavar(click.Context(command)) in output
    return any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", output) for o in param.opts)


def _invoke(runner, args, env=None):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(DEADLINE)
    try:
        return runner.invoke(main, args, env=env, catch_exceptions=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_every_text_option_of_every_command_takes_non_utf8_bytes_without_a_traceback(tmp_path, monkeypatch):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    runner = CliRunner()
    started = time.monotonic()
    problems, seen, ran = [], set(), 0
    with socket.socket() as closed:                 # bound, not listening: connect() is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.chdir(tmp_path)                 # files the options name land here
        (tmp_path / "notaresult.json").write_text("{}")
        for name, command, param in _cases():
            seen.add(name)
            for bad in BAD:
                if isinstance(param, click.Argument):
                    args = [name, *_base(name, port, str(empty)), *_mode_for(command, param), bad]
                else:
                    flag = max(param.opts, key=len)
                    after = [] if flag in _AFTER.get(name, [])[:1] else _AFTER.get(name, [])
                    args = [name, *_base(name, port, str(empty)), *_mode_for(command, param),
                            flag, bad, *after, *_POSITIONAL.get(name, [])]
                runs = [(args, None)]
                if isinstance(param, click.Option) and param.envvar and bad != "\ud800":
                    # the same bytes from the option's variable (an environment holds no lone surrogate)
                    at = max(i for i, a in enumerate(args) if a == flag and args[i + 1] is bad)
                    runs.append((args[:at] + args[at + 2:], {param.envvar: bad}))
                for args, env in runs:
                    problems += _check(runner, command, param, args, env)
                    ran += 1
    elapsed = time.monotonic() - started
    assert seen == set(COMMANDS)
    assert ran > 100, ran
    assert not problems, f"{len(problems)} of {ran} invocations:\n" + "\n".join(problems)
    assert elapsed < SWEEP_BUDGET, f"the sweep took {elapsed:.0f} s for {ran} invocations"


def _check(runner, command, param, args, env) -> list:
    """What is wrong with one invocation: [] when it ended as a user should see it end."""
    result = _invoke(runner, args, env)
    what = (f"{' '.join(f'{k}={ascii(v)}' for k, v in (env or {}).items())} "
            f"{' '.join(map(ascii, args))} -> exit {result.exit_code}")
    exc, out = result.exception, result.output
    if exc is not None and not isinstance(exc, SystemExit):
        return [f"{what}: uncaught {type(exc).__name__}: {exc}"]
    if result.exit_code not in (0, 1, 2, 3):
        return [f"{what}: {out[-300:]}"]
    if "Traceback" in out:
        return [f"{what}: a traceback in the output"]
    if result.exit_code != 2:
        return []
    named = [p for p in command.params if _names(out, command, p)]
    if not named:
        return [f"{what}: a usage error naming no option: {out[-300:]}"]
    if "UTF-8" in out and param not in named:
        return [f"{what}: the text refusal names another option: {out[-300:]}"]
    if "UTF-8" in out and env and param.envvar not in out:
        return [f"{what}: the refusal does not name the variable: {out[-300:]}"]
    return []


@pytest.mark.parametrize("args", [
    ["request", "--mode", "raw", "--send", os.fsdecode(b"\xff\xfe"), "--reply-until", "\\n"],
    ["request", "--mode", "redis", "--command", os.fsdecode(b"SET k \xff")],
    ["request", "--mode", "http", "--header", os.fsdecode(b"X-A: \xff"), "--path", os.fsdecode(b"/\xfe")],
])
def test_bytes_on_the_wire_are_sent_as_typed(args):
    """The server gets exactly the bytes the user typed, not an error and not a replacement."""
    typed = [os.fsencode(a) for a in args if any(0xDC80 <= ord(c) <= 0xDCFF for c in a)]
    tails = [t.split(b" ")[-1].split(b":")[-1].strip() for t in typed]     # b"\xff\xfe", b"/\xfe"...
    got = bytearray()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(20)
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                while not all(t in got for t in tails):   # or until request gives up and closes
                    data = conn.recv(65536)
                    if not data:
                        break
                    got.extend(data)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        result = CliRunner().invoke(main, [args[0], "--port", str(port), "--timeout", "1s", *args[1:]])
        t.join(20)
    assert not isinstance(result.exception, UnicodeError), result.exception
    for tail in tails:
        assert tail in bytes(got), (tail, bytes(got))


@pytest.mark.parametrize("args, option", [
    (["request", "search", os.fsdecode(b"\xff")], "ACTION VALUE"),
    (["request", "--host", os.fsdecode(b"local\xffhost"), "search", "x"], "--host"),
    (["flood", "--value", os.fsdecode(b"\xc3"), "--mode", "framed"], "--value"),
    (["ping", os.fsdecode(b"\xff")], "HOST"),
    (["explain", os.fsdecode(b"\xff")], "ERR"),
])
def test_text_that_is_not_utf8_is_a_usage_error_naming_the_option(args, option):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, (r.output, r.exception)
    assert option in r.output and "UTF-8" in r.output, r.output


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"\xd4\xc3\xb2\xa1" + bytes(20)], ids=["latin", "pcap"])
def test_report_on_a_binary_file_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "run.json"
    path.write_bytes(content)
    r = CliRunner().invoke(main, ["report", str(path), "-o", str(tmp_path / "out.html")])
    assert not isinstance(r.exception, UnicodeError), r.exception
    if r.exit_code == 3:
        pytest.skip("matplotlib is not installed (pip install matplotlib): report stops before reading the file")
    assert r.exit_code == 1, r.output
    assert str(path) in r.output and "UTF-8" in r.output, r.output

"""`socktools explain`: every error socktools can report resolves, from the one table."""

from __future__ import annotations

import errno
import socket
import json

import pytest
from click.testing import CliRunner

from socktools import errors
from socktools.cli import main
from socktools.cli.explain import resolve

runner = CliRunner()

#: What flood/request/ping can tally (SPEC §3 plus the pseudo-errors); all must be in the table.
MUST_COVER = ["ECONNREFUSED", "EMFILE", "ENFILE", "EADDRNOTAVAIL", "EADDRINUSE", "ECONNRESET",
              "ECONNABORTED", "ETIMEDOUT", "EPIPE", "EAGAIN", "EINPROGRESS", "ENOBUFS",
              "EHOSTUNREACH", "ENETUNREACH", "peer-closed", "protocol-error", "timeout"]


@pytest.mark.parametrize("name", MUST_COVER)
def test_required_errors_are_in_the_table(name):
    assert name in errors.EXPLANATIONS
    exp = errors.EXPLANATIONS[name]
    assert exp.meaning and exp.causes and exp.fix


@pytest.mark.parametrize("name", sorted(errors.EXPLANATIONS))
def test_every_table_entry_resolves_and_prints(name):
    exp = errors.EXPLANATIONS[name]
    assert resolve(name) == exp
    assert resolve(name.lower()) == exp
    if exp.number is not None:
        # errno (or, for EAI_*, getaddrinfo) names are the platform's, and the
        # number leads back to the same entry.
        assert getattr(socket if name.startswith("EAI_") else errno, name) == exp.number
        assert resolve(str(exp.number)) == exp
    r = runner.invoke(main, ["explain", name])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(name)
    assert exp.meaning in r.output and exp.fix in r.output
    for cause in exp.causes:
        assert cause in r.output


@pytest.mark.parametrize("typed, name", [
    ("BlockingIOError", "EAGAIN"), ("EWOULDBLOCK", "EAGAIN"), ("11", "EAGAIN"),
    ("ConnectionResetError", "ECONNRESET"), ("ConnectionRefusedError", "ECONNREFUSED"),
    ("ConnectionAbortedError", "ECONNABORTED"), ("BrokenPipeError", "EPIPE"),
    ("TimeoutError", "ETIMEDOUT"), ("socket.timeout", "timeout"), ("PermissionError", "EACCES"),
    ("[Errno 98] Address already in use", "EADDRINUSE"), ("errno 111", "ECONNREFUSED"),
    ("builtins.ConnectionResetError", "ECONNRESET"),
])
def test_aliases(typed, name):
    assert resolve(typed).name == name


def test_a_real_exception_explains_itself():
    # What flood/request do with an exception: exception_key, then the same lookup explain uses.
    exc = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert resolve(errors.exception_key(exc)) is errors.EXPLANATIONS["ECONNREFUSED"]


def test_errno_outside_the_table_gets_the_system_text():
    r = runner.invoke(main, ["explain", "EXDEV"])
    assert r.exit_code == 0
    assert "Invalid cross-device link" in r.output or "cross-device" in r.output.lower()
    assert "not in socktools' table" in r.output


@pytest.mark.parametrize("typed", ["nope", "99999", "", "E_NOT_A_THING"])
def test_unknown_is_a_clear_error(typed):
    r = runner.invoke(main, ["explain", typed])
    assert r.exit_code == 1
    assert r.output.startswith("socktools: unknown error") and "socktools explain --list" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_generic_exception_asks_for_the_errno():
    r = runner.invoke(main, ["explain", "OSError"])
    assert r.exit_code == 1 and "covers many errors" in r.output and "explain 98" in r.output


def test_list_and_json():
    r = runner.invoke(main, ["explain", "--list"])
    assert r.exit_code == 0
    listed = {line.split()[0] for line in r.output.splitlines()[1:] if line.strip()}
    assert set(errors.EXPLANATIONS) <= listed
    r = runner.invoke(main, ["explain", "--list", "--json"])
    assert {d["name"] for d in json.loads(r.output)["explanations"]} == set(errors.EXPLANATIONS)
    r = runner.invoke(main, ["explain", "ECONNRESET", "--json"])
    doc = json.loads(r.output)
    assert doc["errno"] == errno.ECONNRESET and doc["exception"] == "ConnectionResetError"


def test_no_argument_is_a_usage_error():
    r = runner.invoke(main, ["explain"])
    assert r.exit_code == 2 and "--list" in r.output


def test_resolver_errors_get_their_own_names():
    """socket.gaierror carries an EAI_* code, not an errno: the tally key and the words say so."""
    exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert errors.exception_key(exc) == "EAI_NONAME"
    line = errors.one_line(exc, "resolve no-such-host")
    assert line.startswith("resolve no-such-host failed: EAI_NONAME (gai error")
    assert "does not resolve" in line and "127.0.0.1" in line
    assert resolve(str(exc)).name == "EAI_NONAME"  # "[Errno -2] Name or service not known"
    r = runner.invoke(main, ["explain", str(exc)])
    assert r.exit_code == 0 and r.output.startswith("EAI_NONAME  (getaddrinfo code")

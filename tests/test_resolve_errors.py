"""A host name that does not resolve: every command says so in one explained line.

getaddrinfo is replaced for these tests, so no resolver (and no network) is asked:
numeric addresses still resolve, every name fails with EAI_NONAME.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from click.testing import CliRunner

from socktools.cli import main

real_getaddrinfo = socket.getaddrinfo


def numeric_only(host, *args, **kwargs):
    try:
        ipaddress.ip_address(str(host).strip("[]"))
    except ValueError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_resolver(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)


@pytest.mark.parametrize("argv", [
    ["request", "--host", "no-such-host.test", "--port", "9", "search", "morpheus"],
    ["flood", "--host", "no-such-host.test", "--port", "9", "--conns", "1", "--requests", "1"],
    ["stall", "--host", "no-such-host.test", "--port", "9"],
    ["ping", "no-such-host.test", "--port", "9", "--count", "1"],
    ["serve", "--host", "no-such-host.test", "--port", "0"],
], ids=lambda argv: argv[0])
def test_unresolvable_host_is_one_explained_line(argv):
    r = CliRunner().invoke(main, argv)
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code not in (0, None), out
    assert "Traceback" not in out and not isinstance(r.exception, (socket.gaierror, AttributeError)), out
    assert "EAI_NONAME" in out and "does not resolve" in out, out

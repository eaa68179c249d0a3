"""SOCKTOOLS_* variables of repeatable options: free text one value per line, tokens by spaces."""

from __future__ import annotations

import click
import pytest

from socktools.cli import ONE_PER_LINE, main


def params(monkeypatch, command: str, env: dict, args: tuple = ()) -> dict:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = click.Context(main, info_name="socktools")
    cmd = main.get_command(ctx, command)
    with cmd.make_context(command, list(args), parent=ctx, resilient_parsing=True) as sub:
        return sub.params


@pytest.mark.parametrize("command", ["flood", "request"])
def test_free_text_repeatables_take_one_value_per_line(monkeypatch, command):
    got = params(monkeypatch, command, {
        f"SOCKTOOLS_{command.upper()}_COMMAND": "SET k v\nGET k\n",
        f"SOCKTOOLS_{command.upper()}_SEND": "PING one\r\n\nPING two",
        f"SOCKTOOLS_{command.upper()}_HEADER": "X-A: 1 2",
        f"SOCKTOOLS_{command.upper()}_PATH": "/a\n/b",
    })
    assert got["commands"] == ("SET k v", "GET k")
    assert got["sends"] == ("PING one", "PING two")
    assert got["headers"] == ("X-A: 1 2",)
    assert got["paths"] == ("/a", "/b")


def test_the_command_line_still_wins(monkeypatch):
    got = params(monkeypatch, "flood", {"SOCKTOOLS_FLOOD_COMMAND": "SET k v"}, ("--command", "PING"))
    assert got["commands"] == ("PING",)


def test_token_lists_still_split_on_spaces(monkeypatch):
    got = params(monkeypatch, "flood", {"SOCKTOOLS_FLOOD_ACCEPT_STATUS": "404 5xx"})
    assert got["accept_status"] == ("404", "5xx")
    got = params(monkeypatch, "sockets", {"SOCKTOOLS_SOCKETS_STATE": "listen established"})
    assert len(got["states"]) == 2


def test_every_free_text_repeatable_exists_and_is_documented():
    ctx = click.Context(main, info_name="socktools")
    seen = set()
    for name in ("flood", "request"):
        for p in main.get_command(ctx, name).params:
            if isinstance(p, click.Option) and p.multiple and set(p.opts) & ONE_PER_LINE:
                seen |= set(p.opts) & ONE_PER_LINE
                assert p.type.split_envvar_value("a b\nc") == ["a b", "c"]
    assert seen == ONE_PER_LINE

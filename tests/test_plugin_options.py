"""``--protocol-option KEY=VALUE``: a plug-in's own options, as its class's keyword arguments;
and ``--protocol ./file.py:Class``: a plug-in loaded from its file."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.wire import WireOptionError, WireSpec, build

PG = "socktools.examples.postgres:Postgres"


def test_options_reach_the_plugins_class_as_keyword_arguments():
    proto = build(WireSpec(mode="plugin", plugin=PG, plugin_options=("user=bob", "database=shop", "password=a=b")))
    assert (proto.user, proto.database, proto.password) == ("bob", "shop", "a=b")


@pytest.mark.parametrize("options, says", [
    (("colour=blue",), "does not take colour"),
    (("user",), "write KEY=VALUE"),
    (("no-dash=1",), "write KEY=VALUE"),
])
def test_a_bad_option_names_protocol_option(options, says):
    with pytest.raises(WireOptionError, match=says) as caught:
        build(WireSpec(mode="plugin", plugin=PG, plugin_options=options))
    assert caught.value.flag == "--protocol-option"


def test_an_option_without_a_plugin_is_refused():
    with pytest.raises(WireOptionError, match="only with --protocol") as caught:
        build(WireSpec(mode="redis", plugin_options=("user=bob",)))
    assert caught.value.flag == "--protocol-option"


def test_the_report_never_shows_a_password():
    spec = WireSpec(mode="plugin", plugin=PG, plugin_options=("user=bob", "password=s3cret"))
    assert spec.summary()["options"] == {"user": "bob", "password": "(hidden)"}


def test_a_plugin_loads_from_its_file(tmp_path, monkeypatch):
    (tmp_path / "pg.py").write_text("from socktools.examples.postgres import Postgres as Base\n"
                                    "class Postgres(Base):\n    name = 'from-a-file'\n")
    monkeypatch.chdir(tmp_path)
    proto = build(WireSpec(mode="plugin", plugin="./pg.py:Postgres", plugin_options=("user=bob",)))
    assert proto.name == "from-a-file" and proto.user == "bob"
    with pytest.raises(WireOptionError, match="no such file"):
        build(WireSpec(mode="plugin", plugin="./missing.py:Postgres"))


def test_the_cli_refuses_a_bad_option_with_a_usage_error():
    out = CliRunner().invoke(main, ["request", "--port", "9", "--protocol", PG, "--protocol-option", "colour=blue"])
    assert out.exit_code == 2, out.output
    assert "--protocol-option" in out.output and "colour" in out.output

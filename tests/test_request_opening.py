"""`request` runs the protocol's opening conversation before its exchanges -- the same
``Opening`` flood runs (``--setup``/``--greeting-match``: the built-in Scripted one; a
plug-in's ``opening()``) -- showing each step of it, never a setup's text, and a refusal as
exit 1 with the server's words.  Against redis-server with ``requirepass``, PostgreSQL
(SCRAM and md5 logins) and exim; each skips with a plain reason when its binary is missing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.peers import Exim, Postgres, Redis

PASSWORD = "s3cret-opening"
PG = "socktools.examples.postgres:Postgres"
SMTP = "socktools.examples.smtp:Smtp"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with Redis(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with Postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="module")
def exim(tmp_path_factory):
    with Exim(tmp_path_factory.mktemp("exim")) as server:
        yield server


def run(*args):
    return CliRunner().invoke(main, ["request", *map(str, args)])


# ------------------------------------------------------------------ redis with requirepass
def test_setup_logs_in_then_the_command_is_answered_and_counted_by_redis(redis):
    redis.reset()
    r = run("--port", redis.port, "--mode", "redis", "--setup", f"AUTH {PASSWORD}", "--command", "PING")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("--- setup 1, ") and lines[1] == "OK"
    assert lines[2].startswith("--- 1: PING, ") and lines[3] == "PONG"
    assert PASSWORD not in r.output                     # a setup may carry a password: never shown
    calls = redis.calls()                               # the server's own count (its AUTH for INFO too)
    assert calls["ping"] == 1 and calls["auth"] >= 1


def test_without_the_setup_the_server_refuses_the_command(redis):
    r = run("--port", redis.port, "--mode", "redis", "--command", "PING")
    assert r.exit_code == 1 and "NOAUTH" in r.output


def test_a_wrong_password_is_a_refusal_in_the_servers_words_exit_1(redis):
    r = run("--port", redis.port, "--mode", "redis", "--setup", "AUTH wrong-one", "--command", "PING")
    assert r.exit_code == 1, r.output
    assert "WRONGPASS" in r.stderr and "setup 1" in r.stderr
    assert "wrong-one" not in r.output


def test_the_opening_in_json_and_the_setups_text_is_not_in_it(redis):
    r = run("--port", redis.port, "--mode", "redis", "--setup", f"AUTH {PASSWORD}", "--setup", "SELECT 2",
            "--command", "SET k v", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [s["request"] for s in doc["opening"]] == ["setup 1", "setup 2"]
    assert [s["reply"]["summary"] for s in doc["opening"]] == ["OK", "OK"]
    assert doc["exchanges"][0]["reply"]["summary"] == "OK" and PASSWORD not in r.stdout


def test_show_bytes_counts_a_setups_bytes_but_does_not_print_them(redis):
    r = run("--port", redis.port, "--mode", "redis", "--setup", f"AUTH {PASSWORD}", "--command", "PING",
            "--show-bytes")
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output and "not shown" in r.stdout and "PONG" in r.stdout


def test_json_of_a_refusal(redis):
    r = run("--port", redis.port, "--mode", "redis", "--setup", "AUTH nope", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout.splitlines()[0])
    assert doc["ok"] is False and doc["phase"] == "opening" and doc["error"] == "opening-refused"
    assert "WRONGPASS" in doc["message"] and "nope" not in r.stdout


@pytest.mark.parametrize("args, option", [
    (["--setup", "AUTH x", "search", "morpheus"], "--setup"),                     # framed: give --mode
    (["--mode", "http", "--setup", "x"], "--setup"),                               # http takes no opening
    (["--udp", "--send", "x", "--setup", "y"], "--setup"),
    (["--mode", "redis", "--greeting-match", "(", "--command", "PING"], "--greeting-match"),
])
def test_opening_options_where_they_cannot_be_are_usage_errors(args, option):
    r = run("--port", 1, *args)
    assert r.exit_code == 2 and option in r.output, r.output


# ------------------------------------------------------------------ PostgreSQL: SCRAM and md5
@pytest.mark.parametrize("user, password", [("bob", "s3cret"), ("carol", "md5secret")])
def test_the_postgres_plugin_logs_in_then_selects(pg, user, password):
    r = run("--port", pg.port, "--protocol", PG, "--protocol-option", f"user={user}",
            "--protocol-option", f"password={password}", "--command", "SELECT 1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("--- opening 1, ") and "SELECT 1 · 1" in r.stdout
    assert password not in r.output


def test_a_wrong_postgres_password_is_exit_1_with_the_servers_words(pg):
    r = run("--port", pg.port, "--protocol", PG, "--protocol-option", "user=bob",
            "--protocol-option", "password=wrong", "--command", "SELECT 1")
    assert r.exit_code == 1, r.output
    assert 'FATAL 28P01 password authentication failed for user "bob"' in r.stderr


# ------------------------------------------------------------------ exim: a server that greets first
def test_the_smtp_plugin_greets_and_ehlos_before_its_noop(exim):
    r = run("--port", exim.port, "--protocol", SMTP, "--command", "NOOP")
    assert r.exit_code == 0, r.output
    heads = [line for line in r.stdout.splitlines() if line.startswith("--- ")]
    assert heads[0].startswith("--- opening 1, ") and heads[-1].startswith("--- 1: NOOP, ")
    assert "220 " in r.stdout and "250" in r.stdout


def test_a_greeting_match_that_fails_is_a_refusal(exim):
    r = run("--port", exim.port, "--mode", "line", "--eol", "crlf", "--greeting-match", "^220 nowhere",
            "--send", "NOOP")
    assert r.exit_code == 1, r.output
    assert "greeting" in r.stderr and "220 " in r.stderr


def test_line_setup_with_the_greeting_against_exim(exim):
    r = run("--port", exim.port, "--mode", "line", "--eol", "crlf", "--greeting-match", "^220 ",
            "--setup", "EHLO localhost", "--send", "NOOP")
    assert r.exit_code == 0, r.output
    heads = [line for line in r.stdout.splitlines() if line.startswith("--- ")]
    assert [h.split(",")[0] for h in heads] == ["--- greeting", "--- setup 1", "--- 1: NOOP"]


def test_greeting_with_a_plugin_that_has_its_own_opening_is_a_usage_error():
    r = run("--port", 1, "--protocol", SMTP, "--greeting", "--command", "NOOP")
    assert r.exit_code == 2 and "--greeting" in r.output and "opening()" in r.output

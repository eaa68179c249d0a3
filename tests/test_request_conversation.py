"""`request` holds a conversation: several exchanges on one connection, each reply in order
with its own time, and the server's greeting shown as the greeting -- against redis-server and
vsftpd (a server that speaks first), and thread peers for the out-of-turn cases."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import wait_until
from tests.peers import Certs, Redis, Vsftpd
from tests.test_json_schemas import validate
from tests.threadserver import ThreadServer, read_until


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with Redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def vsftpd(tmp_path_factory):
    with Vsftpd(tmp_path_factory.mktemp("vsftpd")) as server:
        yield server


def run(*args):
    return CliRunner().invoke(main, ["request", *map(str, args)])


def test_several_commands_on_one_connection_each_reply_in_order(redis):
    redis.reset()
    r = run("--port", redis.port, "--mode", "redis", "--command", "SET conv:k hello", "--command", "GET conv:k",
            "--command", "DEL conv:k", "--command", "GET conv:k")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    heads = [line for line in lines if line.startswith("--- ")]
    assert [h.split(",")[0] for h in heads] == ["--- 1: SET conv:k hello", "--- 2: GET conv:k",
                                                "--- 3: DEL conv:k", "--- 4: GET conv:k"]
    assert all(h.endswith(" ms") for h in heads)
    replies = [lines[lines.index(h) + 1] for h in heads]
    assert replies == ["OK", "hello", "(integer) 1", "(nil)"]
    calls = redis.calls()
    assert calls.get("set") == 1 and calls.get("get") == 2 and calls.get("del") == 1   # the server's own count


def test_the_conversation_is_one_connection(redis):
    before = _connections(redis)
    r = run("--port", redis.port, "--mode", "redis", "--command", "CLIENT ID", "--command", "CLIENT ID")
    assert r.exit_code == 0, r.output
    ids = [line for line in r.stdout.splitlines() if line.startswith("(integer)")]
    assert len(ids) == 2 and ids[0] == ids[1]                # the same client both times
    assert _connections(redis) - before == 2                 # ours, and the count's own


def _connections(redis) -> int:
    stats = redis.command("INFO", "stats")
    return int(next(line for line in stats.splitlines()
                    if line.startswith("total_connections_received:")).split(":")[1])


def test_the_json_lists_every_exchange_with_its_time(redis):
    r = run("--port", redis.port, "--mode", "redis", "--command", "SET conv:j 1", "--command", "INCR conv:j",
            "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    steps = doc["exchanges"]
    assert [s["request"] for s in steps] == ["SET conv:j 1", "INCR conv:j"]
    assert [s["reply"]["summary"] for s in steps] == ["OK", "(integer) 2"]
    assert all(s["ms"] > 0 and s["bytes_sent"] > 0 and s["failures"] == [] for s in steps)
    assert doc["reply"]["summary"] == "(integer) 2" and doc["greeting"] is None
    assert doc["bytes_sent"] == sum(s["bytes_sent"] for s in steps)


def test_a_failed_step_is_shown_and_the_exit_is_1(redis):
    r = run("--port", redis.port, "--mode", "redis", "--command", "SET conv:x 1", "--command", "NOSUCHCMD",
            "--command", "GET conv:x")
    assert r.exit_code == 1
    assert "--- 2: NOSUCHCMD" in r.stdout and "--- 3: GET conv:x" in r.stdout
    assert "exchange 2 (NOSUCHCMD)" in r.stderr and "unknown command" in r.stderr


def test_show_bytes_shows_each_step_s_bytes_and_then_its_reply_once(redis):
    r = run("--port", redis.port, "--mode", "redis", "--command", "SET conv:b 1", "--command", "GET conv:b",
            "--show-bytes")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.count("--- 1: SET conv:b 1, ") == 1 and out.count("--- 2: GET conv:b, ") == 1
    second = out[out.index("--- 2: GET conv:b"):]
    assert second.index(">>> sent 25 bytes") < second.index("<<< received 7 bytes") < second.index("\n1\n")


def test_a_conversation_over_tls(tmp_path):
    certs = Certs(tmp_path)
    with Redis(tmp_path, tls=certs) as server:
        r = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", certs.ca,
                "--command", "SET t v", "--command", "GET t")
        calls = server.calls()
    assert calls.get("set") == 1 and calls.get("get") == 1         # the server's own count
    assert r.exit_code == 0, r.output
    assert "--- 2: GET t" in r.stdout and r.stdout.rstrip().endswith("v")


def test_the_greeting_is_shown_as_the_greeting(vsftpd):
    r = run("--port", vsftpd.port, "--mode", "line", "--eol", "crlf", "--greeting", "--send", "NOOP")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("--- greeting, ") and lines[0].endswith(" ms")
    assert lines[1] == "b'220 (vsFTPd 3.0.3)\\r\\n'"
    assert lines[2].startswith("--- 1: NOOP, ") and lines[3] == "b'530 Please login with USER and PASS.\\r\\n'"


def test_the_greeting_in_json(vsftpd):
    r = run("--port", vsftpd.port, "--mode", "line", "--eol", "crlf", "--greeting", "--send", "NOOP",
            "--send", "QUIT", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    assert doc["greeting"]["reply"]["bytes"] == "220 (vsFTPd 3.0.3)\r\n" and doc["greeting"]["ms"] > 0
    assert [s["reply"]["bytes"] for s in doc["exchanges"]] == ["530 Please login with USER and PASS.\r\n",
                                                              "221 Goodbye.\r\n"]


def test_without_greeting_a_server_that_speaks_first_is_unsolicited_and_points_to_greeting(vsftpd, monkeypatch):
    from socktools.request import client
    monkeypatch.setattr(client, "SPOKE_FIRST_WAIT", 30.0)     # look until the banner is there
    r = run("--port", vsftpd.port, "--mode", "line", "--eol", "crlf", "--send", "NOOP")
    assert r.exit_code == 1
    assert "unsolicited" in r.stderr and "the server spoke first" in r.stderr and "--greeting" in r.stderr


def test_a_greeting_framed_by_raw_reply_until(vsftpd):
    r = run("--port", vsftpd.port, "--mode", "raw", "--reply-until", "\\r\\n", "--greeting", "--send", "NOOP\\r\\n")
    assert r.exit_code == 0, r.output
    assert "b'220 (vsFTPd 3.0.3)\\r\\n'" in r.stdout and "530 Please login" in r.stdout


def test_a_server_that_does_not_greet_times_out_waiting_for_the_greeting(redis):
    r = run("--port", redis.port, "--mode", "redis", "--greeting", "--timeout", "300ms")
    assert r.exit_code == 1
    assert "waiting for the greeting of 127.0.0.1:" in r.stderr and "timeout" in r.stderr


def test_more_than_the_greeting_before_the_request_is_unsolicited():
    def two_banners(conn):
        conn.sendall(b"+hello\r\n+again\r\n")
        read_until(conn, b"\r\n")

    with ThreadServer(two_banners) as server:
        r = run("--port", server.port, "--mode", "redis", "--greeting")
    assert r.exit_code == 1
    assert "unsolicited" in r.stderr and "beyond its greeting" in r.stderr


@pytest.mark.parametrize("args, option, words", [
    (["--mode", "raw", "--send", "x", "--no-reply", "--greeting"], "--greeting", "not with --no-reply"),
    (["--mode", "raw", "--send", "a", "--send", "b", "--reply-until-close"], "--reply-until-close",
     "one exchange per connection"),
    (["--greeting", "search", "x"], "--greeting", "never speaks first"),    # framed: the server never greets
])
def test_bad_conversations_are_usage_errors_naming_the_option(args, option, words):
    r = run("--port", "9", *args)
    assert r.exit_code == 2, r.output
    assert option in r.stderr and words in r.stderr


def test_no_reply_sends_every_step_in_order():
    got = []

    def reads_all(conn):
        got.append(read_until(conn, b"two\n"))

    with ThreadServer(reads_all) as server:
        r = run("--port", server.port, "--mode", "raw", "--send", "one\\n", "--send", "two\\n", "--no-reply")
        assert r.exit_code == 0, r.output
        assert wait_until(lambda: got, 10)
    assert got == [b"one\ntwo\n"]

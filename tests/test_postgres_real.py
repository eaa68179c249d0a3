"""The PostgreSQL plug-in against a real PostgreSQL 15 (Debian's ``postgresql``), started by the
test on a free loopback port: SCRAM-SHA-256, md5 and cleartext logins, queries counted as the
server counts them (pg_stat_database.xact_commit), refusals in the server's words.

The conversation is the plug-in's own Opening and parser over one blocking socket
(tests/plugin_driver.py): the same objects flood and request drive from their loops.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from peers import Postgres
from tests.conftest import socktools_cmd
from plugin_driver import DEADLINE, Conversation
from socktools.examples.postgres import Postgres as PostgresProtocol
from socktools.wire import WireError
from socktools.wire.opening import OpeningFailed

PLUGIN = "socktools.examples.postgres:Postgres"


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with Postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


def proto(user: str, password: str, *queries: str, database=None) -> PostgresProtocol:
    return PostgresProtocol(queries, user=user, password=password, database=database or user)


def own_database(pg: Postgres, user: str, name: str) -> str:
    """A database of ``user``'s that no other test touches: its counts are this test's alone
    (a backend of an earlier test reports its counts as it ends, a moment after its close)."""
    pg.sql(f"CREATE DATABASE {name} OWNER {user}")
    return name


def commits_reach(pg: Postgres, database: str, target: int) -> int:
    """xact_commit of ``database`` once it reached ``target`` (a backend reports its counts when
    it ends, a moment after our close), or what it is at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        now = pg.xact_commit(database)
        if now >= target or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@pytest.mark.parametrize("user, password, step", [
    ("bob", "s3cret", "session"),             # SCRAM-SHA-256, the server's signature verified
    ("carol", "md5secret", "session"),        # md5
    ("dave", "plain", "session"),             # cleartext
])
def test_each_login_then_queries_counted_as_the_server_counts_them(pg, user, password, step):
    db = own_database(pg, user, f"logins_{user}")
    before = pg.xact_commit(db)
    p = proto(user, password, database=db)
    with Conversation(p, pg.port, conn=0) as one, Conversation(p, pg.port, conn=1) as two:
        assert one.open().step == step and two.open().step == step
        assert one.opening.parameters["server_version"].startswith("15")
        one.ask(1)
        one.ask(3)                            # pipelined: three queries in one write
        parser = two.ask(2)
        assert [r.summary for r in parser.keep] == ["SELECT 1 · 1"] * 2 and not parser.failures
    # each query is a transaction; so is each backend's own start (it reads the catalog in one)
    assert commits_reach(pg, db, before + 6 + 2) - before == 6 + 2


def test_the_md5_users_stored_hash_is_the_one_the_plugin_computes_from(pg):
    assert pg.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'carol'") == \
        "md5cf1b9115274878168a523915d692e8c2"     # the literal of test_example_postgres's md5 test


@pytest.mark.parametrize("user, step", [("bob", "SCRAM-SHA-256"), ("carol", "md5"), ("dave", "password")])
def test_a_wrong_password_is_refused_in_the_servers_words(pg, user, step):
    with Conversation(proto(user, "wrong"), pg.port) as c:
        with pytest.raises(OpeningFailed) as caught:
            c.open()
    assert caught.value.words == f'FATAL 28P01 password authentication failed for user "{user}"'
    assert caught.value.step == step


def test_a_missing_database_is_refused_after_the_login(pg):
    with Conversation(proto("bob", "s3cret", database="nowhere"), pg.port) as c:
        with pytest.raises(OpeningFailed) as caught:
            c.open()
    assert caught.value.words == 'FATAL 3D000 database "nowhere" does not exist'


def test_a_failed_query_is_a_failure_named_by_its_sqlstate_and_the_stream_goes_on(pg):
    with Conversation(proto("bob", "s3cret", "SELECT * FROM nope", "SELECT 1/0", "SELECT 2"), pg.port) as c:
        c.open()
        parser = c.ask(3)
    assert [f.detail for f in parser.failures] == ['ERROR 42P01 relation "nope" does not exist',
                                                   "ERROR 22012 division by zero"]
    assert [r.fields["sqlstate"] for r in parser.keep] == ["42P01", "22012", None]
    assert parser.keep[2].summary == "SELECT 1 · 2"


def test_a_session_the_server_ends_is_named_by_its_words(pg):
    with Conversation(proto("bob", "s3cret"), pg.port) as c:
        c.open()
        c.ask(1)
        assert pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE usename = 'bob' AND application_name = 'socktools'") == "1"
        while True:
            data = c.sock.recv(65536)
            if not data:
                break
            assert c.parser.feed(data) == 0
        with pytest.raises(WireError, match="FATAL 57P01 terminating connection due to administrator command"):
            c.parser.eof()


# --- flood, with the opening on every connection (flood's engine: h3's Opener) -------------------

def flood(pg: Postgres, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", "--port", str(pg.port), "--protocol", PLUGIN, "--workers", "1",
                                        "--json", *args), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("user, password", [("bob", "s3cret"), ("carol", "md5secret")])
def test_flood_logs_in_then_its_queries_are_the_servers_transactions(pg, user, password):
    db = own_database(pg, user, f"flood_{user}")
    before = pg.xact_commit(db)
    out = flood(pg, "--protocol-option", f"user={user}", "--protocol-option", f"password={password}",
                "--protocol-option", f"database={db}", "--requests", "300", "--conns", "4")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["failures_total"] == 0
    assert r["opening"]["opened"] == 4 and r["opening"]["refused"] == 0
    assert r["requests"]["sent"] == r["requests"]["answered"] == 300 + 4       # and the 4 confirming
    assert r["config"]["wire"]["options"] == {"user": user, "password": "(hidden)", "database": db}
    # the server's count: one transaction per query, and one per backend's start
    assert commits_reach(pg, db, before + 304 + 4) - before == 304 + 4


def queries_reach(pg: Postgres, database: str, before: tuple, target: int) -> tuple:
    """The queries ``database`` ran since ``before`` (its commits less one per session's start) once
    they reached ``target`` (or at the deadline), and the sessions started since."""
    deadline = time.monotonic() + DEADLINE
    while True:
        commits, sessions = (a - b for a, b in zip(pg.stat(database), before))
        if commits - sessions >= target or time.monotonic() > deadline:
            return commits - sessions, sessions
        time.sleep(0.05)


def test_flood_with_churn_logs_in_on_every_new_connection(pg):
    db = own_database(pg, "bob", "churn")
    before = pg.stat(db)
    out = flood(pg, "--protocol-option", "user=bob", "--protocol-option", "password=s3cret",
                "--protocol-option", f"database={db}", "--requests", "60", "--conns", "2", "--churn", "10")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    opened, sent = r["opening"]["opened"], r["requests"]["sent"]
    assert r["failures_total"] == 0 and r["opening"]["refused"] == 0
    queries, sessions = queries_reach(pg, db, before, sent)
    assert queries == sent
    # a login each time; a replacement still logging in when the run ended is the server's
    # session but not one flood finished opening
    assert opened >= 60 // 10 and opened <= sessions <= opened + 2


def test_flood_tallies_a_wrong_password_by_the_servers_words(pg):
    out = flood(pg, "--protocol-option", "user=bob", "--protocol-option", "password=wrong",
                "--requests", "10", "--conns", "3")
    assert out.returncode == 1
    r = json.loads(out.stdout)
    assert r["opening"]["refusals"] == {'FATAL 28P01 password authentication failed for user "bob"': 3}
    assert r["requests"]["sent"] == 0

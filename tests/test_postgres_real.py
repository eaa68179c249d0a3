"""The PostgreSQL plug-in against a real PostgreSQL 15 (Debian's ``postgresql``), started by the
test on a free loopback port: SCRAM-SHA-256, md5 and cleartext logins, queries counted as the
server counts them (pg_stat_database.xact_commit), refusals in the server's words.

The conversation is the plug-in's own Opening and parser over one blocking socket
(tests/plugin_driver.py): the same objects flood and request drive from their loops.
"""

from __future__ import annotations

import time

import pytest

from peers import Postgres
from plugin_driver import DEADLINE, Conversation
from socktools.examples.postgres import Postgres as PostgresProtocol
from socktools.wire.opening import OpeningFailed


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with Postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


def proto(user: str, password: str, *queries: str, database=None) -> PostgresProtocol:
    return PostgresProtocol(queries, user=user, password=password, database=database or user)


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
    before = pg.xact_commit(user)
    p = proto(user, password)
    with Conversation(p, pg.port, conn=0) as one, Conversation(p, pg.port, conn=1) as two:
        assert one.open().step == step and two.open().step == step
        assert one.opening.parameters["server_version"].startswith("15")
        one.ask(1)
        one.ask(3)                            # pipelined: three queries in one write
        parser = two.ask(2)
        assert [r.summary for r in parser.keep] == ["SELECT 1 · 1"] * 2 and not parser.failures
    # each query is a transaction; so is each backend's own start (it reads the catalog in one)
    assert commits_reach(pg, user, before + 6 + 2) - before == 6 + 2


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

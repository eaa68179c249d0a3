"""The PostgreSQL plug-in without sockets: its login (startup, cleartext, md5, SCRAM-SHA-256)
and its query replies, fed whole, byte by byte and at random splits; hostile server bytes.

The server's side here is written from PostgreSQL's protocol docs ("Message Formats",
"SASL Authentication") and RFC 5802's server equations, apart from the plug-in's code; the
real server is tests/test_postgres_real.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from socktools.examples.postgres import (MAX_BODY, MAX_PARAMETERS, MAX_SCRAM_ITERATIONS, Postgres, PostgresOpening,
                                         PostgresParser, ScramSha256, md5_password, saslprep)
from plugin_driver import SPLITS, chunks
from socktools.wire import WireError
from socktools.wire.opening import OpeningFailed

SEED = 20261206


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def auth(code: int, rest: bytes = b"") -> bytes:
    return msg(b"R", code.to_bytes(4, "big") + rest)


def error(severity: str, code: str, text: str) -> bytes:
    return msg(b"E", f"S{severity}\0V{severity}\0C{code}\0M{text}\0\0".encode())


READY = msg(b"S", b"server_version\x0015.18\0") + msg(b"K", b"\0\0\x30\x39\x12\x34\x56\x78") + msg(b"Z", b"I")
#: The reply to ``SELECT 1`` as PostgreSQL 15 sends it: RowDescription, DataRow, CommandComplete, ReadyForQuery.
SELECT1 = (msg(b"T", b"\0\x01?column?\0" + b"\0" * 6 + b"\0\x17\0\x04\xff\xff\xff\xff\0\0")
           + msg(b"D", b"\0\x01\0\0\0\x011") + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I"))
ERROR_REPLY = error("ERROR", "42P01", 'relation "nope" does not exist') + msg(b"Z", b"I")




# --- SCRAM-SHA-256 and md5: the arithmetic ------------------------------------------------------

def test_scram_matches_rfc7677s_example():
    """RFC 7677 section 3: user "user", password "pencil", the nonces and proof given there."""
    s = ScramSha256("pencil", nonce="rOprNGfwEbeRWgbNEkqO", user="user")
    assert s.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = s.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    s.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")          # the server's proof holds
    with pytest.raises(OpeningFailed, match="signature is wrong"):
        s.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_md5_answer_is_postgresqls():
    # PostgreSQL 15 stored carol's password 'md5secret' as md5cf1b9115274878168a523915d692e8c2
    # (pg_authid, tests/test_postgres_real.py): the inner hash; then md5(inner hex + salt).
    inner = b"cf1b9115274878168a523915d692e8c2"
    assert hashlib.md5(b"md5secretcarol").hexdigest().encode() == inner
    assert md5_password("carol", "md5secret", b"\x01\x02\x03\x04") == b"md54c36ca414ff70121d0cd64a5c7efd962"


def test_saslprep_maps_as_rfc4013_says_and_keeps_what_it_prohibits():
    assert saslprep("I\u00ADX") == "IX"              # RFC 4013 section 3's examples
    assert saslprep("\u00AA") == "a"
    assert saslprep("\u2168") == "IX"
    assert saslprep("a\u00A0b") == "a b"             # a non-ASCII space maps to a space
    assert saslprep("a\u0007b") == "a\u0007b"        # prohibited: used as is, as PostgreSQL does


# --- the login ------------------------------------------------------------------------------------

class FakeServer:
    """PostgreSQL's side of a login, message by message (the docs' order): answers what the
    client sent with what the server would send.  ``method``: trust, password, md5, scram."""

    def __init__(self, method: str, password: str = "s3cret", user: str = "bob", *, reject: bool = False) -> None:
        self.method, self.password, self.user, self.reject = method, password, user, reject
        self.salt, self.iterations = b"0123456789abcdef", 4096
        self.step = 0
        self.seen = []

    def answer(self, client: bytes) -> bytes:
        self.seen.append(client)
        self.step += 1
        if self.step == 1:                                       # the startup message
            assert client[4:8] == (196608).to_bytes(4, "big")
            assert b"\0user\0bob\0database\0shop\0" in b"\0" + client[8:]
            return {"trust": auth(0) + READY, "password": auth(3), "md5": auth(5, b"salt"),
                    "scram": auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")}[self.method]
        refused = error("FATAL", "28P01", f'password authentication failed for user "{self.user}"')
        if self.method == "password":
            ok = client == msg(b"p", self.password.encode() + b"\0")
            return auth(0) + READY if ok and not self.reject else refused
        if self.method == "md5":
            inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
            ok = client == msg(b"p", b"md5" + hashlib.md5(inner.encode() + b"salt").hexdigest().encode() + b"\0")
            return auth(0) + READY if ok and not self.reject else refused
        if self.step == 2:                                       # SASLInitialResponse
            assert client[5:19] == b"SCRAM-SHA-256\0"
            self.client_first_bare = client[23:][3:].decode()    # after the length and "n,,"
            nonce = dict(p.split("=", 1) for p in self.client_first_bare.split(","))["r"]
            self.server_first = f"r={nonce}SERVERNONCE,s={base64.b64encode(self.salt).decode()},i={self.iterations}"
            return auth(11, self.server_first.encode())
        # SASLResponse: check the proof as RFC 5802 section 3 has the server do it
        final = client[5:].decode()
        without_proof, proof = final.rsplit(",p=", 1)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), self.salt, self.iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if hashlib.sha256(recovered).digest() != stored_key or self.reject:
            return refused
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        v = base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
        return auth(12, b"v=" + v) + auth(0) + READY


def converse(op: PostgresOpening, server: FakeServer, how: str, rng: random.Random) -> PostgresOpening:
    for _ in range(10):
        out = op.data_to_send()
        if op.done:
            assert not out
            return op
        assert out, "the client waits while the server waits"
        for piece in chunks(server.answer(out), how, rng):
            op.receive_data(piece)
    raise AssertionError("the login did not end")


def opening(password="s3cret", nonce=None) -> PostgresOpening:
    if nonce is not None:        # a fixed client nonce, for a scripted server-first message
        return PostgresOpening("bob", "shop", password, nonce=nonce)
    return Postgres((), user="bob", database="shop", password=password).opening()


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("method", ["trust", "password", "md5", "scram"])
def test_every_login_reaches_ready_for_query(method, how):
    rng = random.Random(SEED)
    server = FakeServer(method)
    op = converse(opening(), server, how, rng)
    assert op.done and op.leftover() == b""
    assert op.parameters == {"server_version": "15.18"}
    assert len(server.seen) == {"trust": 1, "password": 2, "md5": 2, "scram": 3}[method]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("method", ["password", "md5", "scram"])
def test_a_wrong_password_is_refused_in_the_servers_words(method, how):
    with pytest.raises(OpeningFailed) as caught:
        converse(opening(), FakeServer(method, reject=True), how, random.Random(SEED))
    assert caught.value.words == 'FATAL 28P01 password authentication failed for user "bob"'
    assert caught.value.step == {"password": "password", "md5": "md5", "scram": "SCRAM-SHA-256"}[method]


def test_the_salted_password_is_computed_once_per_salt():
    proto = Postgres((), user="bob", database="shop", password="s3cret")
    for _ in range(3):
        converse(proto.opening(), FakeServer("scram"), "whole", random.Random(SEED))
    assert len(proto.salted) == 1


def test_bytes_after_ready_for_query_are_the_traffics():
    op = opening()
    op.data_to_send()
    op.receive_data(auth(0) + READY + b"Zextra")
    assert op.done and op.leftover() == b"Zextra"


def test_no_password_given_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    op = opening(password=None)
    op.data_to_send()
    with pytest.raises(OpeningFailed, match="PGPASSWORD") as caught:
        op.receive_data(auth(5, b"salt"))
    assert caught.value.step == "md5"


def test_options_fall_back_to_libpqs_environment(monkeypatch):
    monkeypatch.setenv("PGUSER", "envuser")
    monkeypatch.setenv("PGDATABASE", "envdb")
    monkeypatch.setenv("PGPASSWORD", "envpass")
    proto = Postgres(())
    assert (proto.user, proto.database, proto.password) == ("envuser", "envdb", "envpass")
    proto = Postgres((), user="bob", password="")
    assert (proto.user, proto.database, proto.password) == ("bob", "envdb", "")


# --- hostile servers during the login -------------------------------------------------------------

def started() -> PostgresOpening:
    op = opening()
    op.data_to_send()
    return op


def test_a_message_length_of_2_to_the_31_is_refused_at_once():
    op = started()
    with pytest.raises(WireError, match="2147483648 bytes"):
        op.receive_data(b"R" + (1 << 31).to_bytes(4, "big"))        # nothing of the body needed
    p = PostgresParser()
    with pytest.raises(WireError, match="2147483648 bytes"):
        p.feed(b"D" + (1 << 31).to_bytes(4, "big"))
    assert p.buffered < 16


def test_a_login_message_longer_than_any_real_one_is_refused_before_it_is_buffered():
    op = started()
    with pytest.raises(WireError, match="at most 30000"):
        op.receive_data(b"E" + (1 << 20).to_bytes(4, "big"))


def test_an_unknown_authentication_method_is_a_wire_error_with_its_number():
    with pytest.raises(WireError, match="authentication request 99"):
        started().receive_data(auth(99))


def test_a_login_this_plug_in_does_not_do_is_refused_by_name():
    with pytest.raises(OpeningFailed, match="GSSAPI") as caught:
        started().receive_data(auth(7))
    assert caught.value.step == "startup"
    with pytest.raises(OpeningFailed, match="only SASL SCRAM-SHA-256-PLUS"):
        started().receive_data(auth(10, b"SCRAM-SHA-256-PLUS\0\0"))


def test_a_truncated_login_stays_unfinished_and_bounded():
    op = started()
    op.receive_data(auth(0) + READY[:-3])
    assert not op.done and op.data_to_send() == b""


def scram_started() -> PostgresOpening:
    op = opening(nonce="clientnonce")
    op.data_to_send()
    op.receive_data(auth(10, b"SCRAM-SHA-256\0\0"))
    op.data_to_send()
    return op


@pytest.mark.parametrize("server_first, reason", [
    (b"r=clientnonceX,s=c2FsdA==,i=4097000000", "4097000000 SCRAM iterations"),
    (b"r=othernonce,s=c2FsdA==,i=4096", "does not extend ours"),
    (b"r=clientnonce,s=c2FsdA==,i=4096", "does not extend ours"),     # the server added nothing
    (b"r=clientnonceX,s=!!!,i=4096", "cannot be read"),
    (b"garbage", "cannot be read"),
])
def test_a_hostile_scram_server_first_message_is_refused(server_first, reason):
    op = scram_started()
    with pytest.raises(WireError, match=reason):
        op.receive_data(auth(11, server_first))
    assert MAX_SCRAM_ITERATIONS < 4097000000


def test_a_server_that_skips_scrams_proof_is_not_believed():
    op = scram_started()
    with pytest.raises(WireError, match="out of place"):
        op.receive_data(auth(12, b"v=xx"))        # the final message before the first
    op = opening()
    op.data_to_send()
    with pytest.raises(WireError, match="before the login ended"):
        op.receive_data(msg(b"Z", b"I"))          # ready, with no AuthenticationOk


# --- the measured queries --------------------------------------------------------------------------

@pytest.mark.parametrize("how", SPLITS)
def test_replies_are_counted_one_per_ready_for_query(how):
    rng = random.Random(SEED)
    stream = SELECT1 * 3 + ERROR_REPLY + SELECT1
    for _ in range(20 if how == "random" else 1):
        p = PostgresParser()
        counts = [p.feed(piece) for piece in chunks(stream, how, rng)]
        assert sum(counts) == 5
        assert p.buffered == 0
        assert [(f.kind, f.detail) for f in p.failures] == [
            ("server-error", 'ERROR 42P01 relation "nope" does not exist')]


def test_request_shows_the_row_and_the_sqlstate():
    p = PostgresParser()
    p.keep = []
    assert p.feed(SELECT1 + ERROR_REPLY) == 2
    assert p.keep[0].summary == "SELECT 1 · 1" and p.keep[0].fields["first_row"] == ["1"]
    assert p.keep[1].fields["sqlstate"] == "42P01" and p.keep[0].size == len(SELECT1)


def test_the_same_reply_again_is_known_without_parsing():
    proto = Postgres(())
    p, q = proto.parser(), proto.parser()
    assert p.feed(SELECT1) == 1
    assert SELECT1 in proto.whole and q.feed(SELECT1) == 1          # learned across connections
    assert p.feed(ERROR_REPLY) == 1 and ERROR_REPLY not in proto.whole   # a failure is never learned


def test_a_long_row_is_skipped_not_buffered():
    size = 8 << 20
    row = msg(b"D", b"\0\x01" + size.to_bytes(4, "big") + b"x" * size)
    stream = row + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")
    p = PostgresParser()
    most = n = 0
    for pos in range(0, len(stream), 65536):
        n += p.feed(stream[pos:pos + 65536])
        most = max(most, len(p.buf))
    assert n == 1 and p.buffered == 0
    assert most <= MAX_BODY + 65536


def test_a_truncated_reply_is_named_at_the_close():
    p = PostgresParser()
    assert p.feed(SELECT1[:-2]) == 0
    with pytest.raises(WireError) as caught:
        p.eof()
    assert caught.value.kind == "truncated"


@pytest.mark.parametrize("stream, reason", [
    (msg(b"R", b"\0\0\0\0"), "unexpected message 'R'"),
    (msg(b"G", b"\0\0\0"), "COPY FROM STDIN"),
    (b"D\0\0\0\x02", "not PostgreSQL"),                   # a length below its own 4 bytes
    (b"Z" + (40000).to_bytes(4, "big"), "at most 30000"),
])
def test_bytes_that_cannot_be_a_reply_are_wire_errors(stream, reason):
    with pytest.raises(WireError, match=reason):
        PostgresParser().feed(stream)


def test_requests_are_simple_queries_rotated_with_placeholders():
    proto = Postgres(("SELECT 1", "SELECT {seq}, {conn}"), user="u", password="")
    assert proto.request(0, 7) == b"Q\0\0\0\x0dSELECT 1\0"
    assert proto.request(3, 7) == msg(b"Q", b"SELECT 3, 7\0")
    assert proto.fixed_request is None and not proto.shared_requests
    assert Postgres((), user="u").fixed_request == msg(b"Q", b"SELECT 1\0")
    with pytest.raises(ValueError, match="NUL"):
        Postgres(("SELECT '\0'",))


def test_a_server_that_ends_the_session_is_named_by_its_words_at_the_close():
    # what PostgreSQL sends to a session pg_terminate_backend() ended, then it closes
    p = PostgresParser()
    assert p.feed(error("FATAL", "57P01", "terminating connection due to administrator command")) == 0
    with pytest.raises(WireError, match="FATAL 57P01 terminating connection due to administrator command"):
        p.eof()


def test_a_server_that_says_ok_before_scrams_final_proof_is_refused():
    op = scram_started()
    op.receive_data(auth(11, b"r=clientnonceX,s=c2FsdA==,i=4096"))
    with pytest.raises(OpeningFailed, match="without proving") as caught:
        op.receive_data(auth(0) + READY)          # AuthenticationOk, no SASLFinal
    assert caught.value.step == "SCRAM-SHA-256"


def test_endless_parameter_statuses_are_not_all_kept():
    op = started()
    op.receive_data(auth(0) + b"".join(msg(b"S", b"p%d\0v\0" % i) for i in range(10_000)))
    assert not op.done and len(op.parameters) <= MAX_PARAMETERS

"""Stream decoders for `proxy --decode`, without sockets: the framed protocol's (both
directions, summarised as `sniff --decode framed` shows a message) and the example plug-ins'
``stream_parser(role)`` (PostgreSQL: startup, login, simple and extended queries, one reply
per ReadyForQuery; SMTP: command lines, a message after DATA or BDAT, multi-line replies).
Each is fed whole, byte by byte and at random splits; hostile bytes stop it with a reason and
cost bounded memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from plugin_driver import SPLITS, chunks
from socktools import protocol, reference
from socktools.examples.postgres import MAX_BODY, Postgres
from socktools.examples.smtp import MAX_LINE, Smtp
from socktools.wire import modes
from socktools.wire.base import WireError

SEED = 20261206


def decoded(parser, data: bytes, how: str = "whole", rng=None) -> list:
    """The summaries ``parser`` keeps for ``data`` cut as ``how`` says; each Reply's size adds
    up to the bytes of the messages it completed."""
    for piece in chunks(data, how, rng or random.Random(SEED)):
        parser.feed(piece)
    return [r.summary for r in parser.keep]


def sizes(parser) -> int:
    return sum(r.size for r in parser.keep)


# ------------------------------------------------------------------ framed
REQUEST = reference.make_request("search", "morpheus", keep_alive=True)
BINARY = reference.make_request("binary", "xyz")


def _answer(request: bytes) -> bytes:
    dec = protocol.Decoder()
    dec.receive_data(request)
    return reference.respond(dec.next_event())


def framed(role: str):
    return modes.get("framed").stream_parser(role)


@pytest.mark.parametrize("how", SPLITS)
def test_framed_requests_and_replies_are_summarised_as_sniff_shows_them(how):
    p = framed("request")
    assert decoded(p, REQUEST + BINARY, how) == ['text/json {"action": "search", "value": "morpheus"}',
                                                 "binary/custom-client-binary-type binaryxyz"]
    assert sizes(p) == len(REQUEST + BINARY) and p.buffered == 0
    assert p.keep[0].fields["header"]["keep-alive"] is True
    r = framed("response")
    assert decoded(r, _answer(REQUEST), how) == ['text/json {"result": "Follow the white rabbit. 🐰"}']
    assert sizes(r) == len(_answer(REQUEST))


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.sampled_from([REQUEST, BINARY, _answer(REQUEST), _answer(BINARY)]), min_size=1, max_size=6),
       hs.lists(hs.integers(1, 400), max_size=8))
def test_framed_any_cut_gives_the_same_messages(messages, cuts):
    data = b"".join(messages)
    whole = framed("request")
    whole.feed(data)
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    cut = framed("request")
    for a, b in zip(points, points[1:]):
        cut.feed(data[a:b])
    assert cut.keep == whole.keep and len(whole.keep) == len(messages)


def test_framed_a_message_past_the_cap_stops_the_decoder_before_its_content_is_held():
    from socktools.wire.framed import STREAM_MAX_CONTENT
    raw = (b'{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
           b'"content-length": %d}' % (STREAM_MAX_CONTENT + 1))
    p = framed("response")
    with pytest.raises(WireError, match="content-length"):
        p.feed(len(raw).to_bytes(2, "big") + raw + b"x" * 100)
    assert p.buffered < 1000


def test_framed_garbage_is_a_wire_error():
    with pytest.raises(WireError):
        framed("request").feed(b"\x00\x05hello")


def test_framed_has_a_stream_decoder_for_the_proxy_but_sniff_keeps_its_own_path():
    from socktools.capture import reassembly
    assert "framed" in modes.stream_decoders()
    assert "framed" not in modes.decoders() and "framed" not in reassembly.WIRE_DECODES


# ------------------------------------------------------------------ postgres
def msg(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def untyped(code: int, body: bytes = b"") -> bytes:
    return (len(body) + 8).to_bytes(4, "big") + code.to_bytes(4, "big") + body


def auth(code: int, rest: bytes = b"") -> bytes:
    return msg(b"R", code.to_bytes(4, "big") + rest)


def error(severity: str, code: str, text: str) -> bytes:
    return msg(b"E", f"S{severity}\0V{severity}\0C{code}\0M{text}\0\0".encode())


def pg(role: str):
    return Postgres(()).stream_parser(role)


SSL_REQUEST = untyped(80877103)
STARTUP = untyped(196608, b"user\0bob\0database\0bob\0application_name\0socktools\0\0")
SASL_FIRST = msg(b"p", b"SCRAM-SHA-256\0" + (20).to_bytes(4, "big") + b"n,,n=,r=abcdefghijkl")
SASL_FINAL = msg(b"p", b"c=biws,r=abcdefghijklXYZ,p=c2VjcmV0cHJvb2Y=")
QUERY = msg(b"Q", b"select 1\0")
EXTENDED = (msg(b"P", b"\0select $1\0\0\0") + msg(b"B", b"\0\0\0\0\0\x01\0\0\0\x011\0\0")
            + msg(b"D", b"P\0") + msg(b"E", b"\0\0\0\0\0") + msg(b"S", b""))
TERMINATE = msg(b"X", b"")

PARAMS = b"".join(msg(b"S", f"p{i}\0v{i}\0".encode()) for i in range(14))
LOGIN_DONE = auth(12, b"v=signature") + auth(0) + PARAMS + msg(b"K", b"\0\0\x30\x39\x12\x34\x56\x78") + msg(b"Z", b"I")
ROW = msg(b"T", b"\0\x01?column?\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0")
SELECT_1 = ROW + msg(b"D", b"\0\x01\0\0\0\x011") + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")
FAILED = error("ERROR", "42P01", 'relation "nope" does not exist') + msg(b"Z", b"I")
EXTENDED_REPLY = msg(b"1", b"") + msg(b"2", b"") + SELECT_1


@pytest.mark.parametrize("how", SPLITS)
def test_postgres_requests_startup_login_and_queries(how):
    p = pg("request")
    data = SSL_REQUEST + STARTUP + SASL_FIRST + SASL_FINAL + QUERY + EXTENDED + TERMINATE
    assert decoded(p, data, how) == [
        "SSLRequest", "StartupMessage user=bob database=bob application_name=socktools",
        "SASLInitialResponse SCRAM-SHA-256", "SASLResponse", "Query 'select 1'",
        "Parse 'select $1' · Bind · Describe · Execute · Sync"]   # Terminate is answered by nobody
    assert sizes(p) == len(data) - len(TERMINATE)


def test_postgres_a_password_is_never_shown():
    p = pg("request")
    decoded(p, STARTUP + msg(b"p", b"hunter2-secret\0"))
    assert p.keep[-1].summary == "PasswordMessage" and "hunter2" not in repr(p.keep)


@pytest.mark.parametrize("how", SPLITS)
def test_postgres_one_reply_per_answer_the_client_waits_for(how):
    r = pg("response")
    data = (b"N" + auth(10, b"SCRAM-SHA-256\0\0") + auth(11, b"r=abcdefghijklXYZ,s=c2FsdA==,i=4096")
            + LOGIN_DONE + SELECT_1 + FAILED + EXTENDED_REPLY)
    assert decoded(r, data, how) == [
        "N (no encryption)", "AuthenticationSASL SCRAM-SHA-256", "AuthenticationSASLContinue",
        "AuthenticationSASLFinal · AuthenticationOk · ParameterStatus ×14 · BackendKeyData · ReadyForQuery I",
        "RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I",
        'ErrorResponse ERROR 42P01 relation "nope" does not exist · ReadyForQuery I',
        "ParseComplete · BindComplete · RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I"]
    assert sizes(r) == len(data) and r.buffered == 0
    assert r.keep[4].fields["rows"] == 1 and r.keep[5].fields["sqlstate"] == "42P01"


def test_postgres_a_refused_login_is_one_reply_in_the_servers_words():
    r = pg("response")
    words = 'password authentication failed for user "bob"'
    assert decoded(r, auth(10, b"SCRAM-SHA-256\0\0") + error("FATAL", "28P01", words)) == [
        "AuthenticationSASL SCRAM-SHA-256", f"ErrorResponse FATAL 28P01 {words}"]


def test_postgres_a_long_reply_is_summarised_in_bounded_words_and_memory():
    r = pg("response")
    rows = msg(b"D", b"\0\x01\0\0\0\x011") * 5000
    notices = (msg(b"N", b"SNOTICE\0C00000\0Mhi\0\0") + msg(b"D", b"\0\x01\0\0\0\x011")) * 100
    wide = msg(b"D", b"\0\x01" + (3 * MAX_BODY).to_bytes(4, "big") + b"x" * (3 * MAX_BODY))
    data = ROW + rows + notices + wide + msg(b"C", b"SELECT 5101\0") + msg(b"Z", b"I")
    most = 0
    for piece in chunks(data, "random", random.Random(SEED), most=4096):
        r.feed(piece)
        most = max(most, len(r.stream.buf))
    (reply,) = r.keep
    assert reply.size == len(data) and reply.fields["rows"] == 5101
    assert reply.summary.startswith("RowDescription · DataRow ×5000 · NoticeResponse · DataRow · ")
    assert len(reply.summary) < 400 and reply.summary.endswith(" more · ReadyForQuery I")
    assert most <= MAX_BODY + 5 + 4096          # a wide row is skipped, not held


@pytest.mark.parametrize("role, data, words", [
    ("response", msg(b"Z", b"I")[:1] + (1 << 31).to_bytes(4, "big"), "not PostgreSQL"),
    ("response", b"S\x16\x03\x03", "TLS"),
    ("request", (1 << 20).to_bytes(4, "big") + (196608).to_bytes(4, "big"), "startup"),
    ("request", SSL_REQUEST + b"\x16\x03\x01\x02\x00", "TLS"),
    ("request", STARTUP + msg(b"Z", b"")[:1] + (1 << 31).to_bytes(4, "big"), "not PostgreSQL"),
])
def test_postgres_hostile_or_encrypted_bytes_stop_the_decoder_with_the_reason(role, data, words):
    with pytest.raises(WireError, match=words):
        pg(role).feed(data)


# ------------------------------------------------------------------ smtp
def smtp(role: str):
    return Smtp(()).stream_parser(role)


GREETING = b"220 test.invalid ESMTP Exim 4.96 Sun, 06 Dec 2026 05:05:23 +0000\r\n"
EHLO_REPLY = (b"250-test.invalid Hello localhost [127.0.0.1]\r\n250-SIZE 52428800\r\n250-PIPELINING\r\n"
              b"250-CHUNKING\r\n250 HELP\r\n")
MESSAGE = b"Subject: hi\r\n\r\n..a line that starts with a dot\r\nbody\r\n.\r\n"
COMMANDS = (b"EHLO localhost\r\nMAIL FROM:<a@test.invalid>\r\nRCPT TO:<b@test.invalid>\r\nDATA\r\n" + MESSAGE
            + b"BDAT 7 LAST\r\nhi\r\n.\r\nAUTH PLAIN AGJvYgBzM2NyZXQ=\r\nAUTH LOGIN\r\nYm9i\r\nczNjcmV0\r\n"
              b"NOOP\r\nQUIT\r\n")


@pytest.mark.parametrize("how", SPLITS)
def test_smtp_commands_and_the_messages_they_carry(how):
    p = smtp("request")
    assert decoded(p, COMMANDS, how) == [
        "EHLO localhost", "MAIL FROM:<a@test.invalid>", "RCPT TO:<b@test.invalid>", "DATA",
        f"(message, {len(MESSAGE)} bytes)", "BDAT 7 LAST (7 bytes)", "AUTH PLAIN (hidden)", "AUTH LOGIN",
        "(AUTH data)", "(AUTH data)", "NOOP", "QUIT"]
    assert sizes(p) == len(COMMANDS) and p.buffered == 0
    assert "czNjcmV0" not in repr(p.keep) and "AGJvYgBzM2NyZXQ" not in repr(p.keep)


@pytest.mark.parametrize("how", SPLITS)
def test_smtp_replies_one_a_reply_multi_line_ones_whole(how):
    r = smtp("response")
    data = GREETING + EHLO_REPLY + b"250 OK\r\n354 Enter message\r\n550 5.1.1 no such user\r\n"
    assert decoded(r, data, how) == [
        "220 test.invalid ESMTP Exim 4.96 Sun, 06 Dec 2026 05:05:23 +0000",
        "250 test.invalid Hello localhost [127.0.0.1] (+4 lines)", "250 OK", "354 Enter message",
        "550 5.1.1 no such user"]
    assert sizes(r) == len(data)


def test_smtp_a_message_is_counted_not_held():
    p = smtp("request")
    body = b"x" * 200 + b"\r\n"
    p.feed(b"DATA\r\n")
    for _ in range(2000):
        p.feed(body)
        assert not p.buf and not p.keep[1:]         # passed on, not held
    p.feed(b".\r\n")
    assert p.keep[-1].summary == f"(message, {2000 * len(body) + 3:,} bytes)"


@pytest.mark.parametrize("role, data", [
    ("request", b"x" * (MAX_LINE + 1)),
    ("request", b"STARTTLS\r\n\x16\x03\x01\x02\x00"),
    ("request", b"BDAT many\r\n"),
    ("response", b"hello\r\n"),
])
def test_smtp_hostile_or_encrypted_bytes_stop_the_decoder(role, data):
    with pytest.raises(WireError):
        smtp(role).feed(data)


# ------------------------------------------------------------------ the hook
def test_a_plugin_without_the_hook_has_no_stream_decoder():
    from socktools.examples.memcached import Memcached
    from socktools.wire import WireProtocol
    assert WireProtocol().stream_parser("request") is None
    assert Memcached(()).stream_parser("response") is None


# ------------------------------------------------------------------ any cut, any garbage
STREAMS = {
    "framed": (lambda role: framed(role), REQUEST + BINARY, _answer(REQUEST) + _answer(BINARY)),
    "postgres": (pg, SSL_REQUEST + STARTUP + SASL_FIRST + SASL_FINAL + QUERY + EXTENDED,
                 b"N" + auth(10, b"SCRAM-SHA-256\0\0") + LOGIN_DONE + SELECT_1 + FAILED + EXTENDED_REPLY),
    "smtp": (smtp, COMMANDS, GREETING + EHLO_REPLY + b"250 OK\r\n354 go\r\n"),
}


@settings(max_examples=80, deadline=None)
@given(hs.sampled_from(sorted(STREAMS)), hs.sampled_from(["request", "response"]),
       hs.lists(hs.integers(0, 5000), max_size=10))
def test_any_cut_gives_the_same_replies(name, role, cuts):
    make, request, response = STREAMS[name]
    data = request if role == "request" else response
    whole = make(role)
    whole.feed(data)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    cut = make(role)
    for a, b in zip(points, points[1:]):
        cut.feed(data[a:b])
    assert cut.keep == whole.keep and whole.keep


_PIECES = hs.sampled_from([b"\0", b"\0\0\0\x08", b"\x04\xd2\x16\x2f", b"\0\x03\0\0", b"Q", b"Z", b"R", b"D", b"E",
                           b"N", b"S", b"\0\0\0\x05", b"\xff\xff\xff\xff", b"250", b"250-", b" ", b"\r\n", b".",
                           b"DATA", b"BDAT 3", b"AUTH", b"{", b"x" * 20])


@settings(max_examples=150, deadline=None)
@given(hs.sampled_from(sorted(STREAMS)), hs.sampled_from(["request", "response"]), hs.lists(_PIECES, max_size=30))
def test_garbage_is_a_wire_error_or_replies_never_a_crash(name, role, pieces):
    parser = STREAMS[name][0](role)
    try:
        for piece in pieces:
            assert parser.feed(piece) >= 0
    except WireError:
        pass
    assert all(r.size > 0 for r in parser.keep)

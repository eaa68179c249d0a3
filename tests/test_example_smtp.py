"""The SMTP plug-in without sockets: greeting and EHLO, NOOP and whole mail transactions,
replies framed by RFC 5321's multi-line rules (fed whole, byte by byte, at random splits), the
server's close after N commands as a reconnect, and hostile bytes.  The replies are Exim
4.96's own, as it sent them to these requests (tests/test_smtp_real.py runs the real one)."""

from __future__ import annotations

import random

import pytest

from socktools.examples.smtp import MAX_LINE, MAX_REPLY_LINES, Smtp, SmtpParser, SmtpReplies
from plugin_driver import SPLITS, chunks
from socktools.wire import WireError
from socktools.wire.opening import OpeningFailed

SEED = 20261206
GREETING = b"220 test.invalid ESMTP Exim 4.96 Sun, 06 Dec 2026 05:05:23 +0000\r\n"
EHLO_REPLY = (b"250-test.invalid Hello localhost [127.0.0.1]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
              b"250-PIPELINING\r\n250-PIPECONNECT\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-SMTPUTF8\r\n250 HELP\r\n")
NOOP_OK = b"250 OK\r\n"
NONMAIL = b"554 Too many nonmail commands\r\n"
#: RSET, MAIL, RCPT, then BDAT LAST's reply (Exim answers a last chunk in two lines).
TRANSACTION_OK = (b"250 Reset OK\r\n250 OK\r\n250 Accepted\r\n250- 22 byte chunk, total 22\r\n"
                  b"250 OK id=1xa4R9-0001GO-1x\r\n")
MAIL = "MAIL FROM:<a@test.invalid> RCPT TO:<b@test.invalid>"




def feed(parser, data: bytes, how: str, rng=None) -> int:
    return sum(parser.feed(piece) for piece in chunks(data, how, rng or random.Random(SEED)))


# --- the opening -----------------------------------------------------------------------------------

def run_opening(op, greeting: bytes, ehlo_reply: bytes, how: str):
    rng = random.Random(SEED)
    assert op.data_to_send() == b""                  # the server speaks first
    for piece in chunks(greeting, how, rng):
        op.receive_data(piece)
    assert op.data_to_send() == b"EHLO localhost\r\n"
    for piece in chunks(ehlo_reply, how, rng):
        op.receive_data(piece)
    return op


@pytest.mark.parametrize("how", SPLITS)
def test_greeting_then_ehlo_opens_the_connection(how):
    op = run_opening(Smtp(()).opening(), GREETING, EHLO_REPLY, how)
    assert op.done and op.leftover() == b"" and op.data_to_send() == b""
    assert {"PIPELINING", "CHUNKING", "SIZE", "HELP"} <= op.extensions
    assert "TEST.INVALID" not in op.extensions       # the first line greets, it is no extension


@pytest.mark.parametrize("greeting, words", [
    (b"554 no SMTP service here\r\n", "554 no SMTP service here"),
    (b"421-busy\r\n421 try later\r\n", "421 try later"),
])
def test_a_greeting_other_than_220_refuses_in_the_servers_words(greeting, words):
    op = Smtp(()).opening()
    with pytest.raises(OpeningFailed) as caught:
        op.receive_data(greeting)
    assert (caught.value.words, caught.value.step) == (words, "greeting")


def test_a_refused_ehlo_is_tallied_by_its_words():
    op = Smtp(()).opening()
    op.receive_data(GREETING)
    op.data_to_send()
    with pytest.raises(OpeningFailed) as caught:
        op.receive_data(b"550 go away\r\n")
    assert (caught.value.words, caught.value.step) == ("550 go away", "EHLO")


def test_a_transaction_needs_pipelining_and_chunking():
    plain = b"250-test.invalid Hello\r\n250 SIZE 1000\r\n"
    with pytest.raises(OpeningFailed, match="no PIPELINING and no CHUNKING"):
        run_opening(Smtp((MAIL,)).opening(), GREETING, plain, "whole")
    assert run_opening(Smtp((MAIL,)).opening(), GREETING, EHLO_REPLY, "whole").done
    assert run_opening(Smtp(()).opening(), GREETING, plain, "whole").done     # NOOP needs neither


def test_a_server_that_talks_before_ehlo_is_unsolicited():
    op = Smtp(()).opening()
    with pytest.raises(WireError) as caught:
        op.receive_data(GREETING + NOOP_OK)
    assert caught.value.kind == "unsolicited"


def test_bytes_after_the_ehlo_reply_belong_to_the_traffic():
    op = Smtp(()).opening()
    op.receive_data(GREETING)
    op.data_to_send()
    op.receive_data(EHLO_REPLY + b"250 O")
    assert op.done and op.leftover() == b"250 O"


# --- requests and replies --------------------------------------------------------------------------

@pytest.mark.parametrize("how", SPLITS)
def test_noops_are_counted_one_reply_each(how):
    proto = Smtp(())
    assert proto.fixed_request == b"NOOP\r\n" and proto.request(5, 1) == b"NOOP\r\n"
    p = proto.parser()
    assert feed(p, NOOP_OK * 4, how) == 4
    assert p.buffered == 0 and not p.failures and not p.closing
    assert proto.tally == {"2xx": 4}


@pytest.mark.parametrize("how", SPLITS)
def test_a_whole_transaction_is_one_request_and_one_reply(how):
    proto = Smtp((MAIL.replace("RCPT", "RCPT TO:<c@test.invalid> RCPT", 1),))
    request = proto.request(7, 2)
    head, message = request.split(b" LAST\r\n", 1)
    assert head.split(b"\r\n")[:4] == [b"RSET", b"MAIL FROM:<a@test.invalid>", b"RCPT TO:<c@test.invalid>",
                                       b"RCPT TO:<b@test.invalid>"]
    assert head.endswith(b"BDAT %d" % len(message))
    assert b"Subject: socktools 7\r\n" in message and b"To: <c@test.invalid>, <b@test.invalid>\r\n" in message
    p = proto.parser()
    two = TRANSACTION_OK.replace(b"250 Accepted\r\n", b"250 Accepted\r\n" * 2)   # two RCPTs
    assert feed(p, two * 2, how) == 2
    assert p.buffered == 0 and not p.failures


@pytest.mark.parametrize("how", SPLITS)
def test_a_refused_recipient_fails_the_transaction_by_its_code(how):
    proto = Smtp((MAIL,))
    p = proto.parser()
    refused = (b"250 Reset OK\r\n250 OK\r\n550 Administrative prohibition\r\n"
               b"503-All RCPT commands were rejected with this error:\r\n503-Administrative prohibition\r\n"
               b"503 Valid RCPT command must precede BDAT\r\n")
    assert feed(p, refused + TRANSACTION_OK, how) == 2
    assert [(f.kind, f.detail) for f in p.failures] == [("smtp-5xx", "550 Administrative prohibition")]
    assert proto.tally == {"5xx": 1, "2xx": 1}


@pytest.mark.parametrize("how", SPLITS)
def test_the_servers_close_after_n_commands_is_a_reconnect_not_a_failure(how):
    proto = Smtp(())
    p = proto.parser()
    assert feed(p, NOOP_OK * 10 + NONMAIL, how) == 11
    assert p.closing and not p.failures
    assert proto.tally == {"2xx": 10, "closed: 554 Too many nonmail commands": 1}
    q = proto.parser()
    assert q.feed(b"421 test.invalid lost input connection\r\n") == 1 and q.closing and not q.failures


def test_a_421_in_the_middle_of_a_transaction_ends_it():
    p = Smtp((MAIL,)).parser()
    assert p.feed(b"250 Reset OK\r\n250 OK\r\n421 shutting down\r\n") == 1
    assert p.closing and not p.failures
    with pytest.raises(WireError) as caught:
        p.feed(b"250 OK\r\n")
    assert caught.value.kind == "unsolicited"


def test_a_554_in_a_transaction_is_a_failure_not_a_close():
    p = Smtp((MAIL,)).parser()
    assert p.feed(b"250 Reset OK\r\n554 sender refused\r\n503 no sender\r\n503 no recipients\r\n") == 1
    assert not p.closing and [f.detail for f in p.failures] == ["554 sender refused"]


def test_request_keeps_each_reply():
    p = Smtp(()).parser()
    p.keep = []
    assert p.feed(NOOP_OK + b"502-not\r\n502 implemented\r\n") == 2
    assert [r.summary for r in p.keep] == ["250 OK", "502 implemented"]
    assert p.keep[1].size == len(b"502-not\r\n502 implemented\r\n")


def test_the_same_reply_again_is_known_without_parsing():
    proto = Smtp(())
    assert proto.parser().feed(NOOP_OK) == 1
    assert NOOP_OK in proto.whole
    assert proto.parser().feed(b"550 no\r\n") == 1 and b"550 no\r\n" not in proto.whole


# --- hostile servers and bad commands -------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"hello\r\n", "not an SMTP reply line"),
    (b"25\r\n", "not an SMTP reply line"),
    (b"650 six hundred\r\n", "not an SMTP reply line"),
    (b"250+x\r\n", "not an SMTP reply line"),
    (b"250-a\r\n550 b\r\n", "changed its code from 250 to 550"),
    (b"250-x\r\n" * (MAX_REPLY_LINES + 1), f"more than {MAX_REPLY_LINES} lines"),
    (b"2" * (MAX_LINE + 1), f"longer than {MAX_LINE}"),
])
def test_bytes_that_are_not_smtp_are_wire_errors(data, reason):
    with pytest.raises(WireError, match=reason):
        Smtp(()).parser().feed(data)


def test_an_endless_line_is_refused_once_it_passes_the_limit_and_not_kept():
    r = SmtpReplies()
    r.feed(b"250 " + b"x" * (MAX_LINE - 10))
    assert r.buffered < MAX_LINE
    with pytest.raises(WireError):
        r.feed(b"x" * 20)


def test_a_truncated_reply_is_named_at_the_close():
    p = SmtpParser()
    assert p.feed(b"250-multi\r\n250 O") == 0
    with pytest.raises(WireError) as caught:
        p.eof()
    assert caught.value.kind == "truncated"


@pytest.mark.parametrize("commands, says", [
    (("DATA",), "simple command"),
    (("QUIT",), "simple command"),
    (("MAIL FROM:<a@x>",), "simple command"),          # no recipient: not a whole transaction
    (("NOOP\r\nQUIT",), "without CR, LF or NUL"),
    (("NOOP", MAIL), "either simple commands or transactions"),
    ((MAIL, MAIL + " RCPT TO:<c@x>"), "as many recipients"),
])
def test_commands_that_cannot_be_counted_are_refused(commands, says):
    with pytest.raises(ValueError, match=says):
        Smtp(commands)

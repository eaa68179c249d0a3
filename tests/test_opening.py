"""The built-in openings (--greeting, --greeting-match, --setup) without sockets: each server
reply fed whole, byte by byte and at random splits; refusals by the server's words; the options'
usage errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from socktools.wire.base import WireError
from socktools.wire.opening import MAX_OPENING_REPLY, OpeningFailed
from socktools.wire.spec import WireOptionError, WireSpec, build


def pieces(data: bytes, how) -> list:
    """``data`` whole (how=0), in pieces of ``how`` bytes, or cut at the points in ``how``."""
    if how == 0:
        return [data]
    if isinstance(how, int):
        return [data[i:i + how] for i in range(0, len(data), how)]
    points = sorted({c % (len(data) + 1) for c in how} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def converse(op, script, how=0) -> list:
    """Play the server of ``script`` -- (what it expects to read, what it answers) per turn --
    against ``op``; what the client sent at each turn."""
    sent = []
    for expect, answer in script:
        out = op.data_to_send()
        sent.append(out)
        assert out == expect
        assert not op.done
        for piece in pieces(answer, how):
            op.receive_data(piece)
    return sent


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


HELLO3 = (b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n"
          b"$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
          b"$7\r\nmodules\r\n*0\r\n")
REDIS = WireSpec(mode="redis", setups=("AUTH s3cret", "SELECT 2", "HELLO 3"))
REDIS_SCRIPT = [(resp(b"AUTH", b"s3cret"), b"+OK\r\n"), (resp(b"SELECT", b"2"), b"+OK\r\n"),
                (resp(b"HELLO", b"3"), HELLO3)]
LINE = WireSpec(mode="line", sends=("NOOP",), eol="crlf", greeting_match="^220 ", setups=("EHLO me",))
LINE_SCRIPT = [(b"", b"220 test.invalid ESMTP Exim 4.96\r\n"),
               (b"EHLO me\r\n", b"250-test.invalid Hello me\r\n250-SIZE 52428800\r\n250 HELP\r\n")]
RAW = WireSpec(mode="raw", sends=("PING\\r\\n",), reply_until="\\r\\n", greeting=True, setups=("HI\\x00\\r\\n",))
RAW_SCRIPT = [(b"", b"\x01WELCOME\r\n"), (b"HI\x00\r\n", b"anything at all\r\n")]

CASES = [(REDIS, REDIS_SCRIPT), (LINE, LINE_SCRIPT), (RAW, RAW_SCRIPT)]


@pytest.mark.parametrize("how", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("spec,script", CASES, ids=["redis", "line", "raw"])
def test_the_conversation_goes_step_by_step_however_the_replies_are_cut(spec, script, how):
    op = build(spec).opening()
    converse(op, script, how)
    assert op.done and op.data_to_send() == b"" and op.leftover() == b""


@settings(max_examples=60, deadline=None)
@given(cuts=hs.lists(hs.integers(0, 400), max_size=12), case=hs.sampled_from(range(len(CASES))))
def test_random_splits(cuts, case):
    spec, script = CASES[case]
    op = build(spec).opening()
    converse(op, script, cuts)
    assert op.done and op.leftover() == b""


def test_each_setup_goes_out_only_once_the_previous_reply_is_in():
    op = build(REDIS).opening()
    assert op.data_to_send() == resp(b"AUTH", b"s3cret")
    op.receive_data(b"+O")
    assert op.data_to_send() == b""          # half a reply: nothing new yet
    op.receive_data(b"K\r\n")
    assert op.data_to_send() == resp(b"SELECT", b"2")


@pytest.mark.parametrize("how", [0, 1])
def test_what_follows_the_last_reply_is_the_traffics_leftover(how):
    op = build(REDIS).opening()
    converse(op, REDIS_SCRIPT[:2] + [(REDIS_SCRIPT[2][0], HELLO3 + b"+PONG\r\n")], how)
    assert op.done and op.leftover() == b"+PONG\r\n"


def test_two_replies_in_one_read_are_split_where_the_first_ends():
    # A greeting and (unasked) a second line in one segment: the greeting is the step's reply,
    # the second line is taken as the next step's -- after which the opening is over.
    spec = WireSpec(mode="line", sends=("NOOP",), greeting=True)
    op = build(spec).opening()
    op.receive_data(b"220 hi\r\n250 extra\r\n")
    assert op.done and op.leftover() == b"250 extra\r\n"


@pytest.mark.parametrize("how", [0, 1])
@pytest.mark.parametrize("reply,words", [(b"-NOAUTH Authentication required.\r\n", "NOAUTH Authentication required."),
                                         (b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                                          "WRONGPASS invalid username-password pair or user is disabled.")])
def test_a_redis_error_refuses_with_the_servers_words(reply, words, how):
    op = build(REDIS).opening()
    op.data_to_send()
    with pytest.raises(OpeningFailed) as caught:
        for piece in pieces(reply, how):
            op.receive_data(piece)
    assert caught.value.words == words and caught.value.step == "setup 1"


def test_a_later_step_is_named():
    op = build(REDIS).opening()
    converse(op, REDIS_SCRIPT[:1])
    op.data_to_send()
    with pytest.raises(OpeningFailed, match=r"^setup 2: ERR DB index is out of range$"):
        op.receive_data(b"-ERR DB index is out of range\r\n")


@pytest.mark.parametrize("line,refused", [(b"530 Please login with USER and PASS.\r\n", True),
                                          (b"421 Too many connections\r\n", True), (b"-ERR no\r\n", True),
                                          (b"220 (vsFTPd 3.0.3)\r\n", False), (b"5300 things\r\n", False),
                                          (b"+OK POP3 ready\r\n", False)])
def test_a_line_refuses_with_a_4xx_or_5xx_code_or_err(line, refused):
    op = build(WireSpec(mode="line", sends=("NOOP",), greeting=True)).opening()
    if refused:
        with pytest.raises(OpeningFailed) as caught:
            op.receive_data(line)
        assert caught.value.words == line.decode().strip() and caught.value.step == "greeting"
    else:
        op.receive_data(line)
        assert op.done


def test_a_multi_line_refusal_is_refused_at_its_first_line():
    op = build(LINE).opening()
    converse(op, LINE_SCRIPT[:1])
    op.data_to_send()
    with pytest.raises(OpeningFailed, match="550-no"):
        op.receive_data(b"550-no\r\n550 really\r\n")


@pytest.mark.parametrize("how", [0, 1])
def test_a_greeting_that_does_not_match_refuses_with_the_greeting(how):
    op = build(LINE).opening()
    with pytest.raises(OpeningFailed) as caught:
        for piece in pieces(b"200 something else\r\n", how):
            op.receive_data(piece)
    assert caught.value.words == "200 something else" and caught.value.step == "greeting"


def test_a_raw_reply_is_framed_not_judged_and_reply_match_is_the_traffics():
    spec = WireSpec(mode="raw", sends=("x",), reply_until="\\n", reply_match="^OK", setups=("hello\\n",))
    op = build(spec).opening()
    assert op.data_to_send() == b"hello\n"
    op.receive_data(b"NOT OK\n")
    assert op.done


def test_a_greeting_that_never_ends_costs_a_bounded_buffer():
    op = build(WireSpec(mode="line", sends=("NOOP",), greeting=True)).opening()
    chunk = b"x" * 4096
    with pytest.raises(WireError, match="reply is over"):
        for _ in range(MAX_OPENING_REPLY // len(chunk) + 2):
            op.receive_data(chunk)


def test_bytes_that_are_not_the_protocol_are_a_wire_error():
    op = build(REDIS).opening()
    op.data_to_send()
    with pytest.raises(WireError):
        op.receive_data(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_fixed_size_framing_takes_the_greeting_by_its_size():
    spec = WireSpec(mode="raw", sends=("x",), reply_bytes=4, greeting=True, setups=("ab",))
    op = build(spec).opening()
    converse(op, [(b"", b"GRT!"), (b"ab", b"1234")], 1)
    assert op.done


def test_the_report_describes_the_opening_without_its_texts():
    assert build(REDIS).opening().describe() == "3 setup messages"
    assert build(LINE).opening().describe() == "greeting, then 1 setup message"
    summary = REDIS.summary()
    assert summary["opening"] == {"greeting": False, "greeting_match": None, "setup": 3}
    assert "s3cret" not in repr(summary)


def test_without_opening_options_there_is_no_opening():
    assert build(WireSpec(mode="redis")).opening() is None


# ------------------------------------------------------------------ the options' checks
@pytest.mark.parametrize("spec,flag,words", [
    (WireSpec(mode="raw", sends=("x",), no_reply=True, setups=("a",)), "--setup", "not with --no-reply"),
    (WireSpec(mode="raw", sends=("x",), no_reply=True, greeting=True), "--greeting", "not with --no-reply"),
    (WireSpec(mode="raw", sends=("x",), reply_until_close=True, greeting=True), "--greeting",
     "--reply-until-close"),
    (WireSpec(mode="line", sends=("x",), greeting_match="(unclosed"), "--greeting-match",
     "not a regular expression"),
    (WireSpec(mode="line", sends=("x",), setups=("HELLO {conn}",)), "--setup", "no {seq} or {conn}"),
    (WireSpec(mode="redis", setups=("SELECT {seq}",)), "--setup", "no {seq} or {conn}"),
    (WireSpec(mode="redis", setups=("AUTH 'unclosed",)), "--setup", "cannot split"),
    (WireSpec(mode="line", sends=("x",), setups=("\\q",)), "--setup", "unknown escape"),
    (WireSpec(mode="echo", greeting=True), "--greeting", "only for --mode raw and line and redis"),
    (WireSpec(mode="framed", setups=("x",)), "--setup", "only for --mode raw and line and redis"),
    (WireSpec(mode="http", host="h", setups=("x",)), "--setup", "only for --mode raw and line and redis"),
    (WireSpec(mode="plugin", plugin="socktools.examples.memcached:Memcached", setups=("x",)), "--setup",
     "a plug-in's opening is its own"),
])
def test_an_opening_that_cannot_work_is_an_option_error_naming_the_option(spec, flag, words):
    with pytest.raises(WireOptionError) as caught:
        build(spec)
    assert caught.value.flag == flag and words in caught.value.message

"""The wire parsers without sockets: whole feeds, byte-by-byte feeds, random splits."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from socktools import wire
from socktools.wire.base import WireError
from socktools.wire.escapes import EscapeError, Template, unescape
from socktools.wire.redis import RespParser, encode_command
from socktools.wire.spec import WireOptionError, WireSpec, build


def feed_all(parser, data: bytes, step: int = 0) -> int:
    """Feed ``data`` whole (step 0) or in pieces of ``step`` bytes; total replies."""
    if not step:
        return parser.feed(data)
    return sum(parser.feed(data[i:i + step]) for i in range(0, len(data), step))


def splits(data: bytes, cuts: list) -> list:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


# ----------------------------------------------------------------- escapes

def test_escapes_become_bytes():
    assert unescape(r"PING\r\n") == b"PING\r\n"
    assert unescape(r"a\tb\\c\0\x7f\xFF") == b"a\tb\\c\0\x7f\xff"
    assert unescape("é") == "é".encode()


@pytest.mark.parametrize("text, words", [(r"\q", "unknown escape \\q"), ("end\\", "lone backslash"),
                                         (r"\x4", "two hex digits"), (r"\xZZ", "two hex digits")])
def test_bad_escapes_say_what_and_where(text, words):
    with pytest.raises(EscapeError, match=words.replace("\\", "\\\\")):
        unescape(text)


def test_placeholders_render_and_braces_escape():
    t = Template(b"SET k:{seq} c{conn} {{x}}")
    assert t.fixed is None
    assert t.render(7, 2) == b"SET k:7 c2 {x}"
    assert Template(b"plain").fixed == b"plain"
    with pytest.raises(EscapeError, match="unknown placeholder"):
        Template(b"{sqe}")


@given(hs.binary(max_size=40))
def test_any_bytes_survive_an_escaped_round_trip(data):
    text = "".join(f"\\x{b:02x}" for b in data)
    assert unescape(text) == data


# ----------------------------------------------------------------- raw and line

def raw(**kw):
    kw.setdefault("sends", ("PING\\r\\n",))
    return build(WireSpec(mode="raw", **kw))


@pytest.mark.parametrize("step", [0, 1, 3])
def test_until_counts_replies_across_any_split(step):
    p = raw(reply_until="\\r\\n").parser()
    assert feed_all(p, b"+PONG\r\n+PONG\r\n+PO", step) == 2
    assert p.buffered == 3
    assert p.feed(b"NG\r\n") == 1 and p.buffered == 0


def test_until_close_frames_one_reply_by_the_close():
    proto = raw(reply_until_close=True, reply_match="^ok")
    assert proto.may_close and "until the server closes" in proto.describe()
    p = proto.parser()
    assert p.feed(b"ok, and") == 0 and p.feed(b" more") == 0 and p.buffered == 12
    assert not p.closing and p.eof() == 1 and p.closing and p.buffered == 0 and not p.failures
    q = proto.parser()
    assert q.eof() == 0                                   # closed before any byte: no reply
    assert q.feed(b"no") == 0 and q.eof() == 1 and [f.kind for f in q.failures] == ["wrong-reply"]


def test_until_close_bounds_what_it_buffers():
    from socktools.wire.raw import MAX_REPLY
    p = raw(reply_until_close=True).parser()
    with pytest.raises(WireError) as exc:
        p.feed(b"x" * (MAX_REPLY + 1))
    assert exc.value.kind == "reply-too-long"


def test_until_finds_a_delimiter_split_between_reads():
    p = raw(reply_until="END\\r\\n").parser()
    assert p.feed(b"VALUE x EN") == 0
    assert p.feed(b"D\r") == 0
    assert p.feed(b"\n") == 1


def test_reply_match_marks_wrong_replies_with_their_first_bytes():
    p = raw(reply_until="\\n", reply_match="^OK").parser()
    assert p.feed(b"OK 1\nNOPE this is wrong\nOK 2\n") == 3
    assert [(f.kind, f.sample) for f in p.failures] == [("wrong-reply", b"NOPE this is wrong\n")]


@pytest.mark.parametrize("step", [0, 1, 5])
def test_fixed_size_replies(step):
    p = raw(reply_bytes=4).parser()
    assert feed_all(p, b"abcdefghij", step) == 2 and p.buffered == 2


def test_length_prefix_with_adjust():
    # A 2-byte big-endian length that counts itself: body = length - 2.
    p = raw(reply_prefix=">H", reply_prefix_adjust=-2).parser()
    msg = b"\x00\x05abc" + b"\x00\x02" + b"\x00\x04zz"
    assert feed_all(p, msg, 1) == 3
    q = raw(reply_prefix="<I").parser()
    assert q.feed(b"\x03\x00\x00\x00xyz\x01\x00") == 1 and q.buffered == 2


def test_a_reply_without_its_delimiter_is_bounded():
    from socktools.wire.raw import MAX_REPLY
    p = raw(reply_until="\\n").parser()
    with pytest.raises(WireError) as err:
        p.feed(b"x" * (MAX_REPLY + 1))
    assert err.value.kind == "reply-too-long"


def test_rotation_and_line_endings():
    proto = build(WireSpec(mode="line", sends=("A {seq}", "B"), eol="crlf"))
    assert [proto.request(i, 0) for i in range(3)] == [b"A 0\r\n", b"B\r\n", b"A 2\r\n"]
    assert proto.parser().feed(b"one\r\ntwo\n") == 2


def test_no_reply_ignores_what_arrives():
    proto = raw(no_reply=True)
    assert not proto.replies and proto.parser().feed(b"anything") == 0


# ----------------------------------------------------------------- redis

REPLIES = [b"+OK\r\n", b"-ERR wrong type\r\n", b":42\r\n", b"$5\r\nhello\r\n", b"$-1\r\n",
           b"*2\r\n$1\r\na\r\n:1\r\n", b"*-1\r\n", b"_\r\n", b",3.14\r\n", b"#t\r\n",
           b"!9\r\nERR blob!\r\n", b"=8\r\ntxt:abcd\r\n", b"(12345678901234567890\r\n",
           b"%1\r\n+k\r\n:1\r\n", b"~2\r\n:1\r\n:2\r\n", b"*1\r\n*1\r\n$0\r\n\r\n"]


def test_command_encoding_is_what_redis_cli_sends():
    assert encode_command([b"SET", b"k", b"v v"]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n"
    proto = build(WireSpec(mode="redis", commands=("SET 'a key:{seq}' \"two words\"",)))
    assert proto.request(5, 0) == encode_command([b"SET", b"a key:5", b"two words"])
    assert build(WireSpec(mode="redis")).fixed_request == b"*1\r\n$4\r\nPING\r\n"


@pytest.mark.parametrize("step", [0, 1, 2, 7])
def test_every_resp_type_is_one_reply_whatever_the_split(step):
    p = RespParser()
    assert feed_all(p, b"".join(REPLIES), step) == len(REPLIES)
    assert p.buffered == 0
    assert sorted(f.detail for f in p.failures) == ["ERR blob!", "ERR wrong type"]
    assert {f.kind for f in p.failures} == {"server-error"}


def test_a_read_seen_as_one_whole_reply_is_counted_again_without_parsing_but_errors_never_are():
    proto = build(WireSpec(mode="redis"))
    a, b = proto.parser(), proto.parser()
    assert a.feed(b"+OK\r\n") == 1 and a.feed(b"$5\r\nhello\r\n") == 1
    assert proto.whole == {b"+OK\r\n", b"$5\r\nhello\r\n"}   # one connection teaches the others
    assert b.feed(b"+OK\r\n") == 1 and b.buffered == 0
    for _ in range(2):                                  # an error is parsed (and tallied) every time
        assert b.feed(b"-ERR no\r\n") == 1
    assert [f.detail for f in b.failures] == ["ERR no", "ERR no"] and b"-ERR no\r\n" not in proto.whole
    # Two replies in one read, or the tail of a split one, are not "one whole reply".
    assert b.feed(b"+OK\r\n+OK\r\n") == 2 and b.feed(b"$5\r\nhel") == 0 and b.feed(b"lo\r\n") == 1
    assert proto.whole == {b"+OK\r\n", b"$5\r\nhello\r\n"}
    # With bytes buffered, a known read is parsed as the continuation it is.
    assert b.feed(b"$5\r\n") == 0 and b.feed(b"+OK\r\n") == 0 and b.buffered == 9


def test_the_remembered_replies_are_bounded_in_count_and_size():
    from socktools.wire.base import WHOLE_REPLIES, WHOLE_REPLY_BYTES
    proto = build(WireSpec(mode="redis", commands=("INCR n",)))
    p = proto.parser()
    assert sum(p.feed(b":%d\r\n" % i) for i in range(WHOLE_REPLIES * 3)) == WHOLE_REPLIES * 3
    big = b"$%d\r\n%s\r\n" % (WHOLE_REPLY_BYTES, b"x" * WHOLE_REPLY_BYTES)
    assert p.feed(big) == 1 and len(proto.whole) == WHOLE_REPLIES and big not in proto.whole
    q = raw(reply_until="END\\r\\n").parser()
    assert q.feed(b"x" * (WHOLE_REPLY_BYTES + 10) + b"END\r\n") == 1 and not q.whole


def test_a_known_until_reply_that_fails_its_match_is_never_remembered():
    p = raw(reply_until="\\r\\n", reply_match="^\\+").parser()
    assert p.feed(b"-no\r\n") == 1 and p.feed(b"-no\r\n") == 1 and len(p.failures) == 2
    assert p.feed(b"+ok\r\n") == 1 and p.whole == {b"+ok\r\n"} and p.feed(b"+ok\r\n") == 1
    assert len(p.failures) == 2


def test_pushes_and_attributes_are_not_replies():
    p = RespParser()
    assert p.feed(b">2\r\n+message\r\n+hi\r\n|1\r\n+ttl\r\n:3\r\n+OK\r\n") == 1


def test_decoded_values_for_request_and_sniff():
    p = RespParser()
    p.keep = []
    p.feed(b"".join(REPLIES))
    values = [r.fields["value"] for r in p.keep]
    assert values[:5] == ["OK", "ERR wrong type", 42, "hello", None]
    assert values[13] == {"k": 1} and values[9] is True
    assert [r.size for r in p.keep] == [len(r) for r in REPLIES]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.sampled_from(REPLIES), min_size=1, max_size=12), hs.lists(hs.integers(0, 10_000), max_size=8))
def test_random_replies_cut_anywhere_count_the_same(replies, cuts):
    data = b"".join(replies)
    p = RespParser()
    assert sum(p.feed(piece) for piece in splits(data, cuts)) == len(replies)
    assert len(p.failures) == sum(r[:1] in b"-!" for r in replies)


@pytest.mark.parametrize("bad", [b"?what\r\n", b"$x\r\n", b"$3\r\nabcXY"])
def test_garbage_is_a_protocol_error(bad):
    with pytest.raises(WireError):
        RespParser().feed(bad)


@pytest.mark.parametrize("bad", [b":\r\n", b":x\r\n"])
def test_an_integer_that_is_not_a_number_is_a_protocol_error_when_decoding(bad):
    p = RespParser()
    p.keep = []
    with pytest.raises(WireError):
        p.feed(bad)


def _decoding(parser):
    parser.keep = []
    return parser


@pytest.mark.parametrize("keep", [None, []])
@pytest.mark.parametrize("step", [0, 1, 4096])
def test_nesting_deeper_than_the_cap_is_a_protocol_error_not_a_recursion(keep, step):
    from socktools.wire.redis import MAX_DEPTH
    p = RespParser()
    p.keep = keep
    with pytest.raises(WireError, match=f"nested deeper than {MAX_DEPTH}"):
        feed_all(p, b"*1\r\n" * 5000 + b"+x\r\n", step)


@pytest.mark.parametrize("step", [0, 1, 7])
def test_nesting_up_to_the_cap_is_one_reply_and_decodes(step):
    from socktools.wire.redis import MAX_DEPTH
    deep = b"*1\r\n" * MAX_DEPTH + b"+x\r\n"
    assert feed_all(RespParser(), deep + b"+OK\r\n", step) == 2
    p = _decoding(RespParser())
    assert feed_all(p, deep, step) == 1
    value = p.keep[0].fields["value"]
    for _ in range(MAX_DEPTH):
        [value] = value
    assert value == "x" and p.keep[0].size == len(deep) and p.buffered == 0


def test_a_huge_bulk_is_counted_as_it_arrives_never_held():
    p = RespParser()
    size = 500_000_000
    assert p.feed(b"$%d\r\n" % size) == 0
    chunk = b"x" * 65536
    for _ in range(64):                      # 4 MiB of the promised 500 MB
        assert p.feed(chunk) == 0
        assert len(p.buf) == 0               # nothing kept: the payload is counted
    assert p.buffered == len(b"$%d\r\n" % size) + 64 * 65536
    with pytest.raises(WireError, match="truncated|closed"):
        p.eof()


@pytest.mark.parametrize("step", [0, 1000, 65536])
def test_a_long_bulk_is_counted_whole_and_kept_up_to_the_cap_with_the_rest_said(step):
    from socktools.wire.redis import KEEP_REPLY
    body = bytes(range(97, 123)) * 40_000                 # ~1 MB of a..z
    reply = b"$%d\r\n%s\r\n" % (len(body), body)
    assert feed_all(RespParser(), reply + b":1\r\n", step) == 2
    p = _decoding(RespParser())
    assert feed_all(p, reply + b":1\r\n", step) == 2
    first, second = p.keep
    assert first.size == len(reply) and second.fields["value"] == 1
    head = len(b"$%d\r\n" % len(body))
    assert first.fields["value"] == body[:KEEP_REPLY - head].decode()
    assert first.fields["not_kept"] == len(reply) - KEEP_REPLY
    assert "not_kept" not in second.fields


def test_a_long_bulk_inside_an_array_is_shown_in_part_and_what_follows_is_counted():
    from socktools.wire.redis import KEEP_REPLY
    reply = b"*3\r\n:1\r\n$100000\r\n" + b"b" * 100_000 + b"\r\n:3\r\n"
    p = _decoding(RespParser())
    assert feed_all(p, reply + b"+OK\r\n", 1000) == 2
    value = p.keep[0].fields["value"]
    assert value[0] == 1 and len(value) == 2 and value[1] == "b" * (KEEP_REPLY - len(b"*3\r\n:1\r\n$100000\r\n"))
    assert p.keep[0].fields["not_kept"] == len(reply) - KEEP_REPLY and p.keep[1].fields["value"] == "OK"


def test_a_blob_error_is_tallied_by_its_first_words_even_when_huge():
    text = b"ERR " + b"y" * 1_000_000
    p = RespParser()
    assert feed_all(p, b"!%d\r\n%s\r\n" % (len(text), text), 65536) == 1
    [failure] = p.failures
    assert failure.kind == "server-error" and failure.detail.startswith("ERR yyy") and len(failure.detail) <= 80
    assert failure.sample.startswith(b"!1000004\r\nERR y") and len(failure.sample) <= 64


@pytest.mark.parametrize("keep", [None, []])
def test_an_aggregate_is_parsed_once_the_parser_holds_only_an_unfinished_line(keep):
    """Incremental: what has been understood is consumed, so no read re-parses it (the
    time of a 1M-element reply is in benchmarks/bench_big_replies.py)."""
    from socktools.wire.redis import MAX_LINE
    items = 200_000
    reply = b"*%d\r\n" % items + b"$3\r\nabc\r\n:12345\r\n" * (items // 2)
    p = RespParser()
    p.keep = keep
    done = 0
    for i in range(0, len(reply), 1000):
        done += p.feed(reply[i:i + 1000])
        assert len(p.buf) < 16                  # the tail of one element, never the reply
    assert done == 1 and p.buffered == 0 and len(p.buf) <= MAX_LINE
    if keep is not None:
        [r] = keep
        assert r.size == len(reply) and r.fields["not_kept"] > 0 and r.fields["value"][:2] == ["abc", 12345]


@pytest.mark.parametrize("read, replies, left", [
    (b"$5\r\na\r\nbc\r\n", 1, 0), (b"$0\r\n\r\n", 1, 0), (b"$5\r\na\r\nbc\r\n:1\r\n", 2, 0),
    (b"$5\r\na\r\nb", 0, 8), (b":1\r\n:2", 1, 2), (b"+OK\r\n+OK\r\n", 2, 0), (b"$3\r\nabc\r\n$1", 1, 2),
])
def test_a_read_is_counted_right_whether_or_not_it_is_exactly_one_reply(read, replies, left):
    p = RespParser()
    assert p.feed(read) == replies and p.buffered == left


NESTED = [b"*3\r\n*2\r\n$1\r\na\r\n%1\r\n+k\r\n*0\r\n~1\r\n$-1\r\n:7\r\n",
          b"$%d\r\n%s\r\n" % (3000, b"z" * 3000), b"*2\r\n$5000\r\n" + b"q" * 5000 + b"\r\n-ERR in\r\n"]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.sampled_from(REPLIES + NESTED), min_size=1, max_size=10),
       hs.lists(hs.integers(0, 50_000), max_size=10))
def test_random_nested_replies_cut_anywhere_decode_the_same_as_whole(replies, cuts):
    data = b"".join(replies)
    whole = _decoding(RespParser())
    assert whole.feed(data) == len(replies)
    cut = _decoding(RespParser())
    assert sum(cut.feed(piece) for piece in splits(data, cuts)) == len(replies)
    assert cut.keep == whole.keep and cut.failures == whole.failures
    assert [r.size for r in whole.keep] == [len(r) for r in replies]


# ----------------------------------------------------------------- http

needs_httptools = pytest.mark.skipif(importlib.util.find_spec("httptools") is None,
                                     reason="httptools not installed (pip install httptools)")

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
FAIL = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail"
MISSING = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def http(**kw):
    return build(WireSpec(mode="http", host="127.0.0.1:8080", **kw))


@needs_httptools
def test_http_request_bytes():
    proto = http(paths=("/a/{seq}",), headers=("X-Test: 1",), method="post", body=b"hi")
    assert proto.request(3, 0) == (b"POST /a/3 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: socktools\r\n"
                                   b"Content-Length: 2\r\nX-Test: 1\r\n\r\nhi")


@needs_httptools
@pytest.mark.parametrize("step", [0, 1, 9])
def test_http_lengths_chunks_and_status_classes(step):
    proto = http()
    p = proto.parser()
    assert feed_all(p, OK + CHUNKED + FAIL + MISSING, step) == 4
    assert proto.tally == {"2xx": 2, "5xx": 1, "4xx": 1}
    assert sorted((f.kind, f.detail) for f in p.failures) == [("http-4xx", "404"), ("http-5xx", "500")]


@needs_httptools
def test_accept_status_turns_a_failure_into_a_reply():
    p = http(accept_status=("404", "5xx")).parser()
    assert p.feed(FAIL + MISSING) == 2 and p.failures == []


def test_accept_status_adds_to_the_default_and_a_bang_takes_away():
    from socktools.wire.http import parse_accept
    assert {200, 204, 301, 404} <= parse_accept(("404",)) and 500 not in parse_accept(("404",))
    both = parse_accept(("4xx,5xx",))
    assert 200 in both and 404 in both and 503 in both
    assert not any(c in parse_accept(("!2xx",)) for c in range(200, 300))
    assert 404 in parse_accept(("!2xx", "404")) and 301 not in parse_accept(("!301",))
    with pytest.raises(ValueError, match="optionally after !"):
        parse_accept(("!6xx",))


@needs_httptools
def test_a_close_delimited_body_ends_at_eof():
    p = http().parser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it") == 0
    assert p.eof() == 1


@needs_httptools
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("head, complete", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", True),
    (b"HTTP/1.0 200 OK\r\n\r\nabc", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", False),
])
def test_only_a_body_framed_by_nothing_else_ends_at_eof(head, complete, keep):
    proto = http()
    p = proto.parser()
    if keep:
        p.keep = []
    assert p.feed(head) == 0
    if complete:
        assert p.eof() == 1 and proto.tally == {"2xx": 1}
    else:
        with pytest.raises(WireError) as err:
            p.eof()
        assert err.value.kind == "truncated" and proto.tally == {}


@needs_httptools
def test_a_response_cut_short_is_truncated():
    p = http().parser()
    p.feed(OK[:-1])
    with pytest.raises(WireError) as err:
        p.eof()
    assert err.value.kind == "truncated"


@needs_httptools
@pytest.mark.parametrize("head, closing", [
    (OK, False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", False),
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_reply_that_announces_the_close_sets_closing(head, closing, method):
    p = http(method=method).parser()
    if method == "HEAD":
        head = head[:-2]   # the same head, no body
    assert p.feed(head) == 1 and p.closing is closing


@needs_httptools
@pytest.mark.parametrize("step", [0, 1, 7])
def test_head_replies_have_no_body_whatever_their_headers_say(step):
    proto = http(method="HEAD")
    p = proto.parser()
    heads = (b"HTTP/1.1 100 Continue\r\n\r\n" + OK[:-2] + CHUNKED.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
             + FAIL[:-4] + MISSING)
    assert feed_all(p, heads, step) == 4 and p.buffered == 0
    assert proto.tally == {"2xx": 2, "5xx": 1, "4xx": 1}
    assert sorted(f.detail for f in p.failures) == ["404", "500"]
    p.keep = []
    assert p.feed(OK[:-2]) == 1 and p.keep[0].size == len(OK) - 2 and p.keep[0].fields["status"] == 200


@needs_httptools
def test_head_replies_that_are_not_http_or_too_long_are_protocol_errors():
    with pytest.raises(WireError):
        http(method="HEAD").parser().feed(b"+PONG\r\n\r\n")
    with pytest.raises(WireError):
        http(method="HEAD").parser().feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000)


@needs_httptools
def test_not_http_is_a_protocol_error():
    with pytest.raises(WireError):
        http().parser().feed(b"+PONG\r\n")


@needs_httptools
def test_decoding_knows_each_message_size_even_when_pipelined():
    p = http().parser()
    p.keep = []
    p.feed(OK + CHUNKED + FAIL)
    assert [r.size for r in p.keep] == [len(OK), len(CHUNKED), len(FAIL)]
    assert p.keep[1].fields["body"] == b"abcde"


class _CountingFeeds:
    """Stands between an HttpParser and llhttp to count feed_data calls (the work decoding does)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def feed_data(self, data: bytes) -> None:
        self.calls += 1
        self.inner.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _chunked(body: bytes, size: int) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
    return b"".join(out) + b"0\r\n\r\n"


@needs_httptools
@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_decoding_feeds_a_body_in_runs_not_byte_by_byte(framing):
    from socktools.wire.base import KEEP_BODY
    body = bytes(range(256)) * 4096                       # 1 MiB
    if framing == "chunked":
        reply = _chunked(body, 65536) + OK
    elif framing == "length":
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body) + OK
    else:
        reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    p = http().parser()
    p.keep = []
    p._make()
    p.p = counting = _CountingFeeds(p.p)
    done = feed_all(p, reply, 65536) + (p.eof() if framing == "close" else 0)
    assert done == (1 if framing == "close" else 2)
    first = p.keep[0]
    assert first.fields["body"] == body[:KEEP_BODY] and first.fields["not_kept"] == len(body) - KEEP_BODY
    assert first.size == (len(reply) - len(OK) if framing != "close" else len(reply))
    # Byte by byte through heads and chunk-size lines only: ~1,000 calls, not ~1,000,000.
    assert counting.calls < 2000


# ----------------------------------------------------------------- options -> usage errors

@pytest.mark.parametrize("spec, option, words", [
    (WireSpec(mode="raw", sends=("x",), reply_until="\\n", reply_bytes=4), "--reply-bytes", "exactly one"),
    (WireSpec(mode="raw", sends=("x",)), "--reply-until", "one reply framing"),
    (WireSpec(mode="raw", sends=("x\\q",), reply_until="\\n"), "--send", "unknown escape"),
    (WireSpec(mode="raw", sends=("x",), reply_until="\\y"), "--reply-until", "unknown escape"),
    (WireSpec(mode="raw", sends=("x",), reply_prefix=">HH"), "--reply-prefix", "not a length prefix"),
    (WireSpec(mode="raw", sends=("x",), reply_prefix="d"), "--reply-prefix", "not a length prefix"),
    (WireSpec(mode="raw", sends=("x",), reply_until="\\n", reply_match="(("), "--reply-match", "regular"),
    (WireSpec(mode="raw", reply_until="\\n"), "--send", "at least one --send"),
    (WireSpec(mode="redis", reply_bytes=3), "--reply-bytes", "only for --mode raw"),
    (WireSpec(mode="redis", commands=("GET 'unclosed",)), "--command", "cannot split"),
    (WireSpec(mode="http", accept_status=("6xx",)), "--accept-status", "not a status"),
    (WireSpec(mode="plugin", plugin="no_such_module_x:P"), "--protocol", "cannot import"),
    (WireSpec(mode="plugin", plugin="json:JSONDecoder"), "--protocol", "lacks the exchange interface"),
    (WireSpec(mode="plugin", plugin="json:Nope"), "--protocol", "has no 'Nope'"),
    (WireSpec(mode="plugin", plugin="json"), "--protocol", "package.module:ClassName"),
])
def test_bad_options_name_the_option(spec, option, words):
    with pytest.raises(WireOptionError) as err:
        build(spec)
    assert err.value.flag == option and words in err.value.message


def test_the_plugin_example_loads_and_parses():
    proto = build(WireSpec(mode="plugin", plugin="socktools.examples.memcached:Memcached",
                           commands=("set k{seq} hello", "get k{conn}")))
    assert proto.request(4, 1) == b"set k4 0 0 5\r\nhello\r\n"
    assert proto.request(5, 1) == b"get k1\r\n"
    p = proto.parser()
    data = b"STORED\r\nVALUE k1 0 5\r\nhello\r\nEND\r\nEND\r\nSERVER_ERROR out of memory\r\n"
    assert feed_all(p, data, 1) == 4 and p.buffered == 0
    assert [(f.kind, f.detail) for f in p.failures] == [("server-error", "SERVER_ERROR out of memory")]
    assert isinstance(proto, wire.WireProtocol)


# ----------------------------------------------------------------- hostile peers

def _parsers():
    """Each parser as flood uses it (counting) and as request/sniff do (decoding)."""
    for keep in (None, []):
        for parser in _counting_parsers():
            parser.keep = keep if keep is None else []
            yield parser


def _counting_parsers():
    yield RespParser()
    yield raw(reply_until="\\r\\n", reply_match="^\\+").parser()
    yield raw(reply_prefix=">H", reply_prefix_adjust=-1).parser()
    yield raw(reply_bytes=3).parser()
    yield build(WireSpec(mode="plugin", plugin="socktools.examples.memcached:Memcached")).parser()
    if importlib.util.find_spec("httptools") is not None:
        yield http().parser()
        yield http(method="HEAD").parser()


_ALPHABET = hs.sampled_from([b"+", b"-", b":", b"$", b"*", b"%", b">", b"|", b"\r\n", b"\r", b"\n", b"-1",
                             b"3", b"99999999999", b"x", b"\x00", b"VALUE k 0 ", b"END", b"HTTP/1.1 ",
                             b"200 OK", b"Content-Length: ", b"Transfer-Encoding: chunked", b"\xff"])


@settings(max_examples=150, deadline=None)
@given(hs.lists(_ALPHABET, max_size=40), hs.lists(hs.integers(0, 400), max_size=6))
def test_garbage_from_a_peer_is_a_wire_error_or_a_count_never_a_crash(pieces, cuts):
    data = b"".join(pieces)
    for parser in _parsers():
        try:
            for piece in splits(data, cuts):
                assert parser.feed(piece) >= 0
            parser.eof()
        except WireError:
            pass


class BarePlugin:
    """A plug-in with only the two required methods (no base classes)."""

    def __init__(self, commands):
        self.commands = commands

    def request(self, seq, conn):
        return b"PING\r\n" if seq % 2 else b"ECHO %d\r\n" % seq

    def parser(self):
        class P:
            failures: list = []
            buffered = 0

            def feed(self, data):   # one line per reply (+PONG, or ECHO's bulk: 2 lines)
                return data.count(b"+PONG\r\n") + data.count(b"$")
        return P()


def test_a_bare_plugin_gets_the_optional_attributes_at_their_defaults():
    proto = build(WireSpec(mode="plugin", plugin="tests.test_wire:BarePlugin"))
    assert proto.request(3, 0) == b"PING\r\n" and proto.request(4, 0) == b"ECHO 4\r\n"
    assert proto.replies and proto.read_size == 65536
    assert proto.fixed_request is None and proto.describe() == "custom"
    assert proto.parser().feed(b"+PONG\r\n$1\r\n4\r\n") == 2


# ------------------------------------------------------------------ the registry of modes
def test_every_list_of_modes_is_read_from_the_registry():
    from socktools.capture import reassembly
    from socktools.flood import config as flood_config
    from socktools.wire import modes, spec
    import json
    import pathlib
    names = modes.names()
    assert spec.MODES == names and set(names) <= set(flood_config.MODES)
    assert set(flood_config.MODES) - set(names) == {"connect", "plugin"}      # flood's own two
    assert reassembly.WIRE_DECODES == modes.decoders() == ("redis", "http", "line")   # catch-all last
    assert modes.REQUEST_MODES == tuple(n for n in names if n != "echo")
    for mode in modes.MODES:
        assert mode.name in flood_config.MODE_HELP and mode.rules
    schema = json.loads((pathlib.Path(spec.__file__).parents[2] / "docs/schemas/flood.schema.json").read_text())
    wire = schema["properties"]["config"]["properties"]["wire"]
    assert wire["properties"]["mode"]["enum"] == [*names, "plugin"]


def test_an_option_another_mode_takes_is_refused_naming_the_modes_that_take_it():
    with pytest.raises(WireOptionError, match=r"only for --mode raw and line") as info:
        build(WireSpec(mode="redis", reply_match="x"))
    assert info.value.flag == "--reply-match"
    with pytest.raises(WireOptionError, match=r"only for --mode raw$"):
        build(WireSpec(mode="line", sends=("x",), reply_bytes=3))
    with pytest.raises(WireOptionError, match=r"unknown mode 'gopher' \(known: echo, framed, raw"):
        build(WireSpec(mode="gopher"))


def test_each_mode_builds_summarises_and_where_it_can_decodes_through_the_registry():
    from socktools.wire import modes
    specs = {"echo": WireSpec(mode="echo", size=8), "framed": WireSpec(mode="framed"),
             "raw": WireSpec(mode="raw", sends=("x",), reply_bytes=1), "line": WireSpec(mode="line", sends=("x",)),
             "redis": WireSpec(mode="redis"), "http": WireSpec(mode="http")}
    assert set(specs) == set(modes.names())
    for name, wire_spec in specs.items():
        mode = modes.get(name)
        assert mode.build(wire_spec).parser() is not None
        assert wire_spec.summary()["mode"] == name
        if mode.decoder:
            assert mode.stream_parser("response").keep == []
    assert modes.get("redis").may_start(ord("+")) and not modes.get("redis").may_start(0)
    assert modes.get("http").may_start(ord("G")) and not modes.get("http").may_start(ord("*"))

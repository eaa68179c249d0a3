"""Hostile input to the sans-I/O layer: the encoding allow-list and an answer path that cannot raise.

No sockets here (the loopback attacks are in test_hostile_serve.py).
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socktools import protocol
from socktools.protocol import (TEXT_ENCODINGS, Decoder, Message, RemoteProtocolError, encode_json,
                                encode_message, text_codec)
from socktools.reference import make_request, respond


def decode_all(wire: bytes) -> list:
    dec = Decoder()
    dec.receive_data(wire)
    out = []
    while True:
        ev = dec.next_event()
        if ev is protocol.NEED_DATA or ev is protocol.CLOSED:
            return out
        out.append(ev)


def punycode_frame(size: int = 1 << 20) -> bytes:
    """The issue's frame: ~1 MiB of punycode (``a...a-a...a``), framed by hand (the encoder refuses it)."""
    half = (size - 2) // 2
    content = b"a" * half + b"-" + b"a" * half
    header = json.dumps({"byteorder": "little", "content-type": "text/json",
                         "content-encoding": "punycode", "content-length": len(content)}).encode()
    return len(header).to_bytes(2, "big") + header + content


def test_punycode_is_refused_from_the_header_before_any_content():
    # Issue 12 item 1: 1 MiB of punycode took 24 s of CPU to decode.  Refused now from the
    # header alone: no content byte is needed, let alone decoded.
    wire = punycode_frame()
    header_end = 2 + int.from_bytes(wire[:2], "big")
    dec = Decoder()
    dec.receive_data(wire[:header_end])
    with pytest.raises(RemoteProtocolError) as info:
        dec.next_event()
    assert info.value.kind == "bad-content-encoding"
    assert "punycode" in str(info.value)
    start = time.process_time()
    with pytest.raises(RemoteProtocolError):
        decode_all(wire)
    assert time.process_time() - start < 1.0  # was 24 s; the bound is generous for a busy CI box


@pytest.mark.parametrize("name", sorted(TEXT_ENCODINGS))
def test_every_allowed_encoding_round_trips(name):
    obj = {"action": "search", "value": "morpheus é"} if name not in ("ascii", "us-ascii") else \
        {"action": "search", "value": "morpheus"}
    [msg] = decode_all(encode_json(obj, encoding=name))
    assert msg.value == obj
    assert msg.content_encoding == name  # as the peer spelled it


@pytest.mark.parametrize("spelling, codec", [("UTF-8", "utf-8"), ("Utf_16_LE", "utf-16-le"),
                                             ("ISO-8859-1", "latin-1"), ("US-ASCII", "ascii")])
def test_names_match_case_insensitively(spelling, codec):
    assert text_codec(spelling) == codec
    [msg] = decode_all(encode_json({"a": "b"}, encoding=spelling))
    assert msg.value == {"a": "b"}


@pytest.mark.parametrize("name", ["punycode", "idna", "rot13", "zlib", "base64", "hex", "cp1252",
                                  "utf-7", "unicode_escape", "mbcs", "x" * 1000, "utf-8 ", ""])
def test_encoder_refuses_names_off_the_list(name):
    with pytest.raises(protocol.LocalProtocolError) as info:
        encode_json({"a": "b"}, encoding=name)
    assert info.value.kind == "bad-content-encoding"


@pytest.mark.parametrize("text", ['"\\ud800"', '"x\\udfffy"', '{"\\udbff": 1}', '["a", ["\\ud800"]]'])
def test_lone_surrogate_in_a_value_is_refused(text):
    content = ('{"action": "search", "value": %s}' % text).encode()
    with pytest.raises(RemoteProtocolError) as info:
        decode_all(encode_message(content, "text/json", "utf-8"))
    assert info.value.kind == "lone-surrogate"
    assert "\\ud" in str(info.value)
    protocol.error_response(info.value)  # the reply to it can be built


def test_paired_surrogate_escapes_are_fine():
    content = b'{"action": "search", "value": "\\ud83d\\udc36", "x": "\\\\ud800"}'
    [msg] = decode_all(encode_message(content, "text/json", "utf-8"))
    assert msg.value["value"] == "\U0001f436"
    assert msg.value["x"] == "\\ud800"  # an escaped backslash, not a surrogate
    assert b"Playing ball" in respond(msg)


def test_issue_body_is_answered_with_an_error_reply():
    # Issue 12 item 2: this body crashed the answer path with a LocalProtocolError traceback.
    content = b'{"action": "search", "value": "\\ud800"}'
    with pytest.raises(RemoteProtocolError) as info:
        decode_all(encode_message(content, "text/json", "utf-8"))
    [reply] = decode_all(protocol.error_response(info.value))
    assert "lone surrogate" in reply.value["error"]


# ------------------------------------------------------------- respond never raises

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20)  # surrogates too
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
                        max_leaves=10)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.dictionaries(ANY_TEXT, ANY_JSON, max_size=4),
                       st.fixed_dictionaries({"action": st.just("search"), "value": ANY_JSON}),
                       ANY_JSON),
       keep_alive=st.booleans(),
       ctype=st.sampled_from(["text/json", "binary/custom-client-binary-type", "\ud800"]))
def test_respond_answers_any_value_with_a_decodable_message(value, keep_alive, ctype):
    header = {"byteorder": "little", "content-type": ctype, "content-encoding": "utf-8",
              "content-length": 0, **({"keep-alive": True} if keep_alive else {})}
    wire = respond(Message(header, b"\xff\\ud800", value))
    [reply] = decode_all(wire)  # what we send is always legal on the wire
    assert reply.content_type in ("text/json", "binary/custom-server-binary-type")


def _mutate(rng, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 3)
        pos = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[pos] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and b:
            del b[pos:pos + rng.randint(1, 8)]
        else:
            b[pos:pos] = rng.choice([b"\\ud800", b'"punycode"', b"\\u0000", b"[[[[", b'"utf-16"'])
    return bytes(b)


SEEDS = [make_request("search", "morpheus"), make_request("binary", "hello"),
         make_request("search", "\U0001f436", keep_alive=True), encode_json({"a": [1, {"b": "c"}]}, encoding="utf-16")]


@settings(deadline=None, max_examples=400)
@given(st.randoms(use_true_random=False), st.sampled_from(SEEDS), st.booleans())
def test_mutated_frames_only_ever_raise_remote_errors_and_every_message_is_answered(rng, seed, eof):
    # The bounded in-suite cousin of benchmarks/fuzz_decoder.py.
    dec = Decoder()
    dec.receive_data(_mutate(rng, seed))
    if eof:
        dec.receive_data(b"")
    while True:
        try:
            ev = dec.next_event()
        except RemoteProtocolError as exc:
            decode_all(protocol.error_response(exc))
            return
        if ev is protocol.NEED_DATA or ev is protocol.CLOSED:
            return
        decode_all(respond(ev))


def test_error_response_never_raises_on_surrogates():
    [reply] = decode_all(protocol.error_response("bad \ud800 value"))
    assert reply.value == {"error": "bad \\ud800 value"}
    assert json.loads(json.dumps(reply.value))


def test_every_allowed_name_is_pythons_own_alias_of_its_codec():
    # Anything that decodes with the declared name itself (sniff's preview) gets the same codec.
    import codecs
    for name, codec in TEXT_ENCODINGS.items():
        assert codecs.lookup(name).name == codecs.lookup(codec).name, name


def test_sniffs_dissector_refuses_punycode_from_the_header_too():
    # sniff decodes with protocol.Decoder: the same allow-list, before any content is decoded.
    from socktools.capture.reassembly import StreamDecoder
    wire = punycode_frame()
    header_end = 2 + int.from_bytes(wire[:2], "big")
    start = time.process_time()
    stream = StreamDecoder("framed", "request")
    events = stream.feed(0, wire[:header_end], 1) + stream.feed(header_end, wire[header_end:], 2)
    assert time.process_time() - start < 1.0
    assert not any(getattr(e, "header", None) for e in events)  # no message came out
    assert any("punycode" in getattr(e, "text", "") for e in events), events

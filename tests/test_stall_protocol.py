"""stall speaks the peer's protocol, and says so when a real server answers and closes.

Real servers (redis-server, nginx from tests/peers.py) on free loopback ports; the payload
stream and the answer decoding are sans-I/O and tested without sockets.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from socktools.stall.payload import PayloadStream, decode_answer
from socktools.wire import WireSpec
from socktools.wire.redis import RespParser
from socktools.wire.spec import build
from tests.conftest import socktools_cmd, wait_until
from tests.peers import Nginx, Redis

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="stall reads Linux's TCP_INFO, queue ioctls and socket table")


def _stall(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("stall", *args), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- sans-I/O: the payload stream
def _drain(stream: PayloadStream, sizes) -> bytes:
    out = bytearray()
    for n in sizes:
        view = stream.view()
        take = min(n, len(view))
        out += view[:take]
        stream.advance(take)
    return bytes(out)


@pytest.mark.parametrize("split", ["whole", "byte", "random"])
def test_requests_with_seq_come_out_whole_and_in_order_whatever_send_takes(split):
    proto = build(WireSpec(mode="redis", commands=("SET key:{seq} v",)))
    stream = PayloadStream.requests(proto, 4096)
    rng = random.Random(7)
    sizes = {"whole": [4096] * 40, "byte": [1] * 3000,
             "random": [rng.randint(0, 5000) for _ in range(200)]}[split]
    data = _drain(stream, sizes)
    parser = RespParser()
    parser.keep = []
    parser.feed(data)
    keys = [r.fields["value"][1] for r in parser.keep]
    assert keys == [f"key:{i}" for i in range(len(keys))] and len(keys) > 10
    assert stream.whole_requests == len(keys)


def test_a_fixed_unit_repeats_across_partial_sends_without_a_cut():
    stream = PayloadStream.repeat(b"PING\r\n", 1000, label="line")
    data = _drain(stream, [7, 1, 999, 3, 500, 1000, 2])
    assert data == (b"PING\r\n" * 1000)[:len(data)]
    assert stream.whole_requests == len(data) // 6


def test_a_refused_send_is_offered_the_same_bytes_again():
    proto = build(WireSpec(mode="redis", commands=("INCR n:{seq}",)))
    stream = PayloadStream.requests(proto, 100)
    first = bytes(stream.view())
    assert bytes(stream.view()) == first        # nothing advanced: OpenSSL's retry rule holds
    stream.advance(0)
    assert bytes(stream.view()) == first


@pytest.mark.parametrize("data,mode,decoder,first", [
    (b"-ERR Protocol error: too big inline request\r\n", None, "redis",
     "(error) ERR Protocol error: too big inline request"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad", None, "http", "HTTP 400"),
    (b"+OK\r\n+OK\r\n+O", "redis", "redis", "OK"),
])
def test_the_answer_is_decoded_by_the_mode_or_the_first_decoder_that_frames_it(data, mode, decoder, first):
    got = decode_answer(data, mode)
    assert got.decoder == decoder and got.replies[0] == first


def test_bytes_no_decoder_frames_are_left_undecoded():
    assert decode_answer(b"\x00\x01\x02", None).decoder is None
    assert decode_answer(b"", "redis").replies == ()


# ---------------------------------------------------------------- real servers
@pytest.fixture
def nginx(tmp_path):
    with Nginx(tmp_path) as server:
        yield server


@pytest.fixture
def redis(tmp_path):
    with Redis(tmp_path) as server:
        yield server


def test_nginx_answers_400_and_closes_stall_says_so_and_exits_1(nginx):
    r = _stall("--port", str(nginx.port), "--timeout", "5s")
    assert r.returncode == 1, r.stderr
    assert "The peer answered and closed the connection" in r.stdout
    assert "HTTP/1.1 400 Bad Request" in r.stdout and "HTTP 400" in r.stdout
    assert "not a full-buffer case" in r.stdout
    assert "2. The kernel's view" not in r.stdout          # no buffer diagnosis
    assert "answered (HTTP 400) and closed the connection" in r.stderr
    assert wait_until(lambda: nginx.log_lines() >= 1)
    assert nginx.statuses() == {"400": 1}                    # nginx's own log: one 400


def test_nginx_peer_closed_json_is_one_object_with_the_answer(nginx):
    r = _stall("--port", str(nginx.port), "--timeout", "5s", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["outcome"] == "peer-closed"
    assert doc["answer"]["decoder"] == "http" and doc["answer"]["replies"][0] == "HTTP 400"
    assert doc["answer"]["how"] in ("closed", "reset") and doc["snapshot"] is None
    from tests.test_json_schemas import validate
    validate(doc, "stall")


def test_nginx_spoken_to_in_http_stops_reading_when_we_do_not_read_its_answers(nginx):
    # real requests: nginx answers each, and once its answers cannot be written (we never
    # read them) it stops reading the next: a genuine full buffer, with bytes coming back
    r = _stall("--port", str(nginx.port), "--mode", "http", "--path", "/", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "stalled" and doc["answer"] is None
    assert doc["snapshot"]["arithmetic"]["returning"] > 0
    assert wait_until(lambda: nginx.log_lines() > 0)
    assert nginx.log_lines() <= doc["whole_requests"]


def test_redis_zeros_too_big_inline_request_and_reset(redis):
    r = _stall("--port", str(redis.port), "--timeout", "5s", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "peer-closed"
    assert doc["answer"]["replies"][0] == "(error) ERR Protocol error: too big inline request"


def test_redis_set_never_stops_reading_until_its_output_buffer_limit_closes_us(redis):
    # The finding: redis reads every command and queues the replies we never read in its own
    # memory (client-output-buffer-limit normal 0 0 0 by default: without limit).  With a
    # limit, it closes the connection when the unread replies pass it.
    redis.command("CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0")
    r = _stall("--port", str(redis.port), "--mode", "redis", "--command", "SET k v", "--timeout", "20s",
               "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "peer-closed"
    assert doc["answer"]["decoder"] == "redis" and doc["answer"]["replies"][0] == "OK"
    assert doc["config"]["exchange"] == {"mode": "redis", "commands": ["SET k v"]}
    calls = redis.calls()["set"]
    assert 0 < calls <= doc["whole_requests"]               # redis ran only whole requests we sent


def test_embedded_sink_with_redis_requests_still_stalls():
    r = _stall("--mode", "redis", "--command", "SET k:{seq} v", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["outcome"] == "stalled" and doc["fill"]["blocked"]
    assert doc["whole_requests"] > 0 and doc["payload"] == "redis, `SET k:{seq} v`"


def test_send_at_file_repeats_the_files_bytes(tmp_path):
    f = tmp_path / "req.bin"
    f.write_bytes(b"\xffhello\n")
    r = _stall("--send", f"@{f}", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["config"]["exchange"]["mode"] == "raw"
    assert doc["config"]["exchange"]["send_file_bytes"] == 7
    assert doc["payload"] == "raw, 7 bytes from a file"
    assert doc["whole_requests"] == doc["settle"]["total_accepted"] // 7


def test_connect_failure_json_is_one_object():
    from tests.peers import free_port
    r = _stall("--port", str(free_port()), "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["outcome"] == "failed"
    assert doc["phase"] == "connect" and doc["error"] == "ECONNREFUSED"
    assert "ECONNREFUSED" in r.stderr
    from tests.test_json_schemas import validate
    validate(doc, "stall")


@pytest.mark.parametrize("args,option", [
    (["--command", "SET k v"], "--command: shapes a wire mode's requests: give --mode"),
    (["--send", "@/nonexistent/file"], "'--send': cannot read '/nonexistent/file'"),
    (["--send", "@a", "--send", "b"], "--send @FILE is the whole payload"),
    (["--mode", "raw", "--send", "x\\q"], "--send"),
    (["--mode", "redis", "--reply-until", "x"], "--reply-until"),
])
def test_bad_exchange_options_are_usage_errors_naming_the_option(args, option):
    r = _stall(*args)
    assert r.returncode == 2, r.stderr
    assert option in r.stderr


def test_redis_without_a_limit_keeps_reading_and_buffers_the_answers_itself(redis):
    # redis' default: no output buffer limit for normal clients.  It reads on and keeps the
    # unread replies in its memory, so the queues never settle: stall must not call that a
    # peer that stopped reading (back-pressure).  Bounded: 2 s of settling.
    r = _stall("--port", str(redis.port), "--mode", "redis", "--command", "SET k v", "--timeout", "2s")
    text = " ".join(r.stdout.split())
    assert "and still the peer did not stop reading" in text, r.stdout
    assert "the peer stopped reading because it could not write" not in text
    assert "still moving when the timeout passed" in text
    # stall's connection is gone when it exits; redis then frees its buffered answers
    assert wait_until(lambda: "connected_clients:1\r" in redis.command("INFO", "clients"))

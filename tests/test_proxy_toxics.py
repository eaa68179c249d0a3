"""The toxics' stages without sockets: a hand-turned clock, items in, items out."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest

from socktools.proxy.config import toxic_from_json
from socktools.proxy.toxics import (BANDWIDTH_PIECE, CLOSE, DATA, EOF, RESET, Pass, make_stage,
                                    slice_points)


class Clock:
    """``now()``, ``call_at()`` and ``advance(dt)``, which fires what falls due, in order."""

    def __init__(self) -> None:
        self.t = 100.0
        self.timers: list = []
        self.seq = itertools.count()

    def now(self) -> float:
        return self.t

    def call_at(self, when, callback):
        timer = _Timer(when, callback)
        heapq.heappush(self.timers, (when, next(self.seq), timer))
        return timer

    def advance(self, dt: float) -> None:
        end = self.t + dt
        while self.timers and self.timers[0][0] <= end:
            when, _, timer = heapq.heappop(self.timers)
            self.t = max(self.t, when)
            if not timer.cancelled:
                timer.callback()
        self.t = end

    def pending(self) -> int:
        return sum(1 for _, _, t in self.timers if not t.cancelled)


class _Timer:
    def __init__(self, when, callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Sink:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: list = []       # (time, item)

    def push(self, item) -> None:
        self.items.append((self.clock.t, item))

    @property
    def data(self) -> bytes:
        return b"".join(i[1] for _, i in self.items if i[0] == DATA)

    def kinds(self) -> list:
        return [i[0] for _, i in self.items]


def stage(kind: str, seed: int = 1, **attrs):
    clock = Clock()
    spec = toxic_from_json({"type": kind, "attributes": attrs})
    st = make_stage(spec, clock.now, clock.call_at, random.Random(seed))
    sink = Sink(clock)
    st.next = sink
    return st, clock, sink


def data(clock: Clock, payload: bytes):
    return (DATA, payload, clock.t)


# ------------------------------------------------------------------ latency
def test_latency_holds_each_chunk_for_its_delay_and_keeps_order():
    st, clock, sink = stage("latency", latency=100)
    st.push(data(clock, b"a"))
    clock.advance(0.030)
    st.push(data(clock, b"b"))
    st.push((EOF,))
    assert st.held == 2
    clock.advance(0.0699)
    assert sink.items == []
    clock.advance(0.0001)
    assert sink.data == b"a" and sink.items[0][0] == pytest.approx(100.1)
    clock.advance(0.030)
    assert sink.data == b"ab" and sink.items[1][0] == pytest.approx(100.13)
    assert sink.kinds() == [DATA, DATA, EOF]      # the EOF right behind the data before it
    assert st.held == 0 and clock.pending() == 0


def test_latency_counts_time_spent_before_it():
    """Toxiproxy subtracts the time since the chunk was read: a chunk read 40 ms ago waits 60."""
    st, clock, sink = stage("latency", latency=100)
    st.push((DATA, b"x", clock.t - 0.040))
    clock.advance(0.0599)
    assert sink.items == []
    clock.advance(0.0001)
    assert sink.data == b"x"


def test_jitter_stays_within_plus_minus_and_order_holds():
    st, clock, sink = stage("latency", seed=7, latency=50, jitter=20)
    for i in range(200):
        st.push(data(clock, bytes([i])))
        clock.advance(0.001)
    clock.advance(1.0)
    assert sink.data == bytes(range(200))
    # Each chunk left no earlier than 30 ms after it was pushed (50 - 20), and the head-of-line
    # order means none before the one ahead of it.
    times = [t for t, _ in sink.items]
    assert times == sorted(times)
    for i, t in enumerate(times):
        assert t >= 100.0 + i * 0.001 + 0.030 - 1e-9
    # ...and a jitter of 0 would have given exactly 50 ms each: the delays did vary.
    first_delays = {round(times[i] - (100.0 + i * 0.001), 6) for i in range(20)}
    assert len(first_delays) > 1


# ------------------------------------------------------------------ bandwidth
def test_bandwidth_takes_size_over_rate():
    st, clock, sink = stage("bandwidth", rate=10)        # 10 KB/s = 10,000 B/s
    st.push(data(clock, b"x" * 5000))                     # 0.5 s of it
    clock.advance(0.0999)
    assert sink.data == b""
    clock.advance(0.0001)
    assert len(sink.data) == 1000                         # pieces of 100 ms worth
    clock.advance(0.3999)
    assert len(sink.data) == 4000
    clock.advance(0.0001)
    assert len(sink.data) == 5000 and st.held == 0


def test_bandwidth_back_to_back_chunks_queue_behind_each_other():
    st, clock, sink = stage("bandwidth", rate=1)          # 1000 B/s
    st.push(data(clock, b"a" * 500))
    st.push(data(clock, b"b" * 500))
    st.push((EOF,))
    clock.advance(0.5)
    assert sink.data == b"a" * 500                       # the first chunk's time on the wire
    clock.advance(0.499)
    assert len(sink.data) == 900 and sink.kinds()[-1] == DATA
    clock.advance(0.001)
    assert sink.data == b"a" * 500 + b"b" * 500 and sink.kinds()[-1] == EOF


def test_bandwidth_zero_passes_at_once():
    st, clock, sink = stage("bandwidth", rate=0)
    st.push(data(clock, b"abc"))
    assert sink.data == b"abc"


def test_bandwidth_piece_is_a_tenth_of_a_second():
    assert BANDWIDTH_PIECE == 0.1


# ------------------------------------------------------------------ slow_close, timeout, reset_peer
def test_slow_close_delays_only_the_close():
    st, clock, sink = stage("slow_close", delay=200)
    st.push(data(clock, b"hi"))
    assert sink.data == b"hi"
    st.push((EOF,))
    clock.advance(0.1999)
    assert sink.kinds() == [DATA]
    clock.advance(0.0001)
    assert sink.kinds() == [DATA, EOF]


def test_slow_close_delays_a_toxic_close_too():
    st, clock, sink = stage("slow_close", delay=50)
    st.push((CLOSE,))
    clock.advance(0.049)
    assert sink.items == []
    clock.advance(0.001)
    assert sink.kinds() == [CLOSE]


def test_timeout_drops_data_then_closes():
    st, clock, sink = stage("timeout", timeout=300)
    st.push(data(clock, b"lost"))
    clock.advance(0.2999)
    assert sink.items == []
    clock.advance(0.0001)
    assert sink.kinds() == [CLOSE]
    st.push(data(clock, b"after"))
    assert sink.kinds() == [CLOSE]


def test_timeout_zero_holds_forever_and_its_removal_closes():
    st, clock, sink = stage("timeout", timeout=0)
    st.push(data(clock, b"lost"))
    clock.advance(3600)
    assert sink.items == [] and clock.pending() == 0
    assert st.take() == [(CLOSE,)]       # Toxiproxy's Cleanup: the stream lost bytes, close it


def test_timeout_passes_an_eof_on():
    st, clock, sink = stage("timeout", timeout=1000)
    st.push((EOF,))
    assert sink.kinds() == [EOF]
    clock.advance(2)
    assert sink.kinds() == [EOF]          # its timer was cancelled


def test_reset_peer_fires_timeout_after_the_first_item_and_drops_data():
    st, clock, sink = stage("reset_peer", timeout=500)
    clock.advance(10)                      # armed by the first item, not by its start
    assert sink.items == [] and clock.pending() == 0
    st.push(data(clock, b"dropped"))
    clock.advance(0.25)
    st.push(data(clock, b"dropped too"))
    clock.advance(0.2499)
    assert sink.items == []
    clock.advance(0.0001)
    assert sink.kinds() == [RESET]


def test_reset_peer_zero_resets_at_once():
    st, clock, sink = stage("reset_peer", timeout=0)
    st.push(data(clock, b"x"))
    assert sink.kinds() == [RESET]


# ------------------------------------------------------------------ slicer
@pytest.mark.parametrize("length,avg,var", [(1, 1, 0), (100, 10, 0), (1000, 7, 3), (65536, 1, 0),
                                            (12, 1, 10), (5000, 100, 99), (3, 5, 0)])
def test_slice_points_cover_the_chunk_in_order(length, avg, var):
    rng = random.Random(3)
    cuts = slice_points(length, avg, var, rng)
    assert cuts[-1] == length
    sizes = [b - a for a, b in zip([0] + cuts, cuts)]
    assert all(s >= 1 for s in sizes)
    assert sum(sizes) == length
    # Toxiproxy's rule: a piece stops being cut once it is within `variation` of `average`.
    assert all(s - avg <= var or s < 2 for s in sizes)


def test_slice_points_without_variation_are_halves():
    assert slice_points(16, 4, 0, random.Random(0)) == [4, 8, 12, 16]


def test_slicer_spaces_slices_by_delay_microseconds():
    st, clock, sink = stage("slicer", average_size=4, size_variation=0, delay=1000)
    st.push(data(clock, b"abcdefghijklmnop"))
    assert [i[1] for _, i in sink.items] == [b"abcd"]
    clock.advance(0.001)
    clock.advance(0.001)
    clock.advance(0.001)
    assert [i[1] for _, i in sink.items] == [b"abcd", b"efgh", b"ijkl", b"mnop"]
    times = [t for t, _ in sink.items]
    assert times == pytest.approx([100.0, 100.001, 100.002, 100.003])


# ------------------------------------------------------------------ limit_data
@pytest.mark.parametrize("split", [1, 3, 10, 64])
def test_limit_data_passes_exactly_n_bytes_then_closes(split):
    st, clock, sink = stage("limit_data", bytes=50)
    payload = bytes(range(100))
    for i in range(0, len(payload), split):
        st.push(data(clock, payload[i:i + split]))
    assert sink.data == payload[:50]
    assert sink.kinds()[-1] == CLOSE and sink.kinds().count(CLOSE) == 1


def test_limit_data_zero_closes_on_the_first_byte():
    st, clock, sink = stage("limit_data", bytes=0)
    st.push(data(clock, b"x"))
    assert sink.kinds() == [CLOSE]


# ------------------------------------------------------------------ toxicity and removal
def test_toxicity_is_rolled_per_connection():
    clock = Clock()
    spec = toxic_from_json({"type": "latency", "toxicity": 0.5, "attributes": {"latency": 10}})
    rng = random.Random(11)
    real = sum(type(make_stage(spec, clock.now, clock.call_at, rng)) is not Pass for _ in range(2000))
    # Binomial(2000, 0.5): the standard deviation is 22; 6 of them either side never fails by chance.
    assert 1000 - 134 < real < 1000 + 134
    never = toxic_from_json({"type": "latency", "toxicity": 0.0})
    assert all(type(make_stage(never, clock.now, clock.call_at, rng)) is Pass for _ in range(100))


def test_a_removed_stage_hands_on_what_it_holds():
    st, clock, sink = stage("latency", latency=1000)
    st.push(data(clock, b"one"))
    st.push(data(clock, b"two"))
    st.push((EOF,))
    items = st.take()
    assert [i[0] for i in items] == [DATA, DATA, EOF] and b"".join(i[1] for i in items[:2]) == b"onetwo"
    assert st.held == 0 and clock.pending() == 0


# ------------------------------------------------------------------ stall (beyond Toxiproxy)
def test_stall_holds_everything_and_says_it_holds_more_than_any_mark():
    from socktools.proxy.toxics import STALLED
    st, clock, sink = stage("stall", timeout=300)
    woken = []
    st.wake = lambda: woken.append(clock.t)
    assert st.held == STALLED
    st.push(data(clock, b"a"))
    st.push((EOF,))
    clock.advance(0.299)
    assert sink.items == [] and st.held == STALLED
    clock.advance(0.001)
    assert sink.data == b"a" and sink.kinds() == [DATA, EOF] and st.held == 0 and woken
    st.push(data(clock, b"b"))                 # released: passes at once
    assert sink.data == b"ab"


def test_stall_zero_holds_until_removed():
    st, clock, sink = stage("stall", timeout=0)
    st.push(data(clock, b"held"))
    clock.advance(3600)
    assert sink.items == [] and clock.pending() == 0
    items = st.take()
    assert items[0][1] == b"held" and st.held == 0


# ------------------------------------------------------------------ message (beyond Toxiproxy)
REPLIES = b"+PONG\r\n$5\r\nhello\r\n$11\r\nhello world\r\n+OK\r\n"


def message_stage(**attrs):
    st, clock, sink = stage("message", **attrs)
    return st, clock, sink


@pytest.mark.parametrize("seed", range(10))
def test_message_resets_in_the_middle_of_the_third_reply_at_any_split(seed):
    st, clock, sink = message_stage(protocol="redis", nth=3, action="reset", cut=5)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(REPLIES)), 6))
    for a, b in zip([0] + cuts, cuts + [len(REPLIES)]):
        st.push(data(clock, REPLIES[a:b]))
    assert sink.data == b"+PONG\r\n$5\r\nhello\r\n" + b"$11\r\n"
    assert sink.kinds()[-1] == RESET and st.held == 0


def test_message_byte_by_byte_holds_each_reply_until_it_is_whole():
    st, clock, sink = message_stage(protocol="redis", nth=0, match="^nothing$", action="close")
    for i in range(len(REPLIES)):
        st.push(data(clock, REPLIES[i:i + 1]))
        if i == 5:
            assert sink.data == b""            # "+PONG\r" is not a whole reply yet
        if i == 6:
            assert sink.data == b"+PONG\r\n"
    assert sink.data == REPLIES and RESET not in sink.kinds()


def test_message_matching_a_regex_is_delayed_and_the_rest_waits_behind_it():
    st, clock, sink = message_stage(protocol="redis", match="hello w", action="delay", delay=200)
    st.push(data(clock, REPLIES))
    assert sink.data == b"+PONG\r\n$5\r\nhello\r\n"
    clock.advance(0.1999)
    assert sink.data == b"+PONG\r\n$5\r\nhello\r\n"
    clock.advance(0.0001)
    assert sink.data == REPLIES


def test_message_close_on_an_http_5xx():
    st, clock, sink = message_stage(protocol="http", match="HTTP 5", action="close")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    bad = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail"
    st.push(data(clock, ok + bad + ok))
    assert sink.data == ok and sink.kinds()[-1] == CLOSE


def test_message_on_framed_replies_resets_in_the_second_at_any_split():
    """The framed protocol (docs/protocol.md) is one of the message toxic's protocols too."""
    from socktools import protocol, reference
    req = protocol.Decoder()
    req.receive_data(reference.make_request("search", "morpheus", keep_alive=True))
    reply = reference.respond(req.next_event())
    stream = reply * 3
    for seed in range(5):
        st, clock, sink = message_stage(protocol="framed", nth=2, action="reset", cut=4)
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(stream)), 5))
        for a, b in zip([0] + cuts, cuts + [len(stream)]):
            st.push(data(clock, stream[a:b]))
        assert sink.data == reply + reply[:4]
        assert sink.kinds()[-1] == RESET


def test_message_too_long_to_hold_passes_unjudged():
    from socktools.proxy.toxics import MESSAGE_HOLD
    st, clock, sink = message_stage(protocol="redis", nth=1, action="reset")
    n = MESSAGE_HOLD + 10
    head = b"$%d\r\n" % n
    st.push(data(clock, head + b"x" * (MESSAGE_HOLD + 1)))
    assert len(sink.data) == len(head) + MESSAGE_HOLD + 1 and st.held == 0
    st.push(data(clock, b"x" * 9 + b"\r\n" + b"+OK\r\n"))
    assert sink.data.endswith(b"+OK\r\n") and RESET not in sink.kinds()


def test_message_on_garbage_stops_judging_and_passes_everything():
    st, clock, sink = message_stage(protocol="redis", nth=1, action="reset")
    st.push(data(clock, b"not resp at all\r\n"))
    st.push(data(clock, b"+OK\r\n"))
    assert sink.data == b"not resp at all\r\n+OK\r\n" and RESET not in sink.kinds()


@pytest.mark.parametrize("attrs,words", [
    ({"protocol": "smtp"}, "no decoder for 'smtp'"),
    ({"action": "explode"}, "expected one of delay, close, reset"),
    ({"match": "("}, "not a regular expression"),
    ({"nth": "3"}, "whole number"),
])
def test_message_attributes_are_checked(attrs, words):
    from socktools.proxy.config import SpecError
    with pytest.raises(SpecError) as err:
        toxic_from_json({"type": "message", "attributes": attrs})
    assert words in str(err.value)

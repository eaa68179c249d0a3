"""flood's UDP datagrams and one socket's ledger (wire.datagram): sans-I/O, no sockets."""

from __future__ import annotations

import random

import pytest

from socktools.wire import datagram as dg

MS = 1_000_000


def ledger(size=64, timeout_ms=100):
    return dg.Ledger(sock=3, size=size, timeout_ns=timeout_ms * MS)


def balanced(led: dg.Ledger) -> bool:
    return led.sent == led.answered + led.late + led.lost + led.in_flight


def test_a_datagram_carries_its_socket_seq_and_send_time_and_pads_to_size():
    data = dg.encode(7, 123456789012, 42, 100)
    assert len(data) == 100
    assert dg.decode(data) == dg.Header(7, 123456789012, 42)


@pytest.mark.parametrize("size", [0, dg.HEADER_SIZE - 1, dg.MAX_DATAGRAM + 1])
def test_sizes_outside_a_header_and_the_ipv4_maximum_are_refused(size):
    with pytest.raises(ValueError, match="65507"):
        dg.encode(0, 0, 0, size)


@pytest.mark.parametrize("data", [b"", b"sktU", b"x" * 24, b"sktV" + bytes(20)])
def test_bytes_that_are_not_our_datagram_decode_to_none(data):
    assert dg.decode(data) is None


def test_a_reply_before_the_timeout_is_answered_with_its_round_trip():
    led = ledger()
    out = led.send(1000)
    assert led.receive(out, 1000 + 3 * MS) == "answered"
    assert led.latency_ns == 3 * MS
    assert (led.sent, led.answered, led.in_flight) == (1, 1, 0) and balanced(led)


def test_no_reply_before_the_timeout_is_lost_and_a_reply_after_it_is_late_not_lost():
    led = ledger(timeout_ms=100)
    out = led.send(0)
    assert led.expire(50 * MS) == 0
    assert led.expire(101 * MS) == 1
    assert (led.lost, led.in_flight) == (1, 0) and balanced(led)
    assert led.receive(out, 150 * MS) == "late"
    assert (led.lost, led.late, led.answered) == (0, 1, 0) and balanced(led)
    assert led.receive(out, 151 * MS) == "duplicated"   # a second copy of the late one


def test_a_reply_that_arrives_past_its_timeout_before_any_expire_is_late():
    led = ledger(timeout_ms=100)
    out = led.send(0)
    assert led.receive(out, 200 * MS) == "late"
    assert (led.late, led.lost, led.answered) == (1, 0, 0) and balanced(led)


def test_a_second_reply_is_duplicated_and_counts_once_answered():
    led = ledger()
    out = led.send(0)
    assert [led.receive(out, MS), led.receive(out, 2 * MS)] == ["answered", "duplicated"]
    assert (led.answered, led.duplicated) == (1, 1) and balanced(led)


def test_replies_out_of_order_are_answered_and_the_earlier_one_counted_reordered():
    led = ledger()
    first, second = led.send(0), led.send(1)
    assert led.receive(second, MS) == "answered"
    assert led.receive(first, 2 * MS) == "answered"
    assert (led.answered, led.reordered) == (2, 1) and balanced(led)


@pytest.mark.parametrize("cut,keep", [(True, 64), (False, 40)])
def test_a_shorter_or_kernel_cut_reply_is_answered_and_counted_truncated(cut, keep):
    led = ledger(size=64)
    out = led.send(0)
    assert led.receive(out[:keep], MS, cut=cut) == "answered"
    assert led.truncated == 1


def test_replies_of_another_socket_another_seq_or_another_send_time_are_foreign():
    led = ledger()
    led.send(0)
    other_sock = dg.encode(4, 0, 0, 64)
    never_sent = dg.encode(3, 9, 0, 64)
    other_time = dg.encode(3, 0, 77, 64)
    assert [led.receive(d, MS) for d in (other_sock, never_sent, other_time, b"junk")] == ["foreign"] * 4
    assert (led.foreign, led.answered, led.in_flight) == (4, 0, 1) and balanced(led)


def test_a_reply_older_than_the_window_is_stale_and_memory_stays_bounded():
    led = ledger(timeout_ms=1)
    first = led.send(0)
    assert led.expire(2 * MS) == 1      # settled as lost, then pushed out of the window
    for i in range(dg.WINDOW + 10):
        led.receive(led.send(3 * MS + i), 3 * MS + i + 1)
    assert len(led.settled) == dg.WINDOW
    assert led.receive(first, 10**12) == "stale"
    assert balanced(led)


def test_a_datagram_the_kernel_refused_never_left_and_is_not_waited_for():
    led = ledger()
    led.send(0)
    led.refuse()
    assert (led.sent, led.refused, led.in_flight) == (0, 1, 0) and balanced(led)
    assert led.expire(10**12) == 0


def test_the_zero_timeout_is_refused():
    with pytest.raises(ValueError, match="above 0"):
        dg.Ledger(0, 64, 0)


@pytest.mark.parametrize("seed", range(20))
def test_random_losses_delays_duplicates_and_reorderings_always_add_up(seed):
    """A random network: each datagram dropped, delayed past the timeout, duplicated or
    swapped with its neighbour.  Whatever happens, sent = answered + late + lost + in flight,
    and the ledger's counts agree with what the network did."""
    rng = random.Random(seed)
    led = ledger(timeout_ms=10)
    now = 0
    arrivals = []                       # (time, data)
    dropped = 0
    for _ in range(500):
        now += rng.randint(1, 3) * MS
        data = led.send(now)
        fate = rng.random()
        if fate < 0.1:
            dropped += 1
            continue
        delay = rng.randint(1, 5) * MS if fate < 0.8 else rng.randint(11, 40) * MS
        arrivals.append((now + delay, data))
        if fate > 0.95:
            arrivals.append((now + delay + MS, data))
    arrivals.sort(key=lambda a: a[0])
    for when, data in arrivals:
        led.expire(when)
        led.receive(data, when)
        assert balanced(led)
    led.expire(now + 100 * MS)
    assert balanced(led) and led.in_flight == 0
    assert led.lost == dropped         # every datagram that arrived was placed: answered or late
    assert led.foreign == 0 and led.stale == 0


# ------------------------------------------------------------------ no header: raw and line
import re  # noqa: E402


def unstamped(timeout_ms=100, match=None):
    return dg.Unstamped(2, lambda seq: b"Q%d" % seq, timeout_ms * MS, re.compile(match) if match else None)


def test_without_a_header_the_one_request_in_flight_is_answered_by_the_next_datagram():
    u = unstamped()
    assert u.send(0) == b"Q0"
    assert u.receive(b"anything", 2 * MS) == "answered" and u.latency_ns == 2 * MS
    assert u.send(3 * MS) == b"Q1"
    assert (u.sent, u.answered, u.in_flight) == (2, 1, 1) and balanced(u)


def test_without_a_header_a_second_request_cannot_leave_before_the_first_is_settled():
    u = unstamped()
    u.send(0)
    with pytest.raises(RuntimeError, match="one request in flight"):
        u.send(1)


def test_without_a_header_a_reply_after_the_timeout_is_late_and_one_owed_nothing_is_foreign():
    u = unstamped(timeout_ms=10)
    u.send(0)
    assert u.expire(11 * MS) == 1 and (u.lost, u.in_flight) == (1, 0)
    assert u.receive(b"r", 12 * MS) == "late"
    assert (u.lost, u.late) == (0, 1) and balanced(u)
    assert u.receive(b"r", 13 * MS) == "foreign"          # a second copy: nothing owed any more
    assert u.foreign == 1 and balanced(u)


def test_without_a_header_a_reply_that_does_not_match_still_answers_and_is_counted():
    u = unstamped(match=rb"^OK")
    u.send(0)
    u.receive(b"ERR", MS)
    u.send(2 * MS)
    u.receive(b"OK fine", 3 * MS)
    assert (u.answered, u.mismatched) == (2, 1)


def test_without_a_header_a_refused_send_never_left():
    u = unstamped()
    u.send(0)
    u.refuse()
    assert (u.sent, u.refused, u.in_flight) == (0, 1, 0) and balanced(u)
    assert u.send(1) == b"Q1"


@pytest.mark.parametrize("seed", range(10))
def test_without_a_header_random_losses_and_delays_always_add_up(seed):
    rng = random.Random(seed)
    u = unstamped(timeout_ms=10)
    now = 0
    pending = []                       # (arrival time, data) of replies on their way
    for _ in range(300):
        now += MS
        pending.sort()
        while pending and pending[0][0] <= now:
            when, data = pending.pop(0)
            u.expire(when)
            u.receive(data, when)
        u.expire(now)
        if u.in_flight:
            continue
        u.send(now)
        fate = rng.random()
        if fate < 0.7:
            pending.append((now + rng.randint(1, 5) * MS, b"r"))
        elif fate < 0.9:
            pending.append((now + rng.randint(11, 30) * MS, b"r"))
        assert balanced(u)
    u.expire(now + 100 * MS)
    assert balanced(u) and u.in_flight == 0

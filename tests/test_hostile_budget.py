"""The per-worker request budget, sans-I/O: bytes held for incomplete requests and their deadline."""

from __future__ import annotations

import pytest

from socktools.serve.budget import RequestBudget
from socktools.serve.config import DEFAULT_MAX_BUFFERED, DEFAULT_REQUEST_TIMEOUT, default_max_buffered


def test_defaults_are_named_and_sane():
    assert DEFAULT_MAX_BUFFERED == 64 << 20
    assert DEFAULT_REQUEST_TIMEOUT == 60.0  # nginx client_header_timeout / client_body_timeout
    assert default_max_buffered(1 << 20) == 64 << 20
    assert default_max_buffered(100 << 20) == 400 << 20  # room for requests of the allowed size


def test_total_follows_each_connections_holding():
    b = RequestBudget(1000, timeout=10)
    assert b.update("a", 300, 0.0) == []
    assert b.update("b", 200, 0.1) == []
    assert b.update("a", 500, 0.2) == []
    assert (b.total, b.held("a"), b.started("a")) == (700, 500, 0.0)  # a's clock kept its first byte
    assert b.update("a", 0, 0.3) == []  # a's request completed
    assert (b.total, len(b)) == (200, 1)
    b.forget("b")
    assert (b.total, len(b)) == (0, 0)


def test_over_budget_refuses_the_newest_holders_first():
    b = RequestBudget(1000, timeout=None)
    for i, key in enumerate("abcd"):
        assert b.update(key, 250, float(i)) == []
    assert b.total == 1000  # at the budget is fine
    # The oldest holder grows: the total goes over, and the newest ones pay, not "a".
    assert b.update("a", 600, 5.0) == ["d", "c"]
    assert b.total == 850 and b.held("a") == 600 and b.held("b") == 250
    assert b.peak <= 1000


def test_a_newcomer_alone_over_the_budget_is_refused():
    b = RequestBudget(1000, timeout=None)
    b.update("old", 900, 0.0)
    assert b.update("new", 200, 1.0) == ["new"]
    assert b.total == 900


def test_300_partial_bodies_never_take_the_total_over_the_budget():
    mib = 1 << 20
    b = RequestBudget(32 * mib, timeout=None)
    refused = set()
    for step in range(16):  # each of 300 connections sends its 1 MiB - 1 in 16 reads, interleaved
        for conn in range(300):
            if conn in refused:
                continue
            refused.update(b.update(conn, (step + 1) * (mib - 1) // 16, float(step)))
            assert b.total <= 32 * mib
    assert b.peak <= 32 * mib
    assert len(refused) >= 300 - 32  # at most 32 full bodies fit
    assert min(set(range(300)) - refused) == 0  # the first arrivals are the ones kept


def test_slowloris_expires_at_its_deadline_counted_from_the_first_byte():
    b = RequestBudget(1000, timeout=5.0)
    b.update("slow", 1, 0.0)
    for t in range(1, 5):              # one byte a second: never idle, never complete
        b.update("slow", 1 + t, float(t))
        assert b.expired(float(t)) == []
    b.update("fast", 10, 4.5)
    assert b.next_deadline() == 5.0
    assert b.expired(5.0) == ["slow"]  # at the deadline, not a second later
    assert b.expired(9.0) == []        # fast began at 4.5: in time until 9.5
    assert b.expired(9.5) == ["fast"]
    assert b.total == 0 and b.next_deadline() is None


def test_a_new_request_restarts_the_clock():
    b = RequestBudget(1000, timeout=5.0)
    b.update("k", 10, 0.0)
    b.update("k", 3, 4.0, new_request=True)  # the first completed; 3 bytes of the next arrived
    assert b.started("k") == 4.0
    assert b.expired(6.0) == []
    assert b.expired(9.0) == ["k"]


@pytest.mark.parametrize("kw", [{"max_buffered": 0}, {"timeout": 0}, {"timeout": -1}])
def test_bad_limits_are_refused(kw):
    with pytest.raises(ValueError):
        RequestBudget(**{"max_buffered": 10, **kw})

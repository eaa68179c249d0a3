"""flood's lifecycle tables (flood.lifecycle): the legal paths and the refusals, no I/O."""

from __future__ import annotations

import pytest

from socktools.flood import lifecycle as lc


class S:
    def __init__(self, state):
        self.index, self.state = 7, state


def walk(machine, events):
    return [machine.fire(e) for e in events]


def test_a_worker_goes_connect_ready_traffic_drain_close():
    m = lc.worker_machine(0)
    assert walk(m, ["connected", "go", "end", "close"]) == ["ready", "traffic", "drain", "close"]


def test_churn_and_a_run_without_a_runner_go_straight_from_connect():
    assert walk(lc.worker_machine(0), ["go", "end", "close"]) == ["traffic", "drain", "close"]


@pytest.mark.parametrize("before", [[], ["connected"]])
def test_a_stop_before_the_traffic_drains(before):
    m = lc.worker_machine(0)
    walk(m, before)
    assert m.fire("stop") == "drain"


@pytest.mark.parametrize("events,bad", [(["go", "end", "close"], "end"), (["go"], "connected"),
                                        (["connected", "go", "end"], "go")])
def test_an_event_the_phase_does_not_take_is_our_bug_and_says_where(events, bad):
    m = lc.worker_machine(3)
    walk(m, events)
    with pytest.raises(lc.LifecycleError, match=rf"flood worker 3: event '{bad}' in state"):
        m.fire(bad)


def test_a_connection_is_confirmed_then_measured_then_drained_then_closed():
    slot = S(lc.CONNECTING)
    assert [lc.step(slot, e) for e in ("made", "confirmed", "go", "drain", "closed")] == \
        ["confirming", "ready", "traffic", "draining", "closed"]


def test_a_replacement_joins_the_traffic_without_a_confirming_trip():
    slot = S(lc.REOPENING)
    assert lc.step(slot, "made") == lc.TRAFFIC


@pytest.mark.parametrize("state", [lc.CONNECTING, lc.REOPENING, lc.CONFIRMING, lc.READY, lc.TRAFFIC,
                                   lc.DRAINING])
def test_every_open_state_can_close_and_closed_is_final(state):
    slot = S(state)
    assert lc.step(slot, "closed") == lc.CLOSED
    for event in ("made", "confirmed", "go", "drain", "closed"):
        with pytest.raises(lc.LifecycleError, match="connection 7"):
            lc.step(slot, event)


def test_a_reply_cannot_confirm_a_connection_that_never_connected():
    with pytest.raises(lc.LifecycleError, match="allowed: closed, made"):
        lc.step(S(lc.CONNECTING), "confirmed")

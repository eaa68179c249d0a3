"""The I/O core's timers, run/stop, close, and idle timeouts."""

from __future__ import annotations

import time

import pytest

from socktools.core.loop import Loop
from tests.loop_helpers import Peer, RUN_LIMIT, Recorder, _socketpair, run_until

pytestmark = pytest.mark.timeout(60)

# ================================================================= timers and the loop

def test_timers_fire_in_time_order_and_cancel(loop):
    fired = []
    loop.call_later(0.06, lambda: fired.append("c"))
    loop.call_later(0.02, lambda: fired.append("a"))
    loop.call_later(0.04, lambda: fired.append("b"))
    cancelled = loop.call_later(0.03, lambda: fired.append("cancelled"))
    same_time = loop.clock() + 0.05
    loop.call_at(same_time, lambda: fired.append("tie-1"))
    loop.call_at(same_time, lambda: fired.append("tie-2"))  # ties keep scheduling order
    cancelled.cancel()

    def chain() -> None:
        fired.append("chain-1")
        loop.call_later(0, lambda: fired.append("chain-2"))

    loop.call_later(0.07, chain)
    start = loop.clock()
    run_until(loop, lambda: len(fired) == 7, "all timers")
    loop.run(timeout=0.05)  # and nothing more fires
    assert fired == ["a", "b", "tie-1", "tie-2", "c", "chain-1", "chain-2"]
    assert loop.clock() - start >= 0.07


def test_timer_fires_while_connections_are_idle_and_stop_ends_run(make_pair, loop):
    a, b = make_pair()
    loop.add_connection(a, Recorder())
    fired = []

    def stop() -> None:
        fired.append(loop.now)
        loop.stop()

    loop.call_later(0.05, stop)
    loop.run(timeout=RUN_LIMIT)  # would block on the idle connection without the timer
    assert len(fired) == 1
    assert loop.clock() - fired[0] < RUN_LIMIT / 2


def test_run_without_anything_to_wait_for_returns():
    """No fd, no timeout: run() returns once the last timer has fired (the
    module's pytest-timeout catches a hang)."""
    lp = Loop()
    fired = []
    try:
        lp.run()  # nothing at all
        lp.call_later(0.01, lambda: fired.append(1))
        lp.run()
        assert fired == [1]
    finally:
        lp.close()


def test_loop_close_aborts_every_connection(make_pair):
    lp = Loop()
    recs = []
    for _ in range(3):
        a, b = make_pair()
        rec = Recorder()
        lp.add_connection(a, rec)
        recs.append((rec, b))
    lp.close()
    for rec, b in recs:
        assert rec.calls == ["made", "lost"] and rec.exc is None
        b.settimeout(RUN_LIMIT)
        try:
            assert b.recv(1) == b""
        except ConnectionResetError:
            pass
    assert not lp.connections


# ================================================================= idle timeouts

@pytest.mark.parametrize("batch", [False, True], ids=["per-event", "batch"])
def test_idle_timeout_closes_only_idle_connections(make_pair, default_loop, monkeypatch, batch):
    """One silent connection, one the peer keeps talking to, one that keeps writing."""
    loop = default_loop
    if batch:  # the batch path stamps no per-connection clock: the sweep must still know
        monkeypatch.setattr(Recorder, "data_batch", Recorder.batch_form)
    timeout = 0.3
    silent_a, _silent_b = make_pair()
    talked_a, talked_b = make_pair()
    writer_a, writer_b = make_pair()
    silent, talked, writer = Recorder(), Recorder(), Recorder()
    c_silent = loop.add_connection(silent_a, silent)
    c_talked = loop.add_connection(talked_a, talked)
    c_writer = loop.add_connection(writer_a, writer)
    Peer(loop, writer_b).start_reading()
    idle_closed = []
    loop.on_idle_close = idle_closed.append
    loop.set_idle_timeout(timeout)

    def activity() -> None:
        talked_b.send(b".")
        c_writer.write(b"tick")
        loop.call_later(0.02, activity)

    started = loop.clock()
    loop.call_later(0.02, activity)
    run_until(loop, lambda: silent.lost, "the silent connection is closed", timeout=5 * timeout + 2)
    loop.run(timeout=timeout)  # a while longer: the busy ones must survive it
    names = {c_silent: "silent", c_talked: "talked-to", c_writer: "writing"}
    assert [names[c] for c in idle_closed] == ["silent"]
    assert isinstance(silent.exc, TimeoutError) and c_silent.failed_in is None
    assert loop.clock() - started >= timeout
    assert not talked.lost and not c_talked.closed
    assert not writer.lost and not c_writer.closed, "a connection that keeps sending is not idle"
    loop.set_idle_timeout(None)


def test_new_connection_is_not_idle_however_late_it_arrives():
    """A connection added long after the loop last ran is fresh, not stale."""
    lp = Loop()
    try:
        lp.set_idle_timeout(0.2)
        time.sleep(0.3)  # e.g. a long connect phase before the loop runs
        a, b = _socketpair()
        rec = Recorder()
        lp.add_connection(a, rec)
        lp.run(timeout=0.1)
        assert not rec.lost, f"closed as idle right after it was made: {rec.exc!r}"
        run_until(lp, lambda: rec.lost, "closed once really idle", timeout=2)
        assert isinstance(rec.exc, TimeoutError)
    finally:
        lp.close()
        b.close()

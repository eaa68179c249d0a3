"""The parent's run policy (flood.policy.RunPolicy), one for local workers and Dask shards: no I/O."""

from __future__ import annotations

import signal

from socktools.flood.policy import STOP_GRACE, RunPolicy
from socktools.flood import policy as policy_module


def make(n=3):
    events: list = []
    return RunPolicy(range(n), 1.0, events.append, name=lambda i: f"worker {i}"), events


def test_go_once_every_running_unit_is_ready_and_never_twice():
    p, _ = make()
    p.on_ready(0)
    p.on_ready(1)
    assert not p.go_now(stopping=False)
    p.on_ready(2)
    assert p.go_now(stopping=False)
    assert not p.go_now(stopping=False)


def test_a_unit_given_up_on_no_longer_holds_the_start_back_and_is_named_once():
    p, _ = make()
    p.on_ready(0)
    p.on_ready(1)
    p.give_up(2, "crashed: boom")
    p.give_up(2, "exited (code 70) without reporting")        # its exit after the crash: no second line
    assert p.crashed == ["worker 2 crashed: boom"]
    assert p.running() == [0, 1]
    assert p.go_now(stopping=False)


def test_no_go_while_stopping_or_with_nobody_left():
    p, _ = make(2)
    p.on_ready(0)
    p.on_ready(1)
    assert not p.go_now(stopping=True)
    p.give_up_running(RunPolicy.second_stop(signal.SIGINT))
    assert p.finished() and not p.go_now(stopping=False)
    assert p.crashed == ["worker 0 stopped by a second Ctrl-C before reporting",
                         "worker 1 stopped by a second Ctrl-C before reporting"]
    assert RunPolicy.second_stop(signal.SIGTERM) == "stopped by a second stop signal before reporting"


def test_a_unit_that_reported_is_not_given_up_on_and_a_lost_one_is_not_crashed():
    p, _ = make(3)
    p.on_final(0, object())
    p.give_up(0, "exited (code 0) without reporting")
    p.lose(1)
    assert p.crashed == [] and p.running() == [2]
    assert RunPolicy.OVERDUE == f"did not report within {STOP_GRACE:g}s of being stopped"


def test_one_stop_grace_for_the_local_and_the_cluster_run():
    from socktools.flood import cluster_run, runner
    assert runner.STOP_GRACE is policy_module.STOP_GRACE
    assert cluster_run.STOP_GRACE is policy_module.STOP_GRACE

"""core/procs.py: the one worker-process supervisor, with real child processes.

The supervisor runs in the test process (signals to ourselves reach its
queue); each child is a tiny target defined here.  Every wait has a deadline:
a supervisor that would hang is stopped by the ``deadline`` timer and fails.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from socktools.core import procs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (Linux)")

DEADLINE = 20.0


def _obedient(conn, tag):
    """Say hello, then do what the parent says: "drain" -> answer, "force" -> exit 0."""
    conn.send(("hello", os.getpid()))
    while True:
        try:
            order = conn.recv()
        except EOFError:
            os._exit(3)
        if order == "drain":
            conn.send(("draining", tag))   # ... and keep running, as a long drain would
        elif order == "force":
            return


def _crashing(conn):
    raise ValueError("bad input")


def _waits_for_eof(conn):
    conn.send(("hello", os.getpid()))
    try:
        conn.recv()
    except EOFError:
        os._exit(3)  # the exit code that proves it saw EOF


class _Recorder(procs.Supervisor):
    """A policy that records everything and stops a hung test."""

    def __init__(self, **kw):
        kw.setdefault("drain_grace", DEADLINE)
        super().__init__("socktools-test", **kw)
        self.messages = []
        self.exits = []
        self.orders = []
        self.overdue = []
        self.loop.call_later(DEADLINE, self._hung)
        self.hung = False

    def _hung(self):
        self.hung = True
        for child in self.children.values():
            child.signal(signal.SIGKILL)

    def on_message(self, child, msg):
        self.messages.append((child.index, msg))

    def on_exit(self, child):
        self.exits.append((child.index, child.exitcode, child.crash))

    def on_overdue(self, children):
        self.overdue.extend(c.index for c in children)

    def hellos(self):
        return [i for i, m in self.messages if m[0] == "hello"]


class _DrainThenForce(_Recorder):
    def stop_child(self, child, force):
        self.orders.append((child.index, "force" if force else "drain"))
        child.send("force" if force else "drain")

    def on_message(self, child, msg):
        super().on_message(child, msg)
        if msg[0] == "hello" and len(self.hellos()) == 2:
            os.kill(os.getpid(), signal.SIGINT)   # the first stop signal: drain
        if msg[0] == "draining" and sum(m[0] == "draining" for _, m in self.messages) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the second: force


def test_first_signal_drains_second_forces():
    sup = _DrainThenForce()
    sup.run(lambda: [sup.spawn(i, _obedient, f"w{i}") for i in range(2)])
    assert not sup.hung
    assert sup.stop_signal == signal.SIGINT and sup.stopping == 2
    assert sorted(sup.orders) == [(0, "drain"), (0, "force"), (1, "drain"), (1, "force")]
    # every child drained before any was forced
    assert [o for _, o in sup.orders] == ["drain", "drain", "force", "force"]
    assert sorted(sup.exits) == [(0, 0, None), (1, 0, None)]
    assert not sup.children


def test_a_child_ignoring_the_stop_gets_sigkill_after_the_grace():
    class Deaf(_Recorder):
        def on_message(self, child, msg):
            super().on_message(child, msg)
            if len(self.hellos()) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # default stop_child: SIGTERM, which they ignore

    sup = Deaf(drain_grace=0.3, child_ignores=(signal.SIGINT, signal.SIGTERM))
    started = time.monotonic()
    sup.run(lambda: [sup.spawn(i, _obedient, i) for i in range(2)])
    assert not sup.hung
    assert sorted(sup.overdue) == [0, 1]
    assert sorted(sup.exits) == [(0, -signal.SIGKILL, None), (1, -signal.SIGKILL, None)]
    assert time.monotonic() - started < DEADLINE / 2


def test_a_crashing_target_is_reported_with_exit_code_70():
    sup = _Recorder()
    sup.run(lambda: sup.spawn(0, _crashing))
    assert not sup.hung
    [(index, code, crash)] = sup.exits
    assert index == 0 and code == procs.EXIT_CRASHED == 70
    assert crash.startswith("ValueError: bad input at test_procs.py:")
    assert procs.describe_exit(code) == "exit code 70"
    assert procs.describe_exit(-9) == "killed by signal 9"
    assert sup.messages == []  # the crash report is the mechanism's, not a policy message


def test_a_killed_child_is_reported_by_its_signal():
    class Killer(_Recorder):
        def on_message(self, child, msg):
            super().on_message(child, msg)
            os.kill(msg[1], signal.SIGKILL)

    sup = Killer()
    sup.run(lambda: sup.spawn(0, _obedient, 0))
    assert sup.exits == [(0, -signal.SIGKILL, None)]


def test_each_child_sees_eof_when_its_parent_end_closes_even_with_siblings_alive():
    """A child forked later must not hold the parent's end of an earlier child's pipe:
    otherwise that pipe never reaches EOF while the later child lives, and a child
    whose supervisor died would never notice."""
    class Closer(_Recorder):
        def on_message(self, child, msg):
            super().on_message(child, msg)
            if len(self.hellos()) == 2:
                first = self.children[0]
                self.loop.remove_reader(first.conn.fileno())
                first.conn.close()  # as the parent's death would

        def on_exit(self, child):
            super().on_exit(child)
            if child.index == 0:
                assert 1 in self.children, "the sibling should still be running"
                self.children[1].send("force")

    sup = Closer()
    sup.run(lambda: [sup.spawn(0, _waits_for_eof), sup.spawn(1, _obedient, 1)])
    assert not sup.hung
    assert sorted(sup.exits) == [(0, 3, None), (1, 0, None)]


def test_signals_are_restored_after_run():
    before = {s: signal.getsignal(s) for s in procs.STOP_SIGNALS}
    sup = _Recorder()
    sup.run(lambda: sup.spawn(0, _crashing))
    assert {s: signal.getsignal(s) for s in procs.STOP_SIGNALS} == before
    assert signal.set_wakeup_fd(-1) == -1


def test_a_crash_loop_is_children_dying_right_after_their_start():
    from types import SimpleNamespace
    now = time.monotonic()
    loop = procs.CrashLoop()
    long_lived = SimpleNamespace(started=now - 10 * procs.CRASH_LOOP_WINDOW)
    assert not any(loop.died(long_lived) for _ in range(3 * procs.CRASH_LOOP_LIMIT))
    fresh = SimpleNamespace(started=now)
    assert [loop.died(fresh) for _ in range(procs.CRASH_LOOP_LIMIT)] == \
        [False] * (procs.CRASH_LOOP_LIMIT - 1) + [True]

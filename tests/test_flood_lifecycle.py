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


@pytest.mark.parametrize("origin,then", [(lc.CONNECTING, lc.CONFIRMING), (lc.REOPENING, lc.TRAFFIC),
                                          (lc.RAMPING, lc.TRAFFIC)])
@pytest.mark.parametrize("setup", [[], ["tls"], ["open"], ["tls", "open"]])
def test_the_setup_phases_are_optional_ordered_and_end_where_the_origin_leads(origin, then, setup):
    slot = S(origin)
    for event in setup:
        state = lc.step(slot, event)
        assert lc.in_setup(state) and state.endswith({"tls": "handshaking", "open": "opening"}[event])
        assert state.startswith(origin) or origin == lc.CONNECTING
    assert lc.step(slot, "made") == then


@pytest.mark.parametrize("state,event", [(lc.HANDSHAKING, "tls"), (lc.OPENING, "tls"), (lc.OPENING, "open"),
                                         (lc.HANDSHAKING, "confirmed"), ("reopening/opening", "go")])
def test_a_setup_phase_cannot_be_entered_twice_or_out_of_order_or_skipped(state, event):
    with pytest.raises(lc.LifecycleError, match=f"event '{event}' in state '{state}'"):
        lc.step(S(state), event)


@pytest.mark.parametrize("state", [lc.CONNECTING, lc.REOPENING, lc.RAMPING, lc.CONFIRMING, lc.READY,
                                   lc.TRAFFIC, lc.RETIRING, lc.DRAINING, lc.HANDSHAKING, lc.OPENING,
                                   "reopening/handshaking", "ramping/opening"])
def test_every_open_state_can_close_and_closed_is_final(state):
    slot = S(state)
    assert lc.step(slot, "closed") == lc.CLOSED
    for event in ("made", "confirmed", "go", "drain", "closed"):
        with pytest.raises(lc.LifecycleError, match="connection 7"):
            lc.step(slot, event)


def test_a_reply_cannot_confirm_a_connection_that_never_connected():
    with pytest.raises(lc.LifecycleError, match="allowed: closed, made"):
        lc.step(S(lc.CONNECTING), "confirmed")


# ------------------------------------------------------------------ the rule, over flood's own source
import ast  # noqa: E402
import pathlib  # noqa: E402

import socktools.flood  # noqa: E402

FLOOD = pathlib.Path(socktools.flood.__file__).parent
#: What only the session (with the lifecycle tables) may change: the worker's phase, a
#: connection's state and confirmation, the session's own wiring, and every per-connection
#: count of WorkerStats (attempted, connected ... cycles).  ``count`` (a connection's next seq)
#: is the request maker's.
OWNED = {"phase", "state", "confirmed", "connect_started", "reopen", "pacer_timer", "live",
         "attempted", "connected", "established", "failed", "lost", "cancelled", "reconnects",
         "resent", "unanswered", "confirm_requests", "confirm_responses", "cycles", "count"}
#: Who may: the session and the tables; the request maker for ``count`` alone.  The cluster's
#: client side has attributes of these names of its own (a list of lost shards, a count of
#: Ctrl-Cs) and no connection: it is not a party to this rule; nor is the UDP worker (below).
MAY = {"session.py": OWNED, "lifecycle.py": {"state"}, "requests.py": {"count"}}
#: ``udp.py`` (``flood --udp``) runs datagram sockets, which have no connection to open,
#: confirm or lose: no session, no lifecycle; its counts are its sockets' ledgers
#: (wire.datagram.Ledger), summed where it reports them.
NOT_PARTIES = {"cluster.py", "cluster_run.py", "udp.py"}


def violations(source: str, name: str) -> list:
    """Lines of ``source`` that assign an OWNED attribute (or grow/shrink ``live``) unasked."""
    allowed = MAY.get(name, set())
    out = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and sub.attr in OWNED and sub.attr not in allowed:
                    out.append(f"{name}:{node.lineno}: {ast.unparse(target)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "live"
                and "live" not in allowed):
            out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_module_outside_the_session_assigns_a_phase_a_state_or_a_count():
    found = []
    for path in sorted(FLOOD.glob("*.py")):
        if path.name not in NOT_PARTIES:
            found += violations(path.read_text(), path.name)
    assert found == []


def test_the_rule_can_fail():
    snippet = ("session.phase = 'ready'\nslot.state = 'x'\nself.stats.reconnects += 1\n"
               "s.live.add(conn)\nslot.count -= 2\n")
    assert len(violations(snippet, "worker.py")) == 5
    assert violations("slot.count -= 2\n", "requests.py") == []

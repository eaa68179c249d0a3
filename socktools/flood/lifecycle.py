"""Where a flood worker and each of its connections are in their lives: every rule, in one place.

h11's ``_state.py`` is the model: the states, the events and the table of (state, event) ->
next state live here and nowhere else; the session (:mod:`socktools.flood.session`) fires
events through :class:`Machine` and never assigns a state itself; an event a state does not
take raises :class:`LifecycleError` -- a bug of ours, named with the state and the event.

A worker's phases::

    connect --connected--> ready --go--> traffic --end--> drain --close--> close
       |                              ^                      ^
       +------------- go -------------+ (churn, or no runner: no barrier)
    connect / ready --stop--> drain (a stop before the traffic: nothing to measure)

A connection's states::

    connecting --made--> confirming --confirmed--> ready --go--> traffic --drain--> draining
    reopening  --made--> traffic       (a replacement during the traffic: no confirming trip)
    ramping    --made--> traffic       (--stages: one more connection of the ramp, likewise)
    traffic    --retire--> retiring    (--stages: the ramp goes down; answered, then closed)
    any state but closed --closed--> closed

Between the TCP connect and the first request a connection may go through two setup
phases, each optional and in this order: a TLS handshake (``--tls``) and an opening
conversation (``--greeting``, ``--setup``, a plug-in's login).  ``tls`` enters the handshake,
``open`` the conversation, and ``made`` ends the setup, from whichever state the connection is
in::

    connecting --tls--> handshaking --open--> opening --made--> confirming
        |                    +-----------made----------------^        ^
        +--open--> opening ---made---------------------------+        |
        +--made-----------------------------------------------------+

A replacement (``reopening``) and a connection of the ramp (``ramping``) go through the same
phases in states of their own (``reopening/handshaking``, ``ramping/opening``...), because
their ``made`` leads to ``traffic``, not ``confirming``: the table stays a function.
"""

from __future__ import annotations

__all__ = ["LifecycleError", "Machine", "WORKER", "CONNECTION", "worker_machine", "step",
           "CONNECT", "READY", "TRAFFIC", "DRAIN", "CLOSE",
           "CONNECTING", "REOPENING", "RAMPING", "RETIRING", "CONFIRMING", "DRAINING", "CLOSED",
           "HANDSHAKING", "OPENING", "SETUP", "setup_state", "in_setup", "origin"]

# ------------------------------------------------------------------ the worker's phases
CONNECT = "connect"
READY = "ready"
TRAFFIC = "traffic"
DRAIN = "drain"
CLOSE = "close"

#: (phase, event) -> next phase.
WORKER: dict = {
    (CONNECT, "connected"): READY,     # every connection confirmed or failed: wait for "go"
    (CONNECT, "go"): TRAFFIC,          # churn (--mode connect), and a run with no runner
    (READY, "go"): TRAFFIC,
    (CONNECT, "stop"): DRAIN,          # a stop before the traffic started
    (READY, "stop"): DRAIN,
    (TRAFFIC, "end"): DRAIN,           # quota, duration, a stop, or no connection left
    (DRAIN, "close"): CLOSE,           # nothing owed any more, or the drain timeout
}

# ------------------------------------------------------------------ a connection's states
CONNECTING = "connecting"
REOPENING = "reopening"
RAMPING = "ramping"
RETIRING = "retiring"
CONFIRMING = "confirming"
DRAINING = "draining"
CLOSED = "closed"

#: The setup phases between the TCP connect and the first request, in their order.
HANDSHAKING = "handshaking"            # --tls: the TLS handshake
OPENING = "opening"                    # the opening conversation (greeting, setup, login)
SETUP = (HANDSHAKING, OPENING)

#: Where each way of opening a connection leads once its setup is done (``made``).
_ORIGINS = {CONNECTING: CONFIRMING, REOPENING: TRAFFIC, RAMPING: TRAFFIC}


def setup_state(origin: str, phase: str) -> str:
    """The state of a connection opened as ``origin`` (connecting, reopening, ramping) while in
    setup ``phase``: ``handshaking`` for a new one, ``reopening/handshaking`` for a replacement."""
    return phase if origin == CONNECTING else f"{origin}/{phase}"


def origin(state: str) -> str:
    """How a connection not yet made was opened, whatever setup phase it is in: ``ramping`` for
    ``ramping`` and ``ramping/handshaking``, ``connecting`` for ``handshaking``; a made
    connection's state as it is."""
    head, sep, _ = state.partition("/")
    if sep:
        return head
    return CONNECTING if state in SETUP else state


def in_setup(state: str) -> bool:
    """True while a connection is made (TCP) but not yet ready for its first request."""
    return state.rpartition("/")[2] in SETUP


#: (state, event) -> next state; ``closed`` is taken in every state but ``closed`` itself.
CONNECTION: dict = {
    (CONFIRMING, "confirmed"): READY,
    (READY, "go"): TRAFFIC,
    (TRAFFIC, "retire"): RETIRING,
    (TRAFFIC, "drain"): DRAINING,
    (READY, "drain"): DRAINING,        # confirmed, but the traffic never started (a stop)
}
for _origin, _then in _ORIGINS.items():
    _shake, _open = setup_state(_origin, HANDSHAKING), setup_state(_origin, OPENING)
    CONNECTION[(_origin, "tls")] = _shake
    CONNECTION[(_origin, "open")] = _open
    CONNECTION[(_shake, "open")] = _open
    for _state in (_origin, _shake, _open):
        CONNECTION[(_state, "made")] = _then
        CONNECTION[(_state, "closed")] = CLOSED
for _state in (CONFIRMING, READY, TRAFFIC, RETIRING, DRAINING):
    CONNECTION[(_state, "closed")] = CLOSED
del _origin, _then, _shake, _open, _state


class LifecycleError(RuntimeError):
    """An event the current state does not take: flood's own bug, never the peer's."""


class Machine:
    """One state and its table.  ``fire(event)`` moves it; :attr:`state` is read-only."""

    __slots__ = ("_state", "_table", "what")

    def __init__(self, table: dict, initial: str, what: str) -> None:
        self._state = initial
        self._table = table
        self.what = what                 # "worker 3" / "connection 17", for the error

    @property
    def state(self) -> str:
        return self._state

    def fire(self, event: str) -> str:
        """Take ``event``; the new state.  Raises :class:`LifecycleError` if it is not allowed."""
        try:
            self._state = self._table[(self._state, event)]
        except KeyError:
            raise LifecycleError(f"{self.what}: event {event!r} in state {self._state!r} "
                                 f"(allowed: {allowed(self._table, self._state) or 'none'})") from None
        return self._state

    def can(self, event: str) -> bool:
        return (self._state, event) in self._table


def allowed(table: dict, state: str) -> str:
    return ", ".join(sorted(e for (s, e) in table if s == state))


def worker_machine(index: int) -> Machine:
    return Machine(WORKER, CONNECT, f"flood worker {index}")


def step(slot, event: str) -> str:
    """Fire ``event`` on a connection's state (``slot.state``, kept on its slot: a machine
    object per connection would cost memory per connection for nothing).  Raises
    :class:`LifecycleError` if the state does not take it."""
    try:
        slot.state = new = CONNECTION[(slot.state, event)]
    except KeyError:
        raise LifecycleError(f"connection {slot.index}: event {event!r} in state {slot.state!r} "
                             f"(allowed: {allowed(CONNECTION, slot.state) or 'none'})") from None
    return new

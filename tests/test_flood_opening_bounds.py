"""An opening that never finishes is bounded by --connect-timeout: for the connections of the
connect phase and for their replacements (--churn) alike; a server that closes during the
opening, or says more than it was asked, costs only that connection."""

from __future__ import annotations

import threading

import pytest

from socktools.flood.config import FloodConfig
from socktools.flood.worker import run_worker
from socktools.wire.spec import WireSpec
from threadserver import ThreadServer, read_until

pytestmark = pytest.mark.timeout(60)

GREETING = WireSpec(mode="line", sends=("NOOP",), eol="crlf", greeting=True)


class Greeter:
    """Greets its first ``greets`` connections (then answers every line), and says nothing at
    all to the later ones (``then``: or closes them, or greets twice)."""

    def __init__(self, greets: int, then: str = "silent") -> None:
        self.greets = greets
        self.then = then
        self.n = 0
        self.lock = threading.Lock()

    def handle(self, conn) -> None:
        with self.lock:
            self.n += 1
            n = self.n
        if n > self.greets:
            if self.then == "close":
                conn.close()
            elif self.then == "twice":
                conn.sendall(b"220 hi\r\n220 again\r\n")
            return
        conn.sendall(b"220 hi\r\n")
        while True:
            lines = read_until(conn, b"\n")
            if not lines:
                return
            conn.sendall(b"250 ok\r\n" * lines.count(b"\n"))


def run(port: int, **kw):
    cfg = FloodConfig(address=("127.0.0.1", port), port=port, mode="line", wire=GREETING, workers=1,
                      conns=2, connect_timeout=0.3, **kw)
    return run_worker(cfg, 0)


def test_a_greeting_that_never_comes_times_out_in_the_opening():
    server = Greeter(0)
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, duration=1.0)
    assert stats.errors == {"open": {"timeout": 2}}
    assert stats.failed == 2 and stats.established == 0 and stats.opened == 0


def test_a_replacement_whose_greeting_never_comes_times_out_too():
    server = Greeter(2)
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, duration=3.0, churn=1)
    # the two first connections confirmed (one request each), then replaced at once: the
    # replacements are greeted by nobody, and the connect timeout ends them
    assert stats.established == 2 and stats.opened == 2
    assert stats.errors == {"open": {"timeout": 2}} and stats.lost == 2
    assert stats.traffic_requests == 0 and stats.unanswered == 0


@pytest.mark.parametrize("then,errors,kinds", [
    ("close", {"open": {"peer-closed": 2}}, {}),
    ("twice", {"open": {"protocol-error": 2}}, {"unsolicited": 2}),
])
def test_a_close_or_a_surplus_in_the_opening_costs_that_connection(then, errors, kinds):
    server = Greeter(0, then)
    with ThreadServer(server.handle) as peer:
        stats = run(peer.port, duration=1.0)
    assert stats.errors == errors and stats.protocol_errors == kinds
    assert stats.failed == 2 and stats.established == 0

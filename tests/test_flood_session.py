"""The exchange loops against the session without sockets: a fake connection and a clock we move.

What is checked is exact: each latency is counted from its own request's send
time (pipelined), and the seq numbers and requests sent are what the loop says.
"""

from __future__ import annotations

from types import SimpleNamespace

from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.exchange import ClosedLoop
from socktools.flood.session import Session, Slot
from socktools.wire.spec import WireSpec, build


class FakeConn:
    def __init__(self, slot: Slot) -> None:
        self.ctx = slot
        self.written: list = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self, exc=None) -> None:
        self.closed = True


def session(spec: WireSpec, **kw):
    cfg = FloodConfig(address=("127.0.0.1", 9), port=9, mode=spec.name, wire=spec, conns=1, workers=1, **kw)
    clock = SimpleNamespace(now=0)
    loop = SimpleNamespace(call_later=lambda delay, cb: None, connections={})
    proto = build(spec)
    s = Session(cfg, 0, loop, lambda: clock.now, st.WorkerStats(), proto, lambda conn: None, lambda: 0)
    return s, clock, proto


def values(rec: st.Recorder) -> list:
    hist = rec.take()
    out = []
    for v in range(1, 1000):
        out += [v] * hist.get_count_at_value(v) if hist else []
    return out


def test_pipelined_latencies_count_from_each_requests_own_send():
    spec = WireSpec(mode="redis", commands=("GET k:{seq}",))
    s, clock, proto = session(spec, pipeline=3, requests=5, duration=None)
    loop = ClosedLoop(s, 5)
    s.start_traffic(loop)
    slot = Slot(0, 0)
    slot.parser = proto.parser()
    conn = FakeConn(slot)
    s.live.add(conn)
    clock.now = 100
    loop.start([conn], 100)                       # three requests leave at t=100
    assert conn.written == [b"".join(proto.request(i, 0) for i in range(3))]
    clock.now = 150
    loop.data_received(conn, b"$1\r\na\r\n")      # one answer: 50, and the 4th request leaves
    clock.now = 200
    loop.data_received(conn, b"$-1\r\n$-1\r\n")   # two answers, both sent at 100: 100, 100
    assert list(slot.times) == [150, 200]          # the 4th (t=150) and the 5th (t=200) in flight
    assert s.phase == "drain"                      # the quota is spent: the 5th was the last
    clock.now = 260
    loop.data_received(conn, b":1\r\n:2\r\n")     # the 4th: 110, the 5th: 60
    assert values(s.rec["latency"]) == [50, 60, 100, 100, 110]
    assert s.phase == "close"                      # every answer owed is in
    assert loop.sent == 5 and [w.count(b"*2") for w in conn.written] == [3, 1, 1]
    assert b"k:3" in conn.written[1] and b"k:4" in conn.written[2]


def test_a_reply_with_nothing_in_flight_ends_the_connection_as_unsolicited():
    s, clock, proto = session(WireSpec(mode="redis"), requests=1, duration=None)
    loop = ClosedLoop(s, 1)
    s.start_traffic(loop)
    slot = Slot(0, 0)
    slot.parser = proto.parser()
    conn = FakeConn(slot)
    loop.start([conn], 0)
    loop.data_received(conn, b"+PONG\r\n+PONG\r\n")
    assert conn.closed and s.stats.protocol_errors == {"unsolicited": 1}


def test_server_errors_are_tallied_and_the_connection_goes_on():
    s, clock, proto = session(WireSpec(mode="redis"), requests=3, duration=None)
    loop = ClosedLoop(s, 3)
    s.start_traffic(loop)
    slot = Slot(0, 0)
    slot.parser = proto.parser()
    conn = FakeConn(slot)
    loop.start([conn], 0)
    loop.data_received(conn, b"-ERR one\r\n")
    loop.data_received(conn, b"-ERR one\r\n")
    assert not conn.closed and len(conn.written) == 3
    assert s.stats.reply_failures == {"server-error": {"ERR one": 2}}
    assert s.stats.samples == {"server-error": "-ERR one\r\n"}


def test_a_shared_request_is_rendered_once_and_is_every_connections_own_bytes():
    # Rotation over two commands, past the first block of the memo: each connection
    # still sends exactly what proto.request(seq, conn) says, in its own seq order.
    s, clock, proto = session(WireSpec(mode="redis", commands=("SET k:{seq} v", "GET k:{seq}")))
    assert proto.shared_requests and s.maker.memo == []
    slots = [Slot(i, 0) for i in range(3)]
    for seq in range(600):
        for slot in slots:
            assert s.request(slot) == proto.request(seq, slot.index)
    assert 600 <= len(s.maker.memo) < 600 + 256           # rendered once, in blocks, for all three
    assert s.maker.memo[599] == b"*2\r\n$3\r\nGET\r\n$5\r\nk:599\r\n"


def test_a_request_naming_its_connection_is_rendered_each_time():
    s, clock, proto = session(WireSpec(mode="raw", sends=("id {conn}:{seq}\\n",), reply_until="\\n"))
    assert not proto.shared_requests and s.maker.memo is None
    a, b = Slot(0, 0), Slot(7, 0)
    assert [s.request(a), s.request(b), s.request(b)] == [b"id 0:0\n", b"id 7:0\n", b"id 7:1\n"]


def test_the_memo_stops_at_its_byte_bound_and_requests_stay_right(monkeypatch):
    monkeypatch.setattr("socktools.flood.requests.REQUEST_MEMO_BYTES", 1000)
    s, clock, proto = session(WireSpec(mode="raw", sends=("n={seq}\\n",), reply_until="\\n"))
    slot = Slot(0, 0)
    sent = [s.request(slot) for _ in range(2000)]
    assert sent == [b"n=%d\n" % i for i in range(2000)]
    assert 1000 - 8 < s.maker.memo_bytes <= 1000                # filled to the bound, never past it
    big = session(WireSpec(mode="raw", sends=("{seq}" + "x" * 600,), reply_until="\\n"))[0]
    fresh = Slot(0, 0)
    assert [len(big.request(fresh)) for _ in range(3)] == [601] * 3 and len(big.maker.memo) == 1


class BatchLoop:
    def __init__(self) -> None:
        self.batches: list = []

    def write_batch(self, conns: list, datas: list) -> None:
        self.batches.append(list(zip([c.ctx.index for c in conns], datas)))


def test_a_batch_of_answers_sends_each_connection_its_next_shared_request():
    s, clock, proto = session(WireSpec(mode="redis", commands=("SET k:{seq} v",)), requests=100, duration=None)
    loop = ClosedLoop(s, 100)
    s.start_traffic(loop)
    batch = BatchLoop()
    conns = []
    for i in range(2):
        slot = Slot(i, 0)
        slot.parser = proto.parser()
        conn = FakeConn(slot)
        conn.loop = batch
        conns.append(conn)
    loop.start(conns, 0)
    for _ in range(3):
        clock.now += 10
        loop.data_batch(conns, [b"+OK\r\n", b"+OK\r\n"])
    assert [c.written for c in conns] == [[proto.request(0, 0)], [proto.request(0, 1)]]
    assert batch.batches == [[(0, proto.request(k, 0)), (1, proto.request(k, 1))] for k in (1, 2, 3)]
    assert values(s.rec["latency"]) == [10] * 6 and loop.sent == 8


def test_requests_cut_off_by_a_close_are_rendered_again_as_they_were():
    # unsend: the last n requests of the connection were never answered; the request maker
    # steps back, so the replacement sends those very requests ({seq}, rotation turn) again.
    import collections
    s, clock, proto = session(WireSpec(mode="raw", sends=("a{seq}\\n", "b{seq}\\n"), reply_until="\\n"))
    slot = Slot(0, 0)
    made = [s.request(slot) for _ in range(4)]            # a0 b1 a2 b3; b1..b3 pipelined
    slot.times = collections.deque([1, 1, 1])
    assert s.unsend(slot) == 3 and s.stats.resent == 3
    assert [s.request(slot) for _ in range(4)] == made[1:] + [b"a4\n"]


class _Handshake:
    """What the session reads of a finished TLS handshake (an ``SSLObject``'s answers), counting
    the reads of ``session``: each one is a DER round trip of the session in CPython."""

    def __init__(self, reused: bool, session: object) -> None:
        self.session_reused = reused
        self._session = session
        self.reads = 0

    @property
    def session(self):
        self.reads += 1
        return self._session

    def cipher(self):
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def version(self):
        return "TLSv1.3"

    def selected_alpn_protocol(self):
        return None


def test_tls_resume_reads_a_session_once_per_full_handshake_not_once_per_connection():
    from socktools.flood.session import Slot
    from socktools.tlsconf import TlsConfig
    s, _, _ = session(WireSpec(mode="raw", sends=("x",), reply_bytes=1),
                      tls=TlsConfig(enabled=True, insecure=True), tls_resume=True)
    full = _Handshake(reused=False, session="S1")
    s._handshook(Slot(0, 0), full)
    offered = []
    for i in range(5):                       # five more connections, each resumed
        slot = Slot(i, 0)
        offered.append(s.tls_session(slot))
        s._handshook(slot, _Handshake(reused=True, session="never read"))
    assert offered == ["S1"] * 5 and full.reads == 1
    again = _Handshake(reused=False, session="S2")   # a full handshake again: a new session
    s._handshook(Slot(9, 0), again)
    assert s.tls_session(Slot(10, 0)) == "S2" and again.reads == 1

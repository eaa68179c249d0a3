"""`socktools proxy --workers N`: worker processes forward, the parent owns the table and the API.

Real sockets and real processes: bytes through two workers, toxics added and removed with
toxiproxy-python in effect on the very next request on every worker, proxies created through
the API after the start, /metrics summed over the workers, a worker killed and replaced with
the current table, a Ctrl-C to the process group, and the option's usage errors.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.proxy.config import MAX_WORKERS
from tests.conftest import alive, children_of, wait_until
from tests.proxy_helpers import ProxyProcess, connect, echo, recv_exactly
from tests.threadserver import ThreadServer

#: Connections a test opens to see both workers take some: the kernel spreads them by the hash
#: of the 4-tuple, so all of N landing on one of two workers has odds 2**(1-N).
SPREAD = 24
#: A latency large against a loopback round trip, so "at least this" with the toxic and "less
#: than this" without it hold on a loaded machine.
LATENCY_MS = 1000


def api(px, method, path, doc=None):
    req = urllib.request.Request(f"http://127.0.0.1:{px.api}{path}", method=method,
                                 data=None if doc is None else json.dumps(doc).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            return resp.status, (json.loads(body) if body and resp.headers["Content-Type"] ==
                                 "application/json" else body.decode())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def round_trips(port: int, n: int, size: int = 4) -> tuple:
    """``n`` connections at once, one round trip of ``size`` bytes each: (each one's seconds,
    the clients' addresses as the proxy's events name them)."""
    socks = [connect(port, timeout=20) for _ in range(n)]
    try:
        clients = ["%s:%d" % s.getsockname() for s in socks]
        payloads = [os.urandom(size) for _ in socks]
        started = []
        for sock, data in zip(socks, payloads):
            started.append(time.perf_counter())
            sock.sendall(data)
        took = []
        for sock, data, t0 in zip(socks, payloads, started):
            assert recv_exactly(sock, size) == data
            took.append(time.perf_counter() - t0)
        return took, clients
    finally:
        for sock in socks:
            sock.close()


def workers_of(px, clients: list) -> set:
    """The worker indexes that served ``clients`` (from their connection events)."""
    def served() -> dict:
        return {e["client"]: e["worker"] for e in px.events if e["event"] == "connection"}
    deadline = time.monotonic() + 20
    while not set(clients) <= set(served()):
        if px.next_event(deadline) is None:
            raise AssertionError(f"no connection event for some of {clients}: {px.events}")
    return {served()[c] for c in clients}


# ------------------------------------------------------------------ forwarding and the stop
def test_bytes_pass_exactly_through_two_workers_and_ctrl_c_prints_one_summary():
    rng = random.Random(7)
    with ThreadServer(echo, backlog=512) as srv, \
            ProxyProcess("--workers", "2", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}",
                         new_session=True) as px:
        sent = 0
        for _ in range(4):
            socks = [connect(px.port, timeout=20) for _ in range(SPREAD)]
            datas = [rng.randbytes(rng.randint(1, 200_000)) for _ in socks]
            for sock, data in zip(socks, datas):
                sock.sendall(data)
                sent += len(data)
            for sock, data in zip(socks, datas):
                assert recv_exactly(sock, len(data)) == data
                sock.close()
        # Ctrl-C in a terminal: SIGINT to the whole process group (the workers ignore it; the
        # parent drains them).
        os.killpg(px.proc.pid, signal.SIGINT)
        summary = px.stop(None)
    assert px.proc.returncode == 0, px.stderr()
    assert [e["event"] for e in px.events].count("summary") == 1
    total = summary["total"]
    assert total["accepted"] == total["closed"] == 4 * SPREAD
    for key in ("from_client", "to_upstream", "from_upstream", "to_client"):
        assert total[key] == sent, key
    assert summary["proxies"]["proxy1"]["from_client"] == sent
    per_worker = {w["worker"]: w for w in summary["workers"]}
    assert set(per_worker) == {0, 1}
    assert all(w["accepted"] > 0 for w in per_worker.values()), per_worker
    assert sum(w["accepted"] for w in per_worker.values()) == 4 * SPREAD
    assert {e["worker"] for e in px.events if e["event"] == "connection"} == {0, 1}


def test_stdin_eof_drains_every_worker_and_a_signal_then_aborts():
    with ThreadServer(echo, backlog=512) as srv, \
            ProxyProcess("--workers", "2", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}",
                         "--toxic", "stall:stream=upstream", "--drain-timeout", "60s") as px:
        socks = [connect(px.port) for _ in range(SPREAD)]
        for c in socks:
            c.sendall(b"held by the stall")
        assert wait_until(lambda: srv.accepted == SPREAD, timeout=10)
        px.proc.stdin.close()                       # the first stop: drain
        px.proc.stdin = None                        # (closed: communicate() must not touch it)
        # Still draining: the stalls hold bytes, and the drain timeout is a minute away.
        with pytest.raises(subprocess.TimeoutExpired):
            px.proc.wait(0.5)
        summary = px.stop(signal.SIGTERM)           # the second: abort now
        for c in socks:
            c.close()
    assert px.proc.returncode == 0, px.stderr()
    assert summary["total"]["ended"] == {"aborted": SPREAD}
    assert all(w["accepted"] > 0 for w in summary["workers"]), summary["workers"]


def test_tls_from_clients_through_two_workers(tmp_path):
    """--listen-tls with workers: each worker makes its own context from the spec's files."""
    import ssl
    from tests.peers import Certs
    certs = Certs(tmp_path)
    with ThreadServer(echo, backlog=512) as srv, \
            ProxyProcess("--workers", "2", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}",
                         "--listen-tls", "--cert", str(certs.cert), "--key", str(certs.key)) as px:
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        socks = [ctx.wrap_socket(connect(px.port, timeout=10), server_hostname="127.0.0.1")
                 for _ in range(SPREAD)]
        clients = ["%s:%d" % c.getsockname() for c in socks]
        for c in socks:
            c.sendall(b"secret")
            assert recv_exactly(c, 6) == b"secret"
            c.close()
        assert workers_of(px, clients) == {0, 1}
        summary = px.stop()
    assert all(e["client_tls"]["version"].startswith("TLS") for e in px.events if e["event"] == "connection")
    assert summary["total"]["from_client"] == 6 * SPREAD


def unix_round_trip(path) -> None:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(path))
        c.sendall(b"over unix")
        assert recv_exactly(c, 9) == b"over unix"


def test_a_unix_listener_is_one_socket_every_worker_accepts_from(tmp_path):
    path, later = tmp_path / "w.sock", tmp_path / "later.sock"
    with ThreadServer(echo, backlog=512) as srv, \
            ProxyProcess("--workers", "2", "--listen", f"unix:{path}", "--to", f"127.0.0.1:{srv.port}",
                         "--api", "127.0.0.1:0", expect=1) as px:
        for _ in range(SPREAD):
            unix_round_trip(path)
        # created after the start: the one socket is handed to both workers
        status, _ = api(px, "POST", "/proxies", {"name": "later", "listen": f"unix:{later}",
                                                 "upstream": f"127.0.0.1:{srv.port}"})
        assert status == 201
        for _ in range(4):
            unix_round_trip(later)
        assert api(px, "POST", "/proxies/later", {"enabled": False})[0] == 200
        assert not later.exists()                   # disabled: its file is gone, nobody listens
        summary = px.stop()
    assert px.proc.returncode == 0, px.stderr()
    assert not path.exists()                        # the parent's file, removed by the parent
    assert summary["proxies"]["proxy1"]["accepted"] == SPREAD
    assert summary["total"]["accepted"] == SPREAD + 4
    assert summary["total"]["from_client"] == 9 * (SPREAD + 4)


# ------------------------------------------------------------------ the API over two workers
@pytest.fixture(scope="module")
def two_workers():
    with ThreadServer(echo, backlog=512) as srv, ProxyProcess("--workers", "2", "--api", "127.0.0.1:0") as px:
        yield px, srv
        px.stop()
        assert px.proc.returncode == 0, px.stderr()


def test_toxiproxy_python_toxics_act_on_the_next_request_on_every_worker(two_workers):
    toxiproxy = pytest.importorskip("toxiproxy", reason="toxiproxy-python not installed "
                                                        "(pip install toxiproxy-python)")
    from toxiproxy.api import APIConsumer
    px, srv = two_workers
    old = APIConsumer.host, APIConsumer.port
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer("127.0.0.1", px.api)
    try:
        # created after the start: its listeners are handed to the running workers
        proxy = server.create(upstream=f"127.0.0.1:{srv.port}", name="tp")
        port = port_of(proxy.listen)
        took, clients = round_trips(port, SPREAD)
        assert max(took) < LATENCY_MS / 1000 and workers_of(px, clients) == {0, 1}

        proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
        took, clients = round_trips(port, SPREAD)   # the very next requests, on both workers
        assert min(took) >= LATENCY_MS / 1000, took
        assert workers_of(px, clients) == {0, 1}

        proxy.destroy_toxic("latency_downstream")
        took, clients = round_trips(port, SPREAD)
        assert max(took) < LATENCY_MS / 1000, took
        assert workers_of(px, clients) == {0, 1}

        with proxy.down():                          # disabled on every worker before the answer
            with pytest.raises(ConnectionRefusedError):
                connect(port, timeout=5)
        assert max(round_trips(port, 4)[0]) < LATENCY_MS / 1000   # up again, same port
        proxy.destroy()
    finally:
        server.update_api_consumer(*old)


def test_the_api_answers_a_change_only_once_every_worker_has_it(two_workers):
    px, srv = two_workers
    status, doc = api(px, "POST", "/proxies", {"name": "ack", "upstream": f"127.0.0.1:{srv.port}"})
    assert status == 201
    port = port_of(doc["listen"])
    stopped = children_of(px.proc.pid)[0]
    answer: dict = {}
    adding = threading.Thread(target=lambda: answer.update(r=api(
        px, "POST", "/proxies/ack/toxics", {"type": "latency", "attributes": {"latency": LATENCY_MS}})))
    os.kill(stopped, signal.SIGSTOP)        # one worker cannot take the change for now
    try:
        adding.start()
        adding.join(0.5)
        assert adding.is_alive(), f"the API answered before a worker had the toxic: {answer}"
    finally:
        os.kill(stopped, signal.SIGCONT)
    adding.join(20)
    assert answer["r"][0] == 200
    took, clients = round_trips(port, SPREAD)
    assert min(took) >= LATENCY_MS / 1000, took
    assert workers_of(px, clients) == {0, 1}
    assert api(px, "DELETE", "/proxies/ack")[0] == 204


def test_populate_and_reset_reach_every_worker(two_workers):
    px, srv = two_workers
    upstream = f"127.0.0.1:{srv.port}"
    slow = {"type": "latency", "attributes": {"latency": LATENCY_MS}}
    status, doc = api(px, "POST", "/populate", [{"name": "pa", "upstream": upstream, "toxics": [slow]},
                                                 {"name": "pb", "upstream": upstream}])
    assert status == 201
    ports = {p["name"]: port_of(p["listen"]) for p in doc["proxies"]}
    took, clients = round_trips(ports["pa"], SPREAD)
    assert min(took) >= LATENCY_MS / 1000 and workers_of(px, clients) == {0, 1}
    took, clients = round_trips(ports["pb"], SPREAD)
    assert max(took) < LATENCY_MS / 1000 and workers_of(px, clients) == {0, 1}
    assert api(px, "POST", "/reset")[0] == 204       # every toxic gone, on every worker
    took, clients = round_trips(ports["pa"], SPREAD)
    assert max(took) < LATENCY_MS / 1000 and workers_of(px, clients) == {0, 1}
    for name in ports:
        assert api(px, "DELETE", f"/proxies/{name}")[0] == 204


def tagged(conn):
    """An upstream that answers ``new:`` and what came."""
    data = conn.recv(100)
    conn.sendall(b"new:" + data)
    conn.close()


def test_a_proxy_replaced_by_populate_is_replaced_on_every_worker(two_workers):
    px, srv = two_workers
    status, doc = api(px, "POST", "/proxies", {"name": "pr", "upstream": f"127.0.0.1:{srv.port}"})
    assert status == 201
    listen = doc["listen"]
    assert max(round_trips(port_of(listen), 4)[0]) < LATENCY_MS / 1000
    with ThreadServer(tagged) as new:
        # Same name and listen, another upstream: Toxiproxy replaces the proxy (a new listener).
        status, doc = api(px, "POST", "/populate", [{"name": "pr", "listen": listen,
                                                     "upstream": f"127.0.0.1:{new.port}"}])
        assert status == 201 and doc["proxies"][0]["listen"] == listen
        socks = [connect(port_of(listen), timeout=10) for _ in range(SPREAD)]
        clients = ["%s:%d" % c.getsockname() for c in socks]
        for c in socks:
            c.sendall(b"ping")
        for c in socks:
            assert recv_exactly(c, 8) == b"new:ping"
            c.close()
        assert workers_of(px, clients) == {0, 1}
    # And back, by an update: the same proxy restarts on the same address, on every worker.
    status, doc = api(px, "POST", "/proxies/pr", {"upstream": f"127.0.0.1:{srv.port}"})
    assert status == 200 and doc["listen"] == listen
    took, clients = round_trips(port_of(listen), SPREAD)         # (echo: "new:" would fail it)
    assert workers_of(px, clients) == {0, 1}
    assert api(px, "DELETE", "/proxies/pr")[0] == 204


def test_metrics_sum_both_workers(two_workers):
    px, srv = two_workers
    status, doc = api(px, "POST", "/proxies", {"name": "m", "upstream": f"127.0.0.1:{srv.port}"})
    assert status == 201
    port = port_of(doc["listen"])
    sizes = [1000 + i for i in range(SPREAD)]
    clients = []
    for size in sizes:
        with connect(port) as c:
            clients.append("%s:%d" % c.getsockname())
            data = os.urandom(size)
            c.sendall(data)
            assert recv_exactly(c, size) == data
    assert workers_of(px, clients) == {0, 1}
    held = connect(port)                           # an open connection counts too
    held.sendall(b"abc")
    assert recv_exactly(held, 3) == b"abc"
    status, text = api(px, "GET", "/metrics")
    held.close()
    assert status == 200
    want = sum(sizes) + 3
    labels = f'proxy="m",listener="127.0.0.1:{port}",upstream="127.0.0.1:{srv.port}"'
    for metric in ("toxiproxy_proxy_received_bytes_total", "toxiproxy_proxy_sent_bytes_total"):
        for direction in ("upstream", "downstream"):
            assert f'{metric}{{direction="{direction}",{labels}}} {want}\n' in text, text
    assert api(px, "DELETE", "/proxies/m")[0] == 204


def test_a_listen_address_in_use_is_a_500_with_the_errno(two_workers):
    px, _ = two_workers
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        status, err = api(px, "POST", "/proxies", {"name": "busy", "upstream": "127.0.0.1:1",
                                                    "listen": f"127.0.0.1:{busy.getsockname()[1]}"})
    assert status == 500 and "EADDRINUSE" in err["error"] and "address already in use" in err["error"]
    status, proxies = api(px, "GET", "/proxies")
    assert "busy" not in proxies


# ------------------------------------------------------------------ a worker dies
def test_a_killed_worker_is_replaced_with_the_current_toxics():
    with ThreadServer(echo, backlog=512) as srv, ProxyProcess("--workers", "2", "--api", "127.0.0.1:0") as px:
        status, doc = api(px, "POST", "/proxies", {"name": "k", "upstream": f"127.0.0.1:{srv.port}"})
        assert status == 201
        port = port_of(doc["listen"])
        status, _ = api(px, "POST", "/proxies/k/toxics", {"type": "latency", "attributes": {"latency": 300}})
        assert status == 200
        workers = children_of(px.proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        ev = px.wait_event(lambda e: e["event"] == "worker-exit")
        assert ev["pid"] == workers[0] and ev["restarting"] and "signal 9" in ev["how"]
        assert wait_until(lambda: len([p for p in children_of(px.proc.pid) if alive(p)]) == 2)
        assert workers[0] not in children_of(px.proc.pid)
        took, clients = round_trips(port, SPREAD)
        assert min(took) >= 0.3, took               # the replacement has the toxic too
        assert workers_of(px, clients) == {0, 1}
        # Disabled: no worker listens any more (the replacement, forked with every worker's
        # socket open in the parent, kept only its own).
        assert api(px, "POST", "/proxies/k", {"enabled": False})[0] == 200
        for _ in range(SPREAD):
            with pytest.raises(ConnectionRefusedError):
                connect(port, timeout=5)
        summary = px.stop()
    assert px.proc.returncode == 0, px.stderr()
    assert summary["worker_restarts"] == 1


def test_a_listen_address_in_use_at_the_start_says_so_before_any_worker_starts():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with ProxyProcess("--workers", "2", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9",
                          "--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:9", expect=0) as px:
            px.proc.wait(15)
            err = px.stderr()
    assert px.proc.returncode == 1, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "EADDRINUSE" in err
    assert "worker" not in err


# ------------------------------------------------------------------ the option
@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WORKERS + 1), "two"])
def test_bad_workers_are_usage_errors_naming_the_option(value):
    result = CliRunner().invoke(main, ["proxy", "--workers", value, "--listen", "127.0.0.1:0",
                                       "--to", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert "--workers" in result.output
    if value.lstrip("-").isdigit():                 # the message says what is allowed
        assert f"1 to {MAX_WORKERS}" in result.output, result.output


# ------------------------------------------------------------------ the acknowledgement, in-process
class FakeWorker:
    """A live worker as the supervisor sees it: ``send`` records, ``acks`` says whether it
    answers (on the next pass of the loop, as a real one would)."""

    def __init__(self, sup, index: int, acks: bool) -> None:
        self.sup, self.index, self.pid, self.acks = sup, index, 4000 + index, acks
        self.ended = False
        self.sent: list = []

    def send(self, msg) -> bool:
        self.sent.append(msg)
        if self.acks and msg[0] in ("apply", "count"):
            self.sup.loop.call_later(0, lambda: self.sup.on_message(self, ("ack", msg[1], {})))
        return True


def table_with(acks: list, monkeypatch):
    from socktools.core.signals import SignalQueue
    from socktools.proxy import supervisor
    from socktools.proxy.config import ProxyConfig
    monkeypatch.setattr(supervisor, "ACK_TIMEOUT", 0.2)
    sup = supervisor.ProxySupervisor(ProxyConfig(api="127.0.0.1:0", workers=len(acks)), lambda ev: None,
                                     SignalQueue(()))
    sup.children = {i: FakeWorker(sup, i, a) for i, a in enumerate(acks)}
    return sup


def answer_of(sup, method: str, path: str, doc=None) -> tuple:
    got: list = []
    sup.dispatch(method, path, json.dumps(doc).encode() if doc is not None else b"",
                 lambda status, body: got.append((status, body)))
    sup.loop.run(until=lambda: got, timeout=10)
    return got[0]


def test_a_worker_that_does_not_acknowledge_turns_the_answer_into_a_500_naming_it(monkeypatch):
    sup = table_with([True, False], monkeypatch)
    try:
        status, doc = answer_of(sup, "POST", "/proxies", {"name": "p", "upstream": "127.0.0.1:1",
                                                          "enabled": False})
        assert status == 500 and "worker 1 (pid 4001)" in doc["error"] and "worker 0" not in doc["error"]
        assert [m[0] for m in sup.children[0].sent] == ["apply"]
        assert sup.children[0].sent[0][2][0][1].name == "p"     # the change carries the new spec
        # a read is answered at once, with no word to the workers
        assert answer_of(sup, "GET", "/proxies/p")[0] == 200
        assert len(sup.children[1].sent) == 1
    finally:
        sup.table.close()
        sup.loop.close()


def test_a_worker_that_ends_meanwhile_counts_as_acknowledged(monkeypatch):
    sup = table_with([True, False], monkeypatch)
    try:
        got: list = []
        sup.dispatch("POST", "/proxies", json.dumps({"name": "p", "upstream": "127.0.0.1:1",
                                                     "enabled": False}).encode(),
                     lambda status, body: got.append(status))
        waiting = sup.waiting[sup.seq]
        sup.loop.run(until=lambda: waiting.children == {sup.children[1]}, timeout=10)   # worker 0 acked
        assert got == []
        sup.stopping = 1                         # (no replacement: this is about the answer)
        dead = sup.children.pop(1)
        dead.exitcode = -9
        dead.crash = None
        dead.started = 0.0
        sup.on_exit(dead)
        assert got == [201]
    finally:
        sup.table.close()
        sup.loop.close()


def test_an_answer_given_later_holds_the_pipelined_requests_behind_it():
    pytest.importorskip("httptools", reason="httptools not installed (pip install httptools)")
    from socktools.core.loop import Loop
    from socktools.proxy.httpd import ApiServer

    class Server:                      # /slow is answered when the test says so, the rest at once
        def __init__(self) -> None:
            self.loop = Loop()
            self.later: list = []

        def dispatch(self, method, path, body, respond) -> None:
            if path == "/slow":
                self.later.append(respond)
            else:
                respond(200, {"path": path})

    server = Server()
    api_server = ApiServer(server, "127.0.0.1:0")
    try:
        with connect(port_of(api_server.address)) as c:
            c.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            server.loop.run(until=lambda: server.later, timeout=10)
            server.loop.run(timeout=0.1)              # /fast waits its turn: nothing is sent yet
            c.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.recv(1)
            c.setblocking(True)
            server.later[0](200, {"path": "/slow"})
            got = b""
            deadline = time.monotonic() + 10
            while got.count(b"HTTP/1.1 200") < 2:
                assert time.monotonic() < deadline, got
                server.loop.run(timeout=0.01)
                c.settimeout(0.01)
                try:
                    got += c.recv(65536)
                except socket.timeout:
                    pass
        assert got.index(b'"/slow"') < got.index(b'"/fast"')
    finally:
        api_server.close()
        server.loop.close()


def test_a_worker_takes_the_parents_messages_while_its_own_sends_wait(monkeypatch):
    """No deadlock between the two directions of a worker's pipe: a worker whose sends wait
    (the parent is not reading: it is busy sending) still reads what the parent sends, so the
    parent's send of a large change ends -- and then the parent reads again."""
    import multiprocessing
    from socktools.proxy.config import ProxyConfig, ProxySpec, toxic_from_json
    from socktools.proxy import listen
    from socktools.proxy.supervisor import _worker_main
    monkeypatch.setattr(listen, "_OWN_PATHS", {})      # (a worker forgets the parent's: not ours)
    parent, child = multiprocessing.Pipe(duplex=True)
    worker = threading.Thread(target=_worker_main, args=(child, ProxyConfig(api="127.0.0.1:0"), [], 0, []),
                              daemon=True)
    worker.start()
    # A large change: proxies (disabled: no sockets) with long toxics, far beyond a pipe's buffer.
    toxics = tuple(toxic_from_json({"type": "message", "name": f"t{i}", "attributes": {"match": "x" * 1000}})
                   for i in range(60))
    big = ("apply", 1, [(f"p{i}", ProxySpec(f"p{i}", "127.0.0.1:0", "127.0.0.1:1", False, toxics), False)
                        for i in range(20)], 0)

    def parent_sends() -> None:
        for seq in range(2, 20_002):      # each answered: the answers fill the pipe to the parent
            parent.send(("count", seq))
        parent.send(big)

    sender = threading.Thread(target=parent_sends, daemon=True)
    sender.start()
    sender.join(20)
    assert not sender.is_alive(), "the parent's send waits for a worker that waits for the parent"
    acked = set()
    deadline = time.monotonic() + 20
    while 1 not in acked:                 # the parent reads again: the big change is acknowledged
        assert time.monotonic() < deadline
        if parent.poll(1):
            msg = parent.recv()
            if msg[0] == "ack":
                acked.add(msg[1])
    parent.send(("stop", True))
    while worker.is_alive() and time.monotonic() < deadline:
        while parent.poll(0.05):
            parent.recv()
        worker.join(0.05)
    assert not worker.is_alive()
    assert len(acked) == 20_001
    parent.close()

"""`socktools proxy` on real loopback sockets: forwarding, half-close, reset, refusal, back-pressure, stop."""

from __future__ import annotations

import os
import subprocess
import socket
import threading
import time

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import server_recv_queues, wait_until
from tests.proxy_helpers import (ProxyProcess, abort, connect, end_watcher, in_thread, recv_exactly,
                                 recv_until_closed, send_until_blocked)
from tests.threadserver import ThreadServer


def echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def proxy_to(port: int, *extra: str) -> ProxyProcess:
    return ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{port}", *extra)


def test_bytes_pass_both_ways_intact_and_are_counted():
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with ThreadServer(echo) as srv, proxy_to(srv.port) as px:
        with connect(px.port, timeout=10) as c:
            got = bytearray()

            def reader():
                got.extend(recv_until_closed(c))

            t = threading.Thread(target=reader)
            t.start()
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            t.join(20)
        assert bytes(got) == payload
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["from_client"] == ev["to_upstream"] == ev["from_upstream"] == ev["to_client"] == len(payload)
        summary = px.stop()
    assert summary["total"]["from_client"] == len(payload) and summary["total"]["accepted"] == 1


def test_a_half_close_from_the_client_keeps_the_reply_direction_open():
    def read_all_then_answer(conn):
        data = recv_until_closed(conn)
        time.sleep(0.05)          # the server answers a moment after the client's FIN
        conn.sendall(b"got %d" % len(data))
        conn.close()

    with ThreadServer(read_all_then_answer) as srv, proxy_to(srv.port) as px:
        with connect(px.port) as c:
            c.sendall(b"x" * 1000)
            c.shutdown(socket.SHUT_WR)
            assert recv_until_closed(c) == b"got 1000"


def test_a_half_close_from_the_server_keeps_the_request_direction_open():
    received = []

    def speak_first_then_listen(conn):
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        received.append(recv_until_closed(conn))

    with ThreadServer(speak_first_then_listen) as srv, proxy_to(srv.port) as px:
        with connect(px.port) as c:
            assert recv_until_closed(c) == b"hello"      # the server's FIN reached us...
            c.sendall(b"still talking")                  # ...and our direction is still open
            c.shutdown(socket.SHUT_WR)
            assert wait_until(lambda: received == [b"still talking"], timeout=10)


def test_a_reset_by_the_server_reaches_the_client_as_a_reset():
    def reset_after_request(conn):
        conn.recv(100)
        abort(conn)

    with ThreadServer(reset_after_request) as srv, proxy_to(srv.port) as px:
        with connect(px.port) as c:
            c.sendall(b"boom")
            with pytest.raises(ConnectionResetError):
                while c.recv(100):
                    pass
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "upstream-ECONNRESET"


def test_a_reset_by_the_client_reaches_the_server_as_a_reset():
    seen = []
    with ThreadServer(end_watcher(seen)) as srv, proxy_to(srv.port) as px:
        c = connect(px.port)
        c.sendall(b"hi")
        assert wait_until(lambda: srv.accepted == 1, timeout=10)
        abort(c)
        assert wait_until(lambda: seen, timeout=10) and seen == ["reset"]


def test_a_refused_upstream_closes_the_client_and_the_proxy_serves_others(closed_port):
    with ThreadServer(echo) as srv, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{closed_port[1]}",
                                                "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}") as px:
        with connect(px.ports["proxy1"]) as c:
            assert recv_until_closed(c) == b""            # closed, not left hanging
        with connect(px.ports["proxy2"]) as c:
            c.sendall(b"ping")
            assert recv_exactly(c, 4) == b"ping"
        summary = px.stop()
    assert summary["proxies"]["proxy1"]["upstream_failed"] == {"ECONNREFUSED": 1}
    assert summary["proxies"]["proxy2"]["upstream_failed"] == {}
    log = px.stderr()
    assert "upstream 127.0.0.1:%d failed" % closed_port[1] in log and "ECONNREFUSED" in log


def test_a_server_that_stops_reading_stops_the_proxy_reading_the_client():
    """Back-pressure: the proxy holds at most its high-water mark and leaves the rest in the
    kernel's queues -- the client's socket to the proxy keeps a receive queue the proxy does
    not drain -- and every byte arrives once the server reads again."""
    go = threading.Event()
    total = []

    def slow_reader(conn):
        go.wait(30)
        total.append(len(recv_until_closed(conn)))

    with ThreadServer(slow_reader) as srv, proxy_to(srv.port) as px:
        c = connect(px.port)
        # Fill until the client cannot send any more: the proxy must have stopped reading.
        stream, blocked = send_until_blocked(c, b"z" * 65536)
        sent = len(stream)
        assert blocked, f"the client sent {sent} bytes and never blocked"
        # The proxy's accepted socket keeps a receive queue: it is not reading.
        assert wait_until(lambda: (server_recv_queues(px.port) or 0) > 0, timeout=10)
        # Bounded: kernel buffers (at most tcp_rmem/tcp_wmem maxima on each of four sockets)
        # plus the proxy's high-water mark and one read -- far below "everything".
        assert sent < 4 * 8 * 1024 * 1024 + (1 << 20) + 65536
        go.set()
        c.setblocking(True)
        c.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: total, timeout=20) and total == [sent]
        c.close()


def test_the_first_sigterm_drains_idle_connections_and_the_proxy_exits():
    with ThreadServer(echo) as srv, proxy_to(srv.port) as px:
        c = connect(px.port)
        c.sendall(b"hi")
        assert recv_exactly(c, 2) == b"hi"
        summary = px.stop()
        assert recv_until_closed(c) == b""               # a FIN, not a reset
        c.close()
    assert px.proc.returncode == 0
    assert summary["total"]["ended"] == {"drained": 1}


def test_a_listen_address_in_use_says_so():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with ProxyProcess("--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:9", expect=0) as px:
            px.proc.wait(15)
            assert px.proc.returncode == 1
            err = px.stderr()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "EADDRINUSE" in err


@pytest.mark.parametrize("args,words", [
    (["--listen", "127.0.0.1:0"], "in pairs"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--toxic", "lag:latency=1"], "unknown toxic type 'lag'"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--toxic", "latency:latancy=1"],
     "unknown attribute 'latancy'"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--toxic", "latency:toxicity=2"], "toxicity"),
    (["--listen", "127.0.0.1", "--to", "127.0.0.1:1"], "HOST:PORT"),
    (["--listen", "127.0.0.1:0", "--to", "127.0.0.1:99999"], "out of range"),
    ([], "nothing to do"),
])
def test_bad_options_are_usage_errors_naming_the_problem(args, words):
    r = CliRunner().invoke(main, ["proxy", *args])
    assert r.exit_code == 2, r.output
    assert words in r.output


def test_a_config_file_starts_proxies_with_their_toxics(tmp_path):
    cfg = tmp_path / "proxies.toml"
    with ThreadServer(echo) as srv:
        cfg.write_text(f"""
[[proxies]]
name = "cut"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{srv.port}"

[[proxies.toxics]]
type = "limit_data"
stream = "downstream"
attributes = {{ bytes = 10 }}
""")
        with ProxyProcess("--config", str(cfg), expect=1) as px:
            with connect(px.ports["cut"]) as c:
                c.sendall(b"0123456789abcdef")
                assert recv_until_closed(c) == b"0123456789"
            ev = px.wait_event(lambda e: e["event"] == "connection")
            assert ev["how"] == "closed-by-toxic" and ev["to_client"] == 10


def test_a_bad_config_file_is_a_usage_error_naming_the_field(tmp_path):
    cfg = tmp_path / "p.json"
    cfg.write_text('[{"name": "a", "upstream": "127.0.0.1:1", "toxics": [{"type": "latency", '
                   '"attributes": {"latency": -1}}]}]')
    r = CliRunner().invoke(main, ["proxy", "--config", str(cfg)])
    assert r.exit_code == 2 and "'latency'" in r.output and "--config" in r.output


def test_toxicity_half_applies_to_about_half_of_200_connections():
    """limit_data:bytes=0 with toxicity 0.5: a connection that drew the toxic is closed on its
    first byte, one that did not gets its echo.  Binomial(200, 0.5) has a standard deviation
    of 7.1; the bound is 6 of them (58..142), which chance breaks about twice in a billion runs."""
    with ThreadServer(echo) as srv, proxy_to(srv.port, "--toxic", "limit_data:bytes=0,toxicity=0.5",
                                             "--quiet") as px:
        cut = 0
        for _ in range(200):
            with connect(px.port) as c:
                c.sendall(b"x")
                got = recv_exactly(c, 1)
                cut += got == b""
        summary = px.stop()
    assert 58 <= cut <= 142
    assert summary["total"]["ended"].get("closed-by-toxic") == cut


def test_a_bug_in_a_toxics_timer_costs_only_its_connection(monkeypatch):
    """In-process: a toxic's timer that raises resets that pair (logged); the loop and the
    other connections go on.  (The loop lets timers' exceptions through on purpose.)"""
    from socktools.proxy.config import ProxyConfig, ProxySpec, toxic_from_json
    from socktools.proxy.link import Link
    from socktools.proxy.runner import ProxyServer
    from socktools.proxy.toxics import DATA

    real = Link.deliver

    def buggy(self, item):
        if item[0] == DATA and item[1] == b"boom":
            raise RuntimeError("a bug in the chain")
        return real(self, item)

    monkeypatch.setattr(Link, "deliver", buggy)
    events = []
    with ThreadServer(echo) as srv:
        lag = toxic_from_json({"type": "latency", "stream": "upstream", "attributes": {"latency": 10}})
        server = ProxyServer(ProxyConfig(proxies=(ProxySpec("p", "127.0.0.1:0", f"127.0.0.1:{srv.port}",
                                                            True, (lag,)),)), events.append)
        server.open()
        port = int(events[0]["listen"].rsplit(":", 1)[1])
        with in_thread(server, port):
            with connect(port) as c:
                c.sendall(b"boom")                      # delivered by the latency's timer: raises
                with pytest.raises(ConnectionResetError):
                    while c.recv(100):
                        pass
            with connect(port) as c:
                c.sendall(b"fine")
                assert recv_exactly(c, 4) == b"fine"
    assert any(e.get("how") == "internal-error" for e in events)


def test_a_stall_toxic_fills_the_clients_buffers_until_it_is_removed():
    """Beyond Toxiproxy: stall upstream -- the proxy stops reading the client, whose send()
    then blocks; nothing reaches the server; removing the toxic lets every byte through."""
    import json as _json
    import urllib.request
    received = []

    def count(conn):
        received.append(len(recv_until_closed(conn)))

    with ThreadServer(count) as srv, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}",
                                                 "--toxic", "stall:stream=upstream", "--api", "127.0.0.1:0") as px:
        c = connect(px.port)
        c.setblocking(False)
        sent, chunk, blocked = 0, b"s" * 65536, False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not blocked:
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                blocked = True
        assert blocked, f"sent {sent} bytes and never blocked"
        assert wait_until(lambda: (server_recv_queues(px.port) or 0) > 0, timeout=10)
        assert wait_until(lambda: srv.accepted == 1, timeout=10) and not received
        req = urllib.request.Request(f"http://127.0.0.1:{px.api}/proxies/proxy1/toxics/stall_upstream",
                                     method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        c.setblocking(True)
        c.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: received, timeout=20) and received == [sent]
        c.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{px.api}/proxies/proxy1", timeout=10) as resp:
            assert _json.loads(resp.read())["toxics"] == []


def test_limit_data_delivers_exactly_n_bytes_to_a_slow_reader():
    """The bytes before a toxic's close are flushed to the client first, even those the
    client's kernel could not take yet (they wait in the proxy's out-buffer)."""
    limit = 6_000_000
    server_done = []

    def flood(conn):
        try:
            conn.sendall(b"d" * 16_000_000)
        except OSError:
            pass
        server_done.append(True)

    with ThreadServer(flood) as srv, proxy_to(srv.port, "--toxic", f"limit_data:bytes={limit}") as px:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # a small window: bytes back up
        c.settimeout(20)
        c.connect(("127.0.0.1", px.port))
        # The proxy read its limit and closed the server's side before the client read a byte.
        assert wait_until(lambda: server_done, timeout=20)
        got = recv_until_closed(c)
        c.close()
    assert len(got) == limit


def test_a_drain_waits_for_bytes_in_flight_and_a_second_signal_aborts():
    import signal
    with ThreadServer(echo) as srv, proxy_to(srv.port, "--toxic", "stall:stream=upstream",
                                             "--drain-timeout", "60s") as px:
        c = connect(px.port)
        c.sendall(b"held by the stall")
        assert wait_until(lambda: srv.accepted == 1, timeout=10)
        px.proc.send_signal(signal.SIGTERM)
        # Still draining: the stall holds bytes, and the drain timeout is a minute away.
        with pytest.raises(subprocess.TimeoutExpired):
            px.proc.wait(0.5)
        summary = px.stop(signal.SIGTERM)           # the second signal: abort now
        c.close()
    assert summary["total"]["ended"] == {"aborted": 1}

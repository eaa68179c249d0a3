"""serve --udp on real datagram sockets: echo and sink, every datagram accounted for.

What serve says it received is checked against what the clients sent (flood's own ledgers, or
a test's count) and against the kernel's drops at serve's sockets: sent == received + dropped
by the kernel at serve's full receive buffer, exactly.  A burst "faster than the worker reads"
is made certain, not hoped for: the worker is stopped (SIGSTOP) while the burst arrives at a
receive buffer of the kernel's minimum, then continued.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from socktools.cli import serve as cli_serve
from socktools.serve.config import ServeConfig
from tests.conftest import ServerProcess, socktools_cmd, wait_until


def flood(*args: str, timeout: float = 60) -> tuple:
    out = subprocess.run(socktools_cmd("flood", "--udp", "--json", *args), capture_output=True, text=True,
                         timeout=timeout)
    doc = json.loads(out.stdout) if out.stdout.strip().startswith("{") else None
    return out.returncode, doc, out.stderr


def stats_until(srv: ServerProcess, condition, timeout: float = 20.0) -> dict:
    """Read serve's JSON stats lines until one meets ``condition``; that line (fails at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        line = srv._readline(deadline)
        assert line is not None, f"no stats line met the condition within {timeout}s"
        ev = srv._parse(line)
        if ev and ev.get("event") == "stats" and condition(ev):
            return ev


@pytest.fixture
def servers(start_server):
    """``servers(*args)``: a ``serve --udp --json`` (conftest's start_server stops it)."""
    return lambda *args: start_server("--udp", *args, json_events=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_flood_against_the_udp_echo_every_datagram_is_received_and_answered(servers, workers):
    srv = servers("--workers", str(workers))
    # a reply timeout far above any round trip on a busy machine: none may be counted lost
    rc, doc, err = flood("--port", str(srv.port), "--conns", "8", "--workers", "2", "--requests", "4000",
                         "--reply-timeout", "10s")
    assert rc == 0, err
    srv.stop()
    summary = srv.final_summary()
    d = doc["datagrams"]
    assert d["server_drops"] == 0 and d["lost"] == 0
    assert summary["datagrams_in"] == d["sent"] - d["server_drops"] == d["answered"] == 4000
    assert summary["datagrams_out"] == 4000 and summary["kernel_drops"] == 0 and summary["send_dropped"] == 0
    assert summary["bytes_in"] == summary["bytes_out"] == doc["bytes"]["sent"] == 4000 * 64
    if workers == 2:
        rows = summary["workers_detail"]
        assert [r["worker"] for r in rows] == [0, 1]
        assert sum(r["datagrams_in"] for r in rows) == 4000
        assert all(r["kernel_drops"] == 0 for r in rows)


def test_a_tiny_receive_buffer_drops_and_serve_and_flood_count_the_same_drops(servers):
    """Whatever the timing, serve received what flood sent less what the kernel dropped at
    serve's buffer -- and serve's own count of those drops is flood's (sock_diag's)."""
    srv = servers("--rcvbuf", "1")
    rc, doc, err = flood("--port", str(srv.port), "--conns", "4", "--workers", "1", "--rate", "20000",
                         "--duration", "1s", "--size", "1000", "--reply-timeout", "2s")
    srv.stop()
    summary = srv.final_summary()
    d = doc["datagrams"]
    assert d["server_drops"] is not None, err
    assert summary["datagrams_in"] == d["sent"] - d["server_drops"]
    assert summary["kernel_drops"] == d["server_drops"]
    assert summary["datagrams_in"] == summary["datagrams_out"] + summary["send_dropped"] + \
        sum(summary["send_errors"].values())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_burst_the_worker_cannot_read_is_counted_received_or_dropped_by_the_kernel_exactly(servers, workers):
    srv = servers("--mode", "sink", "--rcvbuf", "1", "--workers", str(workers), "--stats-interval", "100ms")
    if workers == 2:
        assert wait_until(lambda: len(srv.worker_pids()) == 2)
    readers = [srv.pid] if workers == 1 else srv.worker_pids()
    sent = 300
    for pid in readers:
        os.kill(pid, signal.SIGSTOP)       # the worker reads nothing while the burst arrives
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for i in range(sent):
                client.sendto(i.to_bytes(4, "big") * 250, srv.address)
    finally:
        for pid in readers:
            os.kill(pid, signal.SIGCONT)
    ev = stats_until(srv, lambda ev: ev["datagrams_in"] + ev["kernel_drops"] == sent)
    assert ev["kernel_drops"] >= 1       # a buffer of the kernel's minimum holds a few of them
    srv.stop()
    summary = srv.final_summary()
    assert summary["datagrams_in"] + summary["kernel_drops"] == sent
    assert summary["kernel_drops"] >= 1 and summary["bytes_in"] == summary["datagrams_in"] * 1000
    assert summary["datagrams_out"] == summary["bytes_out"] == 0          # a sink answers nothing
    if workers == 2:
        rows = summary["workers_detail"]
        assert sum(r["kernel_drops"] for r in rows) == summary["kernel_drops"]
        assert sum(r["datagrams_in"] for r in rows) == summary["datagrams_in"]


def test_the_sink_counts_what_a_client_sent_and_answers_nothing(servers):
    srv = servers("--mode", "sink", "--stats-interval", "100ms")
    sent = 100        # 100 small datagrams fit the default receive buffer (212,992 bytes) whole
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        client.connect(srv.address)
        for _ in range(sent):
            client.send(b"x" * 64)
        stats_until(srv, lambda ev: ev["datagrams_in"] == sent)
        srv.stop()
        with pytest.raises(BlockingIOError):
            client.recv(100)             # nothing came back
    summary = srv.final_summary()
    assert summary["datagrams_in"] == sent and summary["bytes_in"] == sent * 64
    assert summary["datagrams_out"] == 0 and summary["kernel_drops"] == 0


def test_flood_against_the_sink_loses_every_datagram_the_server_received_unexplained(servers):
    srv = servers("--mode", "sink")
    rc, doc, err = flood("--port", str(srv.port), "--conns", "2", "--rate", "1000", "--duration", "300ms",
                         "--reply-timeout", "100ms")
    srv.stop()
    summary = srv.final_summary()
    d = doc["datagrams"]
    assert rc == 1 and d["answered"] == 0 and d["lost"] == d["sent"] >= 1, err
    assert summary["datagrams_in"] == d["sent"] - d["server_drops"]
    # what flood cannot explain by a kernel's drop is exactly what the sink read and never answered
    assert d["lost_unexplained"] == summary["datagrams_in"] and d["client_drops"] == 0


def test_request_and_ping_get_their_datagrams_back(servers):
    srv = servers()
    out = subprocess.run(socktools_cmd("request", "--udp", "--port", str(srv.port), "--mode", "raw",
                                       "--send", "hello"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b'hello'\n"
    out = subprocess.run(socktools_cmd("ping", "--udp", f"127.0.0.1:{srv.port}", "-c", "3", "-i", "10ms"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "datagrams: 3 sent, 3 answered, 0 late, 0 lost, 0 duplicated" in out.stdout
    srv.stop()
    assert srv.final_summary()["datagrams_in"] == 1 + 3 == srv.final_summary()["datagrams_out"]


def _echo_back(address, n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.connect(address)
        for i in range(n):
            client.send(b"d%d" % i)
            assert client.recv(100) == b"d%d" % i


def test_a_killed_worker_is_replaced_on_its_socket_and_its_counts_are_kept(servers):
    srv = servers("--workers", "2", "--stats-interval", "100ms")
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    first = srv.worker_pids()
    _echo_back(srv.address, 10)
    stats_until(srv, lambda ev: ev["datagrams_in"] == 10)     # the workers' reports reached the supervisor
    os.kill(first[0], signal.SIGKILL)
    assert wait_until(lambda: len(srv.worker_pids()) == 2 and set(srv.worker_pids()) != set(first))
    _echo_back(srv.address, 10)
    srv.stop()
    summary = srv.final_summary()
    assert summary["worker_restarts"] == 1
    assert summary["datagrams_in"] == summary["datagrams_out"] == 20
    assert sum(r["datagrams_in"] for r in summary["workers_detail"]) == 20
    assert any(ev["event"] == "worker-exit" and "replacement on its socket" in ev["message"] for ev in srv.events)


@pytest.mark.parametrize("sig,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_a_stop_signal_ends_serve_with_its_final_counts_printed(start_server, sig, workers):
    srv = start_server("--udp", "--workers", str(workers))
    _echo_back(srv.address, 5)
    rc, out, err = srv.stop(sig)
    assert rc == 0, err
    assert "UDP echo server listening on 127.0.0.1:" in srv.first_line
    assert "summary: received 5 datagrams (10 B), answered 5 (10 B); send dropped 0" in out, out
    assert "the kernel dropped 0 at the full receive buffer" in out
    if workers == 2:
        assert "  worker 0: received " in out and "  worker 1: received " in out


def test_the_json_events_follow_the_published_schema(servers):
    pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    from tests.test_json_schemas import validate
    srv = servers("--workers", "2", "--stats-interval", "100ms")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"x", srv.address)
        assert client.recv(10) == b"x"
    stats_until(srv, lambda ev: ev["datagrams_in"] == 1)
    srv.stop()
    events = srv.events
    listening = events[0]
    assert listening["event"] == "listening" and listening["udp"] is True and "backlog" not in listening
    for ev in events:
        validate(ev, "serve")
    assert {ev["event"] for ev in events} >= {"listening", "stats", "summary"}


# ------------------------------------------------------------------ answers our kernel refused

class _RefusingSocket(socket.socket):
    """A UDP socket whose every sendto fails with ``fail`` (the kernel's refusal, made certain)."""
    fail = errno.ENOBUFS

    def sendto(self, data, address):
        raise OSError(self.fail, os.strerror(self.fail))


@pytest.mark.parametrize("code,dropped,table", [
    (errno.ENOBUFS, 3, {}), (errno.EAGAIN, 3, {}), (errno.EPERM, 0, {"EPERM": 3}),
])
def test_an_answer_the_kernel_refuses_is_counted_never_queued(code, dropped, table):
    from socktools.serve.udp import UdpWorker
    server = _RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    server.fail = code
    server.bind(("127.0.0.1", 0))
    try:
        worker = UdpWorker(ServeConfig(udp=True, port=0), server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(3):
                client.sendto(b"abc", server.getsockname())
        server.setblocking(False)
        worker.request_stop()            # reads what is queued (all three), then stops
        s = worker.stats
        assert s.datagrams_in == 3 and s.datagrams_out == 0 and s.bytes_out == 0
        assert s.send_dropped == dropped and s.send_errors == table
        assert s.datagrams_in == s.datagrams_out + s.send_dropped + sum(s.send_errors.values())
    finally:
        server.close()


# ------------------------------------------------------------------ flood's own UDP server

def test_flood_udp_without_a_port_starts_its_own_udp_echo_and_checks_its_count():
    rc, doc, err = flood("--conns", "4", "--workers", "1", "--requests", "1000", "--reply-timeout", "10s")
    assert rc == 0, err
    assert "--udp" in doc["server"]["command"]
    assert doc["server"]["summary"]["datagrams_in"] == doc["datagrams"]["sent"] == 1000
    check = doc["server_check"]
    assert check["measure"] == "datagrams" and check["equal"] is True and check["server"] == 1000


# ------------------------------------------------------------------ usage errors

@pytest.mark.parametrize("args,option", [
    (["--mode", "framed"], "--mode"),
    (["--tls-self-signed"], "--tls"),
    (["--unix", "/tmp/socktools-udp-test.sock"], "--unix"),
    (["--max-conns", "5"], "--max-conns"),
    (["--idle-timeout", "1s"], "--idle-timeout"),
    (["--request-timeout", "5s"], "--request-timeout"),
    (["--max-content", "100"], "--max-content"),
    (["--max-buffered", "2M"], "--max-buffered"),
    (["--backlog", "5"], "--backlog"),
    (["--drain-timeout", "1s"], "--drain-timeout"),
])
def test_the_streams_options_are_usage_errors_with_udp(args, option):
    port = [] if "--unix" in args else ["--port", "0"]
    result = CliRunner().invoke(cli_serve.command, ["--udp", *port, *args])
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "not with --udp" in result.output or "--udp serves echo or sink" in result.output
    assert "Traceback" not in result.output


def test_a_stream_option_from_the_environment_is_named_by_its_variable():
    from socktools.cli import main
    result = CliRunner().invoke(main, ["serve", "--udp", "--port", "0"], env={"SOCKTOOLS_SERVE_BACKLOG": "5"})
    assert result.exit_code == 2, result.output
    assert "SOCKTOOLS_SERVE_BACKLOG" in result.output


def _worker_whose_final_report_meets_a_signal(conn) -> None:
    """(In a forked child.)  A supervised UDP worker, stopped by SIGTERM; while it reports its
    final counts, another SIGTERM arrives -- what a stop sent twice (a process group's SIGTERM
    and the supervisor's, or a drain turned into a forced stop) does."""
    from socktools.serve.udp import UdpWorker
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def report(kind: str, stats: dict) -> None:
        if kind == "final":
            os.kill(os.getpid(), signal.SIGTERM)      # a second stop, in the middle of the report
        conn.send((kind, stats))

    worker = UdpWorker(ServeConfig(udp=True, port=0), sock, report=report, report_interval=0)
    worker.loop.call_later(0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    worker.run(handle_sigint=False, force_signal=signal.SIGUSR2)


def test_a_signal_during_a_workers_final_report_does_not_lose_its_counts():
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker_whose_final_report_meets_a_signal, args=(child,))
    proc.start()
    child.close()
    try:
        assert parent.poll(20), f"no final report (the worker exited {proc.exitcode})"
        kind, stats = parent.recv()
        assert kind == "final" and stats["datagrams_in"] == 0
    finally:
        proc.join(20)
    assert proc.exitcode == 0

"""serve's supervised workers and signals: SIGTERM drains and reports, through core/procs."""

from __future__ import annotations

import os
import signal
import socket
import time

from socktools import reference
from socktools.protocol import Decoder, NEED_DATA
from tests.conftest import alive, wait_until


def _socket_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def _read_reply(sock: socket.socket):
    decoder = Decoder()
    sock.settimeout(10)
    while True:
        event = decoder.next_event()
        if event is not NEED_DATA:
            return event
        data = sock.recv(65536)
        assert data, "connection closed before the reply"
        decoder.receive_data(data)


def test_sigterm_lets_supervised_workers_finish_a_request_then_reports(start_server):
    srv = start_server("--mode", "framed", "--workers", "2", "--drain-timeout", "30", json_events=True)
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    workers = srv.worker_pids()
    baseline = sum(_socket_fds(pid) for pid in workers)
    request = reference.make_request("search", "morpheus")
    with socket.create_connection(srv.address) as s:
        s.sendall(request[:20])  # mid-message: that worker must wait for the rest
        # accepted (not just queued in the kernel's backlog, which a drain does not serve)
        assert wait_until(lambda: sum(_socket_fds(pid) for pid in workers) == baseline + 1)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        line = ""
        while "draining 1 connection" not in line and time.monotonic() < deadline:
            line = srv.proc.stderr.readline().decode("utf-8", "replace")
            assert line, "serve ended instead of draining"
        assert "draining 1 connection" in line
        assert srv.proc.poll() is None
        s.sendall(request[20:])
        reply = _read_reply(s)
        assert reply.value["result"] == reference.SEARCH_TABLE["morpheus"]
    # the drain is over with that connection: serve ends by itself, no second signal
    assert wait_until(lambda: srv.proc.poll() is not None, timeout=20), "serve did not end after its drain"
    rc, out, err = srv.stop()
    assert rc == 0, err
    summary = srv.final_summary()
    assert summary["requests"] == summary["responses"] == 1
    assert summary["accepted"] == summary["closed"] == 1 and summary["worker_restarts"] == 0
    assert not any(alive(pid) for pid in workers)

"""serve's supervised workers and signals: SIGTERM drains and reports, through core/procs."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

import pytest

from socktools import reference
from socktools.protocol import Decoder, NEED_DATA
from tests.conftest import alive, wait_until


def _accepted_by(pids: list, client: socket.socket, server_port: int) -> bool:
    """Does one of ``pids`` hold the server side of ``client``'s connection?  (Still in the
    kernel's accept queue, it belongs to no process.)  Asks /proc, not the server."""
    port = client.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == port:
                inode = fields[9]
    if inode in (None, "0"):
        return False
    for pid in pids:
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                   for fd in os.listdir(f"/proc/{pid}/fd")):
                return True
        except OSError:
            pass
    return False


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


@pytest.mark.parametrize("to", ["supervisor", "group"])
def test_sigterm_lets_supervised_workers_finish_a_request_then_reports(start_server, to):
    # "group": the whole process group at once (systemd's control-group kill, `kill -- -PGID`):
    # each worker gets the signal itself *and* the supervisor's -- still one drain, no abort.
    srv = start_server("--mode", "framed", "--workers", "2", "--drain-timeout", "30", json_events=True)
    assert wait_until(lambda: len(srv.worker_pids()) == 2)
    workers = srv.worker_pids()
    request = reference.make_request("search", "morpheus")
    with socket.create_connection(srv.address) as s:
        s.sendall(request[:20])  # mid-message: that worker must wait for the rest
        # accepted (not just queued in the kernel's backlog, which a drain does not serve)
        assert wait_until(lambda: _accepted_by(workers, s, srv.port))
        if to == "group":
            os.killpg(srv.proc.pid, signal.SIGTERM)
        else:
            srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        line = ""
        while "draining 1 connection" not in line and time.monotonic() < deadline:
            line = srv.proc.stderr.readline().decode("utf-8", "replace")
            assert line, "serve ended instead of draining"
        assert "draining 1 connection" in line
        assert srv.proc.poll() is None
        if to == "group":   # the supervisor's SIGTERM follows within milliseconds: no abort
            assert not select.select([s], [], [], 1.0)[0], "the second SIGTERM aborted the drain"
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_signal_right_after_listening_is_not_lost(start_server, workers):
    """The signals are queued before "listening" is said: a SIGTERM sent the moment
    that line is read is acted on once the loop runs, not the default death."""
    srv = start_server("--mode", "echo", "--workers", workers, json_events=True)
    rc, out, err = srv.stop(signal.SIGTERM)
    assert rc == 0, err
    assert srv.final_summary()["accepted"] == 0

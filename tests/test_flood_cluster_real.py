"""flood --cluster against a real Dask deployment: `dask scheduler` and two `dask worker`s.

Started as docs/flood.md's "Starting a cluster by hand" says, as separate processes: the
scheduler on 127.0.0.1, one worker on 127.0.0.2 and one on 127.0.0.3 (two load "hosts" on one
machine, told apart by the address their workers listen on), against a loopback
`socktools serve`.  The workers import the socktools under test (PYTHONPATH), as a load host
would import its installed copy.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from socktools.flood.cluster_run import worker_ip
from socktools.flood.config import FloodConfig
from socktools.flood.report import render_table, to_json
from socktools.flood.runner import run_flood
from tests.conftest import wait_until
from tests.test_flood_cluster import killer

distributed = pytest.importorskip("distributed", reason="Dask not installed (pip install 'dask[distributed]')")

REPO = Path(__file__).resolve().parent.parent
HOSTS = ("127.0.0.2", "127.0.0.3")
#: Starting a scheduler and two workers: each is a Python process importing Dask (~2 s here,
#: much more on a loaded 2-core CI machine).
START_TIMEOUT = 90.0


def _loopback_aliases_work() -> bool:
    """127.0.0.2 and .3 are loopback on Linux (all of 127/8); bind both to be sure."""
    try:
        for host in HOSTS:
            with socket.socket() as s:
                s.bind((host, 0))
        return True
    except OSError:
        return False


class RealCluster:
    """A `dask scheduler` and one `dask worker` per address, each its own process group."""

    def __init__(self, log_dir: Path) -> None:
        self.procs: list = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        sched_log = log_dir / "scheduler.log"
        self.scheduler = self._start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                      "--port", "0", "--no-dashboard"], sched_log)
        found = wait_until(lambda: re.search(r"Scheduler at:\s+(tcp://[0-9.]+:\d+)",
                                             sched_log.read_text()), timeout=START_TIMEOUT)
        assert found, f"the scheduler did not start: {sched_log.read_text()}"
        self.address = re.search(r"Scheduler at:\s+(tcp://[0-9.]+:\d+)", sched_log.read_text())[1]
        for host in HOSTS:
            self._start(["distributed.cli.dask_worker", self.address, "--host", host,
                         "--nworkers", "1", "--nthreads", "1", "--memory-limit", "0",
                         "--no-dashboard"], log_dir / f"worker-{host}.log")
        self.client = distributed.Client(self.address, timeout=START_TIMEOUT)
        self.client.wait_for_workers(len(HOSTS), timeout=START_TIMEOUT)

    def _start(self, args: list, log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def workers(self) -> dict:
        """Dask worker address -> the worker process's pid."""
        return self.client.run(os.getpid)

    def stop(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    if not _loopback_aliases_work():
        pytest.skip("127.0.0.2 and 127.0.0.3 cannot be bound here (not all of 127/8 is loopback)")
    cluster = RealCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.stop()


def cfg(scheduler: str, port: int, **kw) -> FloodConfig:
    base = dict(conns=20, workers=2, host="127.0.0.1", port=port, address=("127.0.0.1", port),
                family=socket.AF_INET, duration=None, requests=2000, cluster=scheduler)
    base.update(kw)
    return FloodConfig(**base)


def test_a_workers_address_is_its_host_part():
    assert worker_ip("tcp://127.0.0.2:40123") == "127.0.0.2"
    assert worker_ip("tls://[::1]:40123") == "::1"
    assert worker_ip("inproc://10.0.0.1/123/1") == "10.0.0.1/123/1"


def test_two_hosts_are_named_apart_and_requests_equal_the_servers_count(real_cluster, start_server):
    srv = start_server("--mode", "framed", json_events=True)
    workers = real_cluster.workers()
    assert sorted(worker_ip(w) for w in workers) == list(HOSTS)

    result = run_flood(cfg(real_cluster.address, srv.port, mode="framed"))
    srv.stop()

    doc = to_json(result)
    by_address = {h["address"]: h for h in doc["hosts"]}
    assert sorted(by_address) == list(HOSTS)                 # one machine, yet two hosts by address
    assert {h["host"] for h in doc["hosts"]} == {socket.gethostname()}
    for h in by_address.values():
        assert h["shards"] == 1 and h["conns"] == 10 and h["established"] == 10
    sent = sum(h["requests"] for h in doc["hosts"])
    assert sent == 2000 + 20                                  # each connection's first, confirming request too
    assert srv.final_summary()["requests"] == sent            # the server's own count
    text = render_table(result)
    for host in HOSTS:
        assert f"({host})" in text


def test_killing_one_dask_worker_mid_run_is_reported_and_the_run_completes(real_cluster, start_server):
    """Runs last in this module: it kills the worker on 127.0.0.3 (its nanny starts another)."""
    srv = start_server("--mode", "echo", json_events=True)
    pids = real_cluster.workers()
    [victim] = [w for w in pids if worker_ip(w) == HOSTS[1]]
    events, killed, on_event = killer(pids, victim)

    result = run_flood(cfg(real_cluster.address, srv.port, requests=None, duration=3.0, interval=0.25),
                       on_event=on_event)
    srv.stop()
    assert killed, f"the run never reached its traffic phase: {events}"
    [lost] = result.lost
    assert lost["worker"] == victim
    assert lost["last_interval"] is not None and lost["last_interval"]["requests"] > 0
    [survivor] = to_json(result)["hosts"]
    assert survivor["address"] == HOSTS[0]
    assert not result.stopped_early
    assert f"Dask worker {victim} disappeared mid-run" in render_table(result)
    # What the survivor sent, the server received (the lost shard's bytes are not in the totals,
    # so the server's count is at least the survivor's).
    assert srv.final_summary()["bytes_in"] >= result.totals.counters["bytes_out"] > 0

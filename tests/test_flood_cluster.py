"""flood --cluster: shards as tasks on a real Dask LocalCluster, against a real `socktools serve`.

One LocalCluster (2 processes, loopback only) is shared by the module: starting one costs
seconds.  Runs go to it by its scheduler address, exactly as a user's cluster would be used.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hdrh.histogram import HdrHistogram

from socktools.flood import stats as st
from socktools.flood.cluster import INSTALL_HINT
from socktools.flood.config import FloodConfig, parse_cluster
from socktools.flood.report import render_table, to_json
from socktools.flood.runner import run_flood
from tests.conftest import socktools_cmd, wait_until

distributed = pytest.importorskip("distributed", reason="Dask not installed (pip install 'dask[distributed]')")


@pytest.fixture(scope="module")
def dask_cluster():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, memory_limit=0,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                       silence_logs=logging.ERROR,
                                       preload=["socktools.flood.shard"])
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def two_workers(client) -> list:
    """Wait for the cluster to have two workers (a killed one is restarted by its nanny)."""
    client.wait_for_workers(2, timeout=60)
    assert wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 2, timeout=60)
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def killer(pids: dict, victim: str) -> tuple:
    """(events, killed, on_event): ``on_event`` keeps every event and, two intervals into the
    traffic phase, SIGKILLs Dask worker ``victim`` (``pids``: worker address -> pid)."""
    events: list = []
    killed: list = []

    def on_event(event):
        events.append(event)
        traffic = [e for e in events if e["event"] == "interval" and e["phase"] == "traffic"]
        if len(traffic) == 2 and not killed:
            killed.append(victim)
            os.kill(pids[victim], signal.SIGKILL)
    return events, killed, on_event


def cfg(cluster, port: int, **kw) -> FloodConfig:
    base = dict(conns=20, workers=2, host="127.0.0.1", port=port, address=("127.0.0.1", port),
                family=socket.AF_INET, duration=None, requests=2000, cluster=cluster.scheduler_address)
    base.update(kw)
    return FloodConfig(**base)


# --------------------------------------------------------------------- units, no cluster

def test_cluster_specs_parse_or_say_what_is_expected():
    assert parse_cluster("local:2") == ("local", 2)
    assert parse_cluster("tcp://10.1.2.3:8786") == ("address", "tcp://10.1.2.3:8786")
    assert parse_cluster("sched:8786") == ("address", "tcp://sched:8786")
    for bad in ("local:0", "local:x", "local:999", "http://x:1", "tcp://"):
        with pytest.raises(ValueError):
            parse_cluster(bad)


def test_a_scheduler_address_needs_a_server_the_load_hosts_can_reach():
    with pytest.raises(ValueError, match="--port"):
        FloodConfig(conns=2, embedded=True, cluster="tcp://127.0.0.1:8786")
    FloodConfig(conns=2, embedded=True, cluster="local:2")   # flood's own server, same machine


def test_without_dask_the_option_says_how_to_install_it(monkeypatch):
    from socktools.cli.flood import command
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed -> ImportError
    result = CliRunner().invoke(command, ["--cluster", "local:2", "--conns", "2"])
    assert result.exit_code == 3
    assert result.output.strip() == f"socktools: {INSTALL_HINT}"


def test_a_bad_cluster_spec_is_a_usage_error_naming_the_option():
    from socktools.cli.flood import command
    result = CliRunner().invoke(command, ["--cluster", "local:zero"])
    assert result.exit_code == 2
    assert "--cluster" in result.output


# --------------------------------------------------------------------- on the LocalCluster

def test_requests_equal_the_servers_own_count_and_hosts_are_broken_down(dask_cluster, start_server):
    cluster, client = dask_cluster
    two_workers(client)
    srv = start_server("--mode", "framed", json_events=True)
    result = run_flood(cfg(cluster, srv.port, mode="framed"))
    srv.stop()
    c = result.totals.counters
    assert c["established"] == 20 and c["failed"] == 0
    assert c["traffic_requests"] == 2000
    assert srv.final_summary()["requests"] == c["requests"] == 2020     # + the 20 confirming requests
    assert srv.final_summary()["responses"] == c["responses"]
    assert len(result.totals.workers) == 2                         # both shards reported
    doc = to_json(result)
    [host] = doc["hosts"]                                          # one machine: one host line
    assert host["host"] == socket.gethostname()
    assert host["shards"] == 2 and host["workers"] == 2
    assert host["conns"] == 20 and host["established"] == 20 and host["requests"] == 2020
    assert host["cpu_seconds"] > 0
    assert doc["cluster"]["workers"] == 2 and doc["lost"] == []
    assert "load host(s) on the Dask cluster" in render_table(result)


def test_merged_percentiles_equal_the_shards_histograms_merged_by_hand(dask_cluster, start_server):
    cluster, client = dask_cluster
    two_workers(client)
    srv = start_server("--mode", "echo", json_events=True)
    result = run_flood(cfg(cluster, srv.port, requests=4000, interval=0.2))
    srv.stop()
    shards = result.totals.workers
    assert len(shards) == 2 and all(s.histograms.get("latency") for s in shards)
    by_hand = st.new_histogram()
    for s in shards:
        by_hand.add(HdrHistogram.decode(s.histograms["latency"]))
    assert by_hand.get_total_count() == 4000
    doc = to_json(result)["latency_us"]
    merged = st.decode(doc["hdr"])
    for p in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(p) == by_hand.get_value_at_percentile(p)
    assert doc["p99"] == round(by_hand.get_value_at_percentile(99) / 1000, 3)
    assert doc["count"] == 4000
    # The server saw every byte the shards sent.
    assert srv.final_summary()["bytes_in"] == result.totals.counters["bytes_out"]


def test_stages_ramp_on_both_shards_and_the_totals_add_up(dask_cluster, start_server):
    from socktools.flood.timeline import rows
    cluster, client = dask_cluster
    two_workers(client)
    srv = start_server("--mode", "framed", json_events=True)
    # 0 -> 10 -> 20 (held, so a tick sees the peak) -> 0: each shard holds half of every target.
    result = run_flood(cfg(cluster, srv.port, mode="framed", conns=None, requests=None, interval=0.1,
                           stages="0.4s:10,0.4s:20,0.5s:20,0.4s:0"))
    srv.stop()
    c = result.totals.counters
    shards = result.totals.workers
    assert len(shards) == 2 and doc_lost(result) == []
    # Both shards ramped: each opened at least its share of the peak (10 of the 20).
    assert all(s.established >= 10 and s.failed == 0 and s.lost == 0 for s in shards)
    assert c["established"] == sum(s.established for s in shards)
    traffic = [r for r in rows(result) if r["phase"] == "traffic"]
    assert max(r["open"] for r in traffic) == 20 == max(r["target_conns"] for r in traffic)
    assert all(r["open"] <= 20 for r in traffic) and traffic[-1]["open"] < 20
    # The totals are the shards' sums, and equal the server's own count.
    assert c["traffic_requests"] == sum(s.traffic_requests for s in shards) == c["traffic_responses"] > 0
    assert c["unanswered"] == 0 and not result.totals.errors
    assert srv.final_summary()["requests"] == c["requests"] == srv.final_summary()["responses"]


def doc_lost(result) -> list:
    return to_json(result)["lost"]


def test_a_dask_worker_killed_mid_run_is_reported_and_the_run_completes(dask_cluster, start_server):
    cluster, client = dask_cluster
    two_workers(client)
    pids = client.run(os.getpid)                                   # Dask worker address -> pid
    srv = start_server("--mode", "echo", json_events=True)
    events, killed, on_event = killer(pids, sorted(pids)[1])

    config = cfg(cluster, srv.port, requests=None, duration=3.0, interval=0.25)
    result = run_flood(config, on_event=on_event)
    srv.stop()
    assert killed, f"the run never reached its traffic phase: {events}"
    [lost] = result.lost
    assert lost["worker"] == killed[0]
    assert lost["last_interval"] is not None and lost["last_interval"]["requests"] > 0
    assert any(e["event"] == "lost" and e["worker"] == killed[0] for e in events)
    # The other shard ran its whole traffic phase and reported.
    [survivor] = result.totals.workers
    assert survivor.traffic_wall >= 2.9
    assert not result.stopped_early and result.totals.counters["failed"] == 0
    text = render_table(result)
    assert f"Dask worker {killed[0]} disappeared mid-run" in text
    assert to_json(result)["lost"][0]["shard"] == lost["shard"]


def test_ctrl_c_stops_every_shard_and_the_report_is_printed(start_server, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: LocalCluster's workers too."""
    srv = start_server("--mode", "echo", json_events=True)
    out = open(tmp_path / "out", "w+")
    proc = subprocess.Popen(socktools_cmd("flood", "--cluster", "local:2", "--port", str(srv.port),
                                          "--conns", "10", "--duration", "60s", "--interval", "0.2s",
                                          "--json"),
                            stdout=out, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def in_traffic():
            out.seek(0)
            return any('"phase": "traffic"' in line for line in out.readlines())
        assert wait_until(in_traffic, timeout=90), "no traffic interval came"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    out.seek(0)
    docs = [json.loads(line) for line in out.read().splitlines()]
    result = docs[-1]
    assert result["event"] == "result", err
    assert proc.returncode == 0, err
    assert result["stopped_early"] is True
    assert result["connections"]["established"] == 10
    assert result["hosts"][0]["shards"] == 2 and result["lost"] == []
    assert result["phases"]["traffic"] < 30
    assert "Traceback" not in err
    srv.stop()
    assert srv.final_summary()["bytes_in"] == result["bytes"]["sent"]


# --------------------------------------------------------------------- the channel, with fakes

class FakeEvent:
    def __init__(self):
        import threading
        self._e = threading.Event()

    def wait(self, timeout=None):
        return self._e.wait(timeout)

    def is_set(self):
        return self._e.is_set()

    def set(self):
        self._e.set()


class FakeVariable:
    def __init__(self):
        self.value = None

    def get(self, timeout=None):
        return self.value


class FakeQueue:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


def test_the_channel_holds_go_until_the_broadcast_instant_then_passes_stop():
    import select
    import time
    from socktools.flood.shard import DaskChannel
    up, go, go_at, stop = FakeQueue(), FakeEvent(), FakeVariable(), FakeEvent()
    ch = DaskChannel(up, go, go_at, stop, shard=3)
    try:
        ch.send(("ready", None))
        assert not ch.poll()
        instant = time.time_ns() + 300_000_000          # 0.3 s ahead, on the wall clock
        go_at.value = instant
        go.set()
        assert select.select([ch.fileno()], [], [], 5)[0], "go never reached the loop"
        arrived = time.time_ns()
        assert ch.poll() and ch.recv() == ("go", None)
        assert arrived >= instant                        # not before the instant
        assert ch.go_late_ns is not None and ch.go_late_ns < 200_000_000
        stop.set()
        assert select.select([ch.fileno()], [], [], 5)[0], "stop never reached the loop"
        assert ch.poll() and ch.recv() == ("stop", None)
        assert not ch.poll()
    finally:
        ch.close()
    assert up.items == [["ready", 3, None]]              # flushed before close returned


def test_shards_go_round_robin_over_the_workers_threads_and_limits_are_checked_per_worker():
    from socktools.flood.cluster import _host_problems, _placement
    workers = {"tcp://b:1": {"nthreads": 1}, "tcp://a:1": {"nthreads": 2}}
    assert _placement(workers, 3) == {0: "tcp://a:1", 1: "tcp://b:1", 2: "tcp://a:1"}
    config = FloodConfig(conns=30_000, workers=3, port=9, address=("127.0.0.1", 9), duration=1.0)
    probes = {"tcp://a:1": {"host": "a", "fd_soft": 20_000, "fd_hard": 20_000},
              "tcp://b:1": {"host": "b", "fd_soft": 20_000, "fd_hard": 20_000}}
    [problem] = _host_problems(config, _placement(workers, 3), probes)
    assert problem.startswith("Dask worker tcp://a:1 on a holds 20,000 connections")   # 2 shards

#!/usr/bin/env python3
"""Benchmark ``socktools proxy`` (no toxics) against haproxy (``mode tcp``) and against no proxy.

    python benchmarks/bench_proxy.py                    # 3 rounds, 1 GiB bulk each: about 2 minutes
    python benchmarks/bench_proxy.py --rounds 1 --duration 2 --bulk-mib 256   # a first look
    python benchmarks/bench_proxy.py --json > proxy.json

Placement (2 CPUs): the proxy under test (socktools proxy, or haproxy: one
process, one thread) is pinned alone to one CPU; everything else -- the C load
client, the upstream ``socktools serve --mode echo`` and the bulk receiver --
is pinned to the other.  The upstream shares the load's CPU, not the proxy's:
on the proxy's CPU it would take cycles from whichever proxy is measured,
and how much would depend on how hard that proxy pushes it, so the proxies
would not be compared on equal terms.  Both proxies meet the same upstream on
the same CPU; "direct" (the client talking to the upstream itself) is the
floor the proxies add to, with both ends on one CPU.

Per round, each target (direct, socktools, haproxy, and with --with-copy
socktools-copy and socktools-splice: the proxy with --splice never and
--splice always; the order reversed every round so drift falls on all alike):
  round trips  the C client (bench_serve's) with --conns connections, each
               sending 64 bytes and waiting for them back: round trips/s.
  latency      the same client with one connection: p50/p99 per round trip;
               "added" is the proxy's figure minus direct's in the same round.
  bulk         one connection writes --bulk-mib MiB and half-closes; a
               receiver reads until EOF and answers with the count it got:
               MB/s from the first byte sent to the count read back.
Targets (issue 24): round trips >= 0.8x haproxy, bulk >= 0.8x haproxy, added
p50 <= 1.5x haproxy's.  Loopback only; every process started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_serve import (BenchError, _child_setup, _killpg, build_c_programs, choose_cpus,  # noqa: E402
                         group_cpu_seconds, merge, run_client)

HOST = "127.0.0.1"  # loopback only, by rule
TARGETS = ("direct", "socktools", "haproxy")
#: The variants --with-copy adds beside ``socktools`` (``--splice auto``, the default).
SPLICE_FLAGS = {"socktools-copy": ["--splice", "never"], "socktools-splice": ["--splice", "always"]}
#: The bulk sender's write size: big enough that the syscall, not Python, sets the pace.
BULK_CHUNK = 1 << 20
#: A bulk transfer that takes longer than this is reported as failed (a stuck proxy must not
#: hang the benchmark): 1 GiB at 20 MB/s.
BULK_TIMEOUT = 60.0
STARTUP_TIMEOUT = 20.0

RECEIVER = r"""
import socket, struct, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(16)
buf = bytearray(1 << 20)
for _ in range(int(sys.argv[2])):          # bounded: one connection per planned transfer (+ probes)
    conn, _ = ls.accept()
    n = 0
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        n += k
    conn.sendall(struct.pack("!Q", n)); conn.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Proc:
    """A child in its own session, pinned, output to a file; ready once its ports accept."""

    def __init__(self, name: str, argv: list, cpu: Optional[int], logdir: Path, ports: list,
                 stdin=subprocess.DEVNULL) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_child_setup(cpu), cwd=ROOT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for port in ports:
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise BenchError(f"{name} did not listen on {port}: "
                                         f"{self.log_path.read_text(errors='replace')[-400:]}")
                    time.sleep(0.05)

    def stop(self) -> None:
        if self._log.closed:
            return
        if self.proc.poll() is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


def bulk(port: int, nbytes: int, pgid: Optional[int]) -> dict:
    """Write ``nbytes`` to ``port``, half-close, read the receiver's count: MB/s end to end."""
    chunk = memoryview(bytes(BULK_CHUNK))
    s = socket.create_connection((HOST, port), timeout=BULK_TIMEOUT)
    cpu0 = group_cpu_seconds(pgid) if pgid else 0.0
    t0 = time.perf_counter()
    try:
        left = nbytes
        while left > 0:
            s.sendall(chunk[:min(left, BULK_CHUNK)])
            left -= BULK_CHUNK
        s.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            more = s.recv(8 - len(got))
            if not more:
                raise BenchError(f"bulk through port {port}: closed before the count came back")
            got += more
    finally:
        s.close()
    seconds = time.perf_counter() - t0
    received = int.from_bytes(got, "big")
    if received != nbytes:
        raise BenchError(f"bulk through port {port}: sent {nbytes} bytes, the receiver got {received}")
    return {"mb_s": nbytes / seconds / 1e6, "seconds": seconds,
            "proxy_cpu": ((group_cpu_seconds(pgid) - cpu0) / seconds) if pgid else None}


HAPROXY_CFG = """\
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
{splice}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen echo
    bind {host}:{echo_listen}
    server s1 {host}:{echo}
listen bulk
    bind {host}:{bulk_listen}
    server s1 {host}:{bulk}
"""


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per round-trip cell (and per latency cell)")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--conns", type=int, default=50, help="connections for the round-trip rate")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bulk-mib", type=int, default=1024, help="MiB per bulk transfer (1 GiB by default)")
    p.add_argument("--proxy-cpu", type=int, default=None)
    p.add_argument("--load-cpu", type=int, default=None)
    p.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    p.add_argument("--haproxy-no-splice", action="store_true",
                   help="leave out haproxy's `option splice-auto` (its default config copies bytes through "
                        "user space; with the option it forwards bulk data with splice(2))")
    p.add_argument("--with-copy", action="store_true",
                   help="also measure `socktools proxy --splice never` (batches only: bulk copied too) and "
                        "`--splice always` (every message spliced), as the columns socktools-copy and "
                        "socktools-splice: what --splice auto's choice is worth, in the same run")
    p.add_argument("--json", action="store_true", help="the full report as JSON on stdout")
    return p.parse_args(argv)


def main(argv: Optional[list] = None) -> int:
    opts = parse_args(argv)
    exes = build_c_programs()
    place = choose_cpus(opts.proxy_cpu, opts.load_cpu)
    if place.load_cpu is not None:
        os.sched_setaffinity(0, {place.load_cpu})      # the bulk sender is this process
    say = (lambda m="": print(m, file=sys.stderr, flush=True)) if opts.json else (lambda m="": print(m, flush=True))
    targets = [t for t in TARGETS if t != "haproxy" or os.path.exists(opts.haproxy)]
    if opts.with_copy:
        targets[2:2] = ["socktools-copy", "socktools-splice"]
    if "haproxy" not in targets:
        say(f"haproxy not found at {opts.haproxy}: its column is left out")
    py = sys.executable
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        logdir = Path(tmp)
        try:
            echo, sink = free_port(), free_port()
            procs.append(Proc("upstream-echo", [py, "-m", "socktools", "serve", "--mode", "echo", "--host", HOST,
                                                "--port", str(echo)], place.load_cpu, logdir, [echo]))
            transfers = opts.rounds * len(targets) + len(targets) + 1      # + one probe per listener
            procs.append(Proc("bulk-receiver", [py, "-c", RECEIVER, str(sink), str(transfers)],
                              place.load_cpu, logdir, [sink]))
            ports = {"direct": (echo, sink)}
            pgids = {"direct": None}
            for name in [t for t in targets if t.startswith("socktools")]:
                se, sb = free_port(), free_port()
                proxy = Proc(name, [py, "-m", "socktools", "proxy", "--quiet", "--stop-on-stdin-eof",
                                    "--listen", f"{HOST}:{se}", "--to", f"{HOST}:{echo}",
                                    "--listen", f"{HOST}:{sb}", "--to", f"{HOST}:{sink}",
                                    *SPLICE_FLAGS.get(name, [])],
                             place.server_cpu, logdir, [se, sb], stdin=subprocess.PIPE)
                procs.append(proxy)
                ports[name], pgids[name] = (se, sb), proxy.proc.pid
            if "haproxy" in targets:
                he, hb = free_port(), free_port()
                cfg = logdir / "haproxy.cfg"
                cfg.write_text(HAPROXY_CFG.format(
                    host=HOST, echo_listen=he, echo=echo, bulk_listen=hb, bulk=sink,
                    splice="" if opts.haproxy_no_splice else "    option splice-auto"))
                hap = Proc("haproxy", [opts.haproxy, "-f", str(cfg), "-db"], place.server_cpu, logdir, [he, hb])
                procs.append(hap)
                ports["haproxy"], pgids["haproxy"] = (he, hb), hap.proc.pid
            version = subprocess.run([opts.haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0] \
                if "haproxy" in targets else "-"
            where = (f"proxy under test pinned to CPU {place.server_cpu}; load client, upstream echo and bulk receiver "
                     f"to CPU {place.load_cpu}") if place.load_cpu is not None else place.note
            say(f"proxy bench: {where}; {version}")
            say(f"  {opts.rounds} round(s): {opts.conns} conns x {opts.size} B round trips and 1 conn latency, "
                f"{opts.duration:g} s each; bulk {opts.bulk_mib} MiB")
            rounds = []
            for r in range(opts.rounds):
                order = targets if r % 2 == 0 else targets[::-1]
                cells = {}
                for name in order:
                    srv = type("S", (), {"port": ports[name][0], "pgid": pgids[name] or procs[0].proc.pid,
                                         "name": name})
                    rate = run_client(exes["epoll_echo_client"], "pingpong", srv,
                                      ["--conns", opts.conns, "--size", opts.size, "--warmup", opts.warmup,
                                       "--duration", opts.duration], place, opts.duration + opts.warmup + 30)
                    lat = run_client(exes["epoll_echo_client"], "pingpong", srv,
                                     ["--conns", 1, "--size", opts.size, "--warmup", opts.warmup,
                                      "--duration", opts.duration], place, opts.duration + opts.warmup + 30)
                    b = bulk(ports[name][1], opts.bulk_mib << 20, pgids[name])
                    r_m, l_m = merge([rate], "round_trips"), merge([lat], "round_trips")
                    cells[name] = {"rt_s": r_m["rate"], "rt_proxy_cpu": r_m["server_cpu"] if pgids[name] else None,
                                   "errors": r_m["errors"], "mismatches": r_m.get("mismatches", 0),
                                   "p50_us": l_m["p50_us"], "p99_us": l_m["p99_us"], "lat_rt_s": l_m["rate"],
                                   "bulk_mb_s": b["mb_s"], "bulk_proxy_cpu": b["proxy_cpu"]}
                for name in targets:
                    c = cells[name]
                    c["added_p50_us"] = c["p50_us"] - cells["direct"]["p50_us"]
                    c["added_p99_us"] = c["p99_us"] - cells["direct"]["p99_us"]
                rounds.append(cells)
                say(f"round {r + 1}:")
                print_table(say, cells, targets)
            report = {"placement": place.note, "haproxy": version, "config": vars(opts), "rounds": rounds,
                      "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3]}
            if opts.rounds > 1:
                med = {n: {k: statistics.median(rd[n][k] for rd in rounds)
                           for k in ("rt_s", "p50_us", "p99_us", "added_p50_us", "added_p99_us", "bulk_mb_s")}
                       for n in targets}
                say("median over rounds:")
                print_table(say, med, targets)
            else:
                med = rounds[0]
            report["median"] = med
            if "haproxy" in targets:
                report["targets"] = print_targets(say, med)
            for p in procs:
                if p.name.startswith("socktools") and p.proc.stdin:
                    p.proc.stdin.close()          # --stop-on-stdin-eof: a clean stop
            if opts.json:
                print(json.dumps(report, indent=1, default=str))
        finally:
            for p in reversed(procs):
                p.stop()
    return 0


def print_table(say, cells: dict, targets: list) -> None:
    say(f"  {'':14} {'round trips/s':>14} {'p50 us':>8} {'p99 us':>8} {'added p50':>10} {'added p99':>10} "
        f"{'bulk MB/s':>10}")
    for name in targets:
        c = cells[name]
        say(f"  {name:14} {c['rt_s']:>14,.0f} {c['p50_us']:>8.1f} {c['p99_us']:>8.1f} "
            f"{c['added_p50_us']:>10.1f} {c['added_p99_us']:>10.1f} {c['bulk_mb_s']:>10,.0f}")


def print_targets(say, med: dict) -> dict:
    s, h = med["socktools"], med["haproxy"]
    out = {"round_trips": s["rt_s"] / h["rt_s"], "bulk": s["bulk_mb_s"] / h["bulk_mb_s"],
           "added_p50": (s["added_p50_us"] / h["added_p50_us"]) if h["added_p50_us"] > 0 else None}
    say("socktools proxy against haproxy (issue 24's targets):")
    say(f"  round trips/s  {out['round_trips']:.2f}x  (target >= 0.8x: {'met' if out['round_trips'] >= 0.8 else 'NOT met'})")
    say(f"  bulk MB/s      {out['bulk']:.2f}x  (target >= 0.8x: {'met' if out['bulk'] >= 0.8 else 'NOT met'})")
    if out["added_p50"] is None:
        say("  added p50      haproxy added nothing measurable: no ratio")
    else:
        say(f"  added p50      {out['added_p50']:.2f}x  (target <= 1.5x: "
            f"{'met' if out['added_p50'] <= 1.5 else 'NOT met'})")
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_proxy: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

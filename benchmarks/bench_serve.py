#!/usr/bin/env python3
"""Benchmark ``socktools serve --mode echo`` against three reference echo servers, in one run.

    python benchmarks/bench_serve.py                 # everything, three rounds, about two minutes
    python benchmarks/bench_serve.py --rounds 1      # one round, about 40 s
    python benchmarks/bench_serve.py --only socktools,c --no-storm --json

Servers (names for --only):
  socktools  python -m socktools serve --mode echo --port 0
  naive      the tutorial's selectors server (READ|WRITE always registered, recv(1024))
  uvloop     an asyncio Protocol echo server on uvloop
  c          a minimal epoll echo server in C (compiled here with gcc)
  careful    (only when named) the smallest careful selectors loop: socktools minus its layers
  mapbatch   (only when named) no Python bytecode per event (map() over os.read/os.write):
             CPython's ceiling on this machine, not a usable server

All servers start at once, pinned to one CPU, and wait; a C load client pinned
to another CPU then loads one server at a time:
  ping-pong  --conns connections each send --size bytes, wait for all of them
             back and send again (a closed loop). Each server gets --duration
             seconds in slices of about --slice seconds, the slices of all
             servers interleaved ABCD DCBA ABCD ..., so drift and noise from
             the rest of the machine fall on every server alike. A --warmup
             before each server's first slice is not counted.
  idle       100 connections, each proven by a 1-byte echo, then silent for
             --idle seconds: a good server uses ~0 CPU (first round only).
  storm      --storm-conns connections opened as fast as possible (at most
             --storm-parallel in flight), each proven by a 1-byte echo, then
             closed by the client: connections served per second.
Server CPU comes from /proc/<pid>/stat (utime+stime of the server's process
group) over each measured window. Ratios compare each server with the C server
in the same round. See benchmarks/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
HOST = "127.0.0.1"  # loopback only, by rule
ALL_SERVERS = ("socktools", "naive", "uvloop", "careful", "mapbatch", "c")
DEFAULT_SERVERS = ("socktools", "naive", "uvloop", "c")  # careful, mapbatch: yardsticks, on request (--only)
LABELS = {"socktools": "socktools serve", "naive": "naive selectors", "uvloop": "asyncio+uvloop",
          "careful": "careful selectors", "mapbatch": "map() ceiling", "c": "C epoll"}
REFERENCES = ("c", "uvloop")  # ratios are computed against these
TARGETS = {"pingpong_vs_c": (">=", 0.95), "pingpong_vs_uvloop": (">", 1.0), "storm_vs_c": (">=", 0.9)}
SLICE_WARMUP = 0.1  # after a server's first slice: only the lockstep start of 100 fresh conns to skip
IDLE_CONNS = 100
# A measurement looks disturbed when other processes took more than NOISE of the servers' CPU, or when in the
# ping-pong neither the server nor the load client was busy SATURATED of the time (one must be the bottleneck).
NOISE = 0.05
SATURATED = 0.9
CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"listening on \[?([0-9a-fA-F.:]+?)\]?:(\d+)")
REPORT_TO_STDERR = False  # --json owns stdout


class BenchError(Exception):
    """A problem the user must see; printed as one line."""


def log(msg: str = "") -> None:
    """Progress: always stderr."""
    print(msg, file=sys.stderr, flush=True)


def say(msg: str = "") -> None:
    """The human report: stdout, or stderr when --json owns stdout."""
    print(msg, file=sys.stderr if REPORT_TO_STDERR else sys.stdout, flush=True)


# ------------------------------------------------------------------ building
def build_c_programs() -> dict[str, Path]:
    """Compile the C server and client into benchmarks/build/ (again only when a source changed)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not found: the C reference server and the load client are compiled here. "
                         "Install it with `apt-get install gcc` (Debian/Ubuntu) or your system's equivalent.")
    BUILD.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in ("epoll_echo_server", "epoll_echo_client"):
        src, exe = HERE / "c" / f"{name}.c", BUILD / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            res = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise BenchError(f"compiling {src.name} failed:\n{res.stderr.strip()}")
        built[name] = exe
    return built


# ------------------------------------------------------------------ processes
@dataclass(frozen=True)
class Placement:
    """Which CPU the servers and the load run on (None: not pinned)."""
    server_cpu: Optional[int]
    load_cpu: Optional[int]
    note: str


def choose_cpus(server_cpu: Optional[int], load_cpu: Optional[int]) -> Placement:
    if not hasattr(os, "sched_setaffinity"):
        return Placement(None, None, "pinning unavailable on this platform: server and load share the CPUs")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 and (server_cpu is None or load_cpu is None):
        return Placement(None, None, f"pinning unavailable: only CPU {allowed[0]} is allowed, so server and "
                                     "load share it (every figure is then a lower bound)")
    s = allowed[0] if server_cpu is None else server_cpu
    l = next(c for c in allowed if c != s) if load_cpu is None else load_cpu
    return Placement(s, l, f"servers pinned to CPU {s}, load client to CPU {l}")


def _child_setup(cpu: Optional[int]):
    """preexec_fn: pin to one CPU, and die with us even if we are SIGKILLed (PR_SET_PDEATHSIG)."""
    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    return setup


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime, in seconds, of every live process in process group ``pgid`` (a server and its workers)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # the command name may hold spaces and ')'
        if int(fields[2]) == pgid:                          # field 5: pgrp
            ticks += int(fields[11]) + int(fields[12])      # fields 14, 15: utime, stime
    return ticks / CLK_TCK


def cpu_busy_seconds(cpu: Optional[int]) -> float:
    """Time one CPU spent running processes (user+nice+system) or stolen by a hypervisor, from /proc/stat.

    irq/softirq time is left out: loopback packet processing lands there and is
    part of the benchmark, not noise.
    """
    if cpu is None:
        return 0.0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
                return (v[0] + v[1] + v[2] + v[7]) / CLK_TCK
    return 0.0


def listen_drops() -> int:
    """TcpExt ListenDrops (SYNs or handshakes dropped at a full queue; includes ListenOverflows), system-wide."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenDrops", 0))
    return 0


class RunningServer:
    """A server in its own session (one killpg reaches its workers too), its output in a file."""

    def __init__(self, name: str, argv: list[str], env: dict, cpu: Optional[int], logdir: Path,
                 startup_timeout: float = 20.0) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.stopped_gracefully: Optional[bool] = None
        self._log = open(self.log_path, "wb")  # a file, not a pipe: nobody has to drain it
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, preexec_fn=_child_setup(cpu))
        self.pgid = self.proc.pid
        try:
            self.port = self._wait_listening(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first = self.log_path.read_text(errors="replace").partition("\n")
            if first[1]:
                m = LISTENING.search(first[0])
                if m:
                    return int(m.group(2))
                try:
                    event = json.loads(first[0])
                    if event.get("event") == "listening":
                        return int(event["port"])
                except (ValueError, AttributeError):
                    pass
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited (code {self.proc.returncode}) before listening: {self.tail()}")
            time.sleep(0.02)
        raise BenchError(f"{self.name} printed no 'listening on HOST:PORT' line within {timeout:g}s: {self.tail()}")

    def tail(self, lines: int = 4) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, wait for a graceful exit, then SIGKILL whatever is left of the group."""
        if self._log.closed:
            return  # stopped already; the pgid may no longer be ours
        if self.proc.poll() is None:
            _killpg(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
                self.stopped_gracefully = self.proc.returncode == 0
            except subprocess.TimeoutExpired:
                self.stopped_gracefully = False
        _killpg(self.pgid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


def run_client(client: Path, mode: str, server: RunningServer, args: list, place: Placement,
               timeout: float) -> dict:
    """Run the C load client once; sample server and client CPU at its "measuring" and result lines."""
    cmd = [str(client), mode, "--host", HOST, "--port", str(server.port), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_child_setup(place.load_cpu))
    server_cpu = place.server_cpu
    deadline = time.monotonic() + timeout
    buf, start, result = b"", None, None
    try:
        while result is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise BenchError(f"load client ({mode} against {server.name}) gave no result within {timeout:g}s")
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace").strip()
                raise BenchError(f"load client ({mode} against {server.name}) failed: "
                                 f"{err or 'exit code %s' % proc.wait()}")
            buf += chunk
            while b"\n" in buf and result is None:
                line, buf = buf.split(b"\n", 1)
                now = time.monotonic()
                event = json.loads(line)
                if event.get("event") == "measuring":
                    start = (now, group_cpu_seconds(server.pgid), group_cpu_seconds(proc.pid),
                             cpu_busy_seconds(server_cpu), listen_drops())
                else:
                    result = event
                    result["wall"] = now - start[0]
                    result["server_cpu_s"] = group_cpu_seconds(server.pgid) - start[1]
                    result["load_cpu_s"] = group_cpu_seconds(proc.pid) - start[2]
                    # Whatever else kept the server's CPU busy: other processes, steal (noise).
                    result["others_cpu_s"] = max(0.0, cpu_busy_seconds(server_cpu) - start[3]
                                                 - result["server_cpu_s"])
                    result["listen_drops"] = listen_drops() - start[4]
        try:
            proc.wait(5)  # it closes its connections cleanly after the result line
        except subprocess.TimeoutExpired:
            pass
        return result
    finally:
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------------ merging slices
def percentile_us(hist: Counter, pct: float) -> float:
    """Same rule as the C client: the first bucket whose cumulative count reaches pct% of the total."""
    total = sum(hist.values())
    if not total:
        return 0.0
    want, seen = max(1, round(pct / 100 * total)), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= want:
            return value / 1000
    return max(hist) / 1000


def merge(runs: list[dict], count_key: str) -> dict:
    """Combine client results (slices or storm passes) into one: sums, merged histogram, CPU shares."""
    hist: Counter = Counter()
    errors: Counter = Counter()
    for r in runs:
        hist.update({int(v): int(n) for v, n in r.get("hist", [])})
        errors.update(r["errors"] if isinstance(r["errors"], dict) else {"connection lost": r["errors"]})
    count = sum(r[count_key] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    wall = sum(r["wall"] for r in runs)
    out = {count_key: count, "seconds": round(seconds, 4), "rate": count / seconds if seconds else 0.0,
           "p50_us": percentile_us(hist, 50), "p99_us": percentile_us(hist, 99),
           "server_cpu": sum(r["server_cpu_s"] for r in runs) / wall if wall else None,
           "load_cpu": sum(r["load_cpu_s"] for r in runs) / wall if wall else None,
           "others_cpu": sum(r["others_cpu_s"] for r in runs) / wall if wall else None,
           "errors": {k: v for k, v in errors.items() if v}, "parts": [round(r["rate"]) for r in runs]}
    # ListenDrops is system-wide: shown for the storm only, where our own connects can overflow a queue.
    for key in ("mismatches", "eof_before_echo", "timeouts") + (("listen_drops",) if count_key == "ok" else ()):
        if any(key in r for r in runs):
            out[key] = sum(r.get(key, 0) for r in runs)
    return out


# ------------------------------------------------------------------ the run
def server_commands(backlog: int, exes: dict[str, Path]) -> tuple[dict[str, tuple[list[str], dict]], dict[str, str]]:
    """The command (argv, env) of each server that can run here, and why the others cannot."""
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmds, skipped = {}, {}
    probe = subprocess.run([py, "-m", "socktools", "serve", "--help"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        skipped["socktools"] = f"`{py} -m socktools serve --help` failed: {why}"
    else:
        extra = ["--backlog", str(backlog)] if "--backlog" in probe.stdout else []
        if not extra:
            skipped["socktools backlog"] = "socktools serve has no --backlog option: it ran with its default"
        cmds["socktools"] = ([py, "-m", "socktools", "serve", "--mode", "echo", "--host", HOST, "--port", "0",
                              *extra], env)
    common = ["--host", HOST, "--port", "0", "--backlog", str(backlog)]
    cmds["naive"] = ([py, str(HERE / "servers" / "naive_selectors_echo.py"), *common], env)
    cmds["careful"] = ([py, str(HERE / "servers" / "careful_selectors_echo.py"), *common], env)
    cmds["mapbatch"] = ([py, str(HERE / "servers" / "mapbatch_epoll_echo.py"), *common], env)
    if subprocess.run([py, "-c", "import uvloop"], capture_output=True).returncode == 0:
        cmds["uvloop"] = ([py, str(HERE / "servers" / "uvloop_echo.py"), *common], env)
    else:
        skipped["uvloop"] = f"uvloop is not installed for {py} (pip install uvloop)"
    cmds["c"] = ([str(exes["epoll_echo_server"]), *common], env)
    return cmds, skipped


def alternate(order: list[str], passes: int) -> list[str]:
    """ABCD DCBA ABCD ...: each server gets early and late slots alike."""
    return [n for i in range(passes) for n in (order if i % 2 == 0 else order[::-1])]


def run_round(rnd: int, names: list[str], servers: dict[str, RunningServer], opts, place: Placement,
              client: Path, warmed: set) -> dict:
    """One round: interleaved ping-pong slices, the idle check (round 1), interleaved storm passes."""
    order = names if rnd % 2 == 0 else names[::-1]
    slices = max(1, round(opts.duration / opts.slice))
    per_slice = opts.duration / slices
    got: dict[str, dict[str, list]] = {n: {"pingpong": [], "idle": [], "storm": []} for n in names}
    for name in alternate(order, slices):
        warmup = SLICE_WARMUP if name in warmed else opts.warmup
        warmed.add(name)
        got[name]["pingpong"].append(run_client(
            client, "pingpong", servers[name],
            ["--conns", opts.conns, "--size", opts.size, "--warmup", warmup, "--duration", per_slice],
            place, timeout=warmup + per_slice + 30))
    if rnd == 0 and opts.idle > 0:
        for name in order:
            got[name]["idle"].append(run_client(client, "idle", servers[name],
                                                ["--conns", IDLE_CONNS, "--duration", opts.idle],
                                                place, timeout=opts.idle + 30))
    if opts.storm:
        for name in alternate(order, opts.storm_passes):
            got[name]["storm"].append(run_client(
                client, "storm", servers[name],
                ["--conns", opts.storm_conns, "--parallel", opts.storm_parallel, "--timeout", 30],
                place, timeout=60))
    results = {}
    for name in names:
        r = {"pingpong": merge(got[name]["pingpong"], "round_trips")}
        if got[name]["idle"]:
            i = got[name]["idle"][0]
            r["idle"] = {"server_cpu": i["server_cpu_s"] / i["wall"], "dropped_by_server": i["dropped_by_server"]}
        if got[name]["storm"]:
            r["storm"] = merge(got[name]["storm"], "ok")
        for phase in ("pingpong", "storm"):
            if phase in r:
                r[phase]["disturbed"] = is_disturbed(r[phase])
                r[phase]["vs"] = {ref: paired_ratio(got[name][phase], got[ref][phase])
                                  for ref in REFERENCES if ref in got and ref != name}
        results[name] = r
    return {"round": rnd + 1, "order": order, "results": results}


def paired_ratio(mine: list[dict], ref: list[dict]) -> Optional[float]:
    """Median over passes of (my rate / the reference's rate in the same pass).

    A server's slice and the reference's slice of one pass ran seconds apart, so
    noise that comes and goes (other processes, a hypervisor) mostly cancels in
    each pair, and the median drops the odd disturbed pair.
    """
    pairs = [a["rate"] / b["rate"] for a, b in zip(mine, ref) if b["rate"]]
    return statistics.median(pairs) if pairs else None


def summarize(rounds: list[dict], names: list[str]) -> dict:
    """Per server: median over rounds of each figure and of each same-round ratio."""
    summary: dict = {}
    for name in names:
        runs = [r["results"][name] for r in rounds]
        s: dict = {}
        for phase, keys in (("pingpong", ("rate", "p50_us", "p99_us", "server_cpu", "load_cpu", "others_cpu")),
                            ("storm", ("rate", "p50_us", "p99_us", "server_cpu", "load_cpu", "others_cpu")),
                            ("idle", ("server_cpu",))):
            have = [run[phase] for run in runs if phase in run]
            if have:
                s[phase] = {k: statistics.median(h[k] for h in have) for k in keys}
        for phase in ("pingpong", "storm"):
            for ref in REFERENCES:
                per = [r["results"][name][phase]["vs"].get(ref) for r in rounds if phase in r["results"][name]]
                if per and None not in per:
                    key = f"{phase}_vs_{ref}"
                    s[key], s[key + "_per_round"] = statistics.median(per), per
        summary[name] = s
    return summary


# ------------------------------------------------------------------ reporting
def is_disturbed(phase: dict) -> bool:
    """Other processes on the servers' CPU or, in the ping-pong (where one side must be the
    bottleneck), neither side busy: something outside slowed the loop."""
    if (phase["others_cpu"] or 0) > NOISE:
        return True
    return "round_trips" in phase and max(phase["server_cpu"] or 0, phase["load_cpu"] or 0) < SATURATED


def fmt_ratio(x: Optional[float]) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def fmt_cpu(x: Optional[float]) -> str:
    return f"{100 * x:.0f}%" if x is not None else "-"


def trouble(r: dict) -> str:
    """Anything that went wrong in a phase, as a short note after its row."""
    bad = dict(r.get("errors", {}))
    for key, text in (("mismatches", "wrong echo"), ("eof_before_echo", "EOF before echo"), ("timeouts", "timed out"),
                      ("dropped_by_server", "dropped by server"), ("listen_drops", "listen drops, system-wide")):
        if r.get(key):
            bad[text] = r[key]
    return "  (" + ", ".join(f"{k}: {v}" for k, v in bad.items()) + ")" if bad else ""


def print_round(rnd: dict) -> None:
    res = rnd["results"]
    say(f"\nround {rnd['round']}  (order {', '.join(rnd['order'])}; slices interleaved, alternating)")
    say(f"  {'ping-pong':<18} {'round trips/s':>13} {'p50 µs':>8} {'p99 µs':>8} {'vs C':>6} "
        f"{'server CPU':>10} {'load CPU':>8} {'other':>5}")
    for name, r in res.items():
        p = r["pingpong"]
        say(f"  {LABELS[name]:<18} {p['rate']:>13,.0f} {p['p50_us']:>8.0f} {p['p99_us']:>8.0f} "
            f"{fmt_ratio(p['vs'].get('c', 1.0 if name == 'c' else None)):>6} {fmt_cpu(p['server_cpu']):>10} "
            f"{fmt_cpu(p['load_cpu']):>8} {fmt_cpu(p['others_cpu']):>5}{' *' if is_disturbed(p) else ''}{trouble(p)}")
    if any("idle" in r for r in res.values()):
        say(f"  {f'idle ({IDLE_CONNS} conns)':<18} {'server CPU':>13}")
        for name, r in res.items():
            if "idle" in r:
                say(f"  {LABELS[name]:<18} {fmt_cpu(r['idle']['server_cpu']):>13}{trouble(r['idle'])}")
    if any("storm" in r for r in res.values()):
        say(f"  {'storm':<18} {'conns/s':>13} {'p50 µs':>8} {'p99 µs':>8} {'vs C':>6} {'server CPU':>10} "
            f"{'load CPU':>8} {'other':>5} {'proven':>7}")
        for name, r in res.items():
            if "storm" in r:
                s = r["storm"]
                say(f"  {LABELS[name]:<18} {s['rate']:>13,.0f} {s['p50_us']:>8.0f} {s['p99_us']:>8.0f} "
                    f"{fmt_ratio(s['vs'].get('c', 1.0 if name == 'c' else None)):>6} "
                    f"{fmt_cpu(s['server_cpu']):>10} {fmt_cpu(s['load_cpu']):>8} {fmt_cpu(s['others_cpu']):>5} "
                    f"{s['ok']:>7}{' *' if is_disturbed(s) else ''}{trouble(s)}")


def print_summary(report: dict) -> None:
    summary, rounds = report["summary"], report["rounds"]
    if len(rounds) > 1:
        say(f"\nmedian over {len(rounds)} rounds (ratios: median of the same-round ratios)")
        for name, s in summary.items():
            pp, st = s["pingpong"], s.get("storm")
            self_ratio = 1.0 if name == "c" else None
            line = (f"  {LABELS[name]:<18} {pp['rate']:>10,.0f} rt/s "
                    f"{fmt_ratio(s.get('pingpong_vs_c', self_ratio)):>6} vs C")
            if st:
                line += f"   storm {st['rate']:>7,.0f} conns/s {fmt_ratio(s.get('storm_vs_c', self_ratio)):>6} vs C"
            say(line)
        for name, s in summary.items():
            if name != "c" and "pingpong_vs_c_per_round" in s:
                say(f"  {LABELS[name]} / C per round: ping-pong "
                    + " ".join(fmt_ratio(x) for x in s["pingpong_vs_c_per_round"])
                    + ("; storm " + " ".join(fmt_ratio(x) for x in s["storm_vs_c_per_round"])
                       if "storm_vs_c_per_round" in s else ""))
    disturbed = [f"{LABELS[n]} {phase}" for rnd in rounds for n, r in rnd["results"].items()
                 for phase in ("pingpong", "storm") if phase in r and is_disturbed(r[phase])]
    if disturbed:
        say(f"\nwarning: {len(disturbed)} measurement(s) marked * look disturbed: other processes used the "
            "servers' CPU, or neither the server nor the load client kept its CPU busy (other virtual machines, "
            "slow wake-ups). Absolute figures are then off; ratios hold up better but drift toward 1.0x "
            "when every server is starved alike: re-run on a quiet machine, with --rounds 3.")
    st = summary.get("socktools")
    say("\ntargets for socktools serve" + (" (medians over rounds)" if len(rounds) > 1 else ""))
    if st is None:
        say(f"  not measured: {report['skipped'].get('socktools', 'not selected with --only')}")
        return
    for key, text in (("pingpong_vs_c", "ping-pong vs C server"), ("pingpong_vs_uvloop", "ping-pong vs uvloop"),
                      ("storm_vs_c", "storm vs C server")):
        cmp, want = TARGETS[key]
        got = st.get(key)

        def ok(x: float) -> bool:
            return x >= want if cmp == ">=" else x > want
        verdict = "not measured" if got is None else ("met" if ok(got) else "MISSED")
        per = [x for x in st.get(key + "_per_round", []) if x is not None]
        if len(per) > 1 and len({ok(x) for x in per}) > 1:
            # The rounds disagree: say so, rather than let a median of noisy rounds decide alone.
            verdict += f" (met in {sum(map(ok, per))} of {len(per)} rounds)"
        say(f"  {text:<22} {fmt_ratio(got):>6}  (target {cmp} {want:.2f}x)  {verdict}")


def machine_info(place: Placement) -> dict:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"
    model = next((line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "gcc": gcc, "somaxconn": read("/proc/sys/net/core/somaxconn"),
            "tcp_max_syn_backlog": read("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            "ip_local_port_range": " ".join(read("/proc/sys/net/ipv4/ip_local_port_range").split()),
            "tcp_tw_reuse": read("/proc/sys/net/ipv4/tcp_tw_reuse"),
            "loadavg_at_start": read("/proc/loadavg").split()[:3], "pinning": place.note}


# ------------------------------------------------------------------ main
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_serve.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured ping-pong seconds per server and round (5)")
    p.add_argument("--slice", type=float, default=1.0, help="length of one interleaved ping-pong slice, seconds (1)")
    p.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before a server's first slice (1)")
    p.add_argument("--conns", type=int, default=100, help="ping-pong connections (100)")
    p.add_argument("--size", type=int, default=64, help="ping-pong message size in bytes (64)")
    p.add_argument("--rounds", type=int, default=3,
                   help="repeat everything N times, reversing the order each time (3: a median needs more than one)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these servers, comma-separated or repeated: {', '.join(ALL_SERVERS)} "
                        "(default: all but careful and mapbatch; ratios need c)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=COMMAND",
                   help="also measure your own echo server: COMMAND must listen on 127.0.0.1 on a free port and "
                        "print 'listening on HOST:PORT' as its first line; {backlog} in it becomes --backlog "
                        "(repeatable)")
    p.add_argument("--idle", type=float, default=2.0, help="idle-check seconds, 0 to skip (2)")
    p.add_argument("--storm", action=argparse.BooleanOptionalAction, default=True,
                   help="run the connection storm (on)")
    p.add_argument("--storm-conns", type=int, default=5000, help="connections per storm (5000)")
    p.add_argument("--storm-parallel", type=int, default=500, help="storm connections in flight at most (500)")
    p.add_argument("--storm-passes", type=int, default=2, help="storms per server and round, interleaved (2)")
    p.add_argument("--backlog", type=int, default=4096, help="listen backlog of every server (4096)")
    p.add_argument("--server-cpu", type=int, help="CPU for the servers (default: first allowed)")
    p.add_argument("--load-cpu", type=int, help="CPU for the load client (default: second allowed)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout; the table goes to stderr")
    opts = p.parse_args(argv)
    only = [n.strip() for item in opts.only for n in item.split(",") if n.strip()]
    for n in only:
        if n not in ALL_SERVERS:
            p.error(f"--only: unknown server {n!r} (choose from {', '.join(ALL_SERVERS)})")
    opts.extra = {}
    for item in opts.add:
        name, eq, cmd = item.partition("=")
        if not eq or not name.isidentifier() or not cmd.strip() or name in ALL_SERVERS:
            p.error(f"--add: expected NAME=COMMAND with a new NAME, got {item!r}")
        opts.extra[name] = shlex.split(cmd.replace("{backlog}", str(opts.backlog)))
    opts.only = (only or list(DEFAULT_SERVERS)) + list(opts.extra)
    for name in ("duration", "slice", "conns", "size", "rounds", "storm_conns", "storm_parallel", "storm_passes",
                 "backlog"):
        if getattr(opts, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if opts.warmup < 0 or opts.idle < 0:
        p.error("--warmup and --idle must be 0 or more")
    return opts


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    global REPORT_TO_STDERR
    opts = parse_args(argv)
    REPORT_TO_STDERR = opts.json
    # Both stop us through KeyboardInterrupt, so the finally below stops the servers. SIGINT is
    # set explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    servers: dict[str, RunningServer] = {}
    try:
        exes = build_c_programs()
        place = choose_cpus(opts.server_cpu, opts.load_cpu)
        if place.load_cpu is not None:
            os.sched_setaffinity(0, {place.load_cpu})  # our own bookkeeping stays off the servers' CPU
        cmds, skipped = server_commands(opts.backlog, exes)
        info = machine_info(place)
        cmds.update({name: (argv, dict(os.environ)) for name, argv in opts.extra.items()})
        LABELS.update({name: name for name in opts.extra})
        wanted = [n for n in (*ALL_SERVERS, *opts.extra) if n in opts.only]
        with tempfile.TemporaryDirectory(prefix="bench_serve.") as tmp:
            for name in wanted:
                if name in cmds:
                    try:
                        servers[name] = RunningServer(name, *cmds[name], place.server_cpu, Path(tmp))
                    except BenchError as exc:
                        skipped[name] = str(exc)
            names = [n for n in wanted if n in servers]
            if not names:
                raise BenchError("no server could be started: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            per_round = len(names) * (opts.duration + (opts.duration / opts.slice) * (SLICE_WARMUP + 0.05)
                                      + (opts.storm_passes * 0.6 if opts.storm else 0))
            estimate = per_round * opts.rounds + len(names) * (opts.warmup + opts.idle + 0.5)
            say(f"bench_serve: {opts.conns} conns x {opts.size} B ping-pong, {opts.duration:g} s per server and "
                f"round in {opts.slice:g} s slices (+{opts.warmup:g} s warm-up); {place.note}")
            say(f"  backlog {opts.backlog} for all (net.core.somaxconn {info['somaxconn']}, tcp_max_syn_backlog "
                f"{info['tcp_max_syn_backlog']})" + (f"; storm {opts.storm_conns} conns, {opts.storm_parallel} in "
                                                     f"flight, {opts.storm_passes} per server" if opts.storm else ""))
            say(f"  {info['cpu']}, {info['cpus']} CPUs, kernel {info['kernel']}, Python {info['python']}, "
                f"gcc {info['gcc']}; load average {' '.join(info['loadavg_at_start'])}; about {estimate:.0f} s")
            for name, why in skipped.items():
                if name.split()[0] in wanted:
                    say(f"  note: {name}: {why}")
            if "c" not in names:
                say("  note: the C server is not in this run, so there are no ratios")
            report = {"machine": info, "config": vars(opts), "skipped": skipped, "rounds": []}
            warmed: set = set()
            for r in range(opts.rounds):
                log(f"  round {r + 1}/{opts.rounds} ...")
                report["rounds"].append(run_round(r, names, servers, opts, place, exes["epoll_echo_client"], warmed))
                print_round(report["rounds"][-1])
            for name in names:
                if servers[name].proc.poll() is not None:
                    raise BenchError(f"{name} died during the run: {servers[name].tail()}")
            report["summary"] = summarize(report["rounds"], names)
            print_summary(report)
            for name in names:
                servers[name].stop()
            report["stopped_gracefully"] = {n: servers[n].stopped_gracefully for n in names}
            ungraceful = [n for n, ok in report["stopped_gracefully"].items() if not ok]
            if ungraceful:
                say(f"\nnote: did not exit 0 within 5 s of SIGTERM (then killed): {', '.join(ungraceful)}")
            report["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
            say(f"\nload average at end {' '.join(report['machine']['loadavg_at_end'])} (at start: "
                f"{' '.join(info['loadavg_at_start'])}; this run itself adds up to 2)")
            if opts.json:
                print(json.dumps(report, indent=1))
            return 0
    except BenchError as exc:
        log(f"bench_serve: {exc}")
        return 1
    except KeyboardInterrupt:
        log("bench_serve: interrupted")
        return 130
    finally:
        for srv in servers.values():
            srv.stop()


if __name__ == "__main__":
    sys.exit(main())

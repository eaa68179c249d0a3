"""``socktools sockets`` against ``ss -tan`` on a machine with 10,000 TCP sockets.

Opens N loopback sockets in this process (one listener, N/2 connected pairs: each
pair is a client end and the server end accept() returned), then times the real
commands as a user runs them, alternating so that both see the same machine:

* ``socktools sockets``              vs ``ss -tan``   (the one-shot table, default columns: the
  fast road of socktools.sockets.plain, which never imports click)
* ``socktools sockets --processes``  vs ``ss -tanp``  (with owners: walks /proc/*/fd)

Each figure is the median wall time of ``--runs`` runs (output sent to /dev/null),
with the minimum beside it.  Loopback only; every socket is closed at the end.
Nothing here asserts a speed: the target (within 3x of ss) is read off the ratio.

    python benchmarks/bench_sockets.py                  # 10,000 sockets, 7 runs each
    python benchmarks/bench_sockets.py --sockets 1000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

# Each pair costs two descriptors here; keep this many spare for Python, pipes and the children.
_SPARE_FDS = 64


def _socktools_argv() -> list[str]:
    """The installed console script beside this Python, else ``python -m socktools``."""
    script = os.path.join(os.path.dirname(sys.executable), "socktools")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "socktools"]


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"need {needed} descriptors but the hard limit (ulimit -Hn) is {hard}; "
                 f"use --sockets {max(2, (hard - _SPARE_FDS) // 2 * 2)}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_pairs(n_sockets: int) -> list[socket.socket]:
    """One listener and n_sockets/2 connected loopback pairs (ESTABLISHED both ends)."""
    pairs = n_sockets // 2
    lsock = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = lsock.getsockname()[1]
    out = [lsock]
    done = 0
    while done < pairs:
        # Connect a batch, then accept it: the backlog (4096, capped by somaxconn) holds the batch.
        batch = min(512, pairs - done)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(batch)]
        out.extend(clients)
        out.extend(lsock.accept()[0] for _ in range(batch))
        done += batch
    return out


# Users' installs have their bytecode cached (pip compiles at install time).  A shell that sets
# PYTHONDONTWRITEBYTECODE would make every timed run recompile socktools from source, so the
# children run without it; the uncounted warm-up run writes the cache.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_once(argv, env=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one run of ``argv``.

    CPU time is reported beside wall time because this machine is shared: other
    people's load stretches wall time far more than it stretches CPU time.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env or CHILD_ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=10_000, help="sockets to open (default 10000)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each command (default 7)")
    ap.add_argument("--no-processes", action="store_true", help="skip the --processes / ss -p pair")
    args = ap.parse_args()
    if not shutil.which("ss"):
        sys.exit("ss not found (apt-get install iproute2)")
    _raise_nofile(args.sockets + _SPARE_FDS)
    tool = _socktools_argv()
    cases = [("socktools sockets", tool + ["sockets"], "ss -tan", ["ss", "-tan"])]
    # The floors: the interpreter and site alone (under the plain table, which skips click), and
    # with the click switchboard imported (under every other command); no socket read at all.
    start = [sys.executable, "-c", "pass"]
    floor = [sys.executable, "-c", "import socktools.cli"]
    # The same command with `python -S`: no site-packages .pth start-up hooks (an environment
    # may add its own: a CA-bundle hook, an editable-install finder), the packages found
    # through PYTHONPATH instead.  What a clean install starts like; printed as a second pair.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lean_env = dict(CHILD_ENV, PYTHONPATH=os.pathsep.join(
        [repo] + [p for p in sys.path if p.endswith("site-packages")]))
    lean = ([sys.executable, "-S", "-m", "socktools", "sockets"], lean_env)
    if "PYTHONDONTWRITEBYTECODE" in os.environ:
        print("note: PYTHONDONTWRITEBYTECODE is set here; the timed runs go without it, "
              "with bytecode cached as after a pip install")
    if not args.no_processes:
        cases.append(("socktools sockets --processes", tool + ["sockets", "--processes"],
                      "ss -tanp", ["ss", "-tanp"]))
    socks = open_pairs(args.sockets)
    try:
        rows = subprocess.run(tool + ["sockets"], capture_output=True, text=True, check=True,
                              env=CHILD_ENV).stdout
        time_once(floor)                            # writes the bytecode cache, uncounted
        print(f"{len(socks) - 1} loopback sockets open (+1 listener); the table has "
              f"{rows.count(chr(10)) - 1} rows; {args.runs} runs each, alternating; "
              f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print(f"{'':<32} {'wall median':>12} {'wall min':>9} {'CPU median':>11} {'CPU min':>8}")
        for ours_name, ours, ss_name, ss in cases:
            time_once(ours), time_once(ss)          # warm the page cache, uncounted
            first = ours_name == "socktools sockets"
            if first:
                time_once(*lean)
            a, b, f, lean_runs, bare = [], [], [], [], []
            for _ in range(args.runs):
                a.append(time_once(ours))
                b.append(time_once(ss))
                if first:
                    f.append(time_once(floor))
                    bare.append(time_once(start))
                    lean_runs.append(time_once(*lean))
            rows = [(ours_name, a), (ss_name, b)]
            if first:
                rows += [("(python start alone)", bare), ("(python + click import alone)", f),
                         ("socktools sockets, python -S", lean_runs)]
            for name, runs in rows:
                wall = [w for w, _ in runs]
                cpu = [c for _, c in runs]
                print(f"{name:<32} {statistics.median(wall) * 1000:9.1f} ms {min(wall) * 1000:6.1f} ms "
                      f"{statistics.median(cpu) * 1000:8.1f} ms {min(cpu) * 1000:5.1f} ms")
            wa = statistics.median(w for w, _ in a) / statistics.median(w for w, _ in b)
            ca = statistics.median(c for _, c in a) / statistics.median(c for _, c in b)
            print(f"{'ratio':<32} {wa:9.2f}x wall {ca:14.2f}x CPU   (target: within 3x)")
            if first:
                wl = statistics.median(w for w, _ in lean_runs) / statistics.median(w for w, _ in b)
                cl = statistics.median(x for _, x in lean_runs) / statistics.median(x for _, x in b)
                print(f"{'ratio, python -S':<32} {wl:9.2f}x wall {cl:14.2f}x CPU")
    finally:
        for s in socks:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

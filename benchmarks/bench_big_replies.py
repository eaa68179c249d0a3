#!/usr/bin/env python3
"""Peak memory and time of `request` and `flood` reading one big reply (issue 21, items 2-4).

A loopback server in this script answers the first request of each connection
with one big reply, streamed from a 1 MiB block so the server itself stays
small, and every later request with a small one:

* ``bulk``          -- a Redis bulk string ``$N`` of N bytes (``--mode redis``);
* ``http``          -- an HTTP 200 with a Content-Length body of N bytes (``--mode http``);
* ``http-chunked``  -- the same body, chunked in 64 KiB chunks;
* ``array``         -- a RESP array of N integers ``:12345`` (``--mode redis``).

Each client runs as its own process: ``request`` prints the reply (to
/dev/null) and its time is the wall time of the whole command, start-up
included (~0.2-0.4 s here); ``flood --conns 1 --workers 1 --requests 1``
reports its first-reply time (the big reply confirms the connection) in its
JSON.  Peak RSS is ``ru_maxrss`` from ``wait4`` of that process: the largest
of it and the children it waited for (flood's worker).

``--before DIR`` runs the same clients from another checkout (e.g. /work/main,
today's code) side by side.  Sizes grow until a run takes longer than
``--budget`` seconds; the larger sizes of that client are then skipped ("-").

Usage:
  python benchmarks/bench_big_replies.py                       # 10-100 MB, 100k-1M elements
  python benchmarks/bench_big_replies.py --before /work/main   # and today's figures beside them
  python benchmarks/bench_big_replies.py --max-mb 1000 --only bulk,http
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 1 << 20
MB = 1_000_000
#: Body sizes (MB) up to --max-mb; the default stops at 100 MB to keep the run short on a
#: shared machine, --max-mb 1000 adds 250, 500 and 1,000 MB.
SIZES_MB = (10, 20, 40, 100, 250, 500, 1000)
#: Array lengths, up to the parser's cap (MAX_ELEMENTS, 1,048,576).
ELEMENTS = (100_000, 200_000, 400_000, 1_000_000)
#: A run is stopped after this many times the budget, whatever it is doing.
HARD_FACTOR = 4


# ----------------------------------------------------------------- the replies

def bulk(n: int):
    yield b"$%d\r\n" % n
    yield from _body(n)
    yield b"\r\n"


def http(n: int):
    yield b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % n
    yield from _body(n)


def http_chunked(n: int):
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    size = 64 << 10
    whole = b"%x\r\n%s\r\n" % (size, b"x" * size)
    full, rest = divmod(n, size)
    group = whole * 16
    for _ in range(full // 16):
        yield group
    for _ in range(full % 16):
        yield whole
    if rest:
        yield b"%x\r\n%s\r\n" % (rest, b"x" * rest)
    yield b"0\r\n\r\n"


def array(n: int):
    yield b"*%d\r\n" % n
    per = 100_000
    block = b":12345\r\n" * per
    for _ in range(n // per):
        yield block
    yield b":12345\r\n" * (n % per)


def _body(n: int):
    block = b"x" * BLOCK
    full, rest = divmod(n, BLOCK)
    for _ in range(full):
        yield block
    yield b"x" * rest


#: case -> (reply generator, size unit, the small reply to later requests, client --mode)
CASES = {
    "bulk": (bulk, "MB", b"+OK\r\n", "redis"),
    "http": (http, "MB", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "http"),
    "http-chunked": (http_chunked, "MB", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "http"),
    "array": (array, "elements", b"+OK\r\n", "redis"),
}


class BigReplyServer:
    """Loopback only.  The first request of each connection gets the big reply, later ones
    the small one; a thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.case = ("bulk", 0)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn, self.case), daemon=True).start()

    def _serve(self, conn: socket.socket, case: tuple) -> None:
        make, _, small, _ = CASES[case[0]]
        first = True
        with conn:
            conn.settimeout(None)
            try:
                while conn.recv(65536):
                    for piece in (make(case[1]) if first else (small,)):
                        conn.sendall(piece)
                    first = False
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


# ----------------------------------------------------------------- the clients

def run_client(code: Path, tool: str, mode: str, port: int, hard: float):
    """(seconds, peak RSS bytes, note) of one client run; seconds None when it failed."""
    base = [sys.executable, "-m", "socktools", tool, "--mode", mode, "--port", str(port)]
    if tool == "request":
        args = base + ["--timeout", f"{hard:g}s"]
    else:
        args = base + ["--conns", "1", "--workers", "1", "--requests", "1", "--json",
                       "--connect-timeout", f"{hard:g}s"]
    env = dict(os.environ, PYTHONPATH=str(code))
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=code, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL if tool == "request" else subprocess.PIPE,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(hard, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read() if proc.stdout else b""
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    peak = usage.ru_maxrss * 1024
    if proc.returncode < 0:
        return None, peak, f"killed after {hard:g} s"
    if proc.returncode != 0:
        return None, peak, (err.decode(errors="replace").strip().splitlines() or ["exit %d" % proc.returncode])[-1]
    if tool == "request":
        return wall, peak, ""
    doc = json.loads(out)
    first = doc.get("first_reply_us") or {}
    return (first.get("max", 0) / 1e6 if first else None), peak, "" if first else "no first reply"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="another checkout to run side by side (today's code)")
    ap.add_argument("--max-mb", type=int, default=100, help="largest body in MB (default 100; up to 1000)")
    ap.add_argument("--max-elements", type=int, default=1_000_000, help="largest array (default 1,000,000)")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="seconds: a client whose run took longer skips the larger sizes (default 30)")
    ap.add_argument("--only", default="bulk,http,http-chunked,array", help="cases, comma-separated")
    ap.add_argument("--tools", default="request,flood", help="clients, comma-separated")
    opts = ap.parse_args()
    codes = [("now", ROOT)] + ([("before", opts.before.resolve())] if opts.before else [])
    tools = opts.tools.split(",")
    server = BigReplyServer()
    print(f"big replies over loopback; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; python {sys.version.split()[0]}")
    print("request: wall time of the command (start-up included); flood: its first-reply time; "
          "peak: ru_maxrss of the client")
    for code_name, code in codes:
        print(f"  {code_name:6s} = {code}")
    try:
        for case in opts.only.split(","):
            make, unit, _, mode = CASES[case]
            sizes = ([s * MB for s in SIZES_MB if s <= opts.max_mb] if unit == "MB"
                     else [n for n in ELEMENTS if n <= opts.max_elements])
            print(f"\n{case} (--mode {mode})")
            header = f"  {'size':>14s}"
            for tool in tools:
                for code_name, _ in codes:
                    header += f"  {tool + ' ' + code_name:>16s} {'peak':>8s} {'MB/s':>7s}"
            print(header)
            over = set()
            for size in sizes:
                label = f"{size / MB:,.0f} MB" if unit == "MB" else f"{size:,} el."
                row = f"  {label:>14s}"
                notes = []
                for tool in tools:
                    for code_name, code in codes:
                        if (tool, code_name) in over:
                            row += f"  {'-':>16s} {'':>8s} {'':>7s}"
                            continue
                        server.case = (case, size)
                        secs, peak, note = run_client(code, tool, mode, server.port, opts.budget * HARD_FACTOR)
                        wire = sum(len(p) for p in make(size)) if unit != "MB" else size
                        if secs is None:
                            row += f"  {'failed':>16s} {peak / MB:7.0f}M {'':>7s}"
                            notes.append(f"{tool} {code_name}: {note}")
                            over.add((tool, code_name))
                            continue
                        row += f"  {secs:15.2f}s {peak / MB:7.0f}M {wire / MB / secs:7.1f}"
                        if secs > opts.budget:
                            over.add((tool, code_name))
                print(row, flush=True)
                for n in notes:
                    print(f"      {n}")
    finally:
        server.stop()
    print("\n'-': skipped, the previous size took longer than the budget "
          f"({opts.budget:g} s); MB/s: reply bytes on the wire / time")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Can ``socktools sniff`` keep up?  Paced loopback traffic, captured by sniff and by tcpdump.

    sudo .venv/bin/python benchmarks/bench_sniff.py                  # ~1 minute
    sudo .venv/bin/python benchmarks/bench_sniff.py --rates 20000 --seconds 5
    sudo .venv/bin/python benchmarks/bench_sniff.py --tools sniff,tcpdump,scapy --json
    sudo .venv/bin/python benchmarks/bench_sniff.py --buffer-mib 2 --rates 20000,80000,max

For each packet rate (default 2k, 5k, 10k, 20k, 40k packets/s; ``max`` sends
unpaced, as fast as one Python sender can: the highest rate this machine offers)
and each tool (names for --tools):
  sniff    python -m socktools sniff --port P   (lines to a file, summary parsed;
           the default backend, a TPACKET_V3 ring)
  sniff-socket  the same with --backend socket (one recvmsg per packet, as before
           the ring), to see what the ring buys
  tcpdump  tcpdump -n -i lo tcp port P          (lines to a file; skipped if absent)
  scapy    scapy's sniff() on an L2Socket with the same filter, printing
           pkt.summary() per packet, as a scapy script would (needs libpcap)
the tool starts and signals it is listening; then one loopback connection
carries --seconds of small (64-byte, TCP_NODELAY) segments from client to
server.  The sender is paced on the connection's own packet count — the sum
of tcpi_segs_out of both sockets, which includes the receiver's ACKs — so
"offered" is exactly the number of packets that crossed loopback on that
port.  After the traffic the connection stays open (no FIN packets to muddy
the count); the tool gets time to drain its buffer (until its output stops
growing), is stopped with SIGINT, and reports:
  captured  packets it printed (sniff/tcpdump: their own count)
  dropped   packets the kernel dropped because the socket buffer was full
            (PACKET_STATISTICS; for scapy, which reports none, offered - captured)
Targets: no drops at 20,000 packets/s for sniff; with --buffer-mib, sniff drops
nothing wherever tcpdump drops nothing.  Buffers are each tool's default (sniff
64 MiB, tcpdump 2 MiB, scapy 64 KiB); --buffer-mib gives tcpdump (-B) and sniff
(--buffer) the same size instead.

Loopback only; every run is bounded by --seconds plus a drain limit.
Needs root (packet sockets).  Figures on a busy 2-core machine are indicative.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"          # loopback only, by rule
TCP_INFO_SEGS_OUT = 136     # offset of tcpi_segs_out in struct tcp_info (Linux >= 4.2)
DRAIN_LIMIT = 20.0          # seconds a tool may take to catch up after the traffic
PAYLOAD = b"x" * 64
ALL_TOOLS = ("sniff", "sniff-socket", "tcpdump", "scapy")
MAX = 0                     # --rates "max": unpaced

_SCAPY_SCRIPT = r"""
import logging, signal, sys
logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.all import sniff, conf
from scapy.arch.linux import L2Socket
sock = L2Socket(iface="lo", filter="tcp port %d")   # L2Socket skips loopback's outgoing copies
n = 0
def show(p):
    global n
    n += 1
    sys.stdout.write(p.summary() + "\n")
print("ready", file=sys.stderr, flush=True)
signal.signal(signal.SIGINT, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
try:
    sniff(opened_socket=sock, prn=show, store=False)
except KeyboardInterrupt:
    pass
sys.stdout.flush()
print("captured %%d" %% n, file=sys.stderr, flush=True)
"""


def segs_out(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCP_INFO_SEGS_OUT)[0]


class Tool:
    """A capture tool in a child process: start, wait until listening, stop, parse."""

    def __init__(self, name: str, port: int, workdir: str, buffer_mib: Optional[int]) -> None:
        self.name = name
        self.out_path = os.path.join(workdir, f"{name}-{port}.out")
        self.err_lines: list[str] = []
        self._ready = threading.Event()
        if name.startswith("sniff"):
            cmd = [sys.executable, "-m", "socktools", "sniff", "--port", str(port)]
            if name == "sniff-socket":
                cmd += ["--backend", "socket"]
            if buffer_mib:
                cmd += ["--buffer", f"{buffer_mib}M"]
            marker = "Capturing on"
        elif name == "tcpdump":
            cmd = ["tcpdump", "-n", "-i", "lo", "tcp", "port", str(port)]
            if buffer_mib:
                cmd[1:1] = ["-B", str(buffer_mib * 1024)]
            marker = "listening on"
        else:
            cmd = [sys.executable, "-c", _SCAPY_SCRIPT % port]
            marker = "ready"
        self.cmd = cmd
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.PIPE, cwd=ROOT,
                                     start_new_session=True)
        self._marker = marker
        self._reader = threading.Thread(target=self._read_err, daemon=True)
        self._reader.start()

    def _read_err(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.err_lines.append(line)
            if self._marker in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {' | '.join(self.err_lines[-5:])}")
        time.sleep(0.2)   # tcpdump prints "listening" just before its filter is live

    def wait_drained(self) -> float:
        """Wait until the output file stops growing (the tool caught up), bounded.

        Returns the lag: seconds from the call (the end of the traffic) to the
        last growth of the output, i.e. how far behind real time the tool was.
        """
        start = time.monotonic()
        end = start + DRAIN_LIMIT
        last, last_change = -1, start
        while time.monotonic() < end and self.proc.poll() is None:
            size = os.path.getsize(self.out_path)
            now = time.monotonic()
            if size != last:
                last, last_change = size, now
            elif now - last_change >= 0.75:
                break
            time.sleep(0.05)
        return max(0.0, last_change - start)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self._out.close()

    def result(self, offered: int) -> dict:
        text = "\n".join(self.err_lines)
        out: dict = {"tool": self.name, "offered": offered, "captured": None, "dropped": None}
        if self.name.startswith("sniff"):
            with open(self.out_path, "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace")
            m = re.search(r"--- ([\d,]+) packets? captured", tail)
            k = re.search(r"kernel: ([\d,]+) received by filter, ([\d,]+) (?:dropped|DROPPED)", tail)
            if m:
                out["captured"] = int(m.group(1).replace(",", ""))
            if k:
                out["received"] = int(k.group(1).replace(",", ""))
                out["dropped"] = int(k.group(2).replace(",", ""))
        elif self.name == "tcpdump":
            for key, pat in (("captured", r"(\d+) packets? captured"),
                             ("received", r"(\d+) packets? received by filter"),
                             ("dropped", r"(\d+) packets? dropped by kernel")):
                m = re.search(pat, text)
                if m:
                    out[key] = int(m.group(1))
        else:
            m = re.search(r"captured (\d+)", text)
            if m:
                out["captured"] = int(m.group(1))
                out["dropped"] = max(0, offered - out["captured"])
                out["dropped_is_derived"] = True
        if out["captured"] is None:
            out["error"] = " | ".join(self.err_lines[-3:]) or "no statistics"
        return out


def offer(listener: socket.socket, rate: int, seconds: float) -> tuple[int, float, list]:
    """Send paced 64-byte segments; returns (packets offered, seconds taken, open sockets)."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    buf = bytearray(1 << 16)
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        deficit = 256 if rate == MAX else \
            int(rate * (now - start)) - segs_out(client) - segs_out(server)
        for _ in range(min(deficit, 256)):
            try:
                client.send(PAYLOAD)
            except BlockingIOError:
                break
        try:
            while server.recv_into(buf):
                pass
        except BlockingIOError:
            pass
        if rate != MAX:
            time.sleep(0.0005)
    taken = time.monotonic() - start
    time.sleep(0.3)   # let delayed ACKs go out before counting
    try:
        while server.recv_into(buf):
            pass
    except BlockingIOError:
        pass
    time.sleep(0.1)
    # +1: the SYN-ACK is sent by the listener's request socket before the accepted
    # socket exists, so neither socket's tcpi_segs_out counts it.
    return segs_out(client) + segs_out(server) + 1, taken, [client, server]


def run_one(tool: str, rate: int, seconds: float, workdir: str, buffer_mib: Optional[int]) -> dict:
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    t = Tool(tool, port, workdir, buffer_mib)
    socks: list = []
    try:
        t.wait_ready()
        offered, taken, socks = offer(listener, rate, seconds)
        lag = t.wait_drained() + 0.4   # offer() already waited 0.4 s after the traffic
    finally:
        t.stop()
        for s in socks + [listener]:
            s.close()
    res = t.result(offered)
    res.update(rate=rate, achieved=round(offered / taken) if taken else 0, lag=round(lag, 2))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="2000,5000,10000,20000,40000",
                    help="packet rates to offer, packets/s (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=3.0, help="traffic per run (default: 3)")
    ap.add_argument("--tools", default="sniff,tcpdump",
                    help="which captures, of sniff,tcpdump,scapy (default: %(default)s; scapy "
                         "runs only at rates up to --scapy-max)")
    ap.add_argument("--scapy-max", type=int, default=10000,
                    help="highest rate given to scapy (it only falls further behind above)")
    ap.add_argument("--buffer-mib", type=int, default=None,
                    help="same socket buffer for sniff and tcpdump (default: each tool's own)")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell (``&``), which ignores SIGINT: a Python
        # child would inherit that and never stop on the SIGINT that ends each run
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.geteuid() != 0:
        print("bench_sniff: needs root (packet sockets); run with sudo", file=sys.stderr)
        return 3
    try:
        rates = [MAX if r.strip() == "max" else int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        ap.error("--rates: packet rates (integers) or max")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r} (choose from {', '.join(ALL_TOOLS)})")
    if "tcpdump" in tools and not shutil.which("tcpdump"):
        print("bench_sniff: tcpdump not installed (apt-get install tcpdump); skipping it",
              file=sys.stderr)
        tools.remove("tcpdump")
    if "scapy" in tools and not ctypes.util.find_library("pcap"):
        print("bench_sniff: scapy's filter needs libpcap (apt-get install libpcap0.8); skipping scapy",
              file=sys.stderr)
        tools.remove("scapy")
    if args.seconds <= 0 or args.seconds > 30:
        ap.error("--seconds must be in (0, 30]")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_sniff.") as workdir:
        for rate in rates:
            for tool in tools:
                if tool == "scapy" and rate > args.scapy_max:
                    continue
                res = run_one(tool, rate, args.seconds, workdir, args.buffer_mib)
                results.append(res)
                if not args.json:
                    print(f"  {tool:<12} {_rate(rate):>6}/s offered {res['offered']:>7} "
                          f"(achieved {res['achieved']:,}/s) "
                          f"captured {res['captured']} dropped {res['dropped']} lag {res['lag']} s"
                          + (f"  ({res['error']})" if res.get("error") else ""),
                          file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"seconds": args.seconds, "results": results}, indent=2))
        return 0
    print(table(results, rates, tools, args.seconds))
    return 0


def table(results: list, rates: list, tools: list, seconds: float) -> str:
    by = {(r["tool"], r["rate"]): r for r in results}
    head = ["rate pkts/s"]
    for t in tools:
        head += [f"{t} offered", "captured", "dropped"]
    if "sniff" in tools:
        head.append("sniff lag s")
    head.insert(1, "achieved/s")
    rows = [head]
    for rate in rates:
        row = [_rate(rate)]
        achieved = [by[(t, rate)]["achieved"] for t in tools if (t, rate) in by]
        row.append(f"{min(achieved):,}-{max(achieved):,}" if achieved else "-")
        for t in tools:
            r = by.get((t, rate))
            if r is None:
                row += ["-", "-", "-"]
                continue
            dropped = "?" if r["dropped"] is None else f"{r['dropped']:,}"
            if r.get("dropped_is_derived"):
                dropped += "*"
            row += [f"{r['offered']:,}", "?" if r["captured"] is None else f"{r['captured']:,}", dropped]
        if "sniff" in tools:
            r = by.get(("sniff", rate))
            row.append(f"{r['lag']:.1f}" if r else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"sniff vs tcpdump, {seconds:g} s of paced loopback traffic per cell"]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    if "sniff" in tools:
        lines.append("  sniff lag: seconds after the traffic ended until sniff's output stopped "
                     "growing (0.4 = kept up in real time; the check starts 0.4 s after the traffic)")
    if any(r.get("dropped_is_derived") for r in results):
        lines.append("  * scapy reports no kernel drops: offered - captured")
    target = by.get(("sniff", 20000))
    if target and target["dropped"] is not None:
        ok = target["dropped"] == 0 and target["captured"] == target["offered"]
        lines.append(f"target (no drops at 20,000 packets/s): {'met' if ok else 'NOT met'}")
    if "sniff" in tools and "tcpdump" in tools:
        clean = [rate for rate in rates if by.get(("tcpdump", rate), {}).get("dropped") == 0]
        missed = [_rate(rate) for rate in clean if by.get(("sniff", rate), {}).get("dropped") != 0]
        if clean:
            lines.append("target (sniff drops 0 wherever tcpdump drops 0): " +
                         ("met" if not missed else f"NOT met at {', '.join(missed)}"))
    return "\n".join(lines)


def _rate(rate: int) -> str:
    return "max" if rate == MAX else f"{rate:,}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:   # the running tool was stopped by run_one's finally
        print("bench_sniff: interrupted", file=sys.stderr)
        sys.exit(130)

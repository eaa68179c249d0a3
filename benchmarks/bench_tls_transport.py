#!/usr/bin/env python3
"""Per-request client CPU of a small TLS request/reply on loopback: ``ssl.SSLObject`` +
``MemoryBIO`` against a non-blocking ``ssl.SSLSocket`` (and plaintext, for scale), in one run.

    python benchmarks/bench_tls_transport.py                    # 3 alternating rounds, ~20 s
    python benchmarks/bench_tls_transport.py --rounds 5 --requests 40000

Why: the I/O core (socktools/core/tls.py) carries TLS one of these two ways; flood's hot path
is one small request and one small reply per round trip, so the client's CPU per round trip is
the figure that decides (docs/tls.md has the figures and the choice).

How: a TLS echo server (asyncio, in its own process, pinned to the last CPU) on 127.0.0.1; the
client (this process, pinned to CPU 0) keeps --conns connections in a closed loop on epoll:
each sends --size bytes, reads the echo, sends again, the way flood's exchange loop does.
Each transport runs --requests round trips per round; the transports alternate (A B C, C B A,
...) so drift on a shared machine falls on each alike.  CPU is this process's
``time.process_time()`` over the timed loop (user + system), divided by round trips.  The
handshakes happen before the timed loop and are not counted.  Needs trustme (a test
dependency) for the certificates.  Loopback only; bounded by --requests and --timeout.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"  # loopback only, by rule

SERVER = r"""
import asyncio, ssl, sys
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, ssl=ctx)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)   # until the parent closes stdin
asyncio.run(main())
"""


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def plain_conns(port: int, n: int) -> list:
    out = []
    for _ in range(n):
        s = socket.create_connection((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out.append(s)
    return out


def run_sslsocket(ctx, port: int, conns: int, size: int, total: int) -> float:
    socks = []
    for raw in plain_conns(port, conns):
        s = ctx.wrap_socket(raw, server_hostname=HOST)   # blocking handshake, not timed
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    req = b"x" * size
    got = dict.fromkeys(by_fd, 0)
    done = 0
    cpu = time.process_time()
    for s in socks:
        s.send(req)
    while done < total:
        for fd, _ in ep.poll():
            s = by_fd[fd]
            while True:                      # OpenSSL may hold decrypted bytes: drain them
                try:
                    data = s.recv(65536)
                except ssl.SSLWantReadError:
                    break
                got[fd] += len(data)
                if got[fd] >= size:
                    got[fd] = 0
                    done += 1
                    s.send(req)
                if not s.pending():
                    break
    cpu = time.process_time() - cpu
    ep.close()
    for s in socks:
        s.close()
    return cpu / done


def run_sslobject(ctx, port: int, conns: int, size: int, total: int) -> float:
    objs = {}
    for raw in plain_conns(port, conns):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=HOST)
        while True:                          # blocking handshake, not timed
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    raw.sendall(out.read())
                inc.write(raw.recv(65536))
        if out.pending:
            raw.sendall(out.read())
        raw.setblocking(False)
        objs[raw.fileno()] = (raw, obj, inc, out)
    ep = select.epoll()
    for fd in objs:
        ep.register(fd, select.EPOLLIN)
    req = b"x" * size
    got = dict.fromkeys(objs, 0)
    done = 0
    read, write = os.read, os.write
    cpu = time.process_time()
    for fd, (raw, obj, inc, out) in objs.items():
        obj.write(req)
        write(fd, out.read())
    while done < total:
        for fd, _ in ep.poll():
            raw, obj, inc, out = objs[fd]
            try:
                wire = read(fd, 65536)
            except BlockingIOError:
                continue
            inc.write(wire)
            while True:
                try:
                    data = obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                got[fd] += len(data)
                if got[fd] >= size:
                    got[fd] = 0
                    done += 1
                    obj.write(req)
                    write(fd, out.read())
    cpu = time.process_time() - cpu
    ep.close()
    for raw, *_ in objs.values():
        raw.close()
    return cpu / done


def run_plain(port: int, conns: int, size: int, total: int) -> float:
    """The same loop without TLS, against the same kind of server on a plain port: for scale."""
    socks = {s.fileno(): s for s in plain_conns(port, conns)}
    ep = select.epoll()
    for fd in socks:
        ep.register(fd, select.EPOLLIN)
    req = b"x" * size
    got = dict.fromkeys(socks, 0)
    done = 0
    read, write = os.read, os.write
    cpu = time.process_time()
    for fd in socks:
        write(fd, req)
    while done < total:
        for fd, _ in ep.poll():
            got[fd] += len(read(fd, 65536))
            if got[fd] >= size:
                got[fd] = 0
                done += 1
                write(fd, req)
    cpu = time.process_time() - cpu
    ep.close()
    for s in socks.values():
        s.close()
    return cpu / done


def start_server(args: list, cpu: int) -> tuple:
    def preexec():
        if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {cpu})
    proc = subprocess.Popen([sys.executable, "-c", SERVER, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, preexec_fn=preexec)
    port = int(proc.stdout.readline())
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000, help="round trips per transport per round")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tls-max", choices=["1.2", "1.3"], default="1.3")
    args = ap.parse_args()
    try:
        import trustme
    except ImportError:
        print("needs trustme (pip install trustme)", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST)
    cert, key, cafile = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(cafile))
    plain_server = r"""
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""
    tls_proc, tls_port = start_server([str(cert), str(key)], cpus[-1])
    plain_proc = subprocess.Popen([sys.executable, "-c", plain_server], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {cpus[-1]})
                                  if hasattr(os, "sched_setaffinity") else None)
    plain_port = int(plain_proc.stdout.readline())
    pin(cpus[0])
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if args.tls_max == "1.3" else ssl.TLSVersion.TLSv1_2
    runs = {"SSLSocket": lambda: run_sslsocket(ctx, tls_port, args.conns, args.size, args.requests),
            "SSLObject+MemoryBIO": lambda: run_sslobject(ctx, tls_port, args.conns, args.size, args.requests),
            "plaintext": lambda: run_plain(plain_port, args.conns, args.size, args.requests)}
    figures: dict = {name: [] for name in runs}
    try:
        for name in runs:        # warm-up, not counted
            runs[name]()
        order = list(runs)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                figures[name].append(runs[name]() * 1e6)
    finally:
        for proc in (tls_proc, plain_proc):
            proc.stdin.close()
            proc.terminate()
            proc.wait(5)
    print(f"client CPU per round trip, {args.size}-byte request and echo, {args.conns} connections, "
          f"TLS max {args.tls_max}, {args.requests} round trips x {args.rounds} rounds "
          f"(client on CPU {cpus[0]}, server on CPU {cpus[-1]})")
    base = statistics.median(figures["SSLSocket"])
    for name, vals in figures.items():
        med = statistics.median(vals)
        print(f"  {name:<20} median {med:6.2f} us   rounds: {' '.join(f'{v:.2f}' for v in vals)}"
              f"   ({med / base:.2f}x SSLSocket)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

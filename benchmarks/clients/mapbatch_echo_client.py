"""The least Python a closed-loop echo client can run per round trip: a yardstick.

    python benchmarks/clients/mapbatch_echo_client.py HOST PORT CONNS SIZE SECONDS

bench_flood_throughput.py runs it beside flood and the C client.  One
``epoll.poll()`` gives the answered connections; their reads run as one
``map(os.read, ...)``, the next requests as one ``map(os.write, ...)``, and
the only Python per round trip is what any latency-measuring client needs:
the round trip's latency into an HdrHistogram-shaped counts list (one clock
reading per poll).  No checks of the answers, no errors handled, no phases,
no statistics beyond a count: a bound on what a Python client reaches on this
machine, not a tool.  Prints one JSON line like the C client:
{"per_second": ..., "round_trips": ...}.  Loopback only.
"""

import json
import os
import select
import socket
import sys
import time
from itertools import repeat
from operator import itemgetter


def main():
    host, port, conns, size, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
        float(sys.argv[5])
    if not host.startswith("127."):
        sys.exit("mapbatch_echo_client: loopback (127.x.y.z) only")
    ep = select.epoll()
    payload = b"x" * size
    socks, sent = {}, {}
    counts = [0] * (1 << 16)
    for _ in range(conns):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    clock, read, write, poll = time.perf_counter_ns, os.read, os.write, ep.poll
    first, sizes, payloads = itemgetter(0), repeat(size + 1), repeat(payload)
    for fd in socks:
        sent[fd] = clock()
        write(fd, payload)
    done = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        fds = list(map(first, poll(0.1, 1024)))
        if time.monotonic() >= end:
            break
        list(map(read, fds, sizes))
        now = clock()
        for fd in fds:
            value = now - sent[fd]
            shift = value.bit_length() - 11
            counts[((shift << 10) + (value >> shift) if shift > 0 else value) & 0xFFFF] += 1
            sent[fd] = now
        done += len(fds)
        list(map(write, fds, payloads))
    elapsed = time.monotonic() - start
    print(json.dumps({"per_second": done / elapsed, "round_trips": done}))


if __name__ == "__main__":
    main()

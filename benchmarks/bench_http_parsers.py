#!/usr/bin/env python3
"""h11 vs httptools on flood's HTTP load: one small keep-alive response after another.

The evidence behind ``socktools/wire/http.py``'s choice.  Each parser frames
the same nginx-like 200 response (six headers, a 3-byte body) N times on one
keep-alive connection, the way flood's parser does per reply:

* h11 -- the reference sans-I/O implementation: its state machine needs each
  request sent through it before the response can be read, and
  ``start_next_cycle`` after each exchange; that is its API's cost on this load;
* httptools (llhttp) -- ``feed_data`` with the three callbacks flood uses
  (message begin, headers complete, message complete);
* socktools.wire's HttpParser -- httptools plus flood's bookkeeping (status
  class tally, failure check): what a flood reply really costs.

Usage: python benchmarks/bench_http_parsers.py [--n 20000]
Needs h11 and httptools (pip install h11 httptools).  No sockets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 07:50:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


def bench_h11(n: int) -> float:
    import h11
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/", headers=[("Host", "127.0.0.1")])
    t = time.perf_counter()
    for _ in range(n):
        conn.send(request)
        conn.send(h11.EndOfMessage())
        conn.receive_data(RESPONSE)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass
        conn.start_next_cycle()
    return (time.perf_counter() - t) / n * 1e6


def bench_httptools(n: int) -> float:
    import httptools

    class Callbacks:
        done = 0

        def on_message_begin(self):
            pass

        def on_headers_complete(self):
            pass

        def on_message_complete(self):
            self.done += 1
    cb = Callbacks()
    parser = httptools.HttpResponseParser(cb)
    t = time.perf_counter()
    for _ in range(n):
        parser.feed_data(RESPONSE)
    elapsed = time.perf_counter() - t
    assert cb.done == n
    return elapsed / n * 1e6


def bench_wire(n: int) -> float:
    from socktools.wire.spec import WireSpec, build
    parser = build(WireSpec(mode="http")).parser()
    feed = parser.feed
    t = time.perf_counter()
    for _ in range(n):
        feed(RESPONSE)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="responses per parser")
    n = ap.parse_args().n
    h11_us, ht_us, wire_us = bench_h11(n), bench_httptools(n), bench_wire(n)
    print(f"h11                  {h11_us:8.2f} us/response")
    print(f"httptools (llhttp)   {ht_us:8.2f} us/response   ({h11_us / ht_us:.0f}x less than h11)")
    print(f"socktools.wire http  {wire_us:8.2f} us/response   (httptools + flood's bookkeeping)")


if __name__ == "__main__":
    main()

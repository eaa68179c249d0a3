#!/usr/bin/env python3
"""Fuzz the framed-protocol decoder and the answer path with mutated frames.

    python benchmarks/fuzz_decoder.py                     # 1,000,000 frames, ~1-2 minutes
    python benchmarks/fuzz_decoder.py --frames 100000 --seed 7

Each input is a valid frame (reference requests, keep-alive, UTF-16, pipelined
pairs, hostile seeds: punycode, lone surrogates, deep nesting, huge lengths)
with 1-4 random mutations (byte flips, inserts, deletes, splices of tokens such
as ``\\ud800``, ``"punycode"``, ``[[[[``).  It goes through a fresh
``protocol.Decoder``, fed in random chunks and sometimes followed by EOF;
every message that comes out goes through ``reference.respond`` and every
protocol error through ``protocol.error_response``, and each reply must decode
again.  Anything else that is raised, and any single input slower than
``--slow`` seconds, is a crash: printed with its input (first bytes, repr) and
counted.  Prints inputs/s, messages decoded, errors by kind and crashes
(target: 0).  Exit status 1 when any crash was found.

No sockets, no subprocesses: one CPU for the length of the run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from socktools import protocol  # noqa: E402
from socktools.reference import make_request, respond  # noqa: E402


def _frame(content: bytes, ctype: str, encoding: str) -> bytes:
    header = json.dumps({"byteorder": "little", "content-type": ctype, "content-encoding": encoding,
                         "content-length": len(content)}, ensure_ascii=False).encode()
    return len(header).to_bytes(2, "big") + header + content


SEEDS = [
    make_request("search", "morpheus"),
    make_request("search", "\U0001f436", keep_alive=True),
    make_request("binary", "hello"),
    make_request("search", "ring", keep_alive=True) + make_request("search", "x"),
    protocol.encode_json({"action": "search", "value": [1, 2.5, None, {"a": "é"}]}, encoding="utf-16"),
    protocol.encode_json({"action": "search", "value": "latin é"}, encoding="latin-1"),
    _frame(b'{"action": "search", "value": "\\ud800"}', "text/json", "utf-8"),
    _frame(b"a" * 200 + b"-" + b"a" * 200, "text/json", "punycode"),
    _frame(b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}", "text/json", "utf-8"),
    _frame(b"{}", "text/json", "utf-32-be"),
]
TOKENS = [b"\\ud800", b"\\udfff", b'"punycode"', b'"idna"', b"[[[[[[", b"\\u0000", b'"utf-16"',
          b"99999999999", b"-1", b"true", b"null", b'"keep-alive": true, ', b"\xff\xfe", b"\xed\xa0\x80"]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.35 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op < 0.55:
            b[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op < 0.75 and b:
            del b[pos:pos + rng.randint(1, 16)]
        else:
            b[pos:pos] = rng.choice(TOKENS)
    return bytes(b)


def _check_reply(wire: bytes) -> None:
    dec = protocol.Decoder()
    dec.receive_data(wire)
    ev = dec.next_event()
    if not isinstance(ev, protocol.Message):
        raise AssertionError(f"reply did not decode to one message: {ev!r}")


def run_one(rng: random.Random, data: bytes, stats: Counter) -> None:
    dec = protocol.Decoder()
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if b > a]
    eof = rng.random() < 0.5
    try:
        for i, piece in enumerate(pieces + ([b""] if eof else [])):
            dec.receive_data(piece)
            while True:
                ev = dec.next_event()
                if ev is protocol.NEED_DATA or ev is protocol.CLOSED:
                    break
                stats["messages"] += 1
                _check_reply(respond(ev))
    except protocol.RemoteProtocolError as exc:
        stats[f"error:{exc.kind}"] += 1
        _check_reply(protocol.error_response(exc))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="mutated inputs to run (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=12, help="random seed (the run is reproducible)")
    ap.add_argument("--slow", type=float, default=0.5, help="one input taking longer than this (s) is a crash")
    ap.add_argument("--report-every", type=int, default=200_000, help="progress line every N inputs")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    stats: Counter = Counter()
    crashes = 0
    slowest = 0.0
    start = time.perf_counter()
    for n in range(1, args.frames + 1):
        data = mutate(rng, rng.choice(SEEDS))
        t0 = time.perf_counter()
        try:
            run_one(rng, data, stats)
        except Exception as exc:  # anything but a RemoteProtocolError is a bug
            crashes += 1
            if crashes <= 10:
                print(f"CRASH #{crashes} at input {n}: {type(exc).__name__}: {exc}\n  input: {data[:200]!r}")
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        if took > args.slow:
            crashes += 1
            print(f"SLOW input {n}: {took:.2f}s: {data[:200]!r}")
        if n % args.report_every == 0:
            el = time.perf_counter() - start
            print(f"  {n:,} inputs in {el:.1f}s ({n / el:,.0f}/s), crashes {crashes}", flush=True)
    elapsed = time.perf_counter() - start
    kinds = sorted(((k[6:], v) for k, v in stats.items() if k.startswith("error:")), key=lambda kv: -kv[1])
    print(f"inputs      {args.frames:,} in {elapsed:.1f}s: {args.frames / elapsed:,.0f} inputs/s "
          f"(seed {args.seed}; one CPU of a possibly shared machine)")
    print(f"messages    {stats['messages']:,} decoded and answered; replies all decode")
    print(f"errors      {sum(v for _, v in kinds):,} remote protocol errors, each answered: "
          + ", ".join(f"{k} {v:,}" for k, v in kinds))
    print(f"slowest     {slowest * 1000:.1f} ms for one input")
    print(f"crashes     {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())

"""A small blocking driver for a plug-in's opening and requests over one real socket, and the
splits its sans-I/O tests feed.

For the real-server tests of the example plug-ins: the conversation a flood connection
holds, without the event loop (the Opening and the parser are the same objects).
"""

from __future__ import annotations

import random
import socket
import time

#: Seconds a test waits for a server's answer before it fails: a loopback server answers in
#: milliseconds; a conversation that stalls this long is a bug, not a slow machine.
DEADLINE = 10.0


#: How the sans-I/O tests cut a server's bytes: all at once, one byte at a time, at random.
SPLITS = ("whole", "bytes", "random")


def chunks(data: bytes, how: str, rng: random.Random, most: int = 9) -> list:
    """``data`` cut as ``how`` says (random pieces of 1 to ``most`` bytes, from ``rng``)."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, most)
        out.append(data[pos:pos + step])
        pos += step
    return out


class Conversation:
    """One connection to ``port``: ``open()`` runs ``proto.opening()``; ``ask(k)`` sends the next
    ``k`` requests at once and returns the parser once their ``k`` replies are counted."""

    def __init__(self, proto, port: int, conn: int = 0) -> None:
        self.proto = proto
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.conn = conn
        self.seq = 0
        self.opening = None
        self.parser = proto.parser()
        self.parser.keep = []

    def open(self):
        op = self.opening = self.proto.opening()
        deadline = time.monotonic() + DEADLINE
        while True:
            out = op.data_to_send()
            if out:
                self.sock.sendall(out)
            if op.done:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the opening did not finish: {op.describe()}")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"the server closed during the opening ({op.describe()})")
            op.receive_data(data)            # OpeningFailed / WireError go to the test
        rest = op.leftover()
        if rest:
            raise AssertionError(f"bytes after the opening: {rest!r}")
        return op

    def ask(self, k: int = 1):
        self.sock.sendall(b"".join(self.proto.request(self.seq + i, self.conn) for i in range(k)))
        self.seq += k
        got = 0
        while got < k:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"the server closed after {got} of {k} replies")
            got += self.parser.feed(data)
        assert got == k, f"{got} replies to {k} requests"
        return self.parser

    def closed_by_peer(self) -> bool:
        """Does the server close now (EOF within the deadline, no more bytes)?"""
        self.sock.settimeout(DEADLINE)
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

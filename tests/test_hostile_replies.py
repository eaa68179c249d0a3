"""flood against servers whose replies are hostile in shape or size (issue 21): a RESP reply
nested past the cap costs only its connection, with a named reason and no traceback; a huge
bulk string is counted, never held.  Loopback only; every server a test starts, it stops."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import socktools_cmd

pytestmark = pytest.mark.timeout(120)


class AnsweringServer:
    """Answers the first read of every connection with ``first`` (default: ``reply``), every
    later read with ``reply`` (a thread per connection)."""

    def __init__(self, reply: bytes, first: bytes = b"") -> None:
        self.reply = reply
        self.first = first or reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _answer(self, conn: socket.socket) -> None:
        reply = self.first
        with conn:
            conn.settimeout(0.2)
            while not self.stopping.is_set():
                try:
                    if not conn.recv(65536):
                        return
                    conn.settimeout(60)     # a large reply waits for the reader, not 0.2 s
                    conn.sendall(reply)
                    conn.settimeout(0.2)
                    reply = self.reply
                except socket.timeout:
                    continue
                except OSError:
                    return

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        self.sock.close()


@pytest.fixture
def answering():
    made = []

    def make(reply: bytes, first: bytes = b"") -> AnsweringServer:
        made.append(AnsweringServer(reply, first))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def flood_json(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", "--mode", "redis", "--port", str(port),
                           "--workers", "1", "--json", *args), capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)


def test_a_reply_nested_past_the_cap_fails_its_connection_with_a_named_reason(answering):
    server = answering(b"*1\r\n" * 5000 + b"+x\r\n")
    proc = flood_json(server.port, "--conns", "3", "--duration", "1s")
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["protocol_errors"] == {"protocol-error": 3} and doc["crashed"] == []
    assert [(e["phase"], e["error"], e["count"]) for e in doc["errors"]] == [("recv", "protocol-error", 3)]


#: Runs a command and prints, on stderr, the peak RSS in KiB of the largest process under it
#: (``ru_maxrss`` of the waited-for children: flood and its worker).
_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")


def _flood_peak(port: int) -> tuple:
    """(peak RSS in bytes, bytes received) of a short flood whose connect timeout leaves room
    for a slow shared machine to receive a large first reply."""
    proc = subprocess.run([sys.executable, "-c", _PEAK, *socktools_cmd(
                           "flood", "--mode", "redis", "--port", str(port), "--workers", "1", "--conns", "2",
                           "--json", "--connect-timeout", "60s", "--requests", "2")],
                          capture_output=True, text=True, timeout=110)
    assert proc.stdout, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["connections"]["established"] == 2, proc.stdout
    return int(proc.stderr.split()[-1]) * 1024, doc["bytes"]["received"]


def test_a_64_mb_bulk_reply_is_counted_not_held(answering):
    size = 64 << 20
    small = answering(b"+OK\r\n")
    big = answering(b"+OK\r\n", first=b"$%d\r\n%s\r\n" % (size, b"x" * size))
    base, _ = _flood_peak(small.port)
    peak, got = _flood_peak(big.port)
    assert got >= 2 * size                       # both connections took their 64 MB
    assert peak - base < 16 << 20, (peak, base)   # the old parser held each reply whole: ~2 x 64 MB

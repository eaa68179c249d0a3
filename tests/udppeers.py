"""UDP peers for the tests: a counting Python echo (which can also hold, stay silent or answer
twice), socat's UDP echo and dnsmasq, each on a free loopback port, each stopped by its test;
and a DNS query built and an answer read by hand (RFC 1035), no DNS library."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from typing import Optional

import pytest

from socktools.kernel.udpstats import socket_drops
from tests.conftest import wait_until
from tests.peers import free_port


class UdpEcho:
    """A UDP echo server on 127.0.0.1 in a thread, counting the datagrams it received.
    ``hold``: read nothing until the kernel has dropped at least one datagram at this socket
    (its receive buffer is the kernel's minimum), then echo everything.  ``silent``: read and
    count, never answer.  ``copies``: answer each datagram this many times (duplicates);
    ``answered`` is set once the first datagram's copies have all left.  ``hold_first``: answer
    the first datagram only when the second arrives, just before the second's answer (a reply
    made late by the server, not by a clock)."""

    def __init__(self, hold: bool = False, silent: bool = False, copies: int = 1,
                 hold_first: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if hold:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hold = hold
        self.silent = silent
        self.copies = copies
        self.hold_first = hold_first
        self.held: Optional[bytes] = None
        self.received = 0
        self.got = []                      # the first datagrams received, for the tests to read
        self.answered = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _serve(self) -> None:
        sock = self.sock
        if self.hold:   # a condition with a deadline, not a sleep: the first drop, or the stop
            while not self.stopping.is_set() and not socket_drops(sock):
                self.stopping.wait(0.005)
        sock.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += 1
            if len(self.got) < 16:
                self.got.append(data)
            if self.silent:
                continue
            if self.hold_first and self.received == 1:
                self.held = data
                continue
            try:
                if self.held is not None:
                    sock.sendto(self.held, peer)
                    self.held = None
                for _ in range(self.copies):
                    sock.sendto(data, peer)
            except OSError:
                pass
            self.answered.set()

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound, then let go): the kernel answers a
    datagram to it with ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port: int) -> bool:
    out = subprocess.run(["ss", "-Huan", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


class _Daemon:
    """A UDP server process on a free loopback port, waited for until bound, stopped at exit."""

    binary = ""
    install = ""

    def __init__(self) -> None:
        if shutil.which(self.binary) is None and not os.path.exists(f"/usr/sbin/{self.binary}"):
            pytest.skip(f"{self.binary} not installed (apt-get install {self.install})")
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    def argv(self) -> list:
        raise NotImplementedError

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_until(lambda: udp_bound(self.port) or self.proc.poll() is not None) \
                or self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.__exit__()
            pytest.fail(f"{self.binary} did not bind UDP port {self.port}: {err}")
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.proc.stderr.close()


class SocatUdpEcho(_Daemon):
    """socat's UDP echo: ``fork`` gives each peer address a child that pipes its datagrams back
    (one peer address per test: see docs/flood.md on socat's UDP fork mode)."""

    binary = "socat"
    install = "socat"

    def argv(self) -> list:
        return ["socat", "-T2", f"UDP4-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", "PIPE"]


class Dnsmasq(_Daemon):
    """dnsmasq answering ``example.test`` with 127.0.0.1 and nothing else (no upstream, no hosts
    file), in the foreground on a loopback port.  With ``log`` (a path), every query it answers
    is a line there (``--log-queries``; written as it happens: dnsmasq logs synchronously unless
    told --log-async), its own count: :meth:`queries`."""

    binary = "dnsmasq"
    install = "dnsmasq"

    def __init__(self, log=None) -> None:
        super().__init__()
        self.log = log

    def argv(self) -> list:
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        logging = ["--log-queries", f"--log-facility={self.log}"] if self.log is not None else []
        return [exe, "-k", "-p", str(self.port), "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--address=/example.test/127.0.0.1", "--user=" + _user(),
                "--pid-file=", *logging]

    def queries(self, name: str = "example.test") -> int:
        """A-record queries for ``name`` that dnsmasq logged (its own count)."""
        try:
            with open(self.log, errors="replace") as f:
                return sum(1 for line in f if f"query[A] {name} " in line)
        except FileNotFoundError:
            return 0


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def dns_query(name: str, qid: int = 0x5A17) -> bytes:
    """A recursive query for ``name``'s A record (RFC 1035 4.1)."""
    head = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return head + qname + struct.pack("!HH", 1, 1)


def a_records(reply: bytes, qid: int = 0x5A17) -> list:
    """The A records in the answer section of ``reply`` (a response to ``qid``), as dotted quads."""
    rid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    assert rid == qid and flags & 0x8000, "not a response to the query"
    pos = 12

    def skip_name(pos: int) -> int:
        while True:
            n = reply[pos]
            if n & 0xC0 == 0xC0:
                return pos + 2
            pos += 1 + n
            if n == 0:
                return pos

    for _ in range(qd):
        pos = skip_name(pos) + 4
    out = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _cls, _ttl, length = struct.unpack_from("!HHIH", reply, pos)
        pos += 10
        if rtype == 1 and length == 4:
            out.append(socket.inet_ntoa(reply[pos:pos + 4]))
        pos += length
    return out

"""`socktools proxy` as a child process for the tests: started, its ports read, stopped."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from typing import Optional

from tests.conftest import socktools_cmd

__all__ = ["ProxyProcess", "echo", "connect", "recv_exactly", "recv_until_closed", "in_thread"]


class ProxyProcess:
    """``ProxyProcess("--listen", "127.0.0.1:0", "--to", ...)``: ``ports`` (name -> port),
    ``port`` (the first), ``api`` (the API's port, with --api); ``stop()`` -> the summary."""

    def __init__(self, *args: str, expect: Optional[int] = None, timeout: float = 15.0,
                 new_session: bool = False) -> None:
        # new_session: its own process group, for a test that signals the group (a Ctrl-C)
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(socktools_cmd("proxy", "--json", "--stop-on-stdin-eof", *args),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     start_new_session=new_session)
        self.events: list = []
        self._buf = b""
        self.ports: dict = {}
        self.api: Optional[int] = None
        self.summary: Optional[dict] = None
        want = expect if expect is not None else args.count("--listen") + ("--api" in args)
        deadline = time.monotonic() + timeout
        while len(self.ports) + (self.api is not None) < want:
            ev = self.next_event(deadline)
            if ev is None:
                self.stop()
                raise RuntimeError(f"proxy did not start: {self.stderr()}")
        self.port = next(iter(self.ports.values()), None)

    def next_event(self, deadline: float) -> Optional[dict]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        ev = json.loads(line)
        self._note(ev)
        return ev

    def _note(self, ev: dict) -> None:
        self.events.append(ev)
        if ev["event"] == "listening" and not ev["listen"].startswith("unix:"):
            self.ports[ev["proxy"]] = int(ev["listen"].rsplit(":", 1)[1])
        elif ev["event"] == "api":
            self.api = int(ev["address"].rsplit(":", 1)[1])
        elif ev["event"] == "summary":
            self.summary = ev

    def wait_event(self, predicate, timeout: float = 10.0) -> dict:
        """The next event (already seen ones first) for which ``predicate`` holds."""
        for ev in self.events:
            if predicate(ev):
                return ev
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(deadline)
            if ev is None:
                raise AssertionError(f"no such event within {timeout}s; saw {self.events}")
            if predicate(ev):
                return ev

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def stop(self, sig: Optional[int] = signal.SIGTERM, timeout: float = 20.0) -> Optional[dict]:
        """Send ``sig`` (None: none, it is stopping already), wait for the exit, read the rest."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"proxy did not stop within {timeout}s: {self.stderr()}")
        for line in (self._buf + out).splitlines():
            if line.strip():
                self._note(json.loads(line))
        self._buf = b""
        return self.summary

    def __enter__(self) -> "ProxyProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        # (the log file stays readable after the block; it goes with the object)


def echo(conn: socket.socket) -> None:
    """A ThreadServer handler: send back what comes, close when the client does."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        conn.sendall(data)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        data = sock.recv(n - len(got))
        if not data:
            break
        got += data
    return got


def recv_until_closed(sock: socket.socket, limit: int = 1 << 26) -> bytes:
    got = bytearray()
    while len(got) < limit:
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return bytes(got)


class in_thread:
    """Run a :class:`~socktools.proxy.runner.ProxyServer` (opened) in a thread for the block;
    ``wake`` is a port to connect to so that the loop sees ``stopped`` at the end."""

    def __init__(self, server, wake: int) -> None:
        import threading
        self.server, self.wake = server, wake
        self.thread = threading.Thread(target=server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.stopped = True
        try:
            connect(self.wake).close()
        except OSError:
            pass
        self.thread.join(10)
        assert not self.thread.is_alive(), "the proxy's loop did not stop"


#: send_until_blocked: the sender counts as blocked once send() refused everything this long
#: (the proxy stopped reading and every buffer on the way is full) ...
BLOCKED_FOR = 0.5
#: ... and gives up (the caller's assertion then says it never blocked) after this long.
BLOCK_DEADLINE = 20.0


def send_until_blocked(sock: socket.socket, block: bytes) -> tuple:
    """Send ``block`` over and over on nonblocking ``sock`` until send() has refused everything
    for BLOCKED_FOR seconds: (the bytes the kernel took, in order; True if it blocked)."""
    sock.setblocking(False)
    stream = bytearray()
    stuck_since = None
    deadline = time.monotonic() + BLOCK_DEADLINE
    while time.monotonic() < deadline:
        try:
            n = sock.send(block)
            stream += block[:n]
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > BLOCKED_FOR:
                return stream, True
            time.sleep(0.01)
    return stream, False


def abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashing peer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def end_watcher(seen: list):
    """A ThreadServer handler that reads to the end and notes how it came: "eof" or "reset"."""
    def watch(conn: socket.socket) -> None:
        try:
            while conn.recv(100):
                pass
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")
    return watch


def bulk_echo(sock: socket.socket, payload: bytes, timeout: float = 30.0) -> bytes:
    """Send ``payload`` and half-close while a thread reads what comes back until the close."""
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(recv_until_closed(sock)))
    reader.start()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    reader.join(timeout)
    return bytes(got)

"""The guided tour's engine: every step runs the real standalone command and shows it first.

What the tour prints is exactly what the user gets when they rerun that line.  The framed
server lives in its own session (:class:`~socktools.core.embedded.EmbeddedServer`).  Each step
runs in a process group of its own, so the tour alone decides what a Ctrl-C means: it forwards
one SIGINT to the step's whole group (flood and its workers), waits for it to finish and print,
and kills the group if it does not; then it stops the server.  Nothing the tour started
outlives it.  Printing goes through the ``echo`` and ``style`` the CLI hands in.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

__all__ = ["Tour", "DemoError", "run_tour", "capture_privilege", "STEP_TIMEOUT", "STEP_STOP_GRACE"]


class DemoError(Exception):
    """The tour cannot run (its server did not start); the message says why."""


#: Each step's command gets this long before the tour gives up on it.
STEP_TIMEOUT = 60.0
#: After Ctrl-C, how long a step gets to stop and print its results (flood
#: drains for up to 2 s and then reports) before its process group is killed.
STEP_STOP_GRACE = 10.0


def _own_group() -> dict:
    """Popen keywords that start the child in a new process group (not a new session)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


def capture_privilege() -> Optional[str]:
    """None when live capture can work here, else why not (in words)."""
    import socket
    if not hasattr(socket, "AF_PACKET"):
        return "live capture needs Linux packet sockets, which this platform lacks"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        return "live capture needs root or the CAP_NET_RAW capability"
    except OSError as exc:
        return f"cannot open a packet socket: {exc}"
    return None


class Tour:
    """The steps' runner: shows each command (``echo``, ``style`` from the CLI), runs it in a
    process group of its own, notes what failed; :meth:`stop_current` ends a running step."""

    def __init__(self, echo: Callable[..., None], style: Callable[..., str]) -> None:
        self.echo = echo
        self.style = style
        self.step_no = 0
        self.current: Optional[subprocess.Popen] = None
        self.failures: list[str] = []

    def heading(self, title: str, why: str) -> None:
        self.step_no += 1
        self.echo()
        self.echo(self.style(f"── {self.step_no}. {title} ", bold=True))
        self.echo(why)

    def run(self, args: Sequence[str], *, check: bool = True, background: bool = False):
        """Show ``socktools ARGS`` and run it; output streams straight to the terminal."""
        self.echo(self.style("$ socktools " + " ".join(shlex.quote(a) for a in args), fg="cyan"))
        sys.stdout.flush()
        from socktools.core.embedded import socktools_argv
        proc = subprocess.Popen(socktools_argv(*args), **_own_group())
        if background:
            return proc
        self.current = proc
        try:
            rc = proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal_group(proc, signal.SIGKILL)
            rc = proc.wait()
            self.failures.append(f"`socktools {' '.join(args)}` took longer than {STEP_TIMEOUT:.0f}s")
            self.current = None
            return rc
        except KeyboardInterrupt:
            self.stop_current()  # before anything else: the step must not outlive the tour
            raise
        self.current = None
        if check and rc != 0:
            self.failures.append(f"`socktools {' '.join(args)}` exited with {rc}")
        return rc

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # the group: flood's workers too
        except (ProcessLookupError, PermissionError):
            pass

    def stop_current(self) -> None:
        """Forward Ctrl-C to the running step's group, wait for it, kill the group if it lingers."""
        proc, self.current = self.current, None
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=STEP_STOP_GRACE)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # or a second Ctrl-C: force
                pass
        self._signal_group(proc, signal.SIGKILL)  # whatever of the group is left (workers)
        proc.wait()


def _wait_for_line(path: str, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if needle in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def run_tour(tour: Tour, *, capture: bool, conns: int, duration: float) -> None:
    """The whole tour, step by step; what failed is in ``tour.failures``.  Raises
    :class:`DemoError` when its server cannot start; a KeyboardInterrupt (Ctrl-C) passes
    through once everything the tour started has been stopped."""
    from socktools.core.embedded import EmbeddedServer, EmbeddedServerError

    server = EmbeddedServer(mode="framed")
    try:
        tour.heading("A framed-protocol server",
                     "socktools serve speaks the tutorial's length-prefixed JSON-header protocol. "
                     "The tour starts one on a free loopback port:")
        try:
            server.start()
        except EmbeddedServerError as exc:
            raise DemoError(str(exc)) from None
        port = str(server.address[1])
        tour.echo(tour.style(f"$ {server.display_command}", fg="cyan"))
        tour.echo(f"socktools serve: framed server listening on 127.0.0.1:{port} (pid {server.proc.pid})")

        tour.heading("One request each", "socktools request sends one framed request and decodes the answer:")
        tour.run(["request", "--port", port, "search", "morpheus"])
        tour.run(["request", "--port", port, "search", "\U0001f436"])
        tour.run(["request", "--port", port, "binary", "hello", "--show-bytes"])

        tour.heading("The socket table", "The server's listening socket as the kernel sees it "
                                         "(Recv-Q/Send-Q of a listener are its accept queue and backlog):")
        tour.run(["sockets", "--port", port, "--listen"])

        tour.heading(f"Load: {conns} connections", "socktools flood opens many nonblocking connections "
                     "over worker processes and measures connect time, throughput and latency percentiles:")
        tour.run(["flood", "--host", "127.0.0.1", "--port", port, "--mode", "framed",
                  "--conns", str(conns), "--duration", f"{duration:g}s"])

        tour.heading("A full send buffer, on purpose",
                     "socktools stall sends to a peer that never reads until send() raises "
                     "BlockingIOError, then shows both kernels' queues and lets the peer drain:")
        tour.run(["stall", "--drain"])

        if capture:
            problem = capture_privilege()
            tour.heading("The packets", "socktools sniff captures on loopback and decodes framed messages.")
            if problem:
                tour.echo(f"skipped: {problem}")
                tour.echo("(reading a saved capture needs no privilege: socktools sniff -r FILE.pcap)")
            else:
                _capture_step(tour, port)

        summary = server.stop()
        tour.heading("Done", "The server's own count of what it served:")
        if summary:
            tour.echo(f"accepted {summary['accepted']} connections, answered {summary['requests']} "
                      f"requests, protocol errors {sum(summary['protocol_errors'].values())}")
        tour.echo("\nNext: `socktools <command> --help` for each tool; `socktools explain ECONNRESET` "
                  "for what an error means; `socktools doctor` for this machine's limits.")
    finally:
        tour.stop_current()
        server.stop()


def _capture_step(tour: Tour, port: str) -> None:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="socktools-demo-") as tmp:
        log_path = os.path.join(tmp, "sniff.out")
        args = ["sniff", "--port", port, "--count", "10", "--timeout", "10"]
        tour.echo(tour.style("$ socktools " + " ".join(args) + "   # in the background", fg="cyan"))
        with open(log_path, "w") as log:
            from socktools.core.embedded import socktools_argv
            sniffer = subprocess.Popen(socktools_argv(*args), stdout=log, stderr=subprocess.STDOUT)
        try:
            if not _wait_for_line(log_path, "Capturing", 15):
                tour.failures.append("sniff did not start capturing within 15 s")
            tour.run(["request", "--port", port, "search", "morpheus"])
            try:
                sniffer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sniffer.send_signal(signal.SIGINT)
                sniffer.wait(timeout=5)
        finally:
            if sniffer.poll() is None:
                sniffer.kill()
                sniffer.wait()
        with open(log_path) as f:
            tour.echo(f.read().rstrip())
        if sniffer.returncode not in (0, None):
            tour.failures.append(f"`socktools {' '.join(args)}` exited with {sniffer.returncode}")

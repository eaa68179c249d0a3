"""`socktools demo`: the guided tour on loopback.

Every step runs the real standalone command (``socktools ...``) and shows it
first, so what the tour prints is exactly what the user gets when they rerun
that line.  The framed server lives in its own session
(:class:`~socktools.core.embedded.EmbeddedServer`).  Each step runs in a
process group of its own, so the tour alone decides what a Ctrl-C means: it
forwards one SIGINT to the step's whole group (flood and its workers), waits
for it to finish and print, and kills the group if it does not; then it stops
the server.  Nothing the tour started outlives it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

import click

from socktools.cli._common import DURATION, EXIT_FAILED, die

EPILOG = """\b
Example:
  socktools demo                 # the whole tour, about half a minute
  socktools demo --no-capture    # skip the packet-capture step
"""

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


def _capture_privilege() -> Optional[str]:
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
    def __init__(self, color: bool) -> None:
        self.color = color
        self.step_no = 0
        self.current: Optional[subprocess.Popen] = None
        self.failures: list[str] = []

    def style(self, text: str, **kw) -> str:
        return click.style(text, **kw) if self.color else text

    def heading(self, title: str, why: str) -> None:
        self.step_no += 1
        click.echo()
        click.echo(self.style(f"── {self.step_no}. {title} ", bold=True))
        click.echo(why)

    def run(self, args: Sequence[str], *, check: bool = True, background: bool = False):
        """Show ``socktools ARGS`` and run it; output streams straight to the terminal."""
        click.echo(self.style("$ socktools " + " ".join(shlex.quote(a) for a in args), fg="cyan"))
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


@click.command(epilog=EPILOG)
@click.option("--capture/--no-capture", default=True, show_default=True,
              help="Include the packet-capture step (needs root or CAP_NET_RAW).")
@click.option("--conns", type=click.IntRange(1, 5000), default=300, show_default=True,
              help="Connections for the flood step.")
@click.option("--duration", type=DURATION, default="3s", show_default=True, metavar="DURATION",
              help="How long the flood step runs (e.g. 3s, 500ms).")
def command(capture, conns, duration):
    """The guided tour: serve, request, flood, stall and sniff on loopback.

    Starts a framed-protocol server on a free loopback port, makes the
    tutorial's requests, floods it, reproduces a full send buffer and (when
    privileged) captures one exchange. Each step prints the standalone command
    so you can rerun it. Everything it starts is stopped at the end, also on
    Ctrl-C.
    """
    from socktools.core.embedded import EmbeddedServer, EmbeddedServerError

    if duration <= 0:
        raise click.BadParameter("must be more than 0", param_hint="'--duration'")
    tour = Tour(color=sys.stdout.isatty())
    server = EmbeddedServer(mode="framed")
    interrupted = False
    try:
        tour.heading("A framed-protocol server",
                     "socktools serve speaks the tutorial's length-prefixed JSON-header protocol. "
                     "The tour starts one on a free loopback port:")
        try:
            server.start()
        except EmbeddedServerError as exc:
            die(str(exc), EXIT_FAILED)
        port = str(server.address[1])
        click.echo(tour.style(f"$ {server.display_command}", fg="cyan"))
        click.echo(f"socktools serve: framed server listening on 127.0.0.1:{port} (pid {server.proc.pid})")

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
            problem = _capture_privilege()
            tour.heading("The packets", "socktools sniff captures on loopback and decodes framed messages.")
            if problem:
                click.echo(f"skipped: {problem}")
                click.echo("(reading a saved capture needs no privilege: socktools sniff -r FILE.pcap)")
            else:
                _capture_step(tour, port)

        rc_summary = server.stop()
        tour.heading("Done", "The server's own count of what it served:")
        if rc_summary:
            click.echo(f"accepted {rc_summary['accepted']} connections, answered {rc_summary['requests']} "
                       f"requests, protocol errors {sum(rc_summary['protocol_errors'].values())}")
        click.echo("\nNext: `socktools <command> --help` for each tool; `socktools explain ECONNRESET` "
                   "for what an error means; `socktools doctor` for this machine's limits.")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        tour.stop_current()
        server.stop()
    if interrupted:
        click.echo("\ndemo interrupted: everything it started has been stopped.", err=True)
        sys.exit(130)
    if tour.failures:
        for failure in tour.failures:
            click.echo(f"socktools demo: {failure}", err=True)
        sys.exit(EXIT_FAILED)


def _capture_step(tour: Tour, port: str) -> None:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="socktools-demo-") as tmp:
        log_path = os.path.join(tmp, "sniff.out")
        args = ["sniff", "--port", port, "--count", "10", "--timeout", "10"]
        click.echo(tour.style("$ socktools " + " ".join(args) + "   # in the background", fg="cyan"))
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
            click.echo(f.read().rstrip())
        if sniffer.returncode not in (0, None):
            tour.failures.append(f"`socktools {' '.join(args)}` exited with {sniffer.returncode}")

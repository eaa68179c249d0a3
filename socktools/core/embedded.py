"""Run a real ``socktools serve`` in a child process, for commands that need a local peer.

flood, stall and demo use this when the user names no target.  The child is
the real CLI (``socktools serve --json --port 0``), so what they talk to is
exactly what a user would start by hand.

It is the *same* socktools the parent imported, whatever the current
directory holds: ``python -m socktools`` would put the current directory
first on ``sys.path``, and a folder named ``socktools`` there (a checkout, a
results folder) would be imported instead.  So the child runs ``python -c``
with ``sys.path[0]`` (the current directory, for ``-c``) replaced by the
directory this package was imported from.  (``-I`` would also drop
PYTHONPATH and the user site-packages, where socktools may be installed.)
Its log (stderr) goes to a temporary file, not a pipe, unless the caller asks
for the pipe (``popen_kw={"stderr": subprocess.PIPE}``) and reads it: an
unread pipe fills at 64 KiB and a server logging many hostile peers blocks.

It runs in its own
session, so a Ctrl-C on the terminal reaches only the owner, which then stops
the child in order; the child also stops by itself when its stdin closes, so
even a killed owner leaves no orphan behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping, Optional, Sequence

import socktools

__all__ = ["EmbeddedServer", "EmbeddedServerError", "socktools_argv"]

#: The child's bootstrap: the package's own parent directory replaces the
#: current directory at the head of sys.path, then the CLI runs as `socktools`.
_BOOTSTRAP = ("import sys; sys.path[0] = {root!r}; "
              "from socktools.cli import main; main(prog_name='socktools')")


def socktools_argv(*args: str) -> list:
    """argv that runs this very socktools package's CLI in a child, whatever the cwd holds."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(socktools.__file__)))
    return [sys.executable, "-c", _BOOTSTRAP.format(root=root), *args]


class EmbeddedServerError(RuntimeError):
    """The server did not start; ``returncode`` is its exit status when it exited (3: an
    optional package it needs is missing, which the caller may pass on as its own exit 3)."""

    def __init__(self, message: str, returncode: Optional[int] = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class EmbeddedServer:
    """``with EmbeddedServer(mode="sink") as srv: srv.address ...``; ``srv.summary`` after exit.

    ``address`` is the ``(host, port)`` to connect to; ``family`` its address
    family; ``drain()`` tells a sink server to start reading (SIGUSR1);
    ``summary`` is the server's final statistics (dict) once stopped, and
    ``returncode``, ``stdout``, ``stderr`` (text) what the child left.
    ``popen_kw`` goes to ``subprocess.Popen`` (e.g. a ``preexec_fn``).
    """

    def __init__(self, mode: str = "echo", *, host: str = "127.0.0.1", workers: int = 1,
                 args: Sequence[str] = (), startup_timeout: float = 15.0,
                 popen_kw: Optional[Mapping[str, Any]] = None) -> None:
        self.mode = mode
        self.host = host
        self.workers = workers
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.address: Any = None
        self.family: Any = None
        self.summary: Optional[dict] = None
        self.events: list[dict] = []
        self.command: list[str] = []
        self.popen_kw = dict(popen_kw or {})
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self.stdout = ""
        self.stderr = ""
        self.forced = False                 # stop() had to SIGKILL after its timeout
        self._unread = b""                  # stdout read past the listening line
        self._log: Any = None               # the child's stderr, a temporary file

    @property
    def display_command(self) -> str:
        """The equivalent command a user could type."""
        shown = ["socktools", "serve", "--mode", self.mode, "--host", self.host, "--port",
                 str(self.address[1]) if self.address else "0"]
        if self.workers != 1:
            shown += ["--workers", str(self.workers)]
        return " ".join(shown + self.args)

    def _command(self) -> list[str]:
        return socktools_argv("serve", "--json", "--stop-on-stdin-eof",
                              "--mode", self.mode, "--host", self.host, "--port", "0",
                              "--workers", str(self.workers), "--stats-interval", "0", *self.args)

    def _listening(self, line: str) -> Optional[tuple]:
        """``(host, port)`` if ``line`` says the server is listening."""
        event = self._parse(line)
        if event and event.get("event") == "listening":
            return event["host"], event["port"]
        return None

    def start(self) -> "EmbeddedServer":
        import socket
        self.command = self._command()
        # The user's SOCKTOOLS_SERVE_* variables are for their own `socktools serve`, not for
        # the server flood or stall starts (its options are all on the command line above).
        kw = {"env": {k: v for k, v in os.environ.items() if not k.startswith("SOCKTOOLS_SERVE_")},
              **self.popen_kw}
        if "stderr" not in kw:  # a caller may want the live pipe (and then reads it)
            self._log = kw["stderr"] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True, **kw)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.startup_timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                err = self._kill_and_read_stderr()
                raise EmbeddedServerError(f"embedded server did not start: {err or 'no output'}",
                                          self.returncode)
            found = self._listening(line)
            if found:
                host, port = found
                self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
                self.address = (host, port)
                return self

    def drain(self) -> None:
        """Sink mode: start reading (and discarding) everything queued."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> Optional[dict]:
        """Stop gracefully (SIGTERM, or ``sig``), wait, and return the final summary."""
        proc = self.proc
        if proc is None:
            return self.summary
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.forced = True
            proc.kill()
            out, err = proc.communicate()
        self.stdout = (self._unread + out).decode("utf-8", "replace")
        self.stderr = err.decode("utf-8", "replace") if err is not None else self._read_log()
        self._unread = b""
        self.returncode = proc.returncode
        for line in self.stdout.splitlines():
            self._parse(line)
        self.proc = None
        return self.summary

    def _read_log(self) -> str:
        """The child's stderr, once it has exited; closes the file."""
        f, self._log = self._log, None
        if f is None:
            return ""
        try:
            f.seek(0)
            return f.read().decode("utf-8", "replace")
        finally:
            f.close()

    def _parse(self, line: str) -> Optional[dict]:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        self.events.append(event)
        if event.get("event") == "summary":
            self.summary = event
        return event

    def _readline(self, deadline: float) -> Optional[str]:
        # Read the raw fd, keeping what follows the line: a buffered readline()
        # would hide it from select() and from communicate() in stop().
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._unread:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._unread += chunk
        line, _, self._unread = self._unread.partition(b"\n")
        return line.decode("utf-8", "replace")

    def _kill_and_read_stderr(self) -> str:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate()
        self.returncode = self.proc.returncode
        self.proc = None
        self.stderr = err.decode("utf-8", "replace") if err is not None else self._read_log()
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

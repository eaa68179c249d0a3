"""``socktools sniff`` as a child process for the live-capture tests: started, its output read
by a thread, stopped with Ctrl-C as a user would (and killed if it does not end)."""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Callable, Optional

from tests.conftest import socktools_cmd, wait_until

#: How long sniff gets to end after its Ctrl-C (it prints its summary first).
STOP_WAIT = 15.0


class LiveSniff:
    """``with LiveSniff("--port", "6379") as sniff:`` -- ``sniff.first`` is the first stderr
    line (the capture has started once it is there), ``sniff.lines`` what stdout printed so far;
    ``sniff.stop(enough)`` waits until ``enough(lines)``, then sends SIGINT and waits for the
    exit; leaving the block kills a sniff that is still running."""

    def __init__(self, *args: str, cwd: Optional[str] = None) -> None:
        self.proc = subprocess.Popen(socktools_cmd("sniff", *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.first = self.proc.stderr.readline()
        assert '"event": "capturing"' in self.first or "Capturing on" in self.first, self.first
        self.lines: list = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    def stop(self, enough: Optional[Callable[[list], bool]] = None, timeout: float = 15.0) -> None:
        try:
            if enough is not None:
                assert wait_until(lambda: enough(self.lines), timeout), "".join(self.lines)
        finally:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_WAIT)
            finally:
                self._end()

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> "LiveSniff":
        return self

    def __exit__(self, *exc) -> None:
        self._end()

"""What ``serve`` is asked to do, and the limits every worker holds to.

:class:`ServeConfig` is frozen and picklable: the CLI builds one, ``serve()``
hands a copy to every worker process.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, fields
from typing import Optional

from socktools import protocol
from socktools.errors import OptionError
from socktools.tlsconf import ServerTlsConfig

__all__ = ["ServeConfig", "MODES", "HIGH_WATER", "DEFAULT_MAX_BUFFERED",
           "DEFAULT_REQUEST_TIMEOUT", "DEFAULT_MAX_CONNS", "default_max_buffered", "MAX_UNIX_PATH",
           "unix_path_problem", "UDP_MODES", "STREAM_ONLY"]

MODES = ("echo", "framed", "sink")

#: The modes ``--udp`` serves: a datagram answered to its sender, or only counted.  framed
#: is a message protocol over a stream (a 2-byte header length, then the header and the
#: content, split over reads at will): a datagram has its own boundaries and no stream to
#: frame, so it gets no datagram meaning.
UDP_MODES = ("echo", "sink")

#: The fields that only mean something for connections on a stream: with ``--udp`` each must
#: keep its default, and a value given is a usage error naming its option (there is no
#: connection to cap, time out, frame or queue, and no accept backlog; nothing to drain).
STREAM_ONLY = ("max_conns", "idle_timeout", "max_content", "max_buffered", "request_timeout", "backlog",
               "drain_timeout", "unix", "tls")

#: Stop reading from a connection whose unsent output exceeds this; resume when
#: it drains.  Bounds memory per connection when a client sends but does not
#: read (echo) or pipelines many requests (framed).  256 KiB is a few socket
#: buffers' worth: enough to keep a fast pipe full.
HIGH_WATER = 256 * 1024

# ---- what one hostile peer may cost a worker (enforced by serve/budget.py, framed mode)

#: Total bytes one worker holds for requests not yet complete.  h11 bounds one
#: connection's incomplete event at 16 KiB (``max_incomplete_event_size``) and
#: nginx one request's header at ``large_client_header_buffers 4 8k`` plus a
#: ``client_body_buffer_size`` of 16 KiB in memory (larger bodies go to a temp
#: file); neither bounds the sum over connections.  We keep whole bodies (up to
#: ``--max-content``, 1 MiB like nginx's ``client_max_body_size``) in memory, so
#: the sum needs its own cap: 64 MiB is 64 maximum-size requests in flight at
#: once per worker, thousands of ordinary ones, and a fraction of any machine.
DEFAULT_MAX_BUFFERED = 64 << 20

#: Seconds from a request's first byte to its complete arrival.  nginx gives a
#: client 60 s to send the whole request header (``client_header_timeout 60s``)
#: and 60 s between body reads (``client_body_timeout 60s``); Apache's
#: mod_reqtimeout bounds the whole header at 20-40 s.  60 s is generous for
#: messages of at most ``--max-content`` on any working link.
DEFAULT_REQUEST_TIMEOUT = 60.0

#: Open connections per server, 0 = no cap but the file-descriptor limit
#: (accept pauses on EMFILE and resumes when a connection closes).  nginx's
#: ``worker_connections`` defaults to 512, but a load *target* must hold whatever
#: the flood asks of it; ``--max-conns`` sets a cap when you want one.
DEFAULT_MAX_CONNS = 0


#: The longest path ``--unix`` takes, in bytes: Linux's ``sockaddr_un.sun_path`` is 108 bytes
#: and holds the path with its terminating NUL (man 7 unix); longer paths cannot be bound.
MAX_UNIX_PATH = 107


def unix_path_problem(path: str) -> Optional[str]:
    """Why serve cannot bind a Unix socket at ``path`` (None when it can try): too long, a
    folder that does not exist, or an existing file that is not a socket (never replaced)."""
    try:
        raw = os.fsencode(path)
    except UnicodeError:
        return "not a file name: it holds a character that is not bytes"
    if not raw or b"\0" in raw:
        return "not a file name (empty, or a NUL byte in it)"
    if len(raw) > MAX_UNIX_PATH:
        return (f"{len(raw)} bytes long: a Unix socket path holds at most {MAX_UNIX_PATH} bytes "
                f"(sun_path is 108 with its NUL); choose a shorter path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"its folder {folder} does not exist"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror
    if not stat.S_ISSOCK(mode):
        return "exists and is not a socket: serve replaces only a stale socket file, never other files"
    return None


def default_max_buffered(max_content: int) -> int:
    """The budget when none is given: at least :data:`DEFAULT_MAX_BUFFERED`, and room for
    four requests of the largest allowed size (a smaller budget would refuse them all)."""
    return max(DEFAULT_MAX_BUFFERED, 4 * max_content)


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``serve`` needs; frozen and picklable (workers receive a copy)."""

    mode: str = "echo"
    host: str = "127.0.0.1"
    port: int = 65432
    workers: int = 1
    max_conns: int = DEFAULT_MAX_CONNS  # total across workers; 0 = no cap but the fd limit
    idle_timeout: Optional[float] = None
    max_content: int = protocol.DEFAULT_MAX_CONTENT
    rcvbuf: Optional[int] = None
    sndbuf: Optional[int] = None
    backlog: int = 4096             # the kernel caps it at net.core.somaxconn
    stats_interval: float = 10.0    # 0 = no periodic statistics
    drain_timeout: float = 5.0
    stop_on_stdin_eof: bool = False
    # framed: the per-worker request budget (serve/budget.py says why these numbers)
    max_buffered: Optional[int] = None  # bytes held for incomplete requests; None = the default
    request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT  # first byte to complete; None = none
    unix: Optional[str] = None      # serve on this Unix-domain socket path instead of host/port
    tls: Optional[ServerTlsConfig] = None   # None: plaintext
    udp: bool = False               # datagrams on a UDP socket (serve/udp.py) instead of TCP

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.udp:
            self._check_udp()
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.max_buffered is not None and self.max_buffered < max(1, self.max_content):
            raise OptionError("max_buffered", f"--max-buffered {self.max_buffered:,} is less than --max-content "
                              f"{self.max_content:,}: every request of the largest allowed size would be refused")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise OptionError("request_timeout", "request timeout must be > 0 (0 on the command line: none)")
        if self.unix is not None:
            problem = unix_path_problem(self.unix)
            if problem:
                raise OptionError("unix", problem)

    def _check_udp(self) -> None:
        """--udp takes echo or sink and none of the stream's options (see :data:`STREAM_ONLY`)."""
        if self.mode not in UDP_MODES:
            raise OptionError("mode", f"--udp serves {' or '.join(UDP_MODES)}: --mode {self.mode} is a "
                                      f"protocol over a stream (datagrams carry their own boundaries)")
        defaults = {f.name: f.default for f in fields(self)}
        for name in STREAM_ONLY:
            if getattr(self, name) != defaults[name]:
                raise OptionError(name, f"not with --udp: {_STREAM_ONLY_WHY[name]}")

    @property
    def buffer_budget(self) -> int:
        """Bytes one worker may hold for incomplete requests (framed mode)."""
        return self.max_buffered if self.max_buffered is not None else default_max_buffered(self.max_content)

    @property
    def per_worker_max_conns(self) -> int:
        if not self.max_conns:
            return 0
        return -(-self.max_conns // self.workers)  # ceil: the caps add up to >= max_conns



_STREAM_ONLY_WHY = {
    "max_conns": "a UDP server has no connections to cap",
    "idle_timeout": "a UDP server has no connections to close",
    "max_content": "it bounds the framed protocol's content, and --udp serves echo or sink",
    "max_buffered": "it bounds the framed protocol's incomplete requests; a datagram arrives whole",
    "request_timeout": "a datagram arrives whole: there is no request to wait for",
    "backlog": "a UDP socket does not listen(): there is no accept queue",
    "drain_timeout": "a UDP server has no connection to drain: it stops at once, after reading what is queued",
    "unix": "--udp is UDP over IP (a Unix datagram socket is not served)",
    "tls": "TLS runs over a stream (datagrams would need DTLS, which socktools does not speak)",
}

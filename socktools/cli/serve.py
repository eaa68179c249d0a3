"""`socktools serve`: the click face of socktools.serve.supervisor.serve."""

from __future__ import annotations

import json
import sys

import click

from socktools.cli._common import (BYTESIZE, DURATION, EXIT_FAILED, MAX_BACKLOG, MAX_CONNS, PORT, LazyChoice,
                                   LazyDefault, LazyOption, build_config, check_target, die, setup_logging)
from socktools.cli._tls import server_tls_config, server_tls_options

# The engine loads only when the command runs: `socktools --help` builds this
# command (for its one-line help) and must not pull in the server, core or protocol.

EPILOG = """\b
Examples:
  socktools serve --mode framed --port 0          # framed protocol on a free port
  socktools serve --mode echo --workers 2         # echo on 127.0.0.1:65432, 2 processes
  socktools serve --mode sink --rcvbuf 4096       # never reads: fills up on purpose
  socktools serve --host ::1 --port 8000          # IPv6 loopback
  socktools serve --tls-self-signed --mode echo   # TLS with a throwaway certificate (prints its path)
  socktools serve --tls --cert srv.pem --key srv.key --client-ca ca.pem   # mutual TLS
  socktools serve --unix /tmp/echo.sock           # a Unix-domain socket instead of a port
  socktools serve --udp --port 9000               # UDP echo: each datagram back to its sender
  socktools serve --udp --mode sink --workers 2   # UDP: count datagrams, answer none

\b
Then, for example:
  socktools request --unix /tmp/echo.sock --mode line --send hi
  socktools request --tls --cafile /tmp/socktools-tls-XXXX/cert.pem --mode line --send hi
  socktools flood --udp --port 9000 --conns 10 --duration 5s

\b
Stop with Ctrl-C or SIGTERM: the first drains gracefully, a second forces.
In sink mode, SIGUSR1 makes the server start reading (and discarding).
With --udp a stop reads what is queued and ends at once (no connection to drain).
"""


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _echo(text: str = "", err: bool = False) -> None:
    click.echo(text, err=err)
    (sys.stderr if err else sys.stdout).flush()


def _human_view():
    from socktools.serve.report import HumanView
    return HumanView(_echo, on_terminal=lambda: _isatty(sys.stdout))


def _json_view(ev: dict) -> None:
    import time
    from socktools.cli._common import stamped
    from socktools.runinfo import iso_utc
    from socktools.serve.report import json_event
    click.echo(json.dumps(json_event(ev, stamped, lambda: iso_utc(time.time()))))
    sys.stdout.flush()


def _raise_nofile() -> None:
    """The one place serve changes a limit of its own: as many open files as this process may
    have (every connection is one; its workers inherit it).  Said on stderr, in one line."""
    from socktools.kernel.capacity import raise_nofile
    change = raise_nofile()
    if change is not None:
        click.echo(f"socktools serve: {change.line}", err=True)


@click.command(epilog=EPILOG)
@click.option("--mode", "-m", type=LazyChoice("socktools.serve.config:MODES"), default="echo", show_default=True,
              help="echo: bytes back; framed: the message protocol of docs/protocol.md; sink: accept, never read.")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Address to bind; ::1 for IPv6. 0.0.0.0 or :: (or any spelling of them: 0, ::0) "
                   "expose the server to the network.")
@click.option("--port", "-p", type=PORT, default=65432, show_default=True,
              help="Port to bind; 0 picks a free one and prints it.")
@click.option("--unix", metavar="PATH", default=None,
              help="Serve on this Unix-domain socket instead of --host/--port.  A stale socket file "
                   "(connecting is refused) is replaced; any other file there is an error.  Removed at exit.")
@click.option("--udp", is_flag=True,
              help="Serve UDP datagrams: echo sends each back to its sender, sink counts them.  "
                   "Counts what the kernel dropped at a full receive buffer.  Not with the "
                   "stream's options (--mode framed, --tls, --unix, --max-conns, ...).")
@click.option("--workers", "-w", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes sharing the port (the parent binds and supervises).")
@click.option("--max-conns", type=click.IntRange(0, MAX_CONNS), default=0, show_default=True,
              help="Cap on open connections in total (0 = none); beyond it the server stops "
                   "accepting and clients wait in the kernel's backlog.")
@click.option("--idle-timeout", type=DURATION, default=None, metavar="DURATION",
              help="Close connections with no I/O for this long (e.g. 30s).")
@click.option("--max-content", type=BYTESIZE, default=LazyDefault("socktools.protocol:DEFAULT_MAX_CONTENT"),
              cls=LazyOption, show_default=True,
              help="framed: largest content-length accepted (larger gets an error reply).")
@click.option("--max-buffered", type=BYTESIZE, default=None, metavar="BYTES",
              help="framed: bytes one worker holds in all for requests not yet complete; over it the "
                   "newest holders get an error reply and are closed.  [default: 64 MiB, at least "
                   "4 x --max-content]")
@click.option("--request-timeout", type=DURATION, cls=LazyOption, metavar="DURATION",
              default=LazyDefault("socktools.serve.config:DEFAULT_REQUEST_TIMEOUT"), show_default=True,
              help="framed: time from a request's first byte to its last; later, an error reply and "
                   "the connection is closed (slowloris).  0 = no deadline.")
@click.option("--rcvbuf", type=BYTESIZE, default=None, help="SO_RCVBUF for accepted sockets, or --udp's sockets (Linux doubles it).")
@click.option("--sndbuf", type=BYTESIZE, default=None, help="SO_SNDBUF for accepted sockets, or --udp's sockets (Linux doubles it).")
@click.option("--backlog", type=click.IntRange(1, MAX_BACKLOG), default=4096, show_default=True,
              help="listen() backlog; the kernel caps it at net.core.somaxconn.")
@click.option("--stats-interval", type=DURATION, default="10s", show_default=True, metavar="DURATION",
              help="Print statistics this often (0 = only the final summary).")
@click.option("--drain-timeout", type=DURATION, default="5s", show_default=True, metavar="DURATION",
              help="On the first Ctrl-C/SIGTERM, how long busy connections get to finish.")
@server_tls_options
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (listening, stats, summary).")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True,
              help="Stop when stdin closes (used by commands that embed a server).")
@click.pass_context
def command(ctx, mode, host, port, unix, udp, workers, max_conns, idle_timeout, max_content, max_buffered,
            request_timeout, rcvbuf, sndbuf, backlog, stats_interval, drain_timeout, as_json, quiet,
            stop_on_stdin_eof, **tls_params):
    """Run a nonblocking TCP (or, with --udp, UDP) server: echo, framed or sink.

    Binds 127.0.0.1 unless --host says otherwise, or a Unix-domain socket
    with --unix PATH. With --port 0 the chosen port is printed on the first
    line ("listening on HOST:PORT"). With --tls every connection is TLS;
    with --tls-self-signed the certificate's file and SHA-256 fingerprint
    follow that line.
    """
    from socktools.addresses import is_wildcard
    from socktools.serve.supervisor import ServeError, serve
    from socktools.serve.config import ServeConfig

    setup_logging(quiet=quiet)
    check_target(ctx, host, unix)
    tls = server_tls_config(tls_params)
    if unix is None and is_wildcard(host):
        click.echo(f"socktools serve: warning: --host {host} binds every interface: the server is "
                   f"reachable from other machines", err=True)
    _raise_nofile()
    config = build_config(ServeConfig, mode=mode, host=host, port=port, workers=workers,
                          max_conns=max_conns, idle_timeout=idle_timeout or None, max_content=max_content,
                          max_buffered=max_buffered, request_timeout=request_timeout or None,
                          rcvbuf=rcvbuf, sndbuf=sndbuf, backlog=backlog, stats_interval=stats_interval,
                          drain_timeout=drain_timeout, stop_on_stdin_eof=stop_on_stdin_eof, unix=unix, tls=tls,
                          udp=udp)
    try:
        serve(config, _json_view if as_json else _human_view())
    except ServeError as exc:
        die(str(exc), EXIT_FAILED)

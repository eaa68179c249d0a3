"""`socktools serve`: the click face of socktools.serve.supervisor.serve."""

from __future__ import annotations

import json
import sys

import click

from socktools.cli._common import (BYTESIZE, DURATION, EXIT_FAILED, MAX_BACKLOG, MAX_CONNS, PORT, LazyChoice, LazyDefault,
                                   LazyOption, build_config, die, fmt_bytes, setup_logging)

# The engine loads only when the command runs: `socktools --help` builds this
# command (for its one-line help) and must not pull in the server, core or protocol.

EPILOG = """\b
Examples:
  socktools serve --mode framed --port 0          # framed protocol on a free port
  socktools serve --mode echo --workers 2         # echo on 127.0.0.1:65432, 2 processes
  socktools serve --mode sink --rcvbuf 4096       # never reads: fills up on purpose
  socktools serve --host ::1 --port 8000          # IPv6 loopback

\b
Stop with Ctrl-C or SIGTERM: the first drains gracefully, a second forces.
In sink mode, SIGUSR1 makes the server start reading (and discarding).
"""


#: Counters whose change means "something happened" (an idle server prints no stats line).
_ACTIVITY = ("accepted", "closed", "bytes_in", "bytes_out", "requests", "open")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _now_iso() -> str:
    import time
    from socktools.runinfo import iso_utc
    return iso_utc(time.time())


def _render_rates(ev: dict, prev: dict, secs: float) -> str:
    """``07:52:49  open 3  +12 conn/s  in 1.2 MiB/s  out 1.2 MiB/s  340 req/s  errors 0`` -- rates
    over the time since the previous stats line."""
    def rate(name: str) -> float:
        return (ev[name] - prev.get(name, 0)) / secs if secs > 0 else 0.0
    errs = sum(ev["protocol_errors"].values()) + sum(ev["errors"].values())
    line = (f"open {ev['open']}  {rate('accepted'):,.1f} conn/s  in {fmt_bytes(rate('bytes_in'))}/s  "
            f"out {fmt_bytes(rate('bytes_out'))}/s")
    if ev["requests"]:
        line += f"  {rate('requests'):,.1f} req/s"
    return line + f"  (accepted {ev['accepted']}, closed {ev['closed']})  errors {errs}"


def _render_stats(ev: dict) -> str:
    errs = sum(ev["protocol_errors"].values()) + sum(ev["errors"].values())
    line = (f"open {ev['open']}  accepted {ev['accepted']}  closed {ev['closed']}  "
            f"in {fmt_bytes(ev['bytes_in'])}  out {fmt_bytes(ev['bytes_out'])}")
    if ev["requests"]:
        line += f"  requests {ev['requests']}"
    return line + f"  errors {errs}"


def _render_counts(table: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(table.items())) or "none"


class _HumanView:
    def __init__(self, clock=None) -> None:
        import time
        self.echo = click.echo
        self.clock = clock or time.monotonic
        self.prev: dict = {}          # the counters of the last stats line printed (or of start)
        self.prev_at = self.clock()
        self.idle_said = False

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "listening":
            workers = ev["workers"]
            self.echo(f"socktools serve: {ev['mode']} server listening on {ev['address']} "
                      f"({workers} worker{'s' if workers != 1 else ''}, pid {ev['pid']}, backlog {ev['backlog']})")
            self.echo("stop with Ctrl-C (first drains, second forces)")
        elif kind == "stats":
            self._stats(ev)
        elif kind == "worker-exit":
            self.echo(f"socktools serve: {ev['message']}", err=True)
        elif kind == "summary":
            if _isatty(sys.stdout):
                self.echo("")     # after the terminal's ^C: the summary starts on its own line
            self.echo(f"summary: {_render_stats(ev)}")
            self.echo(f"  protocol errors: {_render_counts(ev['protocol_errors'])}; "
                      f"connection errors: {_render_counts(ev['errors'])}; idle closed {ev['idle_closed']}; "
                      f"accept paused {ev['accept_paused']}x; worker restarts {ev['worker_restarts']}; "
                      f"ran {ev['duration']:.1f} s")
        sys.stdout.flush()

    def _stats(self, ev: dict) -> None:
        """A timestamped line with rates; nothing while nothing changes (one "idle" line said once)."""
        import time
        now = self.clock()
        errs = sum(ev["protocol_errors"].values()) + sum(ev["errors"].values())
        same = all(ev.get(k, 0) == self.prev.get(k, 0) for k in _ACTIVITY) and errs == self.prev.get("_errs", 0)
        stamp = time.strftime("%H:%M:%S")
        if same:
            if not self.idle_said:
                self.echo(f"{stamp} stats: idle (open {ev['open']}); next line when something happens")
                self.idle_said = True
            self.prev_at = now
            return
        self.echo(f"{stamp} stats: {_render_rates(ev, self.prev, now - self.prev_at)}")
        self.prev = {**{k: ev.get(k, 0) for k in _ACTIVITY}, "_errs": errs}
        self.prev_at = now
        self.idle_said = False


def _json_view(ev: dict) -> None:
    if ev.get("event") in ("listening", "summary"):   # the stream's first and last lines say who/when/where
        from socktools.cli._common import stamped
        ev = stamped(ev)
    elif ev.get("event") == "stats":
        ev = {"event": "stats", "time": _now_iso(), **{k: v for k, v in ev.items() if k != "event"}}
    click.echo(json.dumps(ev))
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
@click.option("--rcvbuf", type=BYTESIZE, default=None, help="SO_RCVBUF for accepted sockets (Linux doubles it).")
@click.option("--sndbuf", type=BYTESIZE, default=None, help="SO_SNDBUF for accepted sockets (Linux doubles it).")
@click.option("--backlog", type=click.IntRange(1, MAX_BACKLOG), default=4096, show_default=True,
              help="listen() backlog; the kernel caps it at net.core.somaxconn.")
@click.option("--stats-interval", type=DURATION, default=10.0, show_default=True, metavar="DURATION",
              help="Print statistics this often (0 = only the final summary).")
@click.option("--drain-timeout", type=DURATION, default=5.0, show_default=True, metavar="DURATION",
              help="On the first Ctrl-C/SIGTERM, how long busy connections get to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (listening, stats, summary).")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True,
              help="Stop when stdin closes (used by commands that embed a server).")
def command(mode, host, port, workers, max_conns, idle_timeout, max_content, max_buffered, request_timeout,
            rcvbuf, sndbuf, backlog, stats_interval, drain_timeout, as_json, quiet, stop_on_stdin_eof):
    """Run a nonblocking TCP server: echo, framed or sink.

    Binds 127.0.0.1 unless --host says otherwise. With --port 0 the chosen
    port is printed on the first line ("listening on HOST:PORT").
    """
    from socktools.addresses import is_wildcard
    from socktools.serve.supervisor import ServeError, serve
    from socktools.serve.config import ServeConfig

    setup_logging(quiet=quiet)
    if is_wildcard(host):
        click.echo(f"socktools serve: warning: --host {host} binds every interface: the server is "
                   f"reachable from other machines", err=True)
    _raise_nofile()
    config = build_config(ServeConfig, mode=mode, host=host, port=port, workers=workers,
                          max_conns=max_conns, idle_timeout=idle_timeout or None, max_content=max_content,
                          max_buffered=max_buffered, request_timeout=request_timeout or None,
                          rcvbuf=rcvbuf, sndbuf=sndbuf, backlog=backlog, stats_interval=stats_interval,
                          drain_timeout=drain_timeout, stop_on_stdin_eof=stop_on_stdin_eof)
    try:
        serve(config, _json_view if as_json else _HumanView())
    except ServeError as exc:
        die(str(exc), EXIT_FAILED)

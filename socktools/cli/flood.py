"""`socktools flood`: put many concurrent connections and requests on a TCP server."""

from __future__ import annotations

import json
import signal
import sys

import click

from socktools.cli._common import (BYTESIZE, DURATION, EXIT_FAILED, EXIT_THRESHOLD, EXIT_UNAVAILABLE,
                                   MAX_CONNS, MAX_COUNT, MAX_PROCESSES, PORT, RATE, build_config, check_target,
                                   die, LazyChoice, LazyOption, parse_address_range, unix_option, warn_target)
from socktools.cli._outputs import output_options, write_outputs
from socktools.cli._tls import tls_config, tls_options
from socktools.cli._wire import given_params, opening_options, option_name, wire_options, wire_spec
from socktools.optional import PACKAGES

EPILOG = """\b
Examples:
  socktools flood --conns 500                      # starts its own echo server, 10 s
  socktools flood --mode framed --conns 200 --rate 2000 --duration 5s
  socktools flood --port 65432 --conns 1000 --workers 2 --json
  socktools flood --mode connect --conns 50 --duration 3s   # connect/close churn (echo --churn 1)
  socktools flood --mode echo --churn 10 --duration 3s      # a new connection every 10 requests
  socktools flood --conns 60000 --source 127.0.0.2-127.0.0.9 --rate 1000
  socktools flood --interval 1s --threshold 'p99<5ms' --threshold errors==0
  socktools flood --duration 30s --report run.html --hgrm run.hgrm --json > run.json
  socktools flood --cluster local:2 --conns 1000 --duration 5s   # shards on Dask
  socktools flood --stages 10s:100,30s:500,10s:0 --report ramp.html   # ramp the connections
  socktools flood --stages 10s:100:2000,30s:500:10000,10s:0:0        # ... and the rate
  socktools flood --cluster tcp://scheduler:8786 --host target --port 65432 --conns 100000

\b
Your own server (give its --port):
  socktools flood --port 6379 --mode redis --command 'SET key:{conn} v' --command 'GET key:{conn}'
  socktools flood --port 8080 --mode http --path / --path '/item/{seq}' --conns 100
  socktools flood --port 7000 --mode raw --send 'PING\\r\\n' --reply-until '\\r\\n' --pipeline 16
  socktools flood --port 7000 --mode line --send 'TIME' --reply-match '^[0-9]+'
  socktools flood --port 9000 --mode raw --send-file req.bin --reply-prefix '>I' --reply-prefix-adjust 0
  socktools flood --port 9000 --mode raw --send 'tick\\n' --no-reply --rate 50000
  socktools flood --port 8080 --mode raw --send 'GET / HTTP/1.0\\r\\n\\r\\n' --reply-until-close
  socktools flood --port 11211 --protocol socktools.examples.memcached:Memcached --command 'get k{conn}'
  PGPASSWORD=s3cret socktools flood --port 5432 --protocol socktools.examples.postgres:Postgres --protocol-option user=bob
  socktools flood --port 25 --protocol socktools.examples.smtp:Smtp --command 'MAIL FROM:<a@x.test> RCPT TO:<b@x.test>'
  socktools flood --port 6379 --mode redis --setup 'AUTH s3cret' --setup 'SELECT 2' --command 'GET k'
  socktools flood --port 21 --mode line --greeting-match '^220' --send NOOP --eol crlf
  socktools flood --port 8080 --mode http --churn 1 --conns 50   # one request per connection

\b
A UDP echo server (datagrams with flood's header; loss, lateness, duplicates and reordering
counted per datagram, losses attributed to the kernel's buffer drops):
  socktools flood --udp --conns 10 --requests 10000    # against its own `serve --udp`
  socktools flood --udp --port 9000 --conns 10 --duration 5s
  socktools flood --udp --port 9000 --conns 10 --rate 50000 --reply-timeout 200ms --size 512
  socktools flood --udp --port 53 --mode raw --send-file query.bin --reply-match '\\x7f\\x00\\x00\\x01'

\b
Over TLS (the handshake timed apart from connect; --keylog: one file, appended to by every worker):
  socktools flood --tls --cafile ca.pem --mode redis --host 127.0.0.1 --port 6380
  socktools flood --tls --cafile ca.pem --port 8443 --mode http --path / --alpn http/1.1
  socktools flood --tls --cafile ca.pem --port 8443 --mode http --tls-resume --keylog keys.log
  socktools flood --tls --cafile ca.pem --port 8443 --mode http --churn 1 --tls-resume   # a handshake a request

\b
A server on a Unix-domain socket (no --host/--port/--source/--cluster; HTTP's Host: localhost):
  socktools flood --unix /run/redis/redis.sock --mode redis --command PING --requests 100000
  socktools flood --unix /run/nginx.sock --mode http --path / --conns 50 --duration 5s

\b
With no --port, flood starts `socktools serve` (the matching mode) on a free
loopback port, sized for --conns, and stops it afterwards.  Ctrl-C or SIGTERM
stops early and still prints the results (a second one stops at once).  Exit
codes: 0 the run completed, or Ctrl-C ended it; 1 no connection could be
established, no request was answered, every connection was lost, a worker
failed (one line on stderr says which), or the plan does not fit this machine
(nothing started; --yes runs anyway); 2 a bad option; 3 an optional package
is missing (the message says which); 99 a --threshold failed; 130 interrupted
before the start; 143 SIGTERM ended it.
"""

#: Exit status after a SIGTERM ended the run (report printed): 128 + 15, what a
#: shell reports for a process SIGTERM killed, so whoever sent it (timeout,
#: systemd, a CI job) sees the run was cut short.  Ctrl-C is the user choosing
#: to stop and read the figures so far, like ping's summary: it exits 0.
EXIT_SIGTERM = 128 + 15


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Server address (::1 for IPv6).  Without --port: where the embedded server binds.")
@click.option("--port", "-p", type=PORT, default=None, metavar="PORT",
              help="Server port.  Omit it to let flood start its own server.")
@unix_option("  Not with --source or --cluster.")
@click.option("--conns", "-c", type=click.IntRange(1, MAX_CONNS), default=100, show_default=True,
              help="Concurrent connections (connect mode: concurrent connect/close slots).")
@click.option("--workers", "-w", type=click.IntRange(1, MAX_PROCESSES), default=None,
              help="Worker processes.  [default: one per CPU, half of them with the embedded "
                   "server, more if the fd limit needs it]")
@click.option("--mode", "-m", type=LazyChoice("socktools.flood.config:CHOICES"), default="echo",
              show_default=True, cls=LazyOption, lazy_help="socktools.flood.config:MODE_HELP")
@click.option("--pipeline", "-P", type=click.IntRange(min=1), default=1, show_default=True,
              help="Requests in flight per connection (latency of each from its own send).")
@click.option("--size", "-s", type=BYTESIZE, default=64, show_default=True,
              help="echo/connect: payload bytes per request.")
@click.option("--action", default="search", show_default=True, help="framed: request action.")
@click.option("--value", default="morpheus", show_default=True, help="framed: request value.")
@click.option("--duration", "-d", type=DURATION, default=None, metavar="DURATION",
              help="Length of the traffic phase.  [default: 10s; with --requests: at most 10m]")
@click.option("--requests", "-n", type=click.IntRange(0, MAX_COUNT), default=None,
              help="Stop after this many requests in all (connect mode: connections).")
@click.option("--rate", "-r", type=RATE, default=None, metavar="REQ/S",
              help="Open loop: send this many requests/s in total on a fixed schedule; latency "
                   "counts from the scheduled time.  [default: closed loop, as fast as answered]")
@click.option("--connect-rate", type=RATE, default=None, metavar="CONN/S",
              help="Open at most this many connections/s in total.  [default: as fast as they confirm]")
@click.option("--connect-timeout", type=DURATION, default="5s", show_default=True, metavar="DURATION",
              help="From connect() to the first reply; later ones count as failed (timeout).")
@click.option("--source", "source", default=None, metavar="ADDR-RANGE",
              help="Local addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9 (each "
                   "has its own ~28k ephemeral ports).  [default: chosen when needed]")
@click.option("--server-workers", type=click.IntRange(1, MAX_PROCESSES), default=None,
              help="Embedded server processes.  [default: enough for --conns]")
@click.option("--interval", "-i", type=DURATION, default=None, metavar="DURATION",
              help="Print one progress row per interval (with --json: one NDJSON line).  The JSON, "
                   "--report and the files have intervals either way: of this length, else 1s.")
@click.option("--stages", default=None, metavar="DUR:CONNS[:RATE],...",
              help="Ramp the open connections (and, with a third field, the requests/s) linearly "
                   "from 0 to each stage's target over its duration, like k6's stages; the traffic "
                   "lasts the sum of the stages.  Sets --conns (the largest target), --duration "
                   "and --rate: give none of them.")
@click.option("--cluster", default=None, metavar="local:N|tcp://HOST:8786",
              help="Run the worker shards as tasks on a Dask cluster: a scheduler's address, or "
                   "local:N for N local processes.  --workers then counts shards [default: one "
                   f"per Dask worker thread].  Needs Dask ({PACKAGES['dask'].install}).")
@click.option("--churn", type=int, default=None, metavar="N",
              help="Open a new connection after every N requests on one (1: one request per "
                   "connection; the confirming one counts), with its opening each time; the report "
                   "gives connects/s, opens/s and requests/s apart.  --mode connect is echo --churn 1.")
@click.option("--udp", is_flag=True,
              help="Datagrams over connected UDP sockets (--conns of them) to a UDP server at --port "
                   "(without it, flood starts `socktools serve --udp`).  Echo mode: each carries flood's "
                   "header (socket, sequence number, send time), and each reply is accounted answered, "
                   "late, duplicated, reordered or truncated.  --mode raw/line: your own bytes (a DNS "
                   "query), one in flight per socket, closed loop.  No reply within --reply-timeout: lost.")
@click.option("--reply-timeout", type=DURATION, default=None, metavar="DURATION",
              help="--udp: a datagram with no reply by then is lost.  [default: 1s]")
@click.option("--json", "as_json", is_flag=True, help="Print the final result as one JSON document.")
@click.option("--yes", "--force", "yes", is_flag=True,
              help="Run even when the plan says it will not fit this machine (far more processes "
                   "than CPUs, more memory than is available, too few file descriptors).")
@wire_options
@opening_options
@tls_options
@click.option("--tls-resume", is_flag=True,
              help="With --tls: offer each new connection of a worker (replacements, the ramp's) the "
                   "TLS session its latest handshake got, and report how many the server resumed.")
@output_options
@click.pass_context
def command(ctx, host, port, unix, conns, workers, mode, pipeline, size, action, value, duration, requests, rate,
            connect_rate, connect_timeout, source, server_workers, interval, stages, cluster, churn, udp,
            reply_timeout, as_json, yes, outputs, tls_resume, **wire_params):
    """Load a TCP (or, with --udp, UDP) server with many concurrent connections and report what happened.

    Opens --conns connections over --workers processes (each confirmed by a
    first round trip), sends requests for --duration or --requests -- echo
    payloads, the framed protocol, your own bytes (raw, line), Redis commands,
    HTTP/1.1, or a plug-in's -- then reports latency percentiles (HdrHistogram,
    merged across workers), requests/s, bytes/s, and every failure by phase
    and errno with what it means and what to do.
    """
    from socktools.flood.config import FloodConfig

    tls = tls_config(wire_params)
    if stages is not None:
        # The stages set these; a value given anyway is the config's usage error (naming --stages).
        if ctx.get_parameter_source("conns") is click.core.ParameterSource.DEFAULT:
            conns = None
    elif duration is None:
        duration = 600.0 if requests is not None else 10.0
    check_target(ctx, host, unix)
    if reply_timeout is not None and not udp:
        raise click.BadParameter("is for --udp (a TCP request waits as long as its connection lives)",
                                 param_hint="--reply-timeout")
    if udp and reply_timeout is None:
        reply_timeout = 1.0
    if unix is not None:
        # a Unix socket has no source address, and is on this machine only: not for Dask's hosts
        for name, given in (("--source", source), ("--cluster", cluster)):
            if given is not None:
                raise click.BadParameter(f"not with --unix (a Unix socket has no source address and is "
                                         f"reached from this machine only)", param_hint=name)
    sources: tuple = ()
    if source is not None:
        try:
            sources = tuple(parse_address_range(source))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--source")
    embedded = port is None and unix is None
    address, family = _resolve(host, 0 if embedded else (port or 0), unix)
    if not embedded and unix is None:
        warn_target("flood", address)
    if sources:
        import socket
        want = socket.AF_INET6 if family == socket.AF_INET6 else socket.AF_INET
        if any((":" in s) != (want == socket.AF_INET6) for s in sources):
            raise click.BadParameter(f"addresses must be of the same family as {host}", param_hint="--source")
        from socktools.addresses import not_local
        bad = not_local(sources, want)
        if bad:
            from socktools.errors import one_line
            raise click.BadParameter(f"{bad[0]}: {one_line(bad[1], 'bind', during='bind')}",
                                     param_hint="--source")
    if cluster is not None:
        _check_cluster(cluster)
    from socktools.flood.timeline import DEFAULT_INTERVAL
    tick = interval if interval is not None else DEFAULT_INTERVAL
    spec = None
    if wire_params.get("plugin"):
        if ctx.get_parameter_source("mode") is not click.core.ParameterSource.DEFAULT:
            raise click.BadParameter("--protocol is the mode: give one or the other", param_hint="--mode")
        mode = "plugin"
    if mode not in ("echo", "framed", "connect"):
        from socktools.addresses import format_addr
        # a Unix socket has no host name: HTTP's Host header (required by HTTP/1.1) says localhost
        spec = wire_spec(mode, "localhost" if unix is not None else format_addr((host, port or 0)), wire_params)
    else:
        given = given_params(ctx)
        if given:
            raise click.BadParameter(f"not for --mode {mode}", param_hint=option_name(given[0]))
    config = build_config(FloodConfig, mode=mode, conns=conns, workers=workers or 0, host=host,
                          port=port or 0, address=None if embedded else address, family=family,
                          size=size, action=action, value=value, duration=duration,
                          requests=requests, rate=rate, connect_rate=connect_rate,
                          connect_timeout=connect_timeout, sources=sources, interval=tick,
                          embedded=embedded, server_workers=server_workers or 0,
                          wire=spec, pipeline=pipeline, cluster=cluster, stages=stages or (), churn=churn,
                          udp=udp, **({"reply_timeout": reply_timeout} if udp else {}),
                          tls=tls if tls.enabled else None, tls_resume=tls_resume)
    _run(config, as_json=as_json, rows=interval is not None, outputs=outputs, yes=yes)


def _check_cluster(spec: str) -> None:
    from socktools.flood.cluster import INSTALL_HINT, dask_installed
    from socktools.flood.config import parse_cluster
    try:
        parse_cluster(spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cluster")
    if not dask_installed():
        die(INSTALL_HINT, EXIT_UNAVAILABLE)


def _resolve(host: str, port: int, unix=None):
    from socktools.addresses import resolve
    try:
        family, sockaddr = resolve(host, port, unix=unix)
    except OSError as exc:
        from socktools.errors import one_line
        die(one_line(exc, f"resolve {host!r}"))
    return sockaddr, family


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Console:
    """Where the run's events go: notes on stderr, the live line (a terminal, no --interval),
    one row per interval on stdout (--interval; NDJSON with --json)."""

    def __init__(self, conns: int, interval: float, *, rows: bool, as_json: bool) -> None:
        self.conns = conns
        self.interval = interval
        self.ndjson = rows and as_json
        self.rows = rows and not as_json
        self.live = not rows and not as_json and _isatty(sys.stderr)
        self.header = False
        self.drawn = False

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "plan":
            plan = event["plan"]
            for note in plan.notes:
                self._err(f"flood: {note}")
            for problem in plan.problems:
                self._err(f"flood: will not fit: {problem}")
            for refusal in plan.refusals:
                self._err(f"flood: warning: {refusal} (running anyway: --yes)")
        elif kind == "server":
            self._err(f"flood: started `{event['command']}` (pid {event['pid']})")
        elif kind == "raised":
            self._err(f"flood: {event['line']}")
        elif kind == "cluster":
            where = "a LocalCluster" if event["local"] else "the Dask cluster"
            self._err(f"flood: {where} at {event['scheduler']}: {event['workers']} worker(s), "
                      f"{event['threads']} thread(s)")
            for host, line in event["raised"]:
                self._err(f"flood: on load host {host}: {line}")
        elif kind == "lost":
            self._err(f"flood: lost shard {event['shard']}: Dask worker {event['worker']} is gone; "
                      f"the run goes on without it")
        elif kind == "interval":
            if self.ndjson:
                self.clear()
                click.echo(json.dumps(event, ensure_ascii=False))
            if self.rows:
                from socktools.flood.report import render_interval_header, render_interval_row
                if not self.header:
                    click.echo(render_interval_header())
                    self.header = True
                click.echo(render_interval_row(event, self.interval))
            if self.live:
                from socktools.flood.report import render_live
                click.echo("\r" + render_live(event, self.conns) + "\x1b[K", nl=False, err=True)
                self.drawn = True

    def _err(self, text: str) -> None:
        self.clear()
        click.echo(text, err=True)

    def clear(self) -> None:
        if self.drawn:
            click.echo("\r\x1b[K", nl=False, err=True)
            self.drawn = False


def _run(config, *, as_json: bool, rows: bool,
         outputs, yes: bool = False) -> None:
    from socktools.flood.report import render_table, to_json
    from socktools.flood.runner import FloodError, FloodRefused, run_flood

    console = _Console(config.conns, config.interval, rows=rows, as_json=as_json)
    try:
        result = run_flood(config, on_event=console, force=yes)
    except FloodRefused as exc:  # the plan does not fit: nothing was started
        for refusal in exc.plan.refusals:
            click.echo(f"flood: will not start: {refusal}", err=True)
        die("nothing was started; add --yes to run anyway", EXIT_FAILED)
    except FloodError as exc:
        console.clear()
        die(str(exc))
    except OSError as exc:  # e.g. EMFILE starting a worker under --yes: one line, no traceback
        from socktools.errors import one_line
        console.clear()
        die(one_line(exc, "start the flood", command="flood"))
    except KeyboardInterrupt:
        console.clear()
        die("interrupted before the run started", 130)
    if result.stopped_early and _isatty(sys.stderr):
        console.drawn = False
        click.echo(err=True)       # the terminal echoed ^C: the summary starts on its own line
    console.clear()
    doc = to_json(result, outputs.thresholds)
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False))
    else:
        if rows and result.intervals:
            click.echo()
        click.echo(render_table(result, doc["thresholds"]))
    for note in write_outputs(doc, outputs):
        click.echo(f"flood: {note}", err=True)
    if result.stop_signal == signal.SIGTERM:
        sys.exit(EXIT_SIGTERM)
    failure = failure_reason(result)
    if failure:
        click.echo(f"flood: {failure}", err=True)
        sys.exit(EXIT_FAILED)
    if not all(t["passed"] for t in doc["thresholds"]):
        sys.exit(EXIT_THRESHOLD)


def failure_reason(result) -> str | None:
    """Why the run counts as failed for a script (exit 1), or None (exit 0).  docs/flood.md."""
    c = result.totals.counters
    if result.crashed:
        return f"{len(result.crashed)} worker problem(s): {result.crashed[0]}"
    if result.config.mode == "connect":
        if c["cycles"] == 0:
            return "no connect+reply+close cycle succeeded"
        return None
    if c["established"] == 0:
        return "no connection could be established"
    write_only = result.config.wire is not None and result.config.wire.no_reply
    if c["traffic_requests"] and not c["traffic_responses"] and not write_only:
        # (the confirming round trips do not count: a server that answers them and then
        # goes silent answered nothing of the traffic)
        return "no request was answered"
    if c["lost"] >= c["established"]:
        return f"every connection was lost ({c['lost']:,} of {c['established']:,} closed or reset by the server)"
    return None

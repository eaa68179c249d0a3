"""`socktools proxy`: the click face of socktools.proxy.runner.run_proxy."""

from __future__ import annotations

import json
import sys

import click

from socktools.cli._common import (DURATION, EXIT_FAILED, LazyChoice, LazyDefault, LazyOption, build_config, die,
                                   setup_logging)

EPILOG = """\b
Examples:
  socktools proxy --listen 127.0.0.1:26379 --to 127.0.0.1:6379
      # a plain proxy in front of redis; clients connect to 26379
  socktools proxy --listen 127.0.0.1:0 --to 127.0.0.1:8080 --toxic latency:latency=100,jitter=10
      # every reply 100 +/- 10 ms late (a free port, printed on the first line)
  socktools proxy --listen 127.0.0.1:8081 --to 127.0.0.1:8080 \\
      --toxic bandwidth:rate=100 --toxic reset_peer:timeout=2000,toxicity=0.5
      # 100 KB/s downstream; half of the connections reset 2 s after the first reply byte
  socktools proxy --listen 127.0.0.1:26379 --to unix:/run/redis/redis.sock
      # TCP clients in front of a redis that listens on a Unix socket (either side may be one)
  socktools proxy --config proxies.toml --api 127.0.0.1:8474
      # many proxies from a file; Toxiproxy's clients drive them over HTTP

\b
Toxics (Toxiproxy's, units as there): latency (latency, jitter: ms), bandwidth (rate: KB/s),
slow_close (delay: ms), timeout (timeout: ms, 0 = hold forever), reset_peer (timeout: ms),
slicer (average_size, size_variation: bytes; delay: us), limit_data (bytes).
Beyond Toxiproxy: stall (timeout: ms, 0 = until removed) stops reading the sender;
message (protocol, nth, match, action=delay|close|reset, delay, cut) acts on whole
messages: message:protocol=redis,nth=3,action=reset,cut=5 resets mid 3rd reply.
Each takes stream=upstream|downstream (default downstream) and toxicity=0..1 (default 1).

\b
Stop with Ctrl-C or SIGTERM: the first stops accepting and lets bytes in flight through,
a second aborts every connection.
"""


def _echo_event(as_json: bool, quiet: bool):
    def on_event(ev: dict) -> None:
        if quiet and ev.get("event") == "connection":
            return
        if as_json:
            import time
            from socktools.cli._common import stamped
            from socktools.runinfo import iso_utc
            doc = stamped(dict(ev)) if ev.get("event") == "summary" else dict(ev)
            doc.setdefault("time", iso_utc(time.time()))
            click.echo(json.dumps(doc))
        else:
            from socktools.proxy.report import human_lines
            for line in human_lines(ev):
                click.echo(line)
        sys.stdout.flush()
    return on_event


@click.command(epilog=EPILOG)
@click.option("--listen", "-l", "listens", multiple=True, metavar="HOST:PORT|unix:PATH",
              help="Where a proxy listens (repeatable; the n-th --listen goes with the n-th --to). "
                   "Port 0 picks a free one; unix:PATH listens on a Unix-domain socket.")
@click.option("--to", "-t", "targets", multiple=True, metavar="HOST:PORT|unix:PATH",
              help="The upstream server of the matching --listen; unix:PATH is a Unix-domain socket.")
@click.option("--toxic", "toxics", multiple=True, metavar="TYPE[:NAME=VALUE,...]",
              help="A toxic on every --listen/--to proxy (repeatable), e.g. latency:latency=100 or "
                   "limit_data:bytes=1000,stream=upstream.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Proxies and their toxics from a TOML ([[proxies]]) or JSON file (Toxiproxy's "
                   "list works as it is).")
@click.option("--api", metavar="HOST:PORT",
              help="Serve Toxiproxy's HTTP API here (its clients drive this proxy), e.g. 127.0.0.1:8474.")
@click.option("--decode", type=LazyChoice("socktools.proxy.decode:DECODERS"), default=None,
              help="Print each request and reply crossing the proxy, with the server's time measured "
                   "at the proxy (upstream) beside the time the client saw (toxics included).")
@click.option("--drain-timeout", type=DURATION, cls=LazyOption, metavar="DURATION",
              default=LazyDefault("socktools.proxy.config:DEFAULT_DRAIN"), show_default=True,
              help="On the first Ctrl-C/SIGTERM, how long bytes in flight get to pass.")
@click.option("--splice", type=LazyChoice("socktools.proxy.config:SPLICE_MODES"), default="auto",
              show_default=True,
              help="How a link that no toxic and no --decode sees forwards: auto copies small messages "
                   "in batches and moves a bulk transfer with splice(2), socket to pipe to socket "
                   "(Linux); always splices from the start; never copies every byte.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (listening, connection, summary).")
@click.option("--quiet", "-q", is_flag=True, help="No line (or JSON event) per connection; log only warnings "
                                                 "and errors.")
@click.option("--seed", type=int, default=None, hidden=True, help="Seed of toxicity's and jitter's random numbers.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True, help="Stop when stdin closes (tests, embedders).")
def command(listens, targets, toxics, config_file, api, decode, drain_timeout, splice, as_json, quiet, seed, stop_on_stdin_eof):
    """A TCP proxy that breaks the link on purpose: Toxiproxy's toxics, its HTTP API.

    Forwards both directions with bounded buffers (a slow side pauses reading
    on the other), passes a half-close and a reset on as they came, and
    closes the client when the upstream refuses. Binds 127.0.0.1 unless told
    otherwise. Prints one line per connection (bytes each way) and a summary.
    """
    from socktools.proxy import config as cfg
    from socktools.proxy.listen import ProxyError
    from socktools.proxy.runner import run_proxy

    setup_logging(quiet=quiet)
    if len(listens) != len(targets):
        raise click.UsageError(f"give --listen and --to in pairs ({len(listens)} --listen, {len(targets)} --to)")
    proxies = []
    try:
        toxic_docs = [cfg.parse_toxic_option(t) for t in toxics]
        specs = tuple(cfg.toxic_from_json(d) for d in toxic_docs)
    except cfg.SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="'--toxic'") from None
    for i, (listen, to) in enumerate(zip(listens, targets), 1):
        try:
            proxies.append(cfg.ProxySpec(f"proxy{i}", listen, to, True, specs))
        except cfg.SpecError as exc:
            hint = "'--listen'" if str(exc).startswith("listen") else "'--to'"
            raise click.BadParameter(str(exc), param_hint=hint) from None
    if toxics and not proxies:
        raise click.UsageError("--toxic acts on --listen/--to proxies; in a --config file give each proxy "
                               "its own toxics")
    if config_file:
        try:
            proxies.extend(cfg.load_config_file(config_file))
        except cfg.SpecError as exc:
            raise click.BadParameter(str(exc), param_hint="'--config'") from None
    from socktools.addresses import is_wildcard
    for where in [p.listen for p in proxies] + ([api] if api else []):
        try:
            host = cfg.parse_hostport(where, "--listen")[0]
        except cfg.SpecError:
            continue            # the config reports it, naming the option
        if is_wildcard(host):
            click.echo(f"socktools proxy: warning: {where} binds every interface: the proxy is "
                       f"reachable from other machines", err=True)
    config = build_config(cfg.ProxyConfig, proxies=tuple(proxies), api=api, drain_timeout=drain_timeout,
                          stop_on_stdin_eof=stop_on_stdin_eof, seed=seed, decode=decode,
                          splice=splice)
    try:
        run_proxy(config, _echo_event(as_json, quiet))
    except ProxyError as exc:
        die(str(exc), EXIT_FAILED)

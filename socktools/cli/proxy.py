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
  socktools proxy --workers 4 --listen 127.0.0.1:8081 --to 127.0.0.1:8080 --api 127.0.0.1:8474
      # 4 processes share the port; a toxic added over the API acts in all of them
      # by the time the API answers
  socktools proxy --listen 127.0.0.1:25432 --to 127.0.0.1:5432 \\
      --decode socktools.examples.postgres:Postgres
      # each query and its reply (up to ReadyForQuery), the server's time beside the client's
  socktools proxy --listen 127.0.0.1:26380 --to 127.0.0.1:6379 --tls-self-signed
      # TLS offload: TLS clients (trusting the printed --cafile) in front of a plain redis
  socktools proxy --listen 127.0.0.1:26379 --to 127.0.0.1:6380 --upstream-tls \\
      --upstream-cafile ca.pem --decode redis
      # plaintext clients to a TLS-only redis (--tls-port 6380), the exchanges decoded

\b
TLS: --listen-tls (with --cert/--key, or --tls-self-signed; --client-ca for mutual TLS)
terminates TLS from clients; --upstream-tls (--upstream-cafile, --upstream-sni, ...) speaks
TLS to the upstream.  Either, both or neither; toxics and --decode see the plaintext between.

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


class DecodeChoice(LazyChoice):
    """``--decode``: a built-in decoder's name, or a plug-in's MODULE:CLASS (any value with a
    ``:``), which the config loads and checks, naming --decode with flood's --protocol words."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and ":" in value:
            return value
        return super().convert(value, param, ctx)

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.choices)}|MODULE:CLASS]"


def _echo_event(as_json: bool, quiet: bool, made=None):
    def on_event(ev: dict) -> None:
        if quiet and ev.get("event") == "connection":
            return
        served = ev.get("listen_tls") if ev.get("event") == "listening" else None
        if served is not None and made is not None and served["cert"] == made.cert:
            from socktools.serve.selfsigned import ADDRESSES, NAMES
            served.update(self_signed=True, names=[*NAMES, *ADDRESSES])
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
            if served is not None:
                from socktools.serve.report import render_tls
                for line in render_tls(served):
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
@click.option("--decode", type=DecodeChoice("socktools.proxy.decode:DECODERS"), default=None,
              help="Print each request and reply crossing the proxy, with the server's time measured "
                   "at the proxy (upstream) beside the time the client saw (toxics included). "
                   "MODULE:CLASS or ./file.py:Class: a plug-in's stream decoder (docs/plugins.md).")
@click.option("--workers", "-w", type=int, default=1, show_default=True, metavar="N",
              help="Processes forwarding (the parent binds every listener, owns the toxics' table "
                   "and the API, and supervises them; a crashed one is replaced).")
@click.option("--drain-timeout", type=DURATION, cls=LazyOption, metavar="DURATION",
              default=LazyDefault("socktools.proxy.config:DEFAULT_DRAIN"), show_default=True,
              help="On the first Ctrl-C/SIGTERM, how long bytes in flight get to pass.")
@click.option("--splice", type=LazyChoice("socktools.proxy.config:SPLICE_MODES"), default="auto",
              show_default=True,
              help="How a link that no toxic and no --decode sees forwards: auto copies small messages "
                   "in batches and moves a bulk transfer with splice(2), socket to pipe to socket "
                   "(Linux); always splices from the start; never copies every byte.")
@click.option("--listen-tls", is_flag=True,
              help="Terminate TLS from clients: every --listen speaks TLS, with --cert/--key (or "
                   "--tls-self-signed, which implies it).")
@click.option("--cert", metavar="FILE", default=None,
              help="The listener's certificate chain, PEM, leaf first (with --listen-tls; needs --key).")
@click.option("--key", metavar="FILE", default=None, help="The listener certificate's private key, PEM.")
@click.option("--tls-self-signed", is_flag=True,
              help="TLS from clients with a throwaway certificate for localhost, 127.0.0.1 and ::1, made "
                   "at start; prints its SHA-256 fingerprint and the file clients give as --cafile.  "
                   "Needs the cryptography package.")
@click.option("--client-ca", metavar="FILE", default=None,
              help="Require client certificates signed by a CA in this PEM file (mutual TLS, with --listen-tls).")
@click.option("--upstream-tls", is_flag=True,
              help="Speak TLS to the upstream (--to), verifying its certificate and name.")
@click.option("--upstream-sni", metavar="NAME", default=None,
              help="The name sent to the upstream (SNI) and checked against its certificate.  [default: "
                   "the --to host]")
@click.option("--upstream-cafile", metavar="FILE", default=None,
              help="Trust the upstream's CA certificates in this PEM file instead of the system's.")
@click.option("--upstream-capath", metavar="DIR", default=None,
              help="Trust the CA certificates in this directory (c_rehash'd) instead of the system's.")
@click.option("--upstream-insecure", is_flag=True,
              help="Do not verify the upstream's certificate or name (testing only).")
@click.option("--upstream-cert", metavar="FILE", default=None,
              help="A client certificate for the upstream, PEM (mutual TLS; needs --upstream-key).")
@click.option("--upstream-key", metavar="FILE", default=None, help="The upstream client certificate's key, PEM.")
@click.option("--upstream-tls-min", type=click.Choice(["1.2", "1.3"]), default=None,
              help="Lowest TLS version offered to the upstream.")
@click.option("--upstream-tls-max", type=click.Choice(["1.2", "1.3"]), default=None,
              help="Highest TLS version offered to the upstream.")
@click.option("--upstream-ciphers", metavar="LIST", default=None,
              help="OpenSSL cipher list for TLS 1.2 toward the upstream.")
@click.option("--upstream-alpn", multiple=True, metavar="PROTO",
              help="Offer this application protocol (ALPN) to the upstream; repeat, in order.")
@click.option("--upstream-keylog", metavar="FILE", default=None,
              help="Append the upstream sessions' secrets to FILE (NSS key log: wireshark, tshark, "
                   "sniff --keylog); $SSLKEYLOGFILE is honoured too.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (listening, connection, summary).")
@click.option("--quiet", "-q", is_flag=True, help="No line (or JSON event) per connection; log only warnings "
                                                 "and errors.")
@click.option("--seed", type=int, default=None, hidden=True, help="Seed of toxicity's and jitter's random numbers.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True, help="Stop when stdin closes (tests, embedders).")
def command(listens, targets, toxics, config_file, api, decode, workers, drain_timeout, splice, as_json, quiet,
            seed, stop_on_stdin_eof, **tls_params):
    """A TCP proxy that breaks the link on purpose: Toxiproxy's toxics, its HTTP API.

    Forwards both directions with bounded buffers (a slow side pauses reading
    on the other), passes a half-close and a reset on as they came, and
    closes the client when the upstream refuses. Binds 127.0.0.1 unless told
    otherwise. Prints one line per connection (bytes each way) and a summary.
    With --listen-tls / --upstream-tls, TLS on either side (docs/proxy.md, "TLS").
    """
    from socktools.proxy import config as cfg
    from socktools.proxy.listen import ProxyError
    from socktools.proxy.runner import run_proxy

    setup_logging(quiet=quiet)
    if len(listens) != len(targets):
        raise click.UsageError(f"give --listen and --to in pairs ({len(listens)} --listen, {len(targets)} --to)")
    listen_tls, upstream_tls = _listen_tls(tls_params), _upstream_tls(tls_params)
    if (listen_tls or upstream_tls) and not listens:
        option = "--listen-tls" if listen_tls else "--upstream-tls"
        raise click.BadParameter("TLS options act on --listen/--to proxies; in a --config file give each "
                                 "proxy its own listen_tls/upstream_tls", param_hint=f"'{option}'")
    proxies = []
    try:
        toxic_docs = [cfg.parse_toxic_option(t) for t in toxics]
        specs = tuple(cfg.toxic_from_json(d) for d in toxic_docs)
    except cfg.SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="'--toxic'") from None
    for i, (listen, to) in enumerate(zip(listens, targets), 1):
        try:
            proxies.append(cfg.ProxySpec(f"proxy{i}", listen, to, True, specs, listen_tls, upstream_tls))
        except cfg.SpecError as exc:
            hint = "'--listen'" if str(exc).startswith("listen") else \
                "'--upstream-sni'" if str(exc).startswith("upstream_tls") else "'--to'"
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
    _check_tls_files(proxies, bool(config_file))
    proxies, made = _self_signed(proxies)
    try:
        config = build_config(cfg.ProxyConfig, proxies=tuple(proxies), api=api, drain_timeout=drain_timeout,
                              stop_on_stdin_eof=stop_on_stdin_eof, seed=seed, decode=decode,
                              splice=splice, workers=workers)
        run = run_proxy
        if config.workers > 1:
            from socktools.proxy.supervisor import run_workers as run
        try:
            run(config, _echo_event(as_json, quiet, made))
        except ProxyError as exc:
            die(str(exc), EXIT_FAILED)
    finally:
        if made is not None:
            import shutil
            shutil.rmtree(made.folder, ignore_errors=True)     # the throwaway certificate and its key


# ------------------------------------------------------------------ TLS on either side

#: The upstream side's options are the client options of the commands that connect
#: (cli/_tls.py), each prefixed ``--upstream-``: the listening side has serve's --cert/--key.
_UPSTREAM = ("sni", "cafile", "capath", "insecure", "cert", "key", "tls_min", "tls_max", "ciphers", "alpn",
             "keylog")
_LISTEN = ("cert", "key", "client_ca")


def _listen_tls(params: dict):
    """The listening side's ServerTlsConfig (serve's options and meanings), or None."""
    from socktools.tlsconf import ServerTlsConfig, server_context
    on, self_signed = params.pop("listen_tls"), params.pop("tls_self_signed")
    values = {name: params.pop(name) for name in _LISTEN}
    if not on and not self_signed:
        for name, value in values.items():
            if value:
                raise click.BadParameter("is a TLS option of the listening side: give --listen-tls (or "
                                         "--tls-self-signed) too", param_hint=f"'--{name.replace('_', '-')}'")
        return None
    if not self_signed and not (values["cert"] and values["key"]):
        missing = "key" if values["cert"] else "cert"
        raise click.BadParameter("--listen-tls needs --cert FILE and --key FILE (the listener's certificate "
                                 "and private key), or --tls-self-signed for a throwaway pair",
                                 param_hint=f"'--{missing}'")
    tls = build_config(ServerTlsConfig, self_signed=self_signed, **values)
    if not self_signed:
        build_config(server_context, cfg=tls)      # a key not the certificate's
    return tls


def _upstream_words(text: str) -> str:
    """The client checks' words name --cafile, --tls...: here those are --upstream-cafile..."""
    import re
    return re.sub(r"--(?=(?:tls-min|tls-max|sni|cafile|capath|insecure|cert|key|ciphers|alpn|keylog|tls)\b)",
                  "--upstream-", text)


def _upstream_tls(params: dict):
    """The upstream side's TlsConfig (the client options' meanings, reusing tlsconf), or None."""
    from socktools.errors import OptionError
    from socktools.tlsconf import TlsConfig, client_context
    on = params.pop("upstream_tls")
    values = {name: params.pop(f"upstream_{name}") for name in _UPSTREAM}
    values["alpn"] = tuple(values["alpn"] or ())
    if not on:
        for name, value in values.items():
            if value:
                raise click.BadParameter("is an upstream TLS option: give --upstream-tls too",
                                         param_hint=f"'--upstream-{name.replace('_', '-')}'")
        return None
    try:
        tls = TlsConfig(enabled=True, **values)
        client_context(tls)                  # files only OpenSSL can judge (a key not the cert's)
    except OptionError as exc:
        raise click.BadParameter(_upstream_words(str(exc)),
                                 param_hint=f"'--upstream-{exc.option.replace('_', '-')}'") from None
    if tls.insecure:
        click.echo("warning: --upstream-insecure: the upstream's certificate and name are NOT verified; "
                   "anyone in the path can read and change what the proxy sends it", err=True)
    return tls


def _check_tls_files(proxies: list, from_file: bool) -> None:
    """A config file's TLS files checked as the options' are (a key not its certificate's) -- a
    usage error naming the proxy, before anything listens."""
    from socktools.errors import OptionError
    from socktools.tlsconf import client_context, server_context
    for spec in proxies:
        try:
            if spec.listen_tls is not None and not spec.listen_tls.self_signed:
                server_context(spec.listen_tls)
            if spec.upstream_tls is not None:
                client_context(spec.upstream_tls)
        except OptionError as exc:
            if not from_file:
                raise           # (the options' own checks said it already; not reached)
            raise click.BadParameter(f"proxy {spec.name}: {exc.option}: {exc}", param_hint="'--config'") from None


def _self_signed(proxies: list):
    """--tls-self-signed (or a config's ``self_signed = true``): one throwaway pair, made now,
    for every proxy that asks; ``(the specs with its files, the pair or None)``."""
    from dataclasses import replace
    if not any(p.listen_tls is not None and p.listen_tls.self_signed for p in proxies):
        return proxies, None
    from socktools.serve.selfsigned import make_self_signed
    made = make_self_signed(made_by="socktools proxy")
    out = []
    for p in proxies:
        if p.listen_tls is not None and p.listen_tls.self_signed:
            p = replace(p, listen_tls=replace(p.listen_tls, self_signed=False, cert=made.cert, key=made.key))
        out.append(p)
    return out, made

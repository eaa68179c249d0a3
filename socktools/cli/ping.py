"""``socktools ping HOST``: TCP-connect ping (like tcping), or ICMP echo with --icmp."""

from __future__ import annotations

import json
import signal
import time

import click

from socktools.cli._common import (DURATION, EXIT_FAILED, EXIT_SIGTERM, EXIT_UNAVAILABLE, MAX_COUNT, PORT, die,
                                   refuse_path_as_host, unix_option, warn_target)
from socktools.cli._tls import tls_config, tls_options


def _split_host_port(host: str, port):
    """``127.0.0.1:8080`` / ``[::1]:8080`` -> (host, 8080) when --port was not given."""
    if host.startswith("[") and "]:" in host:
        h, p = host[1:].split("]:", 1)
    elif host.count(":") == 1:
        h, p = host.split(":")
    else:
        return host.strip("[]"), port
    if port is not None:
        raise click.UsageError(f"port given twice: in {host!r} and --port {port}")
    try:
        return h, PORT.convert(p, None, None)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint="HOST") from None


def _check_unix(ctx, host: str, port, icmp: bool, unix) -> None:
    """--unix is the whole target (no HOST, --port or --icmp); a path as HOST is meant for --unix."""
    from click.core import ParameterSource
    if unix is None:
        refuse_path_as_host(host, "HOST")
        return
    if icmp:
        raise click.BadParameter("not with --unix: ICMP goes to an IP address", param_hint="'--icmp'")
    if ctx.get_parameter_source("host") not in (None, ParameterSource.DEFAULT) or port is not None:
        raise click.UsageError("--unix names the whole target: give --unix or HOST/--port, not both")


@click.command("ping", context_settings={"max_content_width": 100})
@click.argument("host", default="127.0.0.1", metavar="[HOST]")
@click.option("--port", "-p", type=PORT, default=None,
              help="TCP port to connect to (with --udp: the UDP echo server's, required)  [default: 65432, or HOST:PORT]")
@click.option("--count", "-c", type=click.IntRange(0, MAX_COUNT), default=4, show_default=True,
              help="Probes to send; 0 = until Ctrl-C.")
@click.option("--interval", "-i", type=DURATION, default="1s", show_default=True,
              help="Time between the starts of two probes (500ms, 1s...).")
@click.option("--timeout", "-W", type=DURATION, default="2s", show_default=True,
              help="How long to wait for each handshake or reply.")
@click.option("--icmp", is_flag=True, help="ICMP echo instead of TCP connect (needs root or CAP_NET_RAW).")
@click.option("--udp", is_flag=True,
              help="A datagram to a UDP echo server at --port per probe, its echo timed; replies are "
                   "matched by sequence number (late and duplicated ones named).")
@unix_option("  Times connect() to it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document at the end.")
@tls_options
@click.pass_context
def command(ctx, host, port, count, interval, timeout, icmp, udp, unix, as_json, **tls_params):
    """Time TCP handshakes to HOST:PORT, one per interval, and summarise like ping.

    Each probe is a TCP connect (SYN, SYN-ACK, ACK) timed until it completes,
    then closed: it shows whether something listens and how far away it is,
    with no privilege and through firewalls that drop ICMP.  Failures name
    the errno (ECONNREFUSED: nothing listens; ETIMEDOUT: no answer).  --icmp
    sends ICMP echo instead and names ICMP errors in words.  HOST defaults to
    127.0.0.1; Ctrl-C or SIGTERM stops early and still prints the summary.
    Exit status 1 when no probe succeeded; 143 when SIGTERM stopped it.

    --tls adds a TLS handshake to each probe, timed apart from the connect,
    and names the version; a refused handshake is a failed probe named by its
    TLS key (tls-unknown-ca...).  A certificate that expires within 30 days is
    warned about once, on stderr.

    --udp sends one datagram per probe to a UDP echo server (flood's 24-byte
    header: ping's number, the sequence number, the send time) and times its
    echo.  A reply after its timeout is named late, a second copy duplicated;
    ECONNREFUSED means the kernel there answered with ICMP port unreachable
    (nobody listens), while silence says nothing more than silence.

    \b
    Examples:
      socktools serve --port 65432 &
      socktools ping 127.0.0.1 --port 65432 --count 3
      socktools ping [::1]:65432 --interval 200ms
      sudo socktools ping 127.0.0.1 --icmp
      socktools ping --unix /run/redis/redis.sock --count 3
      socktools ping 127.0.0.1:6380 --tls --cafile ca.pem --count 3
      socktools ping localhost:443 --tls --json
      socktools ping --udp --port 9000
      socktools ping --udp 127.0.0.1:9000 --count 10 --interval 200ms --timeout 500ms
    """
    from socktools.ping.config import PingConfig
    from socktools.ping.probe import IcmpUnavailable, check_icmp, probes, resolve_target
    from socktools.ping.report import expiry_warning, plural, probe_line, summary_lines, to_json
    from socktools.ping.results import summarize
    tls = tls_config(tls_params)
    if tls.enabled and icmp:
        raise click.BadParameter("not with --icmp: a TLS handshake needs a TCP connection", param_hint="'--tls'")
    if udp:
        for given, option, why in ((icmp, "--icmp", "ICMP echo and UDP echo are two kinds of ping: pick one"),
                                   (tls.enabled, "--tls", "no TLS over UDP (that is DTLS, which socktools "
                                                          "does not speak)"),
                                   (unix is not None, "--unix", "--udp is UDP over IP: a Unix-domain socket "
                                                                "is not a UDP port")):
            if given:
                raise click.BadParameter(f"not with --udp: {why}", param_hint=f"'{option}'")
    _check_unix(ctx, host, port, icmp, unix)
    host, port = _split_host_port(host, port)
    if udp and port is None:
        raise click.BadParameter("--udp needs the port of a UDP echo server: --port P or HOST:PORT",
                                 param_hint="'--port'")
    if interval < 0.01:
        raise click.BadParameter("must be at least 10ms", param_hint="'--interval'")
    if timeout <= 0:
        raise click.BadParameter("must be more than 0", param_hint="'--timeout'")
    config = PingConfig(host=host, port=65432 if port is None else port, count=count,
                        interval=interval, timeout=timeout, icmp=icmp, unix=unix, tls=tls if tls.enabled else None,
                        udp=udp)
    if icmp:
        try:
            check_icmp()      # before any output: the refusal is the whole answer
        except IcmpUnavailable as exc:
            die(str(exc), EXIT_UNAVAILABLE)
    try:
        target = resolve_target(config)
    except OSError as exc:
        from socktools.errors import one_line
        die(one_line(exc, f"resolve {host!r}"))
    if unix is None:
        warn_target("ping", target.sockaddr)
    if not as_json:
        shown = target.display if unix is not None or target.display == host or \
            target.display.endswith(host) else f"{host} ({target.display})"
        how = "ICMP echo" if icmp else "Unix connect" if unix is not None else "TCP connect"
        if udp:
            from socktools.wire.datagram import HEADER_SIZE
            how = f"UDP echo ({HEADER_SIZE}-byte datagrams)"
        how = f"{'TLS over ' + how if unix is not None else 'TLS connect'}" if tls.enabled else how
        click.echo(f"PING {shown}: {how}, {'until Ctrl-C' if not count else plural(count, 'probe')}")
    results = []
    start = time.monotonic()
    interrupted = False
    terminated = []

    def on_sigterm(signum, frame):
        # SIGTERM (timeout, systemd, kill) stops the probes like Ctrl-C: the summary still prints.
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    warned = False
    try:
        for probe in probes(config, target):
            results.append(probe)
            if not as_json:
                click.echo(probe_line(probe, icmp))
            if probe.leaf is not None and not warned:
                # once per run: the first certificate seen is the one to renew
                import datetime
                warned = True
                warning = expiry_warning(probe.leaf, datetime.datetime.now(datetime.timezone.utc))
                if warning:
                    click.echo(f"warning: {warning}", err=True)
    except IcmpUnavailable as exc:
        die(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - start
    stats = summarize(results)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(to_json(host, target, config.port, icmp, results, stats,
                                              interrupted, tls=tls.enabled)), indent=2))
    else:
        click.echo("")
        for line in summary_lines(target, stats, elapsed, icmp, tls.enabled):
            click.echo(line)
    if terminated:
        raise SystemExit(EXIT_SIGTERM)
    if stats.received == 0:
        raise SystemExit(EXIT_FAILED)

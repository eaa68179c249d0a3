"""``socktools ping HOST``: TCP-connect ping (like tcping), or ICMP echo with --icmp."""

from __future__ import annotations

import json
import signal
import time

import click

from socktools.cli._common import (DURATION, EXIT_FAILED, EXIT_SIGTERM, EXIT_UNAVAILABLE, MAX_COUNT, PORT, die,
                                   warn_target)


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _probe_line(p, icmp: bool) -> str:
    if icmp:
        if p.ok:
            return f"reply from {p.peer}: icmp_seq={p.seq} ttl={p.ttl} time={p.time_ms:.3f} ms"
        if p.icmp:
            return f"from {p.peer}: icmp_seq={p.seq} {p.detail}"
        return f"no reply from {p.peer}: icmp_seq={p.seq} {p.error} - {p.detail}"
    if p.ok:
        return f"connected to {p.peer}: seq={p.seq} time={p.time_ms:.3f} ms"
    took = f" (after {p.elapsed_ms:.3f} ms)" if p.elapsed_ms is not None and p.error != "ETIMEDOUT" else ""
    return f"no connection to {p.peer}: seq={p.seq} {p.error} - {p.detail}{took}"


def _summary_lines(target, stats, elapsed_s: float, icmp: bool) -> list[str]:
    from socktools import errors
    what = "icmp" if icmp else "tcp"
    got = "received" if icmp else "connected"
    lines = [f"--- {target.display} {what} ping statistics ---",
             f"{_plural(stats.sent, 'probe')} sent, {stats.received} {got}, {stats.loss_pct:.0f}% loss, "
             f"time {elapsed_s * 1000:.0f} ms"]
    if stats.received:
        lines.append(f"rtt min/avg/max/stddev = {stats.min_ms:.3f}/{stats.avg_ms:.3f}/"
                     f"{stats.max_ms:.3f}/{stats.stddev_ms:.3f} ms")
    for key, n in stats.failures:
        exp = errors.lookup(key)
        fix = f"; {exp.fix}" if exp else ""
        lines.append(f"{key} x{n}{fix}")
    return lines


@click.command("ping", context_settings={"max_content_width": 100})
@click.argument("host", default="127.0.0.1", metavar="[HOST]")
@click.option("--port", "-p", type=PORT, default=None,
              help="TCP port to connect to  [default: 65432, or HOST:PORT]")
@click.option("--count", "-c", type=click.IntRange(0, MAX_COUNT), default=4, show_default=True,
              help="Probes to send; 0 = until Ctrl-C.")
@click.option("--interval", "-i", type=DURATION, default="1s", show_default=True,
              help="Time between the starts of two probes (500ms, 1s...).")
@click.option("--timeout", "-W", type=DURATION, default="2s", show_default=True,
              help="How long to wait for each handshake or reply.")
@click.option("--icmp", is_flag=True, help="ICMP echo instead of TCP connect (needs root or CAP_NET_RAW).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document at the end.")
def command(host, port, count, interval, timeout, icmp, as_json):
    """Time TCP handshakes to HOST:PORT, one per interval, and summarise like ping.

    Each probe is a TCP connect (SYN, SYN-ACK, ACK) timed until it completes,
    then closed: it shows whether something listens and how far away it is,
    with no privilege and through firewalls that drop ICMP.  Failures name
    the errno (ECONNREFUSED: nothing listens; ETIMEDOUT: no answer).  --icmp
    sends ICMP echo instead and names ICMP errors in words.  HOST defaults to
    127.0.0.1; Ctrl-C or SIGTERM stops early and still prints the summary.
    Exit status 1 when no probe succeeded; 143 when SIGTERM stopped it.

    \b
    Examples:
      socktools serve --port 65432 &
      socktools ping 127.0.0.1 --port 65432 --count 3
      socktools ping [::1]:65432 --interval 200ms
      sudo socktools ping 127.0.0.1 --icmp
    """
    from socktools.ping.probe import IcmpUnavailable, PingConfig, check_icmp, probes, resolve_target, summarize
    host, port = _split_host_port(host, port)
    if interval < 0.01:
        raise click.BadParameter("must be at least 10ms", param_hint="'--interval'")
    if timeout <= 0:
        raise click.BadParameter("must be more than 0", param_hint="'--timeout'")
    config = PingConfig(host=host, port=65432 if port is None else port, count=count,
                        interval=interval, timeout=timeout, icmp=icmp)
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
    warn_target("ping", target.sockaddr)
    if not as_json:
        shown = target.display if target.display == host or target.display.endswith(host) else \
            f"{host} ({target.display})"
        how = "ICMP echo" if icmp else "TCP connect"
        click.echo(f"PING {shown}: {how}, {'until Ctrl-C' if not count else _plural(count, 'probe')}")
    results = []
    start = time.monotonic()
    interrupted = False
    terminated = []

    def on_sigterm(signum, frame):
        # SIGTERM (timeout, systemd, kill) stops the probes like Ctrl-C: the summary still prints.
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for probe in probes(config, target):
            results.append(probe)
            if not as_json:
                click.echo(_probe_line(probe, icmp))
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
        click.echo(json.dumps(stamped({"target": {"host": host, "address": target.display,
                                          "port": None if icmp else config.port,
                                          "mode": "icmp" if icmp else "tcp"},
                               "probes": [p.to_dict() for p in results],
                               "summary": stats.to_dict(), "interrupted": interrupted}), indent=2))
    else:
        click.echo("")
        for line in _summary_lines(target, stats, elapsed, icmp):
            click.echo(line)
    if terminated:
        raise SystemExit(EXIT_SIGTERM)
    if stats.received == 0:
        raise SystemExit(EXIT_FAILED)

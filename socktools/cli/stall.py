"""``socktools stall``: reproduce BlockingIOError against a peer that does not read, and explain it."""

from __future__ import annotations

import json

import click

from socktools.cli._common import BYTESIZE, DURATION, EXIT_FAILED, PORT, build_config, die, warn_target

EPILOG = """\b
Examples:
  socktools stall                              # against its own sink on 127.0.0.1
  socktools stall --drain                      # ...then let the sink read: the resume half
  socktools stall --sndbuf 4096 --rcvbuf 4096  # tiny buffers: blocks after KB, not MB
  socktools stall --host ::1 --json            # IPv6, every figure as JSON
  socktools stall --port 65432                 # stall a server you suspect of not reading

\b
Without --port, stall starts `socktools serve --mode sink` on --host (a free
loopback port) and stops it afterwards.  Exit codes: 0 send() blocked and the
report was printed; 1 connect/send failed, or send() never blocked (the peer
reads); 2 bad options.
"""

@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Where the embedded sink listens (127.0.0.1 or ::1), or with --port the server to stall.")
@click.option("--port", "-p", type=PORT, default=None,
              help="Stall this server instead of starting a sink.  [default: start a sink on a free port]")
@click.option("--chunk", type=BYTESIZE, default="64k", show_default=True, help="Bytes per send().")
@click.option("--sndbuf", type=BYTESIZE, default=None,
              help="Our SO_SNDBUF, set before connect (Linux doubles it).  [default: autotuned]")
@click.option("--rcvbuf", type=BYTESIZE, default=None,
              help="The embedded sink's SO_RCVBUF (Linux doubles it).  [default: net.ipv4.tcp_rmem]")
@click.option("--settle", type=DURATION, default="0.5s", show_default=True, metavar="DURATION",
              help="After the first EAGAIN, retry until the queues stand still this long.")
@click.option("--drain", is_flag=True, help="Then let the sink read, and show the queues empty and the socket "
                                            "become writable again.")
@click.option("--timeout", type=DURATION, default="10s", show_default=True, metavar="DURATION",
              help="Give up on each phase (fill, settle, drain) after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Figures only, without the explanation at the end.")
def command(host, port, chunk, sndbuf, rcvbuf, settle, drain, timeout, as_json, quiet):
    """Reproduce the full socket buffer: send() until BlockingIOError, and show why.

    Connects a nonblocking socket to a peer that does not read, sends until
    send() raises BlockingIOError (EAGAIN), waits for the queues to settle,
    then reports the kernel's own numbers for both ends: SO_SNDBUF/SO_RCVBUF,
    Send-Q and Recv-Q as netstat/ss show them, TCP_INFO (rtt, cwnd, the
    peer's zero window, the persist timer) and how the bytes add up.
    Read by Python from the kernel (Linux); no ss or netstat needed.
    """
    from socktools.core.embedded import EmbeddedServerError
    from socktools.errors import one_line
    from socktools.stall.config import StallConfig
    from socktools.stall.report import render_report
    from socktools.stall.steps import StallError, run_stall
    config = build_config(StallConfig, host=host, port=port, chunk=chunk, sndbuf=sndbuf, rcvbuf=rcvbuf,
                          settle=settle, drain=drain, timeout=timeout)
    if port is not None:
        warn_target("stall", host)
    try:
        report = run_stall(config)
    except StallError as exc:
        if exc.cause is None:
            die(str(exc))
        die(one_line(exc.cause, exc.what))
    except EmbeddedServerError as exc:
        die(str(exc))
    except KeyboardInterrupt:
        die("interrupted; connection closed and the embedded sink stopped", 130)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(report.to_dict()), indent=2))
    else:
        click.echo(render_report(report, quiet=quiet))
    if not report.fill.blocked:
        die(f"send() never blocked in {timeout:g} s: the peer at {report.remote} is reading "
            f"({report.fill.bytes:,} bytes accepted)", EXIT_FAILED)

"""`socktools demo`: the click face of socktools.demo.tour.run_tour (the guided tour)."""

from __future__ import annotations

import sys

import click

from socktools.cli._common import DURATION, EXIT_FAILED, die

EPILOG = """\b
Example:
  socktools demo                 # the whole tour, about half a minute
  socktools demo --no-capture    # skip the packet-capture step
"""


@click.command(epilog=EPILOG)
@click.option("--capture/--no-capture", default=True, show_default=True,
              help="Include the packet-capture step (needs root or CAP_NET_RAW).")
@click.option("--conns", type=click.IntRange(1, 5000), default=300, show_default=True,
              help="Connections for the flood step.")
@click.option("--duration", type=DURATION, default="3s", show_default=True, metavar="DURATION",
              help="How long the flood step runs (e.g. 3s, 500ms).")
def command(capture, conns, duration):
    """The guided tour: serve, request, flood, stall and sniff on loopback.

    Starts a framed-protocol server on a free loopback port, makes the
    tutorial's requests, floods it, reproduces a full send buffer and (when
    privileged) captures one exchange. Each step prints the standalone command
    so you can rerun it. Everything it starts is stopped at the end, also on
    Ctrl-C.
    """
    from socktools.demo.tour import DemoError, Tour, run_tour

    if duration <= 0:
        raise click.BadParameter("must be more than 0", param_hint="'--duration'")
    color = sys.stdout.isatty()
    tour = Tour(click.echo, lambda text, **kw: click.style(text, **kw) if color else text)
    interrupted = False
    try:
        run_tour(tour, capture=capture, conns=conns, duration=duration)
    except DemoError as exc:
        die(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        click.echo("\ndemo interrupted: everything it started has been stopped.", err=True)
        sys.exit(130)
    if tour.failures:
        for failure in tour.failures:
            click.echo(f"socktools demo: {failure}", err=True)
        sys.exit(EXIT_FAILED)

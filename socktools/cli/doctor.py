"""``socktools doctor``: can this machine hold N connections? Each limit, judged, with its fix."""

from __future__ import annotations

import json

import click

from socktools.cli._common import EXIT_FAILED, MAX_CONNS

_MARK = {"ok": "ok", "low": "LOW", "warn": "warn", "info": "info", "absent": "n/a"}


def render(report) -> str:
    lines = [f"socktools doctor: limits for {report.conns:,} connections "
             f"(client and server on this machine: 2 sockets per connection)", ""]
    for c in report.checks:
        lines.append(f"[{_MARK.get(c.status, c.status):>4}] {c.title}")
        lines.append(f"       value: {c.value}")
        if c.need:
            lines.append(f"       needs: {c.need}")
        if c.status != "ok" and c.note:
            lines.append(f"       why:   {c.note}")
        if c.fix:
            lines.append(f"       fix:   {c.fix}")
    low = [c for c in report.checks if c.status == "low"]
    lines.append("")
    if low:
        lines.append(f"{len(low)} limit(s) too low for {report.conns:,} connections: "
                     + ", ".join(c.key for c in low))
    else:
        lines.append(f"OK: nothing here stops {report.conns:,} connections"
                     + (" (see the warnings above)" if any(c.status == "warn" for c in report.checks)
                        else ""))
    return "\n".join(lines)


@click.command("doctor", context_settings={"max_content_width": 100})
@click.option("--conns", "-c", type=click.IntRange(1, MAX_CONNS), default=1000, show_default=True,
              help="Connections you plan to open (client and server both on this machine).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(conns, as_json):
    """Check the limits that decide how many sockets this machine can hold.

    Reads open-file limits (per process and system-wide), the ephemeral port
    range, the listen backlog cap, TIME-WAIT reuse, conntrack, TCP memory,
    capture privilege and libpcap; says for each whether it is enough for
    --conns connections and which command raises it.  Changes nothing.
    Exit status 1 when a limit is too low.

    \b
    Examples:
      socktools doctor                  # enough for 1000 connections?
      socktools doctor --conns 50000
      socktools doctor --json | jq '.checks[] | select(.status != "ok")'
    """
    from socktools.kernel.doctor import DoctorConfig, run_doctor
    report = run_doctor(DoctorConfig(conns=conns))
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(report.to_dict()), indent=2))
    else:
        click.echo(render(report))
    if not report.ok:
        raise SystemExit(EXIT_FAILED)

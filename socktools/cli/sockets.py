"""``socktools sockets``: the machine's TCP sockets with their queues, like ``ss -tan``."""

from __future__ import annotations

import json

import click

from socktools.cli._common import EXIT_UNAVAILABLE, PORT, die


def _state_param(ctx, param, values):
    from socktools.kernel.socktable import normalize_state
    try:
        return tuple(normalize_state(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _addr(host_port) -> str:
    host, port = host_port
    shown = "*" if host in ("0.0.0.0", "::") else host
    port_s = "*" if port == 0 and host in ("0.0.0.0", "::") else str(port)
    return f"[{shown}]:{port_s}" if ":" in shown else f"{shown}:{port_s}"


def _procs(pids) -> str:
    return ",".join(f"{name}({pid})" for pid, name in pids) or "-"


def render_table(entries, *, processes: bool) -> str:
    """The ss-like table: State, Recv-Q, Send-Q, Local, Peer[, Process]."""
    head = ["State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"]
    if processes:
        head.append("Process")
    rows = []
    for e in entries:
        row = [e.state, str(e.recv_q), "-" if e.send_q is None else str(e.send_q),
               _addr(e.local), _addr(e.remote)]
        if processes:
            row.append(_procs(e.pids))
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {1, 2}   # queues are numbers: right-align like ss

    def fmt(row):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        return "  ".join(cells).rstrip()
    return "\n".join(fmt(r) for r in [head, *rows])


@click.command("sockets", context_settings={"max_content_width": 100})
@click.option("--port", "-p", type=PORT, default=None,
              help="Only sockets whose local or peer port is PORT.")
@click.option("--state", "-s", "states", multiple=True, callback=_state_param, metavar="STATE",
              help="Only this state (LISTEN, ESTABLISHED/estab, TIME-WAIT, CLOSE-WAIT, SYN-SENT...); "
                   "repeat for several.")
@click.option("--listen", "-l", "listening", is_flag=True, help="Only listening sockets.")
@click.option("--processes", "-P", is_flag=True,
              help="Show the owning process (walks /proc/*/fd; other users' processes need root).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--source", type=click.Choice(["auto", "netlink", "proc"]), default="auto",
              show_default=True, help="Where to read the table: NETLINK_SOCK_DIAG or /proc/net/tcp*.")
def command(port, states, listening, processes, as_json, source):
    """Show TCP sockets (IPv4 and IPv6) with their queues, like `ss -tan`.

    Recv-Q is data that arrived but the program has not read yet; Send-Q is
    data sent but not yet acknowledged by the peer.  For a LISTEN socket,
    Recv-Q is the accept queue (connections waiting for accept()) and Send-Q
    its backlog, as ss shows them.  Read from the kernel (sock_diag netlink,
    or /proc/net/tcp), no ss or netstat needed; Linux only.

    \b
    Examples:
      socktools sockets --listen                 # every listener with its accept queue
      socktools sockets --port 65432 --processes # one server's sockets and their owners
      socktools sockets --state estab --json
    """
    from socktools.kernel.socktable import SocketTableUnavailable, read_sockets, resolve_source
    try:
        used = resolve_source(source)
        entries = read_sockets(port=port, state=states or None, listening=listening,
                               processes=processes, source=source)
    except SocketTableUnavailable as exc:
        die(str(exc), EXIT_UNAVAILABLE)
    except PermissionError as exc:
        die(f"cannot read the socket table: {exc}", EXIT_UNAVAILABLE)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped({"source": used, "sockets": [e.to_dict() for e in entries]}), indent=2))
        return
    if not entries:
        click.echo("no TCP sockets match", err=True)
        return
    click.echo(render_table(entries, processes=processes))
    if any(e.listening for e in entries):
        note = "LISTEN rows: Recv-Q = connections waiting for accept(), Send-Q = backlog"
        if used == "proc":
            note += " ('-': /proc does not show it)"
        click.echo(f"\n{note}")
    if processes and any(e.inode and not e.pids for e in entries):
        click.echo("Process '-': no visible process holds it (another PID namespace)" if _is_root()
                   else "Process '-': owner not readable (another user's process; run as root to see it)")


def _is_root() -> bool:
    import os
    return hasattr(os, "geteuid") and os.geteuid() == 0

"""``socktools sockets``: the machine's sockets like ``ss -tan``, one-shot or live like TCPView."""

from __future__ import annotations

import sys

import click

from socktools.cli._common import DURATION, EXIT_UNAVAILABLE, MAX_COUNT, PORT, build_config, die, stamped


def _state_param(ctx, param, values):
    from socktools.kernel.socktable import state_mask
    try:
        state_mask(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return tuple(values)


def _address_param(ctx, param, values):
    from socktools.kernel.socktable import parse_address
    try:
        return tuple(parse_address(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command("sockets", context_settings={"max_content_width": 100})
@click.option("--tcp", "-t", is_flag=True, help="TCP sockets (the default when no family is given).")
@click.option("--udp", "-u", is_flag=True, help="UDP sockets.")
@click.option("--unix", "-x", is_flag=True, help="Unix-domain sockets (stream, datagram, seqpacket).")
@click.option("--all", "-a", "all_families", is_flag=True, help="TCP, UDP and Unix sockets.")
@click.option("--port", "-p", type=PORT, default=None,
              help="Only sockets whose local or peer port is PORT.")
@click.option("--sport", type=PORT, default=None, help="Only sockets whose local port is PORT.")
@click.option("--dport", type=PORT, default=None, help="Only sockets whose peer port is PORT.")
@click.option("--src", "src", multiple=True, callback=_address_param, metavar="ADDR",
              help="Only this local address or network (127.0.0.1, 10.0.0.0/8, [::1]:8080, :443); "
                   "repeat for any of several.")
@click.option("--dst", "dst", multiple=True, callback=_address_param, metavar="ADDR",
              help="Only this peer address or network, as --src.")
@click.option("--state", "-s", "states", multiple=True, callback=_state_param, metavar="STATE",
              help="Only this state (LISTEN, ESTABLISHED/estab, TIME-WAIT, CLOSE-WAIT, SYN-SENT, "
                   "UNCONN...) or ss group: connected (not LISTEN or CLOSE), synchronized "
                   "(connected but not SYN-SENT), bucket (TIME-WAIT, SYN-RECV), big (not bucket), "
                   "all; repeat for several.")
@click.option("--listen", "-l", "listening", is_flag=True, help="Only listening sockets.")
@click.option("--processes", "-P", is_flag=True,
              help="Show the owning processes as name(pid,fd=N) (walks /proc/*/fd like ss -p; "
                   "other users' processes need root).")
@click.option("--info", "-i", is_flag=True,
              help="Traffic per TCP socket from the kernel's tcp_info: bytes sent (acked) and "
                   "received, segments out/in, retransmits, RTT, cwnd, delivery rate.")
@click.option("--timers", "-o", is_flag=True, help="The pending timer, like ss -o: name,expires,retrans.")
@click.option("--memory", "-m", is_flag=True, help="Socket memory, like ss -m (skmem).")
@click.option("--sort", type=click.Choice(["bytes", "rate", "rtt", "queue"]), default=None,
              help="Biggest first: bytes (sent + received), rate (--watch), rtt, queue (Recv-Q + Send-Q).")
@click.option("--watch", "-w", is_flag=True,
              help="Refresh live (in place on a terminal) with rates per socket and the summary line.")
@click.option("--interval", type=DURATION, default="1s", show_default=True,
              help="Time between refreshes with --watch.")
@click.option("--count", "-c", type=click.IntRange(max=MAX_COUNT), default=None,
              help="With --watch: stop after this many refreshes (default: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output; with --watch, one JSON line per refresh.")
@click.option("--source", type=click.Choice(["auto", "netlink", "proc"]), default="auto",
              show_default=True, help="Where to read the table: NETLINK_SOCK_DIAG or /proc/net/*.")
def command(tcp, udp, unix, all_families, port, sport, dport, src, dst, states, listening,
            processes, info, timers, memory, sort, watch, interval, count, as_json, source):
    """Show the machine's sockets with their queues, like `ss -tan`; live with --watch.

    Recv-Q is data that arrived but the program has not read yet; Send-Q is
    data sent but not yet acknowledged by the peer.  For a LISTEN socket,
    Recv-Q is the accept queue (connections waiting for accept()) and Send-Q
    its backlog, as ss shows them.  --info adds each TCP socket's traffic as
    the kernel counts it (any program's socket, not only ours); --watch turns
    that into rates, marks new (+) and closed (-) sockets and puts TCPView's
    summary line on top.  Read from the kernel (sock_diag netlink, or
    /proc/net), no ss or netstat needed; Linux only.

    \b
    Examples:
      socktools sockets --listen                     # every TCP listener and its accept queue
      socktools sockets --all --processes            # TCP, UDP and Unix, with owners
      socktools sockets --port 65432 -i -o           # traffic and timers of one server's sockets
      socktools sockets --state connected --dst 127.0.0.0/8
      socktools sockets --watch --sort rate          # live, busiest first; Ctrl-C ends
      socktools sockets --watch --count 3 --json --sport 65432   # three JSON lines, 1 s apart
    """
    from socktools.kernel.socktable import SocketFilter, SocketTableUnavailable, resolve_source
    from socktools.sockets import report
    from socktools.sockets.config import SocketsConfig
    from socktools.sockets.run import frames, table

    if all_families:
        families = ("tcp", "udp", "unix")
    else:
        families = tuple(f for f, on in (("tcp", tcp), ("udp", udp), ("unix", unix)) if on) or ("tcp",)
    if listening and states:
        # Both narrow the table: say so rather than print nothing for --listen --state estab.
        from socktools.kernel.socktable import state_mask
        if 10 not in state_mask(states):
            raise click.UsageError("--listen and --state exclude each other here "
                                   "(--listen is --state listen)")
    if listening:
        states = ("LISTEN",)
    config = build_config(
        SocketsConfig, families=families,
        filter=SocketFilter(states=states, src=src, dst=dst, sport=sport, dport=dport, port=port),
        processes=processes, info=info, timers=timers, memory=memory, sort=sort, watch=watch,
        interval=interval, count=count, as_json=as_json, source=source)
    try:
        used = resolve_source(source)
        if used == "proc" and (info or timers or memory or watch):
            click.echo("socktools: /proc/net has no tcp_info, timers or socket memory: those "
                       "columns (and --watch's rates) stay '-'; netlink has them", err=True)
        if watch:
            _watch(config, frames(config), report, used)
            return
        # This process prints one table and exits: cyclic GC would only walk the table's acyclic
        # tuples and the rendered cells (a full pass over all of them, once re-enabled).
        import gc
        gc.disable()
        try:
            entries = table(config)
        except KeyboardInterrupt:
            die("interrupted", 130)
        if as_json:
            import json
            click.echo(json.dumps(stamped(report.one_shot_document(entries, source=used)), indent=2))
        elif entries:
            click.echo(report.one_shot(entries, config, source=used))
        else:
            click.echo("no sockets match", err=True)
    except SocketTableUnavailable as exc:
        die(str(exc), EXIT_UNAVAILABLE)
    except PermissionError as exc:
        die(f"cannot read the socket table: {exc}", EXIT_UNAVAILABLE)
    if processes and not as_json and any(e.inode and not e.owners for e in entries):
        _owner_note()


def _watch(config, frames, report, source: str) -> None:
    tty = sys.stdout.isatty() and not config.as_json
    try:
        for frame in frames:
            lines = 40
            if tty:
                import shutil
                lines = shutil.get_terminal_size((100, 40)).lines
            if config.as_json:
                import json     # one line per refresh, each with the run's metadata
                click.echo(json.dumps(stamped(report.frame_document(frame, source=source)),
                                      separators=(",", ":")))
            else:
                click.echo(report.render_frame(frame, config, tty=tty, screen_lines=lines))
            sys.stdout.flush()
    except KeyboardInterrupt:
        # Ctrl-C is how a watch without --count ends: a normal end, like ping's.
        if tty:
            click.echo()


def _owner_note() -> None:
    # Printed once, after the table: why some sockets show no owner.
    import os
    if os.geteuid() == 0:
        click.echo("Process '-': no visible process holds it (TIME-WAIT, not yet accepted, or "
                   "another PID namespace)")
    else:
        click.echo("Process '-': no process holds it, or the owner is another user's process "
                   "(run as root to see those)")

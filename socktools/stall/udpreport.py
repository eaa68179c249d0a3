"""Render what ``socktools stall --udp`` measured as the text a person reads (a view only)."""

from __future__ import annotations

__all__ = ["render_udp_report", "udp_failure_line"]


def _n(value) -> str:
    return "?" if value is None else f"{value:,}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render_udp_report(r, *, quiet: bool = False) -> str:
    s, rv, a, c = r.send, r.receiver, r.account, r.config
    own = rv.kind == "own"
    lines = [f"socktools stall --udp: {r.family} {r.local} -> {r.remote}, nonblocking connected UDP socket, "
             f"{c.chunk:,}-byte datagrams"]
    if own:
        lines.append(f"  receiver: a socket stall bound on {rv.address} and never reads (until it counts "
                     "what it held, at the end)")
    else:
        owners = ", ".join(f"pid {pid} ({name})" for pid, name in rv.pids) or "owner not visible"
        sockets = f"{rv.sockets} socket" + ("" if rv.sockets == 1 else "s (SO_REUSEPORT)")
        lines.append(f"  receiver: another program's server at {rv.address}: {sockets}, {owners}")
    lines += ["", "1. Send: one send() per datagram, as fast as the kernel returns"]
    refused = ", ".join(f"{k} x{v:,}" for k, v in sorted(s.refused.items())) or "none"
    lines.append(f"  accepted {s.sent:,} of {s.attempted:,} send() calls ({s.bytes:,} bytes) in "
                 f"{_ms(s.seconds)}; the slowest call took {_ms(s.slowest)}")
    lines.append(f"  refused: {refused}" + ("" if s.refused else
                 "  (EAGAIN/ENOBUFS would mean our own send buffer was momentarily full)"))
    if s.stopped_by == "timeout":
        lines.append(f"  stopped by --timeout {c.timeout:g}s before --count {c.datagrams:,}")
    lines += ["", "2. The kernel's view of the receiver"
              + (f" (its counts stood still for {c.settle:g} s)" if r.settled
                 else f" (still changing after --timeout {c.timeout:g}s)")]
    lines.append(f"    SO_RCVBUF  {_n(rv.rcvbuf):>12}" + ("  (each socket)" if rv.sockets > 1 else ""))
    lines.append(f"    Recv-Q     {_n(rv.recv_q):>12}  bytes held: the payloads plus the kernel's overhead per "
                 "datagram")
    lines.append(f"    drops      {_n(rv.dropped):>12}  sk_drops ({rv.source}): arrived at a full buffer, "
                 "discarded")
    if rv.unavailable:
        lines.append(f"    ({rv.unavailable})")
    if a.machine_rcvbuf_errors is not None:
        lines.append(f"  machine: Udp RcvbufErrors +{a.machine_rcvbuf_errors:,}, SndbufErrors "
                     f"+{a.machine_sndbuf_errors:,}  (/proc/net/snmp: every program's, an upper bound)")
    lines.append("")
    if own:
        lines.append(f"  sent {a.sent:,} = held {_n(a.reached)} (read back afterwards and counted) + dropped "
                     f"{_n(a.dropped)}   (unaccounted {_n(a.unaccounted)})")
        if a.held_first is not None and a.dropped:
            lines.append(f"  held: datagrams #{a.held_first:,}-#{a.held_last:,}, the first to arrive; every "
                         "later one found the buffer full")
    else:
        lines.append(f"  sent {a.sent:,} = reached the server {_n(a.reached)} (inferred: sent - dropped) + "
                     f"dropped {_n(a.dropped)}")
        lines.append("  stall sees another program's sockets in the kernel's socket table (Recv-Q, drops,")
        lines.append("  owners), never its datagrams: how many of those it holds and how many it has read,")
        lines.append("  only its own count says")
    if quiet:
        return "\n".join(lines)
    lines += ["", "What happened"]
    if r.outcome == "dropped":
        lines.append(_wrap(
            f"The receiver never called recv().  Unlike TCP, UDP has no window: nothing told our socket to "
            f"wait, so every send() returned at once and the datagram went.  The receiver's buffer filled "
            f"after {_n(a.reached)} datagram(s); the kernel dropped each later one on arrival and counted it "
            f"(sk_drops, Udp RcvbufErrors).  Nobody was told: not the sender (its send() had succeeded), "
            f"not the receiver (a later recv() returns the held datagrams and nothing more)."))
    elif r.outcome == "reading":
        lines.append(_wrap("The server's queue is empty and its kernel dropped nothing: it read every "
                           "datagram as it came."))
    elif r.outcome == "unseen":
        lines.append(_wrap("Every send() succeeded, and that is all a UDP sender learns: whether the "
                           "datagrams were held, read or dropped is counted only by the receiver's kernel, "
                           "which stall could not read here."))
    else:
        lines.append(_wrap("Every datagram fit in the receiver's buffer: send more (--count) or make the "
                           "buffer smaller (--rcvbuf) to see it overflow."))
    lines += ["", "What a program should do"]
    lines.append(_wrap(
        "Expect loss: UDP's send() succeeding says only that the datagram left.  A receiver must read "
        "faster than it is sent to (or size SO_RCVBUF for its bursts, capped by net.core.rmem_max), and "
        "watch its drops (`socktools sockets --udp`, SO_RXQ_OVFL, /proc/net/snmp RcvbufErrors); a sender "
        "that must not lose data needs acknowledgements and its own pacing, or TCP."))
    return "\n".join(lines)


def _wrap(text: str) -> str:
    import textwrap
    return textwrap.fill(text, width=98, initial_indent="  ", subsequent_indent="  ")


def udp_failure_line(r) -> str:
    """Why a run that dropped nothing exits 1."""
    if r.outcome == "unseen":
        return (f"the receiver's drops are not visible from here ({r.receiver.unavailable}): "
                f"{r.send.sent:,} datagrams sent, their fate unknown")
    if r.outcome == "reading":
        return (f"nothing was dropped: the server at {r.remote} read every datagram "
                f"({r.send.sent:,} sent)")
    return (f"nothing was dropped: all {r.send.sent:,} datagrams fit in the receiver's buffer "
            "(raise --count or lower --rcvbuf)")

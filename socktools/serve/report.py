"""serve's events as a person reads them, and as JSON lines: views of the supervisor's events.

The supervisor (:func:`socktools.serve.supervisor.serve`) hands every event -- ``listening``,
``stats``, ``worker-exit``, ``summary`` -- to one callable; :class:`HumanView` turns them into
lines through an ``echo`` it is given (the CLI's), :func:`json_event` into the document a
``--json`` line carries.  No printing, no clock of its own beyond the one passed in.
"""

from __future__ import annotations

import time
from typing import Callable

from socktools.units import fmt_bytes

__all__ = ["HumanView", "json_event", "render_rates", "render_stats", "render_counts", "render_tls",
           "render_datagram_rates", "render_datagrams"]

#: Counters whose change means "something happened" (an idle server prints no stats line).
ACTIVITY = ("accepted", "closed", "bytes_in", "bytes_out", "requests", "open", "handshakes")
#: The same for a ``--udp`` server (its events say ``"udp": true``).
UDP_ACTIVITY = ("datagrams_in", "datagrams_out", "send_dropped", "kernel_drops")


def _is_udp(ev: dict) -> bool:
    return bool(ev.get("udp"))


def _errors(ev: dict) -> int:
    if _is_udp(ev):
        return sum(ev["send_errors"].values()) + sum(ev["recv_errors"].values())
    return sum(ev["protocol_errors"].values()) + sum(ev["errors"].values())


def render_datagram_rates(ev: dict, prev: dict, secs: float) -> str:
    """``in 1,200.0 datagrams/s (75.0 KiB/s)  answered 1,200.0/s  (received 4000, answered 4000)
    send dropped 0  kernel dropped 0  errors 0`` -- a ``--udp`` stats line."""
    def rate(name: str) -> float:
        return (ev[name] - prev.get(name, 0)) / secs if secs > 0 else 0.0
    return (f"in {rate('datagrams_in'):,.1f} datagrams/s ({fmt_bytes(rate('bytes_in'))}/s)  "
            f"answered {rate('datagrams_out'):,.1f}/s  (received {ev['datagrams_in']:,}, answered "
            f"{ev['datagrams_out']:,})  send dropped {ev['send_dropped']:,}  kernel dropped {ev['kernel_drops']:,}  "
            f"errors {_errors(ev)}")


def render_datagrams(ev: dict) -> str:
    """A ``--udp`` server's counts, the kernel's drops at its receive buffers included."""
    return (f"received {ev['datagrams_in']:,} datagrams ({fmt_bytes(ev['bytes_in'])}), answered "
            f"{ev['datagrams_out']:,} ({fmt_bytes(ev['bytes_out'])}); send dropped {ev['send_dropped']:,} "
            f"(our send buffer full); the kernel dropped {ev['kernel_drops']:,} at the full receive "
            f"buffer{'s' if ev.get('workers_detail') else ''}")


def render_rates(ev: dict, prev: dict, secs: float) -> str:
    """``open 3  12.0 conn/s  in 1.2 MiB/s  out 1.2 MiB/s  340.0 req/s  ...  errors 0`` -- rates
    over the time since the previous stats line."""
    def rate(name: str) -> float:
        return (ev[name] - prev.get(name, 0)) / secs if secs > 0 else 0.0
    line = (f"open {ev['open']}  {rate('accepted'):,.1f} conn/s  in {fmt_bytes(rate('bytes_in'))}/s  "
            f"out {fmt_bytes(rate('bytes_out'))}/s")
    if ev["requests"]:
        line += f"  {rate('requests'):,.1f} req/s"
    if ev.get("handshakes"):
        line += f"  {rate('handshakes'):,.1f} handshakes/s"
    return line + f"  (accepted {ev['accepted']}, closed {ev['closed']})  errors {_errors(ev)}"


def render_stats(ev: dict) -> str:
    line = (f"open {ev['open']}  accepted {ev['accepted']}  closed {ev['closed']}  "
            f"in {fmt_bytes(ev['bytes_in'])}  out {fmt_bytes(ev['bytes_out'])}")
    if ev["requests"]:
        line += f"  requests {ev['requests']}"
    if ev.get("handshakes"):
        line += f"  TLS handshakes {ev['handshakes']}"
    return line + f"  errors {_errors(ev)}"


def render_tls(tls: dict) -> list:
    """What a TLS server serves, for the person who must point clients at it."""
    lines = [f"  certificate {tls['cert']}", f"  SHA-256 fingerprint {tls['sha256']}"]
    if tls.get("self_signed"):
        lines[0] += f" (self-signed for {', '.join(tls['names'])}; removed at exit)"
        lines.append(f"  clients trust it with: --cafile {tls['cert']}  (curl --cacert, openssl s_client -CAfile)")
    if tls.get("client_ca"):
        lines.append(f"  client certificates required, signed by a CA in {tls['client_ca']}")
    return lines


def render_counts(table: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(table.items())) or "none"


class HumanView:
    """The events as lines: ``echo(text, err=False)`` prints one (the CLI's ``click.echo``).

    ``clock`` times the rates between stats lines; ``on_terminal`` says whether stdout is a
    terminal (the summary then starts on a line of its own, after the terminal's ``^C``).
    """

    def __init__(self, echo: Callable[..., None], clock: Callable[[], float] = time.monotonic,
                 on_terminal: Callable[[], bool] = lambda: False) -> None:
        self.echo = echo
        self.clock = clock
        self.on_terminal = on_terminal
        self.prev: dict = {}          # the counters of the last stats line printed (or of start)
        self.prev_at = self.clock()
        self.idle_said = False

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "listening":
            workers = ev["workers"]
            what = f"{ev['mode']} server" if "tls" not in ev else f"TLS {ev['mode']} server"
            if _is_udp(ev):
                what = f"UDP {what}"
            where = ev["address"] if "unix" not in ev else f"Unix socket {ev['address']}"
            queue = "" if _is_udp(ev) else f", backlog {ev['backlog']}"
            self.echo(f"socktools serve: {what} listening on {where} "
                      f"({workers} worker{'s' if workers != 1 else ''}, pid {ev['pid']}{queue})")
            if "tls" in ev:
                for line in render_tls(ev["tls"]):
                    self.echo(line)
            if _is_udp(ev):
                self.echo("stop with Ctrl-C (reads what is queued, then stops; a second one at once)")
            else:
                self.echo("stop with Ctrl-C (first drains, second forces)")
        elif kind == "stats":
            self._stats(ev)
        elif kind == "worker-exit":
            self.echo(f"socktools serve: {ev['message']}", err=True)
        elif kind == "summary":
            if self.on_terminal():
                self.echo("")
            if _is_udp(ev):
                self._udp_summary(ev)
                return
            self.echo(f"summary: {render_stats(ev)}")
            self.echo(f"  protocol errors: {render_counts(ev['protocol_errors'])}; "
                      f"connection errors: {render_counts(ev['errors'])}; idle closed {ev['idle_closed']}; "
                      f"accept paused {ev['accept_paused']}x; worker restarts {ev['worker_restarts']}; "
                      f"ran {ev['duration']:.1f} s")

    def _udp_summary(self, ev: dict) -> None:
        self.echo(f"summary: {render_datagrams(ev)}")
        for row in ev.get("workers_detail") or ():
            drops = "?" if row["kernel_drops"] is None else f"{row['kernel_drops']:,}"
            self.echo(f"  worker {row['worker']}: received {row['datagrams_in']:,}, answered {row['datagrams_out']:,}, "
                      f"send dropped {row['send_dropped']:,}, kernel dropped {drops}")
        self.echo(f"  send errors: {render_counts(ev['send_errors'])}; receive errors: "
                  f"{render_counts(ev['recv_errors'])}; worker restarts {ev['worker_restarts']}; "
                  f"ran {ev['duration']:.1f} s")

    def _stats(self, ev: dict) -> None:
        """A timestamped line with rates; nothing while nothing changes (one "idle" line said once)."""
        now = self.clock()
        errs = _errors(ev)
        udp = _is_udp(ev)
        keys = UDP_ACTIVITY if udp else ACTIVITY
        same = all(ev.get(k, 0) == self.prev.get(k, 0) for k in keys) and errs == self.prev.get("_errs", 0)
        stamp = time.strftime("%H:%M:%S")
        if same:
            if not self.idle_said:
                held = "" if udp else f" (open {ev['open']})"
                self.echo(f"{stamp} stats: idle{held}; next line when something happens")
                self.idle_said = True
            self.prev_at = now
            return
        render = render_datagram_rates if udp else render_rates
        self.echo(f"{stamp} stats: {render(ev, self.prev, now - self.prev_at)}")
        self.prev = {**{k: ev.get(k, 0) for k in keys + ("bytes_in", "bytes_out")}, "_errs": errs}
        self.prev_at = now
        self.idle_said = False


def json_event(ev: dict, stamp: Callable[[dict], dict], now_iso: Callable[[], str]) -> dict:
    """The document of one ``--json`` line: the stream's first and last lines say who, when and
    where (``stamp``); stats lines carry their time."""
    if ev.get("event") in ("listening", "summary"):
        return stamp(ev)
    if ev.get("event") == "stats":
        return {"event": "stats", "time": now_iso(), **{k: v for k, v in ev.items() if k != "event"}}
    return ev

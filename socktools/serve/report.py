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

__all__ = ["HumanView", "json_event", "render_rates", "render_stats", "render_counts", "render_tls"]

#: Counters whose change means "something happened" (an idle server prints no stats line).
ACTIVITY = ("accepted", "closed", "bytes_in", "bytes_out", "requests", "open", "handshakes")


def _errors(ev: dict) -> int:
    return sum(ev["protocol_errors"].values()) + sum(ev["errors"].values())


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
            where = ev["address"] if "unix" not in ev else f"Unix socket {ev['address']}"
            self.echo(f"socktools serve: {what} listening on {where} "
                      f"({workers} worker{'s' if workers != 1 else ''}, pid {ev['pid']}, backlog {ev['backlog']})")
            if "tls" in ev:
                for line in render_tls(ev["tls"]):
                    self.echo(line)
            self.echo("stop with Ctrl-C (first drains, second forces)")
        elif kind == "stats":
            self._stats(ev)
        elif kind == "worker-exit":
            self.echo(f"socktools serve: {ev['message']}", err=True)
        elif kind == "summary":
            if self.on_terminal():
                self.echo("")
            self.echo(f"summary: {render_stats(ev)}")
            self.echo(f"  protocol errors: {render_counts(ev['protocol_errors'])}; "
                      f"connection errors: {render_counts(ev['errors'])}; idle closed {ev['idle_closed']}; "
                      f"accept paused {ev['accept_paused']}x; worker restarts {ev['worker_restarts']}; "
                      f"ran {ev['duration']:.1f} s")

    def _stats(self, ev: dict) -> None:
        """A timestamped line with rates; nothing while nothing changes (one "idle" line said once)."""
        now = self.clock()
        errs = _errors(ev)
        same = all(ev.get(k, 0) == self.prev.get(k, 0) for k in ACTIVITY) and errs == self.prev.get("_errs", 0)
        stamp = time.strftime("%H:%M:%S")
        if same:
            if not self.idle_said:
                self.echo(f"{stamp} stats: idle (open {ev['open']}); next line when something happens")
                self.idle_said = True
            self.prev_at = now
            return
        self.echo(f"{stamp} stats: {render_rates(ev, self.prev, now - self.prev_at)}")
        self.prev = {**{k: ev.get(k, 0) for k in ACTIVITY}, "_errs": errs}
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

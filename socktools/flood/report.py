"""Views of a flood result: the human table, the live progress line, the JSON document.

Pure functions of data (no printing, no clock): the CLI decides where they go.
Meanings and fixes of errors come from :mod:`socktools.errors`, never from here.
"""

from __future__ import annotations

import signal
from typing import Optional

from socktools import errors
from socktools.flood import stats as st
from socktools.flood.result import FloodResult, traffic_seconds
from socktools.errors import INTERNAL

__all__ = ["to_json", "render_table", "render_live", "render_interval_header", "render_interval_row",
           "render_thresholds", "format_us", "server_check", "HDR_UNIT", "cluster_json", "render_hosts"]

#: Unit of the values inside every ``hdr`` blob (encoded HdrHistograms): nanoseconds.
#: The summaries next to them are in microseconds.
HDR_UNIT = "ns"

_LATENCY_ROWS = (("latency", "round trip"), ("latency_uncorrected", "  uncorrected"),
                 ("connect", "connect"), ("handshake", "tls handshake"), ("open", "opening"),
                 ("first_reply", "first reply"), ("send_lag", "send lag"))


def format_us(us: Optional[float]) -> str:
    """``12.3µs`` / ``4.56ms`` / ``1.23s`` -- three significant figures, like the histogram."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.3g}µs" if us >= 1 else f"{us * 1000:.3g}ns"
    if us < 1_000_000:
        return f"{us / 1000:.3g}ms"
    return f"{us / 1_000_000:.3g}s"


def _rate(n: float, secs: float) -> float:
    return n / secs if secs > 0 else 0.0


def _phase_seconds(totals: st.Totals, mode: str) -> dict:
    """Phase lengths in seconds, in the order they ran (connect mode's traffic is "churn")."""
    out = {}
    for name, (a, b) in sorted(totals.phases.items(), key=lambda kv: kv[1][0]):
        out["churn" if name == "traffic" and mode == "connect" else name] = round((b - a) / 1e9, 3)
    return out


def _traffic_bytes(result: FloodResult) -> tuple:
    """Bytes (out, in) of the traffic phase: the connect phase's first round trips excluded
    (connect mode: everything, the churn *is* the traffic)."""
    c = result.totals.counters
    if result.config.mode == "connect":
        return c["bytes_out"], c["bytes_in"]
    return c["bytes_out"] - c["connect_bytes_out"], c["bytes_in"] - c["connect_bytes_in"]


def _connect_rate(result: FloodResult) -> float:
    t = result.totals
    c = t.counters
    if result.config.mode == "connect":
        return _rate(c["cycles"], traffic_seconds(t))
    if result.config.stages:   # the ramp opens them during the traffic
        return _rate(c["established"], traffic_seconds(t))
    span = t.phases.get("connect")
    return _rate(c["established"], (span[1] - span[0]) / 1e9) if span else 0.0


def _open_rate(result: FloodResult) -> float:
    """Openings completed per second: over the traffic when connections are opened during it
    (--churn, --stages), else over the connect phase (as the connections' own rate)."""
    t = result.totals
    c = t.counters
    if result.config.churn or result.config.stages:
        return _rate(c["traffic_opened"], traffic_seconds(t))
    span = t.phases.get("connect")
    return _rate(c["opened"], (span[1] - span[0]) / 1e9) if span else 0.0


def _opening(cfg) -> Optional[str]:
    """The opening conversation in words (None: the protocol has none)."""
    from socktools import wire
    if cfg.udp:     # each datagram stands alone: no opening conversation over UDP
        return None
    try:
        op = wire.build(cfg.wire_spec).opening() if cfg.mode != "connect" else None
    except Exception:  # a plug-in whose opening cannot even be made still gets a report
        return "the plug-in's opening"
    if op is None:
        return None
    return op.describe() or "the protocol's own"


#: Words of a refused reply and what to give flood for it (the server asks for a login).
_LOGIN_HINTS = (("NOAUTH", "the server wants a password: give --setup 'AUTH PASSWORD' (redis), sent once "
                           "per connection before the measured requests"),)


def login_hints(t: st.Totals) -> list:
    """What the failures say to do, when they say it plainly (every reply a NOAUTH)."""
    out = []
    for prefix, hint in _LOGIN_HINTS:
        if any(d.startswith(prefix) for table in (t.reply_failures, t.confirm_reply_failures)
               for details in table.values() for d in details):
            out.append(hint)
    return out


def describe(cfg) -> str:
    """What was said on each connection, in a few words."""
    if cfg.mode == "connect":
        return f"connect churn, {cfg.size:,}-byte check"
    from socktools import wire
    try:
        text = wire.build(cfg.wire_spec).describe()
    except Exception:  # a plug-in that cannot even describe itself still gets a report
        text = cfg.mode
    return text + (f", pipeline {cfg.pipeline}" if cfg.pipeline > 1 else "")


def server_check(result: FloodResult) -> Optional[dict]:
    """Compare flood's count with the embedded server's, in the same run.

    Echo (and connect) mode compares bytes (flood sent = server received);
    framed mode compares requests (flood sent = server answered); ``--udp`` compares
    datagrams (flood sent, less those the kernel dropped at the server's full receive
    buffer, = the server received).
    """
    server = result.server or {}
    summary = server.get("summary")
    if not summary:
        return None
    c = result.totals.counters
    if result.config.udp:
        grams = result.totals.datagrams
        dropped = grams.get("server_drops") or 0
        theirs = summary.get("datagrams_in")
        if theirs is None:
            return None
        return {"measure": "datagrams", "flood": grams["sent"] - dropped, "server": theirs,
                "equal": grams["sent"] - dropped == theirs, "sent": grams["sent"], "server_drops": dropped}
    if result.config.mode == "framed":
        ours, theirs, what = c["requests"], summary.get("requests"), "requests"
    else:
        ours, theirs, what = c["bytes_out"], summary.get("bytes_in"), "bytes"
    if theirs is None:
        return None
    return {"measure": what, "flood": ours, "server": theirs, "equal": ours == theirs}


def protocol_rules(cfg) -> str:
    """The rules a peer broke when flood counts a ``protocol-error``, in the mode's own terms
    (the registry's words, :mod:`socktools.wire.modes`)."""
    spec = cfg.wire
    if spec is not None and spec.plugin:
        return f"the protocol of the plug-in {spec.plugin}"
    from socktools.wire import modes
    mode = cfg.mode if cfg.mode != "connect" else "echo"      # (churn's one reply is an echo)
    # (the protocol's own one-line description names the exchange: "raw, replies until '\n'")
    exchange = describe(cfg).split(", pipeline")[0].partition(", ")[2]
    return modes.get(mode).rules.format(exchange=exchange, size=cfg.size)


def _errors_list(totals: st.Totals, cfg=None) -> list:
    out = []
    for phase, inner in totals.errors.items():
        for key, count in inner.items():
            exp = errors.lookup(key, command="flood")
            if exp is None and phase == INTERNAL:
                meaning, fix = ("an exception in flood's own code ended the connection (a bug: its traceback "
                                "was logged on stderr)", "please report it with that traceback")
            elif key == errors.PROTOCOL_ERROR and cfg is not None:
                meaning, fix = f"the peer's bytes did not follow {protocol_rules(cfg)}", exp.fix
            else:
                meaning, fix = (exp.meaning, exp.fix) if exp else (None, None)
            out.append({"phase": phase, "error": key, "count": count, "meaning": meaning, "fix": fix})
    out.sort(key=lambda e: -e["count"])
    return out


def tls_summary(result: FloodResult) -> Optional[dict]:
    """--tls: handshakes completed, what they negotiated (a tally: "TLSv1.3 CIPHER ALPN" -> n)
    and, with --tls-resume, how many offered an earlier session and how many the server resumed."""
    cfg = result.config
    if not cfg.tls_on:
        return None
    c = result.totals.counters
    offered = c["tls_offered"]
    return {"handshakes": c["tls_handshakes"], "negotiated": dict(result.totals.tls_negotiated),
            "sni": cfg.tls.sni or cfg.host, "verify": not cfg.tls.insecure, "resume": cfg.tls_resume,
            "offered": offered if cfg.tls_resume else None,
            "resumed": c["tls_resumed"] if cfg.tls_resume else None,
            "reuse_ratio": round(c["tls_resumed"] / offered, 4) if cfg.tls_resume and offered else None}


def tls_hints(result: FloodResult) -> list:
    """The TLS mistakes users make first, recognised in what came back (errors.tls_hint): plaintext
    spoken to a TLS port (nginx's 400 page, a TLS alert record, a reset before any reply), a TLS
    handshake a plaintext port never answers, a client certificate the server wanted."""
    t = result.totals
    tls = result.config.tls_on
    hints = list(t.hints)       # from the replies themselves, as the workers read them
    for text in t.samples.values():
        hints.append(errors.tls_hint(text.encode("latin-1", "replace"), None, tls=tls))
    # a reset or a close with nothing said: a hint only when no connection got a single reply
    # (a TLS port resets plaintext before any), or when the TLS handshake was not answered
    nothing_answered = not t.counters["established"]
    for phase, inner in t.errors.items():
        for key in inner:
            if (phase == errors.HANDSHAKE) if tls else nothing_answered:
                hints.append(errors.tls_hint(b"", key, tls=tls))
    return list(dict.fromkeys(h for h in hints if h))


def to_json(result: FloodResult, thresholds=()) -> dict:
    """The full result as a JSON-ready dict (latencies in microseconds, ``hdr`` blobs in ns).

    Like iperf3's document it has the run's metadata and configuration, the
    intervals, then the totals; ``thresholds`` (parsed
    :class:`~socktools.flood.thresholds.Threshold`) are checked against it.
    """
    from socktools import runinfo
    from socktools.flood import timeline
    from socktools.flood.thresholds import check_all
    doc = runinfo.stamp(_body(result), result.started or None)
    doc["interval"] = result.config.interval or timeline.DEFAULT_INTERVAL
    doc["intervals"] = timeline.rows(result)
    doc["thresholds"] = check_all(thresholds, doc)
    return doc


def failures_total(t: st.Totals) -> int:
    """Every failure of the run: errors of every phase (errno, protocol, no-reply) and every reply
    that failed, confirming ones included -- what ``--threshold errors==0`` reads."""
    return (st.tally_total(t.errors) + st.tally_total(t.reply_failures)
            + st.tally_total(t.confirm_reply_failures))


def _body(result: FloodResult) -> dict:
    cfg = result.config
    t = result.totals
    c = t.counters
    secs = traffic_seconds(t)
    tb_out, tb_in = _traffic_bytes(result)
    opening = _opening(cfg)
    hists = {}
    for name, _ in _LATENCY_ROWS:
        summary = st.summarize(t.histograms.get(name))
        if summary is not None:
            summary["hdr"] = st.encode(t.histograms[name])
        hists[f"{name}_us"] = summary
    return {
        "event": "result",
        "hdr_unit": HDR_UNIT,
        "mode": cfg.mode,
        "target": cfg.target,
        "server": result.server,
        "config": {"conns": cfg.conns, "workers": cfg.active_workers, "size": cfg.size,
                   "request": f"{cfg.action} {cfg.value}" if cfg.mode == "framed" else None,
                   "exchange": describe(cfg), "wire": cfg.wire_spec.summary(), "pipeline": cfg.pipeline,
                   "duration": cfg.duration, "requests": cfg.requests, "rate": cfg.rate,
                   "connect_rate": cfg.connect_rate, "connect_timeout": cfg.connect_timeout,
                   "sources": list(cfg.sources), "udp": cfg.udp,
                   "reply_timeout": cfg.reply_timeout if cfg.udp else None,
                   "stages": [{"duration": d, "conns": n, "rate": r} for d, n, r in cfg.stages] or None},
        "limits": result.plan.to_dict(),
        "stopped_early": result.stopped_early,
        "elapsed": round(result.elapsed, 3),
        "phases": _phase_seconds(t, cfg.mode),
        "connections": {"requested": cfg.conns, "attempted": c["attempted"], "connected": c["connected"],
                        "established": c["established"], "failed": c["failed"],
                        "cancelled": c["cancelled"], "lost": c["lost"], "open_at_end": c["open_at_end"],
                        "cycles": c["cycles"] if cfg.mode == "connect" else None,
                        "reconnects": c["reconnects"],
                        "per_second": round(_connect_rate(result), 1)},
        # (with --tls each connection made had its handshake: handshakes/s are the connects/s)
        "churn": {"every": cfg.churn, "connections": c["reconnects"],
                  "per_second": round(_rate(c["reconnects"], secs), 1),
                  "handshakes_per_second": round(_rate(c["reconnects"], secs), 1) if cfg.tls_on else None}
        if cfg.churn else None,
        "opening": {"described": opening, "opened": c["opened"], "refused": c["refused"],
                    "refusals": dict(t.refusals), "per_second": round(_open_rate(result), 1)}
        if opening else None,
        "requests": {"sent": c["requests"], "answered": c["responses"], "unanswered": c["unanswered"],
                     "traffic_sent": c["traffic_requests"], "traffic_answered": c["traffic_responses"],
                     "per_second": round(_rate(c["traffic_responses"], secs), 1),
                     "requested_rate": cfg.rate,
                     "scheduled": c["scheduled"] if cfg.rate else None,
                     "late": c["late"], "resent": c["resent"]},
        "bytes": {"sent": c["bytes_out"], "received": c["bytes_in"],
                  "traffic_sent": tb_out, "traffic_received": tb_in,
                  "max_buffered": c["max_buffered"],
                  "sent_per_second": round(_rate(tb_out, secs)),
                  "received_per_second": round(_rate(tb_in, secs))},
        **hists,
        "tls": tls_summary(result),
        "errors": _errors_list(t, cfg),
        "errors_total": st.tally_total(t.errors),
        "hints": tls_hints(result) + login_hints(t),
        "failures_total": failures_total(t),
        "protocol_errors": dict(t.protocol_errors),
        "reply_failures": {k: dict(v) for k, v in t.reply_failures.items()},
        "reply_failures_total": st.tally_total(t.reply_failures),
        "confirm_reply_failures": {k: dict(v) for k, v in t.confirm_reply_failures.items()},
        "confirm_reply_failures_total": st.tally_total(t.confirm_reply_failures),
        "reply_samples": dict(t.samples),
        "datagrams": dict(t.datagrams) if cfg.udp else None,
        "reply_classes": dict(t.reply_classes),
        "confirm_reply_classes": dict(t.confirm_reply_classes),
        "server_check": server_check(result),
        "warnings": list(result.warnings),
        "notes": list(result.plan.notes),
        "crashed": list(result.crashed),
        "workers": [{"worker": s.worker, "conns": s.conns, "established": s.established,
                     "requests": s.requests, "cpu_share": round(s.traffic_cpu / s.traffic_wall, 3)
                     if s.traffic_wall else None,
                     "rss_start": s.rss_start, "rss_connected": s.rss_connected,
                     "fd_limit": s.fd_limit} for s in t.workers],
        **cluster_json(result),
    }


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _mb(x: float) -> str:
    return f"{x / 1e6:,.2f} MB/s" if x >= 1e4 else f"{x / 1e3:,.2f} kB/s"


def render_thresholds(checked: list) -> list:
    """``threshold  p99<5ms   passed (1.23ms)`` lines, one per checked threshold."""
    lines = []
    for c in checked:
        actual = "nothing measured" if c["actual"] is None else (
            format_us(c["actual"]) if c["unit"] == "us" else f"{c['actual']:,.6g}")
        lines.append(f"threshold    {c['threshold']:18} {'passed' if c['passed'] else 'FAILED'}  ({actual})")
    return lines


def render_interval_header() -> str:
    return f"{'interval':>15}  {'phase':7} {'conns':>7} {'req/s':>10} {'p50':>8} {'p99':>8} {'errors':>7}"


def render_interval_row(record: dict, interval: float) -> str:
    """One iperf3-style line per interval: time span, phase, open connections, req/s, p50/p99, errors."""
    end = record["t"]
    lat = record.get("latency") or {}
    span = f"{max(0.0, end - interval):.2f}-{end:.2f}s"
    return (f"{span:>15}  {record['phase']:7} {record['open']:>7,} {record['rps']:>10,.0f} "
            f"{format_us(lat.get('p50')):>8} {format_us(lat.get('p99')):>8} {record['errors']:>7,}")


def render_table(result: FloodResult, checked: Optional[list] = None) -> str:
    """The human-readable report (several lines, no trailing newline)."""
    cfg = result.config
    t = result.totals
    c = t.counters
    secs = traffic_seconds(t)
    lines = []
    what = describe(cfg)
    lines.append(f"flood {cfg.target}: {what}; {cfg.conns:,} {'UDP socket(s)' if cfg.udp else 'connection(s)'} over "
                 f"{cfg.active_workers} worker(s)" + (", open loop at "
                 f"{cfg.rate:,g} req/s" if cfg.rate else ", closed loop" if cfg.mode != "connect" else ""))
    if cfg.stages:
        spelled = ", ".join(f"{d:g}s:{n}" + (f":{r:g}" if r is not None else "") for d, n, r in cfg.stages)
        lines.append(f"stages  {spelled}  (duration:conns{':req/s' if cfg.staged_rate else ''}, "
                     f"linear ramps from 0)")
    if result.server:
        lines.append(f"server  {result.server['command']}  (started by flood)")
    if result.stopped_early:
        why = "SIGTERM" if result.stop_signal == signal.SIGTERM else "Ctrl-C"
        lines.append(f"stopped early ({why}): figures cover the run so far")
    phases = _phase_seconds(t, cfg.mode)
    lines.append("phases  " + " · ".join(f"{name} {secs_:.2f}s" for name, secs_ in phases.items()))
    lines.append("")
    conn_line = (f"sockets      {_n(c['established'])} of {_n(cfg.conns)} UDP sockets connected" if cfg.udp
                 else f"connections  {_n(c['established'])} of {_n(cfg.conns)} established"
                 if cfg.mode != "connect" else f"connections  {_n(c['cycles'])} connect+reply+close cycles")
    conn_line += f" · {_n(c['failed'])} failed"
    if c["lost"]:
        conn_line += f" · {_n(c['lost'])} lost later"
    if c["cancelled"]:
        conn_line += f" · {_n(c['cancelled'])} cancelled"
    if c["reconnects"] and not cfg.churn:
        conn_line += f" · {_n(c['reconnects'])} reconnects (closed by the server after a reply)"
    if not cfg.udp:   # (a UDP connect() sends nothing: its rate says nothing)
        conn_line += f" · {_n(_connect_rate(result))}/s"
    lines.append(conn_line)
    if cfg.churn:
        churn_line = (f"churn        a new connection every {cfg.churn:,} request(s): {_n(c['reconnects'])} "
                      f"in the traffic")
        if secs >= 0.05:
            churn_line += f" · {_n(_rate(c['reconnects'], secs))} connects/s" + (
                " (each with its TLS handshake)" if cfg.tls_on else "")
        lines.append(churn_line)
    opening = _opening(cfg)
    if opening:
        open_line = f"opening      {opening}: {_n(c['opened'])} opened · {_n(_open_rate(result))}/s"
        if c["refused"]:
            open_line += f" · {_n(c['refused'])} refused by the server:"
        lines.append(open_line)
        for words, n in sorted(t.refusals.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"  {n:>8,}  {words}")
    measured = secs >= 0.05  # rates of a phase that hardly ran would be noise
    write_only = cfg.wire is not None and cfg.wire.no_reply
    if cfg.mode != "connect" and c["established"] and write_only:
        req = f"requests     {_n(c['traffic_requests'])} written, no replies expected"
        if measured:
            req += f" · {_n(_rate(c['traffic_requests'], secs))}/s"
        if cfg.rate:
            req += f" (asked {cfg.rate:,g}/s)"
        lines.append(req)
        if c["late"]:
            lines.append(f"late         {_n(c['late'])} due but not sent: the server did not read fast "
                         f"enough (at most {_n(c['max_buffered'])} bytes kept per connection)")
    elif cfg.mode != "connect" and c["established"]:
        req = f"requests     {_n(c['traffic_requests'])} sent · {_n(c['traffic_responses'])} answered"
        if measured:
            req += f" · {_n(_rate(c['traffic_responses'], secs))}/s"
        if cfg.rate:
            req += f" (asked {cfg.rate:,g}/s" + (" at the stages' peak)" if cfg.stages else ")")
        if c["unanswered"]:
            req += f" · {_n(c['unanswered'])} never answered"
        if c["resent"]:
            req += f" · {_n(c['resent'])} sent again (pipelined past the server's close)"
        if c["late"]:
            req += f" · {_n(c['late'])} due while no connection was open (the ramp's start)"
        lines.append(req)
        # One first round trip confirmed each established connection; first requests of
        # connections that never got their reply (stopped, failed) confirmed nothing.
        # (--stages: the ramp's connections join the traffic with no confirming round trip.)
        unconfirmed = max(0, c["confirm_requests"] - c["established"])
        if c["confirm_requests"]:
            lines.append(f"             (not counting the {_n(c['established'])} first round trips that "
                         f"confirmed the connections" + (f", nor {_n(unconfirmed)} first requests never "
                                                         f"answered" if unconfirmed else "") + ")")
        if t.reply_classes:
            lines.append("replies      " + " · ".join(f"{k} {v:,}" for k, v in sorted(t.reply_classes.items())))
    if cfg.udp:
        lines.extend(render_datagrams(t.datagrams, cfg.reply_timeout))
    tb_out, tb_in = _traffic_bytes(result)
    if measured and (tb_out or tb_in):
        lines.append(f"throughput   {_mb(_rate(tb_out, secs))} out · {_mb(_rate(tb_in, secs))} in"
                     f"  ({_n(tb_out)} / {_n(tb_in)} bytes)")
    tls = tls_summary(result)
    if tls is not None and tls["handshakes"]:
        tally = sorted(tls["negotiated"].items(), key=lambda kv: -kv[1])
        what = (f"{tally[0][0]}" if len(tally) == 1 else
                " · ".join(f"{k} {n:,}" for k, n in tally))
        lines.append(f"tls          {_n(tls['handshakes'])} handshakes · {what}")
        if tls["resume"]:
            ratio = f" ({tls['reuse_ratio']:.0%})" if tls["reuse_ratio"] is not None else ""
            lines.append(f"             resumed {_n(tls['resumed'])} of {_n(tls['offered'])} that offered "
                         f"an earlier session{ratio}")
    lines.append("")
    header = f"{'':14}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'mean':>9}{'count':>12}"
    rows = []
    for name, label in _LATENCY_ROWS:
        summary = st.summarize(t.histograms.get(name))
        if summary is None:
            continue
        if name == "latency" and cfg.rate and not cfg.udp:   # (--udp: datagrams leave on schedule)
            label = "round trip*"
        rows.append(f"{label:14}" + "".join(f"{format_us(summary[k]):>9}" for k in
                                            ("p50", "p90", "p99", "p99.9", "max", "mean"))
                    + f"{summary['count']:>12,}")
    if rows:
        lines.append(header)
        lines.extend(rows)
        if cfg.rate and not cfg.udp and t.histograms.get("latency") is not None:
            lines.append("* from each request's scheduled send time (coordinated omission corrected)")
        lines.append("")
    errs = _errors_list(t, cfg)
    if errs:
        lines.append(f"failures     {st.tally_total(t.errors):,} in all, by phase and error:")
        # columns as wide as the longest name ("handshake", "tls-hostname-mismatch"), so fixes line up
        pw = max(8, *(len(e["phase"]) for e in errs))
        ew = max(15, *(len(e["error"]) for e in errs))
        for e in errs:
            lines.append(f"  {e['phase']:{pw}} {e['error']:{ew}} {e['count']:>8,}  {e['meaning'] or ''}")
            if e["fix"]:
                lines.append(f"  {'':{pw}} {'':{ew}} {'':>8}  fix: {e['fix']}")
        if t.protocol_errors:
            kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(t.protocol_errors.items()))
            lines.append(f"  protocol errors by kind: {kinds}")
    elif not t.reply_failures and not t.confirm_reply_failures:
        lines.append("failures     none")
    for table, what in ((t.reply_failures, "whole replies, counted as failures"),
                        (t.confirm_reply_failures, "confirming replies, counted as failures")):
        for kind, details in sorted(table.items()):
            total = sum(details.values())
            lines.append(f"failed replies {kind} {total:,} ({what}):")
            for detail, n in sorted(details.items(), key=lambda kv: -kv[1])[:10]:
                lines.append(f"  {n:>8,}  {detail}")
            if kind in t.samples and (table is t.reply_failures or kind not in t.reply_failures):
                lines.append(f"  first offending bytes: {t.samples[kind]!r}")
    for hint in tls_hints(result) + login_hints(t):
        lines.append(f"hint: {hint}")
    check = server_check(result)
    if check:
        verdict = "equal" if check["equal"] else "DIFFERENT"
        did = "answered" if check["measure"] == "requests" else "received"
        if check["measure"] == "datagrams":
            lines.append(f"server check flood sent {check['sent']:,} datagrams, the kernel dropped "
                         f"{check['server_drops']:,} at the server's full receive buffer, the server "
                         f"received {check['server']:,}: {verdict}")
        else:
            lines.append(f"server check flood sent {check['flood']:,} {check['measure']} in all, the server "
                         f"{did} {check['server']:,}: {verdict}")
    lines.extend(render_hosts(result))
    for line in result.crashed:
        lines.append(f"worker trouble: {line}")
    for note in result.plan.notes:
        lines.append(f"note: {note}")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    if checked:
        lines.append("")
        lines.extend(render_thresholds(checked))
    return "\n".join(lines)


def render_datagrams(d: dict, timeout: float) -> list:
    """--udp: what became of every datagram, and where the lost ones were dropped."""
    if not d:
        return []
    lines = [f"datagrams    {_n(d['sent'])} sent · {_n(d['answered'])} answered · {_n(d['lost'])} lost "
             f"(no reply within {timeout:g}s) · {_n(d['late'])} late · {_n(d['duplicated'])} duplicated · "
             f"{_n(d['reordered'])} reordered · {_n(d['truncated'])} truncated"]
    if d["lost"]:
        server = d.get("server_drops")
        where = (f"the server's socket {_n(server)}" if server is not None
                 else "the server's socket: not known (not on this machine)")
        lines.append(f"lost where   {_n(d['lost_at_receive_buffer'])} dropped at a full receive buffer "
                     f"({where}, ours {_n(d['client_drops'])}) · {_n(d['lost_unexplained'])} unexplained "
                     f"(the kernel counted no drop for them)")
        if d.get("machine_rcvbuf_errors") is not None:
            lines.append(f"             (the machine counted {_n(d['machine_rcvbuf_errors'])} UDP receive-buffer "
                         f"errors in all during the run, every program's)")
    if d.get("mismatched"):
        lines.append(f"mismatched   {_n(d['mismatched'])} answers did not match --reply-match (counted answered, "
                     f"and as failed replies)")
    if d["refused"]:
        lines.append(f"refused      {_n(d['refused'])} datagrams our own kernel would not take (send buffer "
                     f"full): never sent, not counted sent")
    if d["foreign"] or d["stale"]:
        lines.append(f"unplaced     {_n(d['foreign'])} datagrams that were no reply of ours · "
                     f"{_n(d['stale'])} too old to place")
    return lines


def cluster_json(result: FloodResult) -> dict:
    """``--cluster`` runs: the cluster, the per-host breakdown, the lost shards (else nothing)."""
    hosts = getattr(result, "hosts", None)
    if hosts is None:
        return {}
    return {"cluster": result.cluster, "hosts": hosts, "lost": result.lost}


def render_hosts(result: FloodResult) -> list:
    """``--cluster`` runs: one line per load host, and one per lost shard."""
    hosts = getattr(result, "hosts", None)
    if hosts is None:
        return []
    info = result.cluster
    lines = [f"hosts        {len(hosts)} load host(s) on the Dask cluster at {info['scheduler']} "
             f"({info['workers']} worker(s)):",
             f"  {'host (worker address)':34}{'shards':>7}{'conns':>10}{'established':>13}"
             f"{'requests':>13}{'shard CPU':>11}{'host CPU':>10}"]
    for h in hosts:
        busy = "-" if h["host_cpu_busy"] is None else f"{h['host_cpu_busy']:.0%}"
        name = f"{h['host'][:24]} ({h['address']})"
        lines.append(f"  {name[:34]:34}{h['shards']:>7}{h['conns']:>10,}{h['established']:>13,}"
                     f"{h['requests']:>13,}{h['cpu_seconds']:>10.2f}s{busy:>10}")
    for lost in result.lost:
        last = lost["last_interval"]
        did = ("nothing reported yet" if last is None else
               f"its last interval (t={last['t']:g}s, {last['phase']}): {last['established']:,} "
               f"established, {last['requests']:,} requests, {last['responses']:,} answered, "
               f"{last['errors']:,} errors")
        lines.append(f"lost         shard {lost['shard']} ({lost['conns']:,} connections): Dask worker "
                     f"{lost['worker']} disappeared mid-run; {did}; not in the totals above")
    return lines


def render_live(record: dict, conns: int) -> str:
    """One status line from an interval record (for a terminal, redrawn in place)."""
    p99 = format_us(record.get("p99_so_far"))
    return (f"[{record['t']:6.1f}s {record['phase']:7}] conns {record['open']:,}/{conns:,}"
            f" · {record['rps']:,.0f} req/s · p99 so far {p99} · errors {record['errors']:,}")

"""One self-contained HTML page for a flood result: plots, thresholds, failures, configuration.

:func:`render` takes the flood JSON document (``flood --json`` or
``report.to_json``) and returns the page as a string: inline CSS, inline SVG
plots, no script, no external resource -- it opens offline, from a CI
artifact or a mail attachment, and prints.  Every value is escaped.
"""

from __future__ import annotations

import html
import json
from typing import Optional

from socktools.report import plots

__all__ = ["render", "SHOWN_CHARS", "SHOWN_ITEMS"]

#: Characters of one sent text (a --send, a command, a path) the configuration shows: a request
#: line with a few headers, or a long key, reads whole; a megabyte --send-file does not fill the page.
SHOWN_CHARS = 160

#: Texts of one list (paths, commands, sends) the configuration shows; flood rotates through them
#: all, the page names the first ones and counts the rest.
SHOWN_ITEMS = 12


class _Html(str):
    """Markup built here from escaped parts: :func:`_kv` puts it in as it is."""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _us(value: Optional[float]) -> str:
    from socktools.flood.report import format_us
    return format_us(value)


def _n(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div><div class="note">{_e(note)}</div></div>')


def _table(head: list, rows: list, cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _kv(pairs: list) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v if isinstance(v, _Html) else _e(v)}</td></tr>"
                   for k, v in pairs if v not in (None, "", []))
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _plot(svg: Optional[str], name: str, empty: str) -> str:
    if svg is None:
        return f'<figure class="plot-box empty" data-plot="{name}"><p>{_e(empty)}</p></figure>'
    return f'<figure class="plot-box" data-plot="{name}">{svg}</figure>'


def _thresholds(doc: dict) -> str:
    checked = doc.get("thresholds") or []
    if not checked:
        return ""
    rows = []
    for c in checked:
        actual = "nothing measured" if c["actual"] is None else (
            _us(c["actual"]) if c["unit"] == "us" else _n(c["actual"]))
        verdict = '<span class="pill ok">passed</span>' if c["passed"] else '<span class="pill bad">failed</span>'
        rows.append([f"<code>{_e(c['threshold'])}</code>", _e(actual), verdict])
    return "<section><h2>Thresholds</h2>" + _table(["threshold", "measured", "verdict"], rows) + "</section>"


def _failures(doc: dict) -> str:
    errs = doc.get("errors") or []
    replies = [(what, doc.get(key) or {}) for what, key in (("traffic", "reply_failures"),
                                                           ("confirming", "confirm_reply_failures"))]
    body = ""
    if errs:
        rows = [[_e(e["phase"]), f"<code>{_e(e['error'])}</code>", _n(e["count"]),
                 _e(e.get("meaning") or ""), _e(e.get("fix") or "")] for e in errs]
        body = _table(["phase", "error", "count", "what it means", "what to do"], rows, "failures")
    perr = doc.get("protocol_errors") or {}
    if perr:
        body += "<p>Protocol errors by kind: " + ", ".join(f"<code>{_e(k)}</code> {_n(v)}"
                                                          for k, v in sorted(perr.items())) + "</p>"
    # Replies that arrived whole but failed (an HTTP 404 or 500, a redis -ERR): failures too.
    samples = doc.get("reply_samples") or {}
    rows = []
    for what, table in replies:
        for kind, details in sorted(table.items()):
            for detail, n in sorted(details.items(), key=lambda kv: -kv[1])[:10]:
                rows.append([_e(what), f"<code>{_e(kind)}</code>", _e(detail), _n(n),
                             f"<code>{_e(samples.get(kind, ''))}</code>"])
    if rows:
        body += "<h3>Failed replies</h3>" + _table(["replies", "kind", "detail", "count", "first bytes"],
                                                   rows, "failures")
    if not body:
        body = '<p class="quiet">No failures: every connection and request succeeded.</p>'
    total = doc.get("failures_total", doc.get("errors_total", 0))
    return f"<section><h2>Failures ({_n(total)})</h2>{body}</section>"


def _latency_table(doc: dict) -> str:
    rows = []
    for key, label in (("latency_us", "round trip"), ("latency_uncorrected_us", "round trip, uncorrected"),
                       ("connect_us", "connect"), ("handshake_us", "TLS handshake"),
                       ("first_reply_us", "first reply"),
                       ("send_lag_us", "send lag")):
        s = doc.get(key)
        if s:
            rows.append([_e(label)] + [_us(s[k]) for k in ("p50", "p90", "p99", "p99.9", "max", "mean")]
                        + [_n(s["count"])])
    if not rows:
        return ""
    return _table(["", "p50", "p90", "p99", "p99.9", "max", "mean", "count"], rows, "num")


def _shown(text: str) -> str:
    """One sent text, safe to read: control and undecodable characters as escapes (``\\r``,
    ``\\x00``, ``\\udcff``), cut at :data:`SHOWN_CHARS`; HTML-escaped, in ``<code>``."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(flat) <= SHOWN_CHARS:
        return f"<code>{_e(flat)}</code>"
    return f"<code>{_e(flat[:SHOWN_CHARS])}…</code> ({len(flat):,} characters)"


def _shown_list(texts: list) -> _Html:
    lines = [_shown(t) for t in texts[:SHOWN_ITEMS]]
    if len(texts) > SHOWN_ITEMS:
        lines.append(f"and {len(texts) - SHOWN_ITEMS:,} more")
    return _Html("<br>".join(lines))


def _sent(doc: dict) -> list:
    """The configuration's rows for what each connection sent, per mode (``config.wire``)."""
    cfg = doc.get("config") or {}
    w = cfg.get("wire")
    if w is None:       # a document saved before flood recorded what it sent
        return [("exchange", cfg.get("exchange")), ("payload", f"{cfg['size']:,} bytes" if cfg.get("size") and doc.get("mode") in ("echo", "connect")
                 else None), ("request", cfg.get("request"))]
    # Rows by the summary's keys, not by mode: a new wire protocol's summary (its module's,
    # through socktools.wire.modes) shows here with no change to this page.
    rows: list = []
    if "plugin" in w:
        rows += [("protocol", _Html(_shown(w["plugin"]))), ("exchange", cfg.get("exchange"))]
    if "action" in w:
        rows.append(("request", _Html(f"{_shown(w['action'] + ' ' + w['value'])} "
                                      f"({w['request_bytes']:,}-byte frame)")))
    elif "request_bytes" in w:
        rows.append(("payload", f"{w['request_bytes']:,} bytes"))
    if "method" in w:
        rows.append(("method", w["method"]))
    if "paths" in w:
        rows.append(("paths", _shown_list(w["paths"])))
    if "host" in w:
        rows.append(("headers", _Html(f"{w.get('headers', 0):,} given · Host {_shown(w['host'])}")))
    if w.get("body_bytes"):
        rows.append(("body", f"{w['body_bytes']:,} bytes"))
    if "commands" in w:
        rows.append(("commands", _shown_list(w["commands"])))
    if "send" in w:
        rows.append(("send", _shown_list(w["send"])))
    if w.get("send_file_bytes") is not None:
        rows.append(("send file", f"{w['send_file_bytes']:,} bytes, the start shown above"))
    if "eol" in w:
        rows.append(("line ending", w["eol"]))
    if "replies" in w:
        rows.append(("replies", _shown(w["replies"])))
    return rows


def _config(doc: dict) -> str:
    cfg = doc.get("config") or {}
    pairs = [("target", doc.get("target")), ("mode", doc.get("mode")),
             ("server", (doc.get("server") or {}).get("command")),
             ("connections", _n(cfg.get("conns"))), ("workers", cfg.get("workers")),
             *_sent(doc),
             ("duration", f"{cfg['duration']:g} s" if cfg.get("duration") else None),
             ("requests", cfg.get("requests")), ("rate", f"{cfg['rate']:,g} req/s (open loop)" if cfg.get("rate")
                                                  else "closed loop"),
             ("connect rate", cfg.get("connect_rate")), ("connect timeout", f"{cfg.get('connect_timeout'):g} s"
                                                         if cfg.get("connect_timeout") else None),
             ("sources", ", ".join(cfg.get("sources") or [])), ("interval", f"{doc.get('interval'):g} s"),
             ("phases", " · ".join(f"{k} {v:.2f} s" for k, v in (doc.get("phases") or {}).items()))]
    return _kv(pairs)


def _over_time(doc: dict) -> str:
    """The over-time plot, and what it leaves out: the partial tail, named with its span."""
    intervals = doc.get("intervals") or []
    out = _plot(plots.over_time(intervals), "over-time",
                "Nothing was answered or connected: nothing to draw over time.")
    for r in plots.over_time_rows(intervals)[1]:
        out += (f'<p class="quiet">Not drawn: the last interval, {r["start"]:.2f}–{r["end"]:.2f} s, is partial '
                f'(the tail after the last whole interval, with the drain). Its few samples and shorter span '
                f'would draw a p99 spike and a drop in throughput that the run did not have; its requests and '
                f'latencies are in every total above, and in the JSON and CSV intervals '
                f'(<code>"partial": true</code>).</p>')
    return out


def _machine(doc: dict) -> str:
    h = doc.get("system") or {}
    cpus = h.get("cpus")
    if cpus and h.get("cpus_usable") and h["cpus_usable"] != cpus:
        cpus = f"{cpus} ({h['cpus_usable']} usable)"
    return _kv([("host", h.get("hostname")), ("system", f"{h.get('os', '')} {h.get('kernel', '')} {h.get('machine', '')}"),
                ("CPUs", cpus), ("Python", h.get("python")), ("socktools", doc.get("socktools_version")),
                ("started", doc.get("started"))])


def _notes(doc: dict) -> str:
    items = [("warning", w) for w in doc.get("warnings") or []] + [("note", n) for n in doc.get("notes") or []]
    items += [("worker", c) for c in doc.get("crashed") or []]
    check = doc.get("server_check")
    if check:
        verdict = "equal" if check["equal"] else "DIFFERENT"
        items.append(("server check", f"flood sent {check['flood']:,} {check['measure']}, the server counted "
                                      f"{check['server']:,}: {verdict}"))
    if doc.get("stopped_early"):
        items.insert(0, ("warning", "stopped early (Ctrl-C): figures cover the run so far"))
    if not items:
        return ""
    lis = "".join(f'<li class="{_e(k.split()[0])}"><b>{_e(k)}</b> {_e(v)}</li>' for k, v in items)
    return f'<ul class="notes">{lis}</ul>'


def _ran(doc: dict) -> str:
    phases = doc.get("phases") or {}
    traffic = phases.get("traffic", phases.get("churn"))
    wall = f"{doc.get('elapsed', 0):.1f} s in all, servers and workers started and stopped"
    return f"traffic {traffic:.2f} s · {wall}" if traffic is not None else wall


def render(doc: dict) -> str:
    """The page for flood document ``doc`` (needs matplotlib, the ``report`` extra)."""
    lat = doc.get("latency_us") or {}
    req = doc.get("requests") or {}
    conns = doc.get("connections") or {}
    checked = doc.get("thresholds") or []
    failed = [c for c in checked if not c["passed"]]
    verdict = ""
    if checked:
        verdict = (f'<span class="pill bad big">{len(failed)} of {len(checked)} thresholds failed</span>'
                   if failed else f'<span class="pill ok big">all {len(checked)} thresholds passed</span>')
    errors_total = doc.get("failures_total", doc.get("errors_total", 0))
    churn = doc.get("mode") == "connect"     # the cycles are the traffic; no round trips of their own
    if churn:
        lat, what = doc.get("first_reply_us") or {}, "connect to first reply"
        first = _card("cycles/s", _n(round(conns.get("per_second") or 0)),
                      f"{_n(conns.get('cycles'))} connect + reply + close")
        fourth = _card("connections", f"{_n(conns.get('requested'))} slots", "opened and closed again")
    else:
        what = "round trip"
        first = _card("requests/s", _n(round(req.get("per_second") or 0)),
                      f"{_n(req.get('traffic_answered'))} in the traffic phase")
        fourth = _card("connections", f"{_n(conns.get('established'))} / {_n(conns.get('requested'))}",
                       f"{_n(conns.get('per_second'))}/s established")
    cards = "".join([
        first,
        _card("p50", _us(lat.get("p50")), what),
        _card("p99", _us(lat.get("p99")), what),
        _card("p99.9", _us(lat.get("p99.9")), f"max {_us(lat.get('max'))}"),
        fourth,
        _card("failures", _n(errors_total), "by phase and error below", "bad" if errors_total else "ok"),
    ])
    cfg = doc.get("config") or {}
    title = f"flood {doc.get('target', '')} · {doc.get('mode', '')} · {_n(cfg.get('conns'))} connections"
    raw = json.dumps({k: doc.get(k) for k in ("socktools_version", "started", "target", "mode")})
    return _PAGE.format(
        title=_e(title), started=_e(doc.get("started", "")), version=_e(doc.get("socktools_version", "")),
        elapsed=_e(_ran(doc)), verdict=verdict, cards=cards,
        thresholds=_thresholds(doc), notes=_notes(doc),
        spectrum=_plot(plots.spectrum(doc), "latency-spectrum", "No round trip was measured."),
        latency_table=_latency_table(doc),
        over_time=_over_time(doc),
        connect=_plot(plots.connect_distribution(doc), "connect-time", "No connection was made."),
        failures=_failures(doc), config=_config(doc), machine=_machine(doc), meta=_e(raw))


_CSS = """
:root { --ink:#22262d; --muted:#69707d; --line:#e3e6ea; --bg:#f6f7f9; --card:#fff;
        --ok:#1a7f37; --okbg:#dafbe1; --bad:#b42318; --badbg:#fee4e2; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { background:#1f2937; color:#f9fafb; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:20px; font-weight:600; }
header .sub { color:#cbd2dc; font-size:13px; }
main { max-width:1080px; margin:0 auto; padding:20px 24px 40px; }
.cards { display:grid; grid-template-columns:repeat(6, 1fr); gap:12px; margin:4px 0 18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:650; margin-top:2px; font-variant-numeric:tabular-nums; }
.card .note { color:var(--muted); font-size:12px; }
.card.bad .value { color:var(--bad); } .card.ok .value { color:var(--ok); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px;
          padding:16px 20px; margin:0 0 16px; }
h2 { font-size:15px; margin:0 0 10px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
.grid2 section { margin:0; }
figure { margin:0; } svg.plot { width:100%; height:auto; display:block; }
figure.empty p { color:var(--muted); margin:8px 0; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
thead th { color:var(--muted); font-weight:600; font-size:12px; }
table.num td, table.num th { text-align:right; font-variant-numeric:tabular-nums; }
table.num td:first-child, table.num th:first-child { text-align:left; }
table.kv th { width:34%; color:var(--muted); font-weight:500; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; background:#f1f3f5; padding:1px 5px;
       border-radius:4px; }
.pill { display:inline-block; padding:1px 10px; border-radius:999px; font-size:12px; font-weight:600; }
.pill.ok { background:var(--okbg); color:var(--ok); } .pill.bad { background:var(--badbg); color:var(--bad); }
.pill.big { font-size:13px; padding:3px 12px; margin-left:10px; vertical-align:2px; }
.notes { list-style:none; padding:0; margin:0 0 16px; }
.notes li { background:#fff8e1; border:1px solid #f5e3a3; border-radius:8px; padding:8px 12px; margin-bottom:6px; }
.notes li.note, .notes li.server { background:#eef6fc; border-color:#cfe3f3; }
.quiet { color:var(--muted); margin:4px 0; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:8px; }
@media (max-width: 900px) { .cards { grid-template-columns:repeat(3, 1fr); } .grid2 { grid-template-columns:1fr; } }
@media print { body { background:#fff; } section, .card { break-inside:avoid; } }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="socktools {version}">
<title>{title}</title>
<style>""" + _CSS.replace("{", "{{").replace("}", "}}") + """</style>
</head><body data-run="{meta}">
<header><h1>{title}{verdict}</h1>
<div class="sub">started {started} · {elapsed} · socktools {version}</div></header>
<main>
<div class="cards">{cards}</div>
{notes}
{thresholds}
<section><h2>Latency by percentile</h2>{spectrum}{latency_table}</section>
<section><h2>Over time</h2>{over_time}</section>
<section><h2>Connect time</h2>{connect}</section>
{failures}
<div class="grid2"><section><h2>Configuration</h2>{config}</section>
<section><h2>Machine</h2>{machine}</section></div>
<footer>Latencies from HdrHistograms merged across workers (3 significant digits); the JSON's
<code>hdr</code> blobs count nanoseconds. Made by socktools flood.</footer>
</main></body></html>
"""

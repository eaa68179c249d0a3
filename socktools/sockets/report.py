"""Rendering: the ss-like table, its extra columns, the live frame and the JSON lines.

Everything here returns strings; the caller writes them.  The table is built
column by column with one width computation per column, because the one-shot
table of a 10,000-socket machine must render in a few tens of milliseconds.
"""

from __future__ import annotations

import json
from typing import Callable, Optional, Sequence

from socktools.kernel.socktable.entry import SocketEntry

from .config import SocketsConfig
from .view import Frame, Row, Summary

# Home the cursor, clear to the end of the screen: redraw in place without the flicker
# a full clear ("\x1b[2J") causes between frames.
ANSI_HOME_CLEAR = "\x1b[H\x1b[J"
MARKS = {"new": "+", "closed": "-", "": " "}


def _host_shown(host: str, local: bool, v6only: Optional[bool]) -> str:
    if host == "::" and local and v6only is False:
        return "*"
    return f"[{host}]" if ":" in host else host


def addr(entry: SocketEntry, end: str) -> str:
    """``127.0.0.1:80``, ``[::1]:80``, ``0.0.0.0:*``, ``[::]:22``, ``*:22``, ``/run/x.sock 1234``.

    ``0.0.0.0`` and ``[::]`` are told apart, as ss does; a ``[::]`` socket that
    also accepts IPv4 (not IPV6_V6ONLY) is ``*``, ss's spelling for "any family".
    """
    return _addr_cells([entry], 1 if end == "local" else 2)[0]


def _addr_cells(entries: Sequence[SocketEntry], idx: int) -> list[str]:
    """The address column for every entry at once (idx 1: local, 2: remote)."""
    local = idx == 1
    shown: dict = {}
    out = []
    append = out.append
    for e in entries:
        host, port = e[idx]
        if e[0][:2] == "u_":                        # u_str, u_dgr, u_seq: "path inode"
            append(f"{host} {port}")
            continue
        h = shown.get(host)
        if h is None or (host == "::" and local):
            h = _host_shown(host, local, e.v6only)
            if not (host == "::" and local):
                shown[host] = h
        append(f"{h}:*" if port == 0 and (host == "0.0.0.0" or host == "::") else f"{h}:{port}")
    return out


def human(n: Optional[float], suffix: str = "") -> str:
    """1536 -> ``1.5k``; binary multiples, like ``ss`` without ``-n`` and ``ls -h``."""
    if n is None:
        return "-"
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return (f"{n:.0f}{suffix}" if unit == "" else f"{n:.1f}{unit}{suffix}")
        n /= 1024.0
    return "-"


def _owners(e: SocketEntry) -> str:
    return ",".join(f"{o.name}({o.pid},fd={o.fd})" for o in e.owners) or "-"


def _ti(field: str, fmt: Callable[[int], str] = str) -> Callable[[Row], str]:
    def get(row: Row) -> str:
        ti = row.entry.tcp_info
        v = None if ti is None else ti.get(field)
        return "-" if v is None else fmt(v)
    return get


def _timer(row: Row) -> str:
    t = row.entry.timer
    return "-" if t is None else f"{t.name},{t.expires_ms / 1000:.3g}s,{t.retrans}"


# A column: (header, right-aligned, cells(rows) -> list of str).  The common columns are
# computed over all rows in one comprehension; the rest per row through _each.
Column = tuple


def _each(get: Callable[[Row], str]) -> Callable[[Sequence[Row]], list]:
    return lambda rows: [get(r) for r in rows]


def _entries(rows: Sequence[Row]) -> list:
    return [r.entry for r in rows]


def columns(config: SocketsConfig, *, netid: bool) -> list[Column]:
    cols: list[Column] = []
    if config.watch:
        cols.append(("", False, lambda rows: [MARKS[r.mark] for r in rows]))
    if netid:
        cols.append(("Netid", False, lambda rows: [e[0] for e in _entries(rows)]))
    cols += [("State", False, lambda rows: [e[3] for e in _entries(rows)]),
             ("Recv-Q", True, lambda rows: [str(e[4]) for e in _entries(rows)]),
             ("Send-Q", True, lambda rows: ["-" if e[5] is None else str(e[5]) for e in _entries(rows)]),
             ("Local Address:Port", False, lambda rows: _addr_cells(_entries(rows), 1)),
             ("Peer Address:Port", False, lambda rows: _addr_cells(_entries(rows), 2))]
    if config.watch:
        cols += [("In/s", True, _each(lambda r: human(r.rate_in))),
                 ("Out/s", True, _each(lambda r: human(r.rate_out)))]
    if config.info or config.watch:
        cols += [("Sent", True, _each(_ti("bytes_acked", human))),
                 ("Recvd", True, _each(_ti("bytes_received", human))),
                 ("Segs-Out", True, _each(_ti("segs_out"))),
                 ("Segs-In", True, _each(_ti("segs_in"))),
                 ("Retrans", True, _each(_ti("total_retrans"))),
                 ("RTT-ms", True, _each(_ti("rtt", lambda us: f"{us / 1000:.3g}"))),
                 ("Cwnd", True, _each(_ti("snd_cwnd"))),
                 ("Delivery/s", True, _each(_ti("delivery_rate", human)))]
    if config.timers:
        cols.append(("Timer", False, _each(_timer)))
    if config.memory:
        cols.append(("Memory (ss -m skmem)", False,
                     _each(lambda r: "-" if r.entry.skmem is None else r.entry.skmem.render())))
    if config.processes:
        cols.append(("Process", False, _each(lambda r: _owners(r.entry))))
    return cols


def table(rows: Sequence[Row], cols: list[Column]) -> str:
    """Aligned columns, two spaces apart; one ``str.format`` per line (the fast way in CPython)."""
    data = [cells(rows) for _, _, cells in cols]
    specs = []
    for i, ((head, right, _), col) in enumerate(zip(cols, data)):
        width = max(len(head), max(map(len, col), default=0))
        last = i == len(cols) - 1
        specs.append("{:>%d}" % width if right else "{}" if last else "{:<%d}" % width)
    fmt = "  ".join(specs).format
    lines = [fmt(*(head for head, _, _ in cols)).rstrip()]
    lines += [fmt(*cells) for cells in zip(*data)]
    return "\n".join(lines)


def one_shot(entries: Sequence[SocketEntry], config: SocketsConfig, *, source: str) -> str:
    netid = len(config.families) > 1
    text = table([Row(e) for e in entries], columns(config, netid=netid))
    notes = []
    if any(e.listening for e in entries):
        note = "LISTEN rows: Recv-Q = connections waiting for accept(), Send-Q = backlog"
        if source == "proc":
            note += " ('-': /proc does not show it)"
        notes.append(note)
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def frame_text(frame: Frame, config: SocketsConfig, *, when: str,
               max_rows: Optional[int] = None) -> str:
    """A live frame: the summary line, when, then the table (cut to ``max_rows`` on a terminal)."""
    head = (f"{frame.summary.render()}    {when}  every {config.interval:g}s  "
            f"(+ new, - closed; Ctrl-C ends)")
    rows = frame.rows
    more = ""
    if max_rows is not None and len(rows) > max_rows:
        more = (f"\n... {len(rows) - max_rows} more rows (narrow them: --port, --state, --dst, "
                f"--sort rate)")
        rows = rows[:max(max_rows, 1)]
    body = table(rows, columns(config, netid=len(config.families) > 1))
    return f"{head}\n{body}{more}"


def frame_json(frame: Frame, *, source: str, wall: float) -> str:
    """One JSON line per refresh (``json.loads`` each line); ``monotonic`` is CLOCK_MONOTONIC."""
    return json.dumps({
        "time": wall, "monotonic": frame.at, "interval_s": frame.interval,
        "read_s": frame.read_s, "previous_read_s": frame.previous_read_s,
        "source": source, "summary": frame.summary.to_dict(),
        "new": frame.new, "closed": frame.closed,
        "sockets": [r.to_dict() for r in frame.rows]}, separators=(",", ":"))


def one_shot_json(entries: Sequence[SocketEntry], summary: Summary, *, source: str) -> str:
    return json.dumps({"source": source, "summary": summary.to_dict(),
                       "sockets": [e.to_dict() for e in entries]}, indent=2)

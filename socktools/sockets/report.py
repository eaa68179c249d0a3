"""Rendering: the ss-like table, its extra columns, the live frame and the JSON lines.

Everything here returns strings; the caller writes them.  The table is built
column by column with one width computation per column, because the one-shot
table of a 10,000-socket machine must render in a few tens of milliseconds.
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .config import SocketsConfig

if TYPE_CHECKING:       # the one-shot table needs none of the live view's classes
    from .results import Frame, Row

# Entries are socktools.kernel.socktable.SocketEntry tuples: this module reads them by field
# and never imports the reader.
SocketEntry = tuple
# Home the cursor, clear to the end of the screen: redraw in place without the flicker
# a full clear ("\x1b[2J") causes between frames.
ANSI_HOME_CLEAR = "\x1b[H\x1b[J"
MARKS = {"new": "+", "closed": "-", "": " "}
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def addr(entry: SocketEntry, end: str) -> str:
    """``127.0.0.1:80``, ``[::1]:80``, ``0.0.0.0:*``, ``[::]:22``, ``*:22``, ``/run/x.sock 1234``.

    ``0.0.0.0`` and ``[::]`` are told apart, as ss does; a ``[::]`` socket that
    also accepts IPv4 (not IPV6_V6ONLY) is ``*``, ss's spelling for "any family".
    """
    return _addr_cells([entry], 1 if end == "local" else 2)[0]


def _addr_cells(entries: Sequence[SocketEntry], idx: int) -> list[str]:
    """The address column for every entry at once (idx 1: local, 2: remote).

    Each distinct host is rendered once; the rows are then one dict lookup and
    one f-string each.  The rare rows that depend on more than the address (Unix
    sockets, a dual-stack ``[::]``) are fixed afterwards.
    """
    pairs = [e[idx] for e in entries]
    shown = {h: (f"[{h}]" if ":" in h else h) for h in {h for h, _ in pairs}}
    # Port 0 means "any" only beside a wildcard host (a listener's peer, unconnected UDP).
    out = [f"{shown[h]}:{p}" if p else f"{shown[h]}:{'*' if h in _WILDCARDS else 0}"
           for h, p in pairs]
    if "::" in shown or any(h.startswith("u_") for h in {e[0] for e in entries}):
        local = idx == 1
        for i, e in enumerate(entries):
            host, port = pairs[i]
            if e[0][:2] == "u_":                    # u_str, u_dgr, u_seq: "path inode"
                out[i] = f"{host} {port}"
            elif host == "::" and local and e.v6only is False:
                out[i] = f"*:{port}" if port else "*:*"
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


def _ti(field: str, fmt: Callable[[int], str] = str) -> Callable[[SocketEntry], str]:
    def get(e: SocketEntry) -> str:
        ti = e.tcp_info
        # A listener's tcp_info is a template for its children (cwnd 10, no RTT): not traffic.
        v = None if ti is None or e[3] == "LISTEN" else ti.get(field)
        return "-" if v is None else fmt(v)
    return get


def _timer(e: SocketEntry) -> str:
    t = e.timer
    return "-" if t is None else f"{t.name},{t.expires_ms / 1000:.3g}s,{t.retrans}"


# A column: (header, right-aligned, cells(entries, rows) -> list of str).  ``rows`` (with rates
# and marks) exist in --watch only; the one-shot table never builds them.  The common columns
# are one comprehension over all entries; the rest go row by row through _per_entry/_per_row.
Column = tuple


def _per_entry(get: Callable[[SocketEntry], str]):
    return lambda entries, rows: [get(e) for e in entries]


def _per_row(get: Callable[[Row], str]):
    return lambda entries, rows: [get(r) for r in rows]


def columns(config: SocketsConfig, *, netid: bool) -> list[Column]:
    cols: list[Column] = []
    if config.watch:
        cols.append(("", False, _per_row(lambda r: MARKS[r.mark])))
    if netid:
        cols.append(("Netid", False, lambda entries, rows: [e[0] for e in entries]))
    cols += [("State", False, lambda entries, rows: [e[3] for e in entries]),
             ("Recv-Q", True, lambda entries, rows: [str(e[4]) for e in entries]),
             ("Send-Q", True, lambda entries, rows: ["-" if e[5] is None else str(e[5])
                                                     for e in entries]),
             ("Local Address:Port", False, lambda entries, rows: _addr_cells(entries, 1)),
             ("Peer Address:Port", False, lambda entries, rows: _addr_cells(entries, 2))]
    if config.watch:
        cols += [("In/s", True, _per_row(lambda r: human(r.rate_in))),
                 ("Out/s", True, _per_row(lambda r: human(r.rate_out)))]
    if config.info or config.watch:
        cols += [("Sent", True, _per_entry(_ti("bytes_acked", human))),
                 ("Recvd", True, _per_entry(_ti("bytes_received", human))),
                 ("Segs-Out", True, _per_entry(_ti("segs_out"))),
                 ("Segs-In", True, _per_entry(_ti("segs_in"))),
                 ("Retrans", True, _per_entry(_ti("total_retrans"))),
                 ("RTT-ms", True, _per_entry(_ti("rtt", lambda us: f"{us / 1000:.3g}"))),
                 ("Cwnd", True, _per_entry(_ti("snd_cwnd"))),
                 ("Delivery/s", True, _per_entry(_ti("delivery_rate", human)))]
    if config.timers:
        cols.append(("Timer", False, _per_entry(_timer)))
    if config.memory:
        cols.append(("Memory (ss -m skmem)", False,
                     _per_entry(lambda e: "-" if e.skmem is None else e.skmem.render())))
    if config.processes:
        cols.append(("Process", False, _per_entry(_owners)))
    return cols


def table(entries: Sequence[SocketEntry], cols: list[Column],
          rows: Optional[Sequence[Row]] = None) -> str:
    """Aligned columns, two spaces apart, the header on top.

    Padding and joining go through ``map`` over C-level string methods, with no
    Python code per cell: this is what keeps a 10,000-row table near ss's speed.
    """
    padded = []
    for i, (head, right, cells) in enumerate(cols):
        col = cells(entries, rows)
        col.insert(0, head)
        if i == len(cols) - 1 and not right:
            padded.append(col)              # the last column needs no padding
            continue
        width = max(map(len, col))
        padded.append(list(map(str.rjust if right else str.ljust, col, repeat(width))))
    lines = list(map("  ".join, zip(*padded)))
    lines[0] = lines[0].rstrip()
    return "\n".join(lines)


def one_shot(entries: Sequence[SocketEntry], config: SocketsConfig, *, source: str) -> str:
    netid = len(config.families) > 1
    text = table(entries, columns(config, netid=netid))
    notes = []
    if any(e.listening for e in entries):
        note = "LISTEN rows: Recv-Q = connections waiting for accept(), Send-Q = backlog"
        if source == "proc":
            note += " ('-': /proc does not show it)"
        notes.append(note)
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def frame_text(frame: "Frame", config: SocketsConfig, *, max_rows: Optional[int] = None) -> str:
    """A live frame: the summary line, when, then the table (cut to ``max_rows`` on a terminal)."""
    import time
    when = time.strftime("%H:%M:%S", time.localtime(frame.wall))
    head = (f"{frame.summary.render()}    {when}  every {config.interval:g}s  "
            f"(+ new, - closed; Ctrl-C ends)")
    rows = frame.rows
    more = ""
    if max_rows is not None and len(rows) > max_rows:
        more = (f"\n... {len(rows) - max_rows} more rows (narrow them: --port, --state, --dst, "
                f"--sort rate)")
        rows = rows[:max(max_rows, 1)]
    body = table([r.entry for r in rows], columns(config, netid=len(config.families) > 1), rows)
    return f"{head}\n{body}{more}"


def frame_document(frame: "Frame", *, source: str) -> dict:
    """One refresh as JSON-ready data (``--watch --json`` prints it as one line);
    ``monotonic`` is CLOCK_MONOTONIC as the read began."""
    return {"time": frame.wall, "monotonic": frame.at, "interval_s": frame.interval,
            "read_s": frame.read_s, "previous_read_s": frame.previous_read_s,
            "source": source, "summary": frame.summary.to_dict(),
            "new": frame.new, "closed": frame.closed,
            "sockets": [r.to_dict() for r in frame.rows]}


def render_frame(frame: "Frame", config: SocketsConfig, *, tty: bool,
                 screen_lines: int = 40) -> str:
    """What one refresh writes as text: on a terminal the frame drawn over the last one (cursor
    home + clear) and cut to the screen; otherwise the frame and a blank line."""
    if tty:
        return ANSI_HOME_CLEAR + frame_text(frame, config, max_rows=max(screen_lines - 3, 1))
    return frame_text(frame, config) + "\n"


def one_shot_document(entries: Sequence[SocketEntry], *, source: str) -> dict:
    """The one-shot table as JSON-ready data: source, the summary line's counts, the sockets."""
    from .results import summarize
    return {"source": source, "summary": summarize(entries).to_dict(),
            "sockets": [e.to_dict() for e in entries]}

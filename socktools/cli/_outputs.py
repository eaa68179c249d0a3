"""flood's result files and thresholds, as click options: --report, --hgrm, --hlog, --csv, --threshold.

One decorator adds the options and hands the command one frozen :class:`Outputs`
(so the command's signature grows by one name, not five).  Paths are checked
before the run starts: a ten-minute run must not be lost to a typo in a
directory name.  The same writer serves ``socktools report``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import click

from socktools.cli._common import EXIT_UNAVAILABLE, die
from socktools.optional import PACKAGES, hint

__all__ = ["Outputs", "output_options", "write_outputs", "need_report_extra"]


@dataclass(frozen=True)
class Outputs:
    thresholds: tuple = ()     # parsed Threshold objects
    report: str = None
    hgrm: str = None
    hlog: str = None
    csv: str = None

    @property
    def needs_document(self) -> bool:
        return bool(self.thresholds or self.report or self.hgrm or self.hlog or self.csv)


def _parse_thresholds(ctx, param, values):
    from socktools.flood.thresholds import ThresholdError, parse
    out = []
    for text in values or ():
        try:
            out.append(parse(text))
        except ThresholdError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param)
    return tuple(out)


def _writable(ctx, param, value):
    """An output file must be writable now, not after the run: try it, as the run will.

    The file is opened for appending (nothing in it is touched) and, if this made it,
    removed again; the OS's own reason is the message (EACCES, ENOENT, EROFS, and the
    EACCES /proc answers that a permission check of the directory cannot foresee).
    Not a regular file (/dev/stdout, a FIFO): only its permission is checked, since
    opening a FIFO would wait for a reader; a symbolic link is left to the writer (sniff
    refuses one; creating through a dangling one here would leave a file behind).
    """
    if value is None:
        return None
    import stat
    try:
        st = os.lstat(value)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:        # ValueError: a NUL or lone surrogate in the name
        raise click.BadParameter(f"cannot write {value!r}: {getattr(exc, 'strerror', None) or exc}",
                                 ctx=ctx, param=param) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        return value
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise click.BadParameter(f"{value!r} is a directory", ctx=ctx, param=param)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(value, os.W_OK):
            raise click.BadParameter(f"cannot write {value!r}: permission denied", ctx=ctx, param=param)
        return value
    try:
        fd = os.open(value, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        parent = os.path.dirname(os.path.abspath(value))
        why = (f"directory {parent} does not exist" if not os.path.isdir(parent)
               else exc.strerror)
        raise click.BadParameter(f"cannot write {value!r}: {why}", ctx=ctx, param=param) from None
    os.close(fd)
    if st is None:
        os.unlink(value)     # made only to try: the run writes it, or leaves no empty file behind
    return value


def need_report_extra(feature: str = "--report") -> None:
    """Exit 3 with the one-line install hint when matplotlib is missing."""
    from socktools.report.plots import available
    if not available():
        die(hint("report", feature), EXIT_UNAVAILABLE)


def output_options(fn):
    """Add the five options; the command receives them as ``outputs=Outputs(...)``."""
    options = [
        click.option("--threshold", "thresholds", multiple=True, callback=_parse_thresholds,
                     metavar="EXPR",
                     help="Pass/fail criterion, repeatable: p99<5ms, p50<1ms, connect_p99<50ms, "
                          "errors==0 (every failure, failed replies included), reply_failures==0, "
                          "rps>10000.  A failed one makes flood exit with code 99."),
        click.option("--report", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE.html",
                     help="Write a self-contained HTML report (plots; opens offline).  "
                          f"Needs matplotlib ({PACKAGES['report'].install})."),
        click.option("--hgrm", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE",
                     help="Write the latency percentile distribution (.hgrm, milliseconds, as wrk2)."),
        click.option("--hlog", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE",
                     help="Write an HdrHistogram interval log (one histogram of ns per interval)."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), callback=_writable,
                     metavar="FILE", help="Write one CSV row per interval."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, thresholds, report, hgrm, hlog, csv_path, **kwargs):
        if report:
            need_report_extra()
        outputs = Outputs(thresholds=thresholds, report=report, hgrm=hgrm, hlog=hlog, csv=csv_path)
        return fn(*args, outputs=outputs, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def write_outputs(doc: dict, outputs: Outputs) -> list:
    """Write every file asked for; returns ``"wrote FILE (what)"`` notes for stderr."""
    from socktools.flood import export
    notes = []
    try:
        if outputs.hgrm:
            if (doc.get("latency_us") or {}).get("hdr"):
                with open(outputs.hgrm, "wb") as f:
                    export.write_hgrm(doc, f)
                notes.append(f"wrote {outputs.hgrm}")
            else:   # an empty file would look like a broken one to a plotter
                notes.append(f"did not write {outputs.hgrm}: no round trip was measured")
        if outputs.hlog:
            with open(outputs.hlog, "w", encoding="utf-8") as f:
                n = export.write_hlog(doc, f)
            notes.append(f"wrote {outputs.hlog} ({n} intervals)")
        if outputs.csv:
            with open(outputs.csv, "w", encoding="utf-8", newline="") as f:
                n = export.write_csv(doc, f)
            notes.append(f"wrote {outputs.csv} ({n} rows)")
        if outputs.report:
            from socktools.report.html import render
            page = render(doc)
            with open(outputs.report, "w", encoding="utf-8") as f:
                f.write(page)
            notes.append(f"wrote {outputs.report} ({len(page.encode()) / 1024:,.0f} KiB)")
    except OSError as exc:   # checked before the run; a full disk can still come: name the file
        from socktools.cli._common import shown
        from socktools.errors import errno_name
        what = shown(exc.filename) if isinstance(exc.filename, str) else "the result files"
        die(f"cannot write {what}: {errno_name(exc.errno)} (errno {exc.errno}) - {exc.strerror}")
    return notes

"""`socktools report`: render a saved flood result as HTML (and the other result files)."""

from __future__ import annotations

import json
import sys

import click

from socktools.cli._common import EXIT_FAILED, EXIT_THRESHOLD, die
from socktools.cli._outputs import Outputs, _parse_thresholds, _writable, need_report_extra, write_outputs

EPILOG = """\b
Examples:
  socktools flood --duration 30s --json > run.json
  socktools report run.json -o run.html
  socktools report run.json -o run.html --threshold 'p99<5ms' --threshold errors==0
  socktools flood --interval 1s --json | tee run.ndjson; socktools report run.ndjson -o run.html

\b
FILE is what `flood --json` printed: one JSON document, or NDJSON lines
(`--interval --json`) whose last `"event": "result"` line is the result.
Exit codes: 0 written; 1 FILE is not a flood result; 3 matplotlib is missing
(the message says how to install it); 99 a --threshold failed (the page says which).
"""


def _load(path: str) -> dict:
    from socktools.cli._common import shown
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")     # whole: the error's offset is the file's
    except OSError as exc:
        from socktools.errors import one_line
        die(one_line(exc, f"read {shown(path)}"))
    except UnicodeDecodeError as exc:   # a pcap, a latin-1 file...: flood --json writes UTF-8
        die(f"{shown(path)} is not a flood result: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} is not UTF-8 (flood --json writes UTF-8 JSON)")
    docs = []
    try:
        docs = [json.loads(text)]
    except ValueError:
        for line in text.splitlines():     # NDJSON: interval lines, then the result
            line = line.strip()
            if line:
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    die(f"{shown(path)} is neither JSON nor JSON lines (flood --json writes those)")
    results = [d for d in docs if isinstance(d, dict) and d.get("event") == "result" and "latency_us" in d]
    if not results:
        die(f"{shown(path)} holds no flood result (an object with \"event\": \"result\"; see flood --json)",
            EXIT_FAILED)
    return results[-1]


@click.command(epilog=EPILOG)
@click.argument("file", type=click.Path(dir_okay=False, exists=True), metavar="FILE.json")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), required=True,
              callback=_writable, metavar="FILE.html", help="Where to write the page.")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR", callback=_parse_thresholds,
              help="Check (again) against the saved result, repeatable: p99<5ms, errors==0, rps>10000.")
@click.option("--hgrm", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE", help="Also write the .hgrm.")
@click.option("--hlog", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE", help="Also write the .hlog.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), callback=_writable, metavar="FILE",
              help="Also write the intervals as CSV.")
def command(file, output, thresholds, hgrm, hlog, csv_path):
    """Render a saved `flood --json` result as one self-contained HTML page.

    The page opens offline (inline SVG plots, no script, no network): the
    latency percentile spectrum, latency and throughput over time, the
    connect-time distribution, failures with their meaning, thresholds, the
    configuration and the machine.
    """
    need_report_extra("socktools report")
    doc = _load(file)
    if thresholds:
        from socktools.flood.thresholds import check_all
        doc["thresholds"] = check_all(thresholds, doc)
    outputs = Outputs(report=output, hgrm=hgrm, hlog=hlog, csv=csv_path)
    for note in write_outputs(doc, outputs):
        click.echo(f"report: {note}", err=True)
    if not all(t["passed"] for t in doc.get("thresholds") or []):
        sys.exit(EXIT_THRESHOLD)

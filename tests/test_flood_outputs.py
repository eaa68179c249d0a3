"""flood's result files from one real run: JSON intervals, .hgrm, .hlog, CSV, thresholds, interval rows."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest

from socktools.flood import stats as st
from socktools.flood.timeline import ROW_FIELDS
from tests.conftest import socktools_cmd

pytestmark = pytest.mark.timeout(120)


def flood(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("flood", *args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run against flood's own server, every file written (shared: runs are not free)."""
    d = tmp_path_factory.mktemp("flood")
    files = {k: d / f"run.{k}" for k in ("hgrm", "hlog", "csv")}
    proc = flood("--conns", "6", "--workers", "2", "--duration", "1.2s", "--interval", "0.3s", "--json",
                 "--hgrm", str(files["hgrm"]), "--hlog", str(files["hlog"]), "--csv", str(files["csv"]),
                 "--threshold", "p99<30s", "--threshold", "errors==0")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    doc = lines[-1]
    assert doc["event"] == "result"
    return {"doc": doc, "ndjson": lines[:-1], "dir": d, **files}


def test_json_carries_the_run_metadata(run):
    doc = run["doc"]
    assert doc["socktools_version"]
    assert doc["started"].endswith("Z") and "T" in doc["started"]
    assert doc["system"]["cpus"] >= 1 and doc["system"]["kernel"] and doc["system"]["python"]
    assert doc["hdr_unit"] == "ns"


def test_intervals_add_up_to_the_totals(run):
    doc = run["doc"]
    rows = doc["intervals"]
    assert len(rows) >= 4 and doc["interval"] == 0.3
    assert all(a["end"] == pytest.approx(b["start"]) for a, b in zip(rows, rows[1:]))
    assert sum(r["requests"] for r in rows) == doc["requests"]["sent"]
    assert sum(r["traffic_responses"] for r in rows) == doc["requests"]["traffic_answered"]
    assert sum(r["bytes_in"] for r in rows) == doc["bytes"]["received"]
    assert sum((r["latency"] or {}).get("count", 0) for r in rows) == doc["latency_us"]["count"]
    # the histograms themselves add up, bucket by bucket
    total = None
    for r in rows:
        total = st.add_into(total, st.decode((r["latency"] or {}).get("hdr")))
    whole = st.decode(doc["latency_us"]["hdr"])
    assert list(total.counts) == list(whole.counts)


def test_the_tail_row_alone_is_partial_and_each_whole_row_is_one_interval(run):
    """The report leaves partial rows out of its over-time plots: only the tail may be one."""
    rows = run["doc"]["intervals"]
    assert [r for r in rows if r["partial"]] == [r for r in rows if r["phase"] == "end"]
    assert all(r["partial"] for r in rows[len(run["ndjson"]):])        # the rows past the ticks
    assert all(r["end"] - r["start"] == pytest.approx(0.3, abs=0.002) for r in rows if not r["partial"])


def test_ndjson_lines_are_the_json_intervals(run):
    """--interval --json streams the same records the final document keeps (the tail row aside)."""
    doc = run["doc"]
    assert len(run["ndjson"]) == len(doc["intervals"]) - 1
    for line, row in zip(run["ndjson"], doc["intervals"]):
        assert line["event"] == "interval" and line["t"] == row["end"]
        assert line["requests"] == row["requests"] and line["latency"] == row["latency"]


def test_hgrm_is_hdrhistograms_own_percentile_distribution(run):
    doc = run["doc"]
    expected = io.BytesIO()
    st.decode(doc["latency_us"]["hdr"]).output_percentile_distribution(expected, 1_000_000.0)
    data = run["hgrm"].read_bytes()
    assert data == expected.getvalue()
    # and it reads as what it claims: milliseconds, the last row is the maximum and the count
    rows = [line.split() for line in data.decode().splitlines()[2:] if line and not line.startswith("#")]
    values = [float(r[0]) for r in rows]
    assert values == sorted(values)
    assert float(rows[-1][1]) == 1.0 and int(rows[-1][2]) == doc["latency_us"]["count"]
    assert values[-1] == pytest.approx(doc["latency_us"]["max"] / 1000, abs=0.0011)
    assert data.decode().rstrip().endswith("]") and "#[Mean" in data.decode()


def test_hlog_reads_back_with_hdrhs_reader_interval_by_interval(run):
    from hdrh.log import HistogramLogReader
    doc = run["doc"]
    reader = HistogramLogReader(str(run["hlog"]), st.new_histogram())
    got = []
    while True:
        hist = reader.get_next_interval_histogram()
        if hist is None:
            break
        got.append((hist.get_start_time_stamp(), hist.get_total_count()))
    reader.close()
    rows = doc["intervals"]
    assert [c for _, c in got] == [(r["latency"] or {}).get("count", 0) for r in rows]
    started = reader.get_start_time_sec()
    assert [round(t / 1000 - started, 3) for t, _ in got] == [r["start"] for r in rows]


def test_csv_rows_equal_the_json_intervals(run):
    doc = run["doc"]
    with open(run["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["intervals"])
    for line, row in zip(rows, doc["intervals"]):
        for name in ROW_FIELDS:
            assert line[name] == ("" if row[name] is None else str(row[name])), name   # null: empty
        lat = row["latency"] or {}
        assert line["latency_count"] == str(lat.get("count", ""))
        for key in ("p50", "p99", "max"):
            assert line[f"latency_{key}_us"] == str(lat.get(key, ""))


def test_passing_thresholds_are_reported_as_passed(run):
    checked = run["doc"]["thresholds"]
    assert [c["threshold"] for c in checked] == ["p99<30s", "errors==0"]
    assert all(c["passed"] for c in checked)
    assert checked[0]["actual"] == run["doc"]["latency_us"]["p99"]


@pytest.mark.parametrize("expr", ["p99<5", "p101<1ms", "latency<1ms", "errors==2ms", "p99"])
def test_a_bad_threshold_is_a_usage_error_naming_the_option(expr):
    from click.testing import CliRunner
    from socktools.cli import main
    result = CliRunner().invoke(main, ["flood", "--threshold", expr])
    assert result.exit_code == 2
    assert "--threshold" in result.output and "Traceback" not in result.output


def test_an_unwritable_output_fails_before_the_run(tmp_path):
    from click.testing import CliRunner
    from socktools.cli import main
    result = CliRunner().invoke(main, ["flood", "--hgrm", str(tmp_path / "no" / "such" / "x.hgrm")])
    assert result.exit_code == 2 and "--hgrm" in result.output and "does not exist" in result.output


def test_interval_rows_for_humans_and_a_failing_threshold_exits_99():
    """One run for two behaviours (runs are not free): iperf3-style rows, then a failed threshold."""
    proc = flood("--conns", "2", "--workers", "1", "--duration", "1s", "--interval", "0.25s",
                 "--threshold", "errors==0", "--threshold", "p50<1ns")
    assert proc.returncode == 99, proc.stderr
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "req/s" in line and "p99" in line)
    rows = []
    for line in lines[head + 1:]:
        if not line.strip():
            break
        rows.append(line)
    assert len(rows) >= 3
    assert all("-" in r.split()[0] and r.split()[0].endswith("s") for r in rows)
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout
    assert "round trip" in proc.stdout          # the summary follows the rows
    verdicts = {line.split()[1]: line.split()[2] for line in lines if line.startswith("threshold")}
    assert verdicts == {"errors==0": "passed", "p50<1ns": "FAILED"}


def test_after_ctrl_c_on_a_terminal_the_summary_starts_on_its_own_line():
    """Type ^C into a real pseudo-terminal: the line discipline echoes "^C" and signals flood."""
    import fcntl
    import os
    import pty
    import select
    import termios
    import time

    master, slave = pty.openpty()

    def become_terminal_owner():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(socktools_cmd("flood", "--conns", "2", "--workers", "1", "--duration", "60s"),
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=become_terminal_owner,
                            close_fds=True)
    os.close(slave)
    out = b""

    def read_for(seconds: float, until: bytes = b"") -> None:
        nonlocal out
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in out):
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:      # EIO: the child closed the terminal
                    return
                if not chunk:
                    return
                out += chunk
    try:
        read_for(60, until=b"conns ")            # the live line: traffic is flowing
        assert b"conns " in out, out
        os.write(master, b"\x03")                # Ctrl-C, as typed
        read_for(60, until=b"failures")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "^C" in text
    after = text[text.index("^C"):]
    summary = after.index("flood 127.0.0.1")
    assert "\n" in after[:summary], repr(after[:summary + 20])   # not glued to the ^C
    assert "stopped early (Ctrl-C)" in after

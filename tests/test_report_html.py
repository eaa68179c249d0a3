"""The HTML report: rendered from a real run, opened in headless Chromium, every plot drawn."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd
from tests.peers import Nginx

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ("latency-spectrum", "over-time", "connect-time")
CONSOLE = re.compile(r":CONSOLE[:(]")


def chromium(args: list, url: str, profile, timeout: float = 90) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real flood run kept as JSON, as CI would keep it, with one failing threshold."""
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install matplotlib)")
    d = tmp_path_factory.mktemp("report")
    proc = subprocess.run(socktools_cmd("flood", "--conns", "8", "--workers", "2", "--duration", "1.5s",
                                        "--interval", "0.25s", "--json", "--report", str(d / "run.html"),
                                        "--threshold", "p99<30s", "--threshold", "rps>1000M"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 99, proc.stderr
    (d / "run.json").write_text(proc.stdout.splitlines()[-1])
    return d


def test_flood_report_is_self_contained(saved):
    page = (saved / "run.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not load anything"
    assert "<link" not in page.lower()
    for name in PLOTS:
        assert f'data-plot="{name}"' in page
    assert "rps&gt;1000M" in page and "failed" in page and "passed" in page


def test_report_command_renders_the_saved_json(saved, tmp_path):
    out = tmp_path / "again.html"
    result = CliRunner().invoke(main, ["report", str(saved / "run.json"), "-o", str(out),
                                       "--threshold", "errors==0"])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "errors==0" in page and "all 1 thresholds passed" in page
    failing = CliRunner().invoke(main, ["report", str(saved / "run.json"), "-o", str(out),
                                        "--threshold", "p50<1ns"])
    assert failing.exit_code == 99


def test_report_reads_ndjson_and_refuses_other_json(saved, tmp_path):
    nd = tmp_path / "run.ndjson"
    nd.write_text('{"event": "interval", "t": 0.5}\n' + (saved / "run.json").read_text() + "\n")
    ok = CliRunner().invoke(main, ["report", str(nd), "-o", str(tmp_path / "a.html")])
    assert ok.exit_code == 99, ok.output            # the saved run's own threshold failed
    assert "rps&gt;1000M" in (tmp_path / "a.html").read_text(encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"sockets": []}))
    bad = CliRunner().invoke(main, ["report", str(other), "-o", str(tmp_path / "b.html")])
    assert bad.exit_code == 1 and "no flood result" in bad.output


def test_missing_extra_is_one_clear_line(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    result = CliRunner().invoke(main, ["report", str(saved / "run.json"), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 3
    assert "pip install matplotlib" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_the_page_renders_in_chromium_with_every_plot_drawn(saved, tmp_path):
    url = (saved / "run.html").as_uri()
    shot = tmp_path / "report.png"
    proc = chromium(["--window-size=1200,1800", "--hide-scrollbars", f"--screenshot={shot}"], url,
                    tmp_path / "profile-shot")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 20_000           # a blank page compresses to a few kB
    assert console_messages(proc.stderr) == []
    dom = chromium(["--dump-dom"], url, tmp_path / "profile-dom")
    assert dom.returncode == 0
    assert console_messages(dom.stderr) == []
    for name in PLOTS:
        m = re.search(rf'<figure class="plot-box" data-plot="{name}">(.*?)</figure>', dom.stdout, re.S)
        assert m, f"plot {name} missing from the rendered page"
        svg = m.group(1)
        assert "<svg" in svg and svg.count("<path") >= 10, f"plot {name} has nothing drawn"


def test_the_console_check_can_fail(tmp_path):
    """The check above would see a console message: prove it on a page that logs one."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("report-check-" + 42)</script></body></html>')
    proc = chromium(["--dump-dom"], bad.as_uri(), tmp_path / "profile-bad")
    assert any("report-check-42" in line for line in console_messages(proc.stderr))


def test_a_run_where_nothing_connected_still_makes_a_useful_page(closed_port, tmp_path):
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install matplotlib)")
    page, hgrm = tmp_path / "refused.html", tmp_path / "refused.hgrm"
    proc = subprocess.run(socktools_cmd("flood", "--port", str(closed_port[1]), "--conns", "3", "--duration",
                                        "0.3s", "--report", str(page), "--hgrm", str(hgrm)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    text = page.read_text(encoding="utf-8")
    assert "ECONNREFUSED" in text and "nothing is listening on that address and port" in text
    assert "No round trip was measured." in text and "No connection was made." in text
    assert not hgrm.exists() and "did not write" in proc.stderr


def test_an_http_run_against_nginx_shows_what_it_sent(tmp_path):
    """The configuration names the method, the paths (escaped) and the Host, not an echo payload."""
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install matplotlib)")
    page = tmp_path / "http.html"
    with Nginx(tmp_path) as server:
        proc = subprocess.run(socktools_cmd("flood", "--port", str(server.port), "--mode", "http",
                                            "--path", "/", "--path", "/?q=<script>alert(1)</script>",
                                            "--header", "X-Run: report", "--conns", "2", "--workers", "1",
                                            "--duration", "0.5s", "--report", str(page)),
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text(encoding="utf-8")
    config = text[text.index("<h2>Configuration</h2>"):]
    assert "<script" not in text.lower()
    assert "<code>/?q=&lt;script&gt;alert(1)&lt;/script&gt;</code>" in config
    assert "<th>method</th><td>GET</td>" in config and "1 given" in config
    assert f"127.0.0.1:{server.port}" in config and "payload" not in config

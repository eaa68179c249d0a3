"""--no-reply against a server that never reads: flood's own buffer stays bounded.

``socktools serve --mode sink`` accepts and never reads, so once the kernel's
buffers are full every byte flood writes would stay in flood's process.  The
pacer must keep its schedule, skip (and count as ``late``) what it cannot
send, and never hold more than ``HIGH_WATER`` plus one request per connection.
"""

from __future__ import annotations

import pytest

from socktools.flood.config import FloodConfig
from socktools.flood.paced import HIGH_WATER
from socktools.flood.report import render_table, to_json
from socktools.flood.runner import run_flood
from socktools.flood.worker import run_worker
from socktools.wire.spec import WireSpec

pytestmark = pytest.mark.timeout(60)

REQUEST = 16 * 1024


def _config(port: int, **kw) -> FloodConfig:
    spec = WireSpec(mode="raw", sends=("x" * REQUEST,), no_reply=True)
    kw.setdefault("conns", 2)
    kw.setdefault("workers", 1)
    return FloodConfig(address=("127.0.0.1", port), port=port, mode="raw", wire=spec, **kw)


def test_write_only_to_a_sink_keeps_at_most_the_high_water_mark_per_connection(start_server):
    srv = start_server("--mode", "sink", "--rcvbuf", "4096")
    # 800 x 16 KiB due in 1 s: 12.8 MB, far beyond what two small sockets' kernel buffers take.
    stats = run_worker(_config(srv.port, rate=800, duration=1.0), 0)
    srv.stop()
    assert stats.established == 2
    assert stats.late > 0, "nothing was held back: the sink's buffers absorbed everything?"
    assert 0 < stats.max_buffered <= HIGH_WATER + REQUEST
    # The schedule ran on: every due request was either written or counted late.
    assert stats.scheduled >= 400
    assert stats.traffic_requests * REQUEST <= stats.bytes_out
    assert stats.bytes_out < 2 * (HIGH_WATER + REQUEST) + 8 * 1024 * 1024   # kernel buffers + ours
    assert stats.late + stats.traffic_requests <= stats.scheduled
    # send lag is of requests sent: the late ones are not in it
    from socktools.flood.stats import decode
    sent = decode(stats.histograms["send_lag"]).get_total_count()
    assert sent + stats.late == stats.scheduled


def test_the_report_and_json_show_the_late_requests(start_server):
    srv = start_server("--mode", "sink", "--rcvbuf", "4096")
    result = run_flood(_config(srv.port, rate=800, duration=1.0))
    srv.stop()
    doc = to_json(result)
    assert doc["requests"]["late"] == result.totals.counters["late"] > 0
    assert 0 < doc["bytes"]["max_buffered"] <= HIGH_WATER + REQUEST
    assert "due but not sent" in render_table(result)

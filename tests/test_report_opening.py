"""The HTML report shows the opening conversation (refusals by the server's words, escaped), the
churn, and the opening's own latency row: hand-made documents, no run."""

from __future__ import annotations

from socktools.report import html


def doc(**more) -> dict:
    return {"mode": "redis", "target": "127.0.0.1:6379", "interval": 1.0,
            "config": {"conns": 4, "workers": 1, "size": 64, "duration": 2.0, "rate": None}, **more}


def test_the_configuration_shows_the_opening_and_its_refusals_escaped():
    page = html._config(doc(opening={"described": "1 setup message", "opened": 10, "refused": 3,
                                     "refusals": {"WRONGPASS <bad> pair": 3}, "per_second": 5.0}))
    assert "1 setup message: 10 opened · 3 refused: WRONGPASS &lt;bad&gt; pair (3)" in page


def test_the_configuration_shows_the_churn():
    page = html._config(doc(churn={"every": 2, "connections": 500, "per_second": 249.6,
                                   "handshakes_per_second": None}))
    assert "a new connection every 2 request(s): 500 · 250 connects/s" in page


def test_without_opening_or_churn_neither_row_is_there():
    page = html._config(doc(opening=None, churn=None))
    assert "<th>opening</th>" not in page and "<th>churn</th>" not in page


def test_the_latency_table_has_the_opening_row():
    row = {"p50": 100.0, "p90": 200.0, "p99": 300.0, "p99.9": 400.0, "max": 500.0, "mean": 150.0, "count": 7}
    table = html._latency_table(doc(open_us=row))
    assert "opening" in table and ">7<" in table

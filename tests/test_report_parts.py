"""The HTML report's parts, sans-I/O: the configuration it shows, its latency axes, its intervals.

Hand-made documents and histograms, no run: what each part computes is checked
directly (tick values and labels, the rows drawn), plus the SVG text where the
question is what the reader sees.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

import pytest

from socktools.flood import stats as st
from socktools.flood.export import csv_rows
from socktools.report import html
from socktools.wire.spec import WireSpec

pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install matplotlib)")
from socktools.report import plots  # noqa: E402 (after the skip: it imports matplotlib)

SVG = "{http://www.w3.org/2000/svg}"


def config_html(spec: WireSpec, mode: str = None, **cfg) -> str:
    doc = {"mode": mode or spec.name, "target": "127.0.0.1:8080", "interval": 1.0,
           "config": {"conns": 4, "workers": 1, "size": 64, "duration": 2.0, "rate": None,
                      "wire": spec.summary(), **cfg}}
    return html._config(doc)


# -- a. the configuration says what was sent ---------------------------------------------------

def test_http_configuration_shows_method_paths_headers_and_host_not_a_payload():
    spec = WireSpec(mode="http", method="POST", paths=("/api/items", "/<script>alert(1)</script>"),
                    headers=("X-Trace: 1", "Host: shop.test"), body=b"k=v", host="127.0.0.1:8080")
    page = config_html(spec)
    assert "payload" not in page and "64 bytes" not in page
    assert "POST" in page and "/api/items" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert re.search(r"headers</th><td>2 given", page)
    assert "shop.test" in page                      # the Host the requests carried (the user's)
    assert "3 bytes" in page                        # the body


def test_http_without_paths_shows_the_default_path_and_the_target_host():
    page = config_html(WireSpec(mode="http", host="127.0.0.1:8080"))
    assert "<code>/</code>" in page and "127.0.0.1:8080" in page and "0 given" in page


def test_redis_configuration_shows_the_commands_escaped():
    page = config_html(WireSpec(mode="redis", commands=("SET k:{conn} v", "GET <b>k</b>")))
    assert "<code>SET k:{conn} v</code>" in page and "<code>GET &lt;b&gt;k&lt;/b&gt;</code>" in page
    assert "64 bytes" not in page
    assert "<code>PING</code>" in config_html(WireSpec(mode="redis"))     # the default command


def test_raw_send_is_shown_with_control_characters_escaped_and_cut_at_the_named_length():
    long = "A" * (html.SHOWN_CHARS + 50)
    page = config_html(WireSpec(mode="raw", sends=("hi\x00\x1b[31m<i>\r\n", long), reply_until="\\n"))
    assert "\x00" not in page and "\x1b" not in page and "\r" not in page
    assert "hi\\x00\\x1b[31m&lt;i&gt;\\r\\n" in page
    assert "A" * html.SHOWN_CHARS + "…" in page and "A" * (html.SHOWN_CHARS + 1) not in page
    assert f"{len(long):,} characters" in page


def test_a_send_file_shows_its_size_and_a_safe_start():
    data = b"GET / HTTP/1.1\r\n" + bytes(range(256)) * 40
    page = config_html(WireSpec(mode="raw", send_file=data, reply_until_close=True))
    assert f"{len(data):,} bytes" in page
    assert "GET / HTTP/1.1\\r\\n" in page
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", page)


def test_line_shows_its_sends_and_line_ending():
    page = config_html(WireSpec(mode="line", sends=("PING {seq}",), eol="crlf"))
    assert "<code>PING {seq}</code>" in page and "crlf" in page


def test_echo_and_framed_show_the_payload_they_sent():
    assert re.search(r"payload</th><td>1,024 bytes", config_html(WireSpec(mode="echo", size=1024)))
    framed = config_html(WireSpec(mode="framed", action="search", value="<neo>"))
    assert "search &lt;neo&gt;" in framed and re.search(r"\d+-byte frame", framed)


def test_a_plugin_shows_its_name_and_options():
    spec = WireSpec(mode="raw", plugin="examples.memcached_plugin:Memcached",
                    commands=("set key:{conn} <v>", "get key:{conn}"))
    page = config_html(spec)
    assert "examples.memcached_plugin:Memcached" in page
    assert "<code>set key:{conn} &lt;v&gt;</code>" in page and "<code>get key:{conn}</code>" in page


def test_long_lists_are_cut_at_the_named_count():
    paths = tuple(f"/p{i}" for i in range(html.SHOWN_ITEMS + 7))
    page = config_html(WireSpec(mode="http", paths=paths))
    assert f"/p{html.SHOWN_ITEMS - 1}<" in page and f"/p{html.SHOWN_ITEMS}<" not in page
    assert "and 7 more" in page


def test_a_document_saved_before_wire_was_recorded_shows_its_exchange_and_no_echo_payload():
    old = {"mode": "http", "interval": 1.0, "config": {"conns": 2, "size": 64, "exchange": "http, GET /a /b"}}
    page = html._config(old)
    assert "http, GET /a /b" in page and "64 bytes" not in page
    assert "64 bytes" in html._config({**old, "mode": "echo"})


# -- b/d. latency axes: decades and the values between, in the tables' units -------------------

def test_log_ticks_label_every_decade_and_the_values_between():
    assert plots.log_ticks(20, 6000) == [20, 50, 100, 200, 500, 1000, 2000, 5000]
    # over many decades only the decades, so that the labels stay readable
    wide = plots.log_ticks(0.5, 3e8)
    assert wide == [1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8]
    assert len(plots.log_ticks(0.001, 1e12)) <= plots.MAX_LOG_TICKS


def test_tick_labels_read_like_the_tables():
    assert [plots.tick_label(v) for v in (0, 50, 100, 1000, 2000, 1_500_000)] == \
        ["0", "50µs", "100µs", "1ms", "2ms", "1.5s"]


def latency_doc(values_ns) -> dict:
    hist = st.new_histogram()
    for v in values_ns:
        hist.record_value(v)
    summary = st.summarize(hist)
    summary["hdr"] = st.encode(hist)
    return {"latency_us": summary}


def svg_ticks(svg: str, axis: str) -> list:
    """The tick labels on ``axis`` (x or y), read from matplotlib's SVG (its text stays text),
    major ticks in order; a tick with no label (a minor one) adds nothing."""
    root = ElementTree.fromstring(svg)
    return ["".join(t.itertext()).strip() for g in root.iter(f"{SVG}g")
            if re.fullmatch(rf"{axis}tick_\d+", g.get("id", "")) for t in g.iter(f"{SVG}text")]


def test_the_spectrum_labels_its_log_latency_axis_in_the_annotations_units():
    # a body around 90µs and a tail at 4.6ms: a log axis from ~60µs to ~6ms
    values = [88_000] * 5000 + [184_000] * 60 + [345_000] * 10 + [4_600_000]
    svg = plots.spectrum(latency_doc(values))
    ys = svg_ticks(svg, "y")
    assert ys == ["100µs", "200µs", "500µs", "1ms", "2ms", "5ms"]
    assert "p99 184µs" in svg                       # the annotation, in the same units
    assert "(ms)" not in svg and "(µs)" not in svg  # no axis-wide unit that disagrees with them
    assert svg_ticks(svg, "x")[:3] == ["0%", "90%", "99%"]


def test_a_narrow_latency_range_gets_a_linear_axis_in_the_same_units():
    svg = plots.spectrum(latency_doc([800_000] * 500 + [1_200_000] * 5))
    ys = svg_ticks(svg, "y")
    assert ys[0] == "0" and all(re.fullmatch(r"[\d.]+(µs|ms)", y) for y in ys[1:]), ys
    assert len(ys) >= 4


# -- c. the partial last interval ---------------------------------------------------------------

def interval(start, end, p99, rps, phase="traffic", **kw):
    return {"start": start, "end": end, "phase": phase, "established": 4, "open": 4, "failed": 0,
            "errors": 0, "requests": 10, "responses": 10, "traffic_responses": 10, "rps": rps,
            "bytes_out": 640, "bytes_in": 640,
            "latency": {"count": 10, "p50": 90.0, "p99": p99, "max": p99 * 2}, **kw}


def test_the_over_time_plot_leaves_out_the_partial_interval_and_says_so():
    rows = [interval(0, 1, 180.0, 90_000.0, partial=False), interval(1, 2, 185.0, 91_000.0, partial=False),
            interval(2, 2.013, 900.0, 700.0, phase="end", partial=True)]
    # the tail's p99 (900µs) and max (1.8ms) are not drawn: the axis ends above the whole ones' 370µs
    ys = svg_ticks(plots.over_time(rows), "y")      # the latency axis', then the rate axis' (from 0)
    assert ys[:ys.index("0", 1)][-1] == "400µs"
    drawn, left_out = plots.over_time_rows(rows)
    assert drawn == rows[:2] and left_out == rows[2:]
    page = html._over_time({"intervals": rows})
    assert "partial" in page and "2.00–2.01 s" in page


def test_a_saved_document_without_the_partial_flag_still_knows_its_tail():
    rows = [interval(0, 1, 180.0, 90_000.0), interval(1, 1.2, 900.0, 700.0, phase="end")]
    assert plots.over_time_rows(rows) == (rows[:1], rows[1:])
    assert [line["partial"] for line in csv_rows({"intervals": rows})] == [False, True]


def test_a_staged_run_draws_the_targets_beside_the_measured_values():
    rows = [interval(0, 1, 180.0, 900.0, target_conns=10, target_rps=1000.0, partial=False),
            interval(1, 2, 185.0, 1900.0, target_conns=20, target_rps=2000.0, partial=False)]
    svg = plots.over_time(rows)
    assert "open connections" in svg and svg.count("target (--stages)") == 2   # conns and rate
    plain = plots.over_time([dict(r, target_conns=None, target_rps=None) for r in rows])
    assert "open connections" not in plain and "target (--stages)" not in plain


def test_a_run_shorter_than_one_interval_draws_its_only_interval():
    rows = [interval(0, 0.4, 180.0, 9_000.0, phase="end", partial=True)]
    assert plots.over_time_rows(rows) == (rows, [])
    assert plots.over_time(rows) is not None

"""Every option of ``serve``, ``flood`` and ``stall`` reaches the config field it names.

The CLI is a switchboard: it builds one config and calls one engine function.
Here the engine is replaced by a recorder, the command is invoked through
click's CliRunner with one option at a non-default value, and the recorded
config (or, for the options that choose a view, the view used) must show it.
The options are read from the click command itself, so an option added
without a routing case below fails ``test_every_option_has_a_route``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from socktools.cli import flood as cli_flood
from socktools.cli import main
from socktools.cli import serve as cli_serve
from socktools.cli import stall as cli_stall


def field(name, value):
    """Check: ``config.<name> == value`` (and the default differs, so the check can fail)."""
    def check(call, baseline):
        assert getattr(call.config, name) == value, (name, getattr(call.config, name))
        assert getattr(baseline.config, name) != value, f"{name}: the default already is {value!r}"
    check.__name__ = f"config.{name}"
    return check


def output(name, value):
    """Check: flood's result-file writer got ``outputs.<name> == value`` (and not by default)."""
    def check(call, baseline):
        assert getattr(call.outputs, name) == value and getattr(baseline.outputs, name) is None, name
    check.__name__ = f"outputs.{name}"
    return check


def wire(name, value):
    """Check: ``config.wire.<name> == value`` (the exchange spec; absent by default)."""
    def check(call, baseline):
        assert call.config.wire is not None and getattr(call.config.wire, name) == value, \
            (name, call.config.wire)
        assert baseline.config.wire is None, "the default run has no exchange spec"
    check.__name__ = f"config.wire.{name}"
    return check


#: A request file for --send-file (plain bytes: no braces, no escapes).
_SEND_FILE = tempfile.NamedTemporaryFile(prefix="socktools-route-", suffix=".bin", delete=False)
_SEND_FILE.write(b"PING\r\n")
_SEND_FILE.close()
atexit.register(os.unlink, _SEND_FILE.name)
_RAW = ["--port", "9", "--mode", "raw", "--send", "A"]
#: A Unix socket for --unix (bound, never listened on: the engine is recorded, nothing connects).
_UNIX_DIR = tempfile.mkdtemp(prefix="socktools-route-")
_UNIX = os.path.join(_UNIX_DIR, "s.sock")
_UNIX_SOCK = socket.socket(socket.AF_UNIX)
_UNIX_SOCK.bind(_UNIX)
atexit.register(os.rmdir, _UNIX_DIR)
atexit.register(os.unlink, _UNIX)
atexit.register(_UNIX_SOCK.close)
_HTTP = ["--port", "9", "--mode", "http"]


def _server_pem_files() -> dict:
    """serve --tls's routing cases need files OpenSSL accepts: a throwaway CA and server pair."""
    trustme = pytest.importorskip("trustme", reason="trustme not installed (pip install trustme)")
    folder = tempfile.mkdtemp(prefix="socktools-route-tls-")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    paths = {"ca": os.path.join(folder, "ca.pem"), "cert": os.path.join(folder, "s.pem"),
             "key": os.path.join(folder, "s.key")}
    ca.cert_pem.write_to_path(paths["ca"])
    leaf.cert_chain_pems[0].write_to_path(paths["cert"])
    leaf.private_key_pem.write_to_path(paths["key"])

    def remove() -> None:
        for path in paths.values():
            os.unlink(path)
        os.rmdir(folder)
    atexit.register(remove)
    return paths


_PEM = _server_pem_files()
_SERVE_TLS = ["--tls", "--cert", _PEM["cert"], "--key", _PEM["key"]]
_FLOOD_TLS = ["--port", "9", "--tls"]
#: flood --keylog's file: the CLI opens it for appending when it checks the TLS options.
_KEYLOG_DIR = tempfile.mkdtemp(prefix="socktools-route-keylog-")
_KEYLOG = os.path.join(_KEYLOG_DIR, "keys.log")
atexit.register(shutil.rmtree, _KEYLOG_DIR, True)


def tls_field(name, value):
    """Check: ``config.tls.<name> == value``, and plaintext (``config.tls is None``) by default."""
    def check(call, baseline):
        assert baseline.config.tls is None, "TLS by default"
        assert getattr(call.config.tls, name) == value, (name, call.config.tls)
    check.__name__ = f"config.tls.{name}"
    return check


def spec(name, value):
    """Check: stall's ``config.spec.<name> == value`` (what it repeats; None: zeros, the default)."""
    def check(call, baseline):
        assert call.config.spec is not None and getattr(call.config.spec, name) == value, \
            (name, call.config.spec)
        assert baseline.config.spec is None, "the default stall sends zeros"
    check.__name__ = f"config.spec.{name}"
    return check


def both(*checks):
    def check(call, baseline):
        for c in checks:
            c(call, baseline)
    return check


# -------------------------------------------------------------------- the engines, recorded

class Recorder:
    """Stands in for the engine (and the views) of one command; ``calls`` records each run."""

    def __init__(self, monkeypatch, command: str) -> None:
        self.calls: list[SimpleNamespace] = []
        self.command = command
        getattr(self, "_patch_" + command)(monkeypatch)

    def _patch_serve(self, mp) -> None:
        import socktools.serve.supervisor as supervisor

        def serve(config, view):
            self.calls.append(SimpleNamespace(config=config, view=view, quiet=self.quiet))
        self.quiet = None

        def setup_logging(verbose=0, quiet=False):
            self.quiet = quiet
        mp.setattr(supervisor, "serve", serve)
        mp.setattr(cli_serve, "setup_logging", setup_logging)

    def _patch_flood(self, mp) -> None:
        import socktools.flood.report as report
        import socktools.flood.runner as runner

        def run_flood(config, **kw):
            self.calls.append(SimpleNamespace(config=config, view=None, **kw))
            return SimpleNamespace(config=config, crashed=[], stopped_early=False, intervals=[],
                                   stop_signal=None, totals=SimpleNamespace(
                                       counters={"established": 1, "responses": 1, "lost": 0, "cycles": 1,
                                                 "traffic_requests": 1, "traffic_responses": 1}))

        def view(name):
            # the JSON document is always built (thresholds, files); the view is the last one used
            def render(result, extra=()):
                self.calls[-1].view = name
                if name == "json":
                    self.calls[-1].thresholds = tuple(extra)
                return {"thresholds": []} if name == "json" else "table"
            return render

        def write_outputs(doc, outputs):
            self.calls[-1].outputs = outputs
            return []
        mp.setattr(runner, "run_flood", run_flood)
        mp.setattr(report, "to_json", view("json"))
        mp.setattr(report, "render_table", view("table"))
        mp.setattr(cli_flood, "write_outputs", write_outputs)

    def _patch_stall(self, mp) -> None:
        import socktools.stall.report as report
        import socktools.stall.steps as steps

        def run_stall(config, *, peer=None):
            self.calls.append(SimpleNamespace(config=config, view="json", quiet=None))
            return SimpleNamespace(to_dict=lambda: {}, fill=SimpleNamespace(blocked=True, bytes=1),
                                   remote="peer", answer=None)

        def render_report(r, *, quiet=False):
            self.calls[-1].view, self.calls[-1].quiet = "text", quiet
            return "report"
        mp.setattr(steps, "run_stall", run_stall)
        mp.setattr(report, "render_report", render_report)
        import socktools.stall.udp as udp
        import socktools.stall.udpreport as udpreport

        def run_udp_stall(config):
            self.calls.append(SimpleNamespace(config=config, view="json", quiet=None))
            return SimpleNamespace(to_dict=lambda: {}, ok=True)

        def render_udp_report(r, *, quiet=False):
            self.calls[-1].view, self.calls[-1].quiet = "text", quiet
            return "report"
        mp.setattr(udp, "run_udp_stall", run_udp_stall)
        mp.setattr(udpreport, "render_udp_report", render_udp_report)

    def run(self, *argv: str) -> SimpleNamespace:
        before = len(self.calls)
        result = CliRunner().invoke(main, [self.command, *argv])
        assert result.exit_code == 0 and result.exception is None, (argv, result.output, result.exception)
        assert len(self.calls) == before + 1, f"{self.command} {argv}: the engine was not called once"
        return self.calls[-1]


# ---------------------------------------------------------------- option -> where it must land

ROUTES = {
    "serve": (cli_serve.command, {
        "mode": (["--mode", "framed"], field("mode", "framed")),
        "host": (["--host", "::1"], field("host", "::1")),
        "port": (["--port", "9"], field("port", 9)),
        "workers": (["--workers", "3"], field("workers", 3)),
        "max_conns": (["--max-conns", "5"], field("max_conns", 5)),
        "idle_timeout": (["--idle-timeout", "300ms"], field("idle_timeout", 0.3)),
        "max_content": (["--max-content", "1k"], field("max_content", 1024)),
        "max_buffered": (["--max-buffered", "8M"], field("max_buffered", 8 << 20)),
        "request_timeout": (["--request-timeout", "5s"], field("request_timeout", 5.0)),
        "rcvbuf": (["--rcvbuf", "4k"], field("rcvbuf", 4096)),
        "sndbuf": (["--sndbuf", "8k"], field("sndbuf", 8192)),
        "backlog": (["--backlog", "16"], field("backlog", 16)),
        "stats_interval": (["--stats-interval", "1s"], field("stats_interval", 1.0)),
        "drain_timeout": (["--drain-timeout", "2s"], field("drain_timeout", 2.0)),
        "stop_on_stdin_eof": (["--stop-on-stdin-eof"], field("stop_on_stdin_eof", True)),
        "unix": (["--unix", os.path.join(_UNIX_DIR, "serve.sock")],
                 field("unix", os.path.join(_UNIX_DIR, "serve.sock"))),
        "tls": (_SERVE_TLS, tls_field("cert", _PEM["cert"])),
        "cert": (_SERVE_TLS, tls_field("cert", _PEM["cert"])),
        "key": (_SERVE_TLS, tls_field("key", _PEM["key"])),
        "tls_self_signed": (["--tls-self-signed"], tls_field("self_signed", True)),
        "client_ca": ([*_SERVE_TLS, "--client-ca", _PEM["ca"]], tls_field("client_ca", _PEM["ca"])),
        "tls_min": ([*_SERVE_TLS, "--tls-min", "1.3"], tls_field("tls_min", "1.3")),
        "tls_max": ([*_SERVE_TLS, "--tls-max", "1.2"], tls_field("tls_max", "1.2")),
        "ciphers": ([*_SERVE_TLS, "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"],
                    tls_field("ciphers", "ECDHE-RSA-AES128-GCM-SHA256")),
        "alpn": ([*_SERVE_TLS, "--alpn", "h2", "--alpn", "http/1.1"], tls_field("alpn", ("h2", "http/1.1"))),
        "udp": (["--udp"], field("udp", True)),
        # views, not config: which one the engine is handed, and the log level
        "as_json": (["--json"], lambda call, base: (call.view is cli_serve._json_view
                                                    and base.view is not cli_serve._json_view) or _fail()),
        "quiet": (["--quiet"], lambda call, base: (call.quiet is True and base.quiet is False) or _fail()),
    }),
    "flood": (cli_flood.command, {
        "host": (["--host", "::1"], both(field("host", "::1"), field("family", socket.AF_INET6))),
        "unix": (["--unix", _UNIX], both(field("address", _UNIX), field("family", socket.AF_UNIX),
                                         field("embedded", False))),
        "port": (["--port", "9"], both(field("port", 9), field("embedded", False),
                                       field("address", ("127.0.0.1", 9)))),
        "conns": (["--conns", "7"], field("conns", 7)),
        "workers": (["--workers", "3"], both(field("workers", 3),
                                             lambda call, base: (call.config.workers_chosen and not base.config.workers_chosen)
                                             or _fail())),
        "mode": (["--mode", "framed"], field("mode", "framed")),
        "size": (["--size", "100"], field("size", 100)),
        "action": (["--action", "binary"], field("action", "binary")),
        "value": (["--value", "trinity"], field("value", "trinity")),
        "duration": (["--duration", "2s"], field("duration", 2.0)),
        "requests": (["--requests", "50"], field("requests", 50)),
        "rate": (["--rate", "100"], field("rate", 100.0)),
        "connect_rate": (["--connect-rate", "10"], field("connect_rate", 10.0)),
        "connect_timeout": (["--connect-timeout", "2s"], field("connect_timeout", 2.0)),
        "source": (["--source", "127.0.0.2-127.0.0.3"],
                   both(field("sources", ("127.0.0.2", "127.0.0.3")),
                        lambda call, base: (call.config.sources_chosen and not base.config.sources_chosen)
                        or _fail())),
        "server_workers": (["--server-workers", "3"], field("server_workers", 3)),
        "interval": (["--interval", "250ms"], field("interval", 0.25)),   # 1 s is the default
        "cluster": (["--cluster", "local:2"], field("cluster", "local:2")),
        "stages": (["--stages", "1s:5:50,2s:0:0"],
                   both(field("stages", ((1.0, 5, 50.0), (2.0, 0, 0.0))), field("conns", 5),
                        field("duration", 3.0), field("rate", 50.0))),
        "as_json": (["--json"], lambda call, base: (call.view == "json" and base.view == "table") or _fail()),
        # result files and criteria: handed to the JSON view and the file writer
        "thresholds": (["--threshold", "p99<5ms"],
                       lambda call, base: ([t.text for t in call.thresholds] == ["p99<5ms"]
                                           and base.thresholds == ()) or _fail()),
        "report": (["--report", "run.html"], output("report", "run.html")),
        "hgrm": (["--hgrm", "run.hgrm"], output("hgrm", "run.hgrm")),
        "hlog": (["--hlog", "run.hlog"], output("hlog", "run.hlog")),
        "csv_path": (["--csv", "run.csv"], output("csv", "run.csv")),
        "pipeline": (["--pipeline", "4"], field("pipeline", 4)),
        "sends": (_RAW + ["--send", "B", "--reply-until", "\\n"], wire("sends", ("A", "B"))),
        "send_file": (["--port", "9", "--mode", "raw", "--send-file", _SEND_FILE.name, "--reply-until", "\\n"],
                      wire("send_file", b"PING\r\n")),
        "reply_until": (_RAW + ["--reply-until", "\\r\\n"], wire("reply_until", "\\r\\n")),
        "reply_bytes": (_RAW + ["--reply-bytes", "4"], wire("reply_bytes", 4)),
        "reply_prefix": (_RAW + ["--reply-prefix", ">H"], wire("reply_prefix", ">H")),
        "reply_prefix_adjust": (_RAW + ["--reply-prefix", ">H", "--reply-prefix-adjust", "-2"],
                                wire("reply_prefix_adjust", -2)),
        "no_reply": (_RAW + ["--no-reply", "--rate", "10"], wire("no_reply", True)),
        "reply_until_close": (_RAW + ["--reply-until-close"], wire("reply_until_close", True)),
        "reply_match": (_RAW + ["--reply-until", "\\n", "--reply-match", "^A"], wire("reply_match", "^A")),
        "eol": (["--port", "9", "--mode", "line", "--send", "A", "--eol", "crlf"], wire("eol", "crlf")),
        "commands": (["--port", "9", "--mode", "redis", "--command", "GET k"], wire("commands", ("GET k",))),
        "method": (_HTTP + ["--method", "POST"], wire("method", "POST")),
        "paths": (_HTTP + ["--path", "/x/{seq}"], wire("paths", ("/x/{seq}",))),
        "headers": (_HTTP + ["--header", "X-A: 1"], wire("headers", ("X-A: 1",))),
        "body": (_HTTP + ["--method", "POST", "--body", "hi"], wire("body", b"hi")),
        "accept_status": (_HTTP + ["--accept-status", "404"], wire("accept_status", ("404",))),
        "plugin": (["--port", "9", "--protocol", "socktools.examples.memcached:Memcached"],
                   both(field("mode", "plugin"), wire("plugin", "socktools.examples.memcached:Memcached"))),
        "plugin_options": (["--port", "9", "--protocol", "socktools.examples.postgres:Postgres",
                            "--protocol-option", "user=bob"], wire("plugin_options", ("user=bob",))),
        "yes": (["--yes"], lambda call, base: (call.force is True and base.force is False) or _fail()),
        "tls": (_FLOOD_TLS, tls_field("enabled", True)),
        "sni": ([*_FLOOD_TLS, "--sni", "db.test"], tls_field("sni", "db.test")),
        "cafile": ([*_FLOOD_TLS, "--cafile", _PEM["ca"]], tls_field("cafile", _PEM["ca"])),
        "capath": ([*_FLOOD_TLS, "--capath", _KEYLOG_DIR], tls_field("capath", _KEYLOG_DIR)),
        "insecure": ([*_FLOOD_TLS, "--insecure"], tls_field("insecure", True)),
        "cert": ([*_FLOOD_TLS, "--cert", _PEM["cert"], "--key", _PEM["key"]], tls_field("cert", _PEM["cert"])),
        "key": ([*_FLOOD_TLS, "--cert", _PEM["cert"], "--key", _PEM["key"]], tls_field("key", _PEM["key"])),
        "tls_min": ([*_FLOOD_TLS, "--tls-min", "1.3"], tls_field("tls_min", "1.3")),
        "tls_max": ([*_FLOOD_TLS, "--tls-max", "1.2"], tls_field("tls_max", "1.2")),
        "ciphers": ([*_FLOOD_TLS, "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"],
                    tls_field("ciphers", "ECDHE-RSA-AES128-GCM-SHA256")),
        "alpn": ([*_FLOOD_TLS, "--alpn", "h2", "--alpn", "http/1.1"], tls_field("alpn", ("h2", "http/1.1"))),
        "keylog": ([*_FLOOD_TLS, "--keylog", _KEYLOG], tls_field("keylog", _KEYLOG)),
        "tls_resume": ([*_FLOOD_TLS, "--tls-resume"], field("tls_resume", True)),
        "churn": (["--churn", "3"], field("churn", 3)),
        "greeting": (["--port", "9", "--mode", "line", "--send", "A", "--greeting"], wire("greeting", True)),
        "greeting_match": (["--port", "9", "--mode", "line", "--send", "A", "--greeting-match", "^220"],
                           wire("greeting_match", "^220")),
        "setups": (["--port", "9", "--mode", "redis", "--setup", "AUTH pw", "--setup", "SELECT 2"],
                   wire("setups", ("AUTH pw", "SELECT 2"))),
        "udp": (["--port", "9", "--udp"], both(field("udp", True))),
        "reply_timeout": (["--port", "9", "--udp", "--reply-timeout", "250ms"], field("reply_timeout", 0.25)),
    }),
    "stall": (cli_stall.command, {
        "host": (["--host", "::1"], field("host", "::1")),
        "port": (["--port", "9"], field("port", 9)),
        "chunk": (["--chunk", "1k"], field("chunk", 1024)),
        "sndbuf": (["--sndbuf", "8k"], field("sndbuf", 8192)),
        "rcvbuf": (["--rcvbuf", "8k"], field("rcvbuf", 8192)),
        "settle": (["--settle", "1s"], field("settle", 1.0)),
        "drain": (["--drain"], field("drain", True)),
        "timeout": (["--timeout", "3s"], field("timeout", 3.0)),
        "as_json": (["--json"], lambda call, base: (call.view == "json" and base.view == "text") or _fail()),
        "quiet": (["--quiet"], lambda call, base: (call.quiet is True and base.quiet is False) or _fail()),
        "unix": (["--unix", _UNIX], field("unix", _UNIX)),
        # datagrams: the --udp run (stall/udp.py), --chunk its datagram size (1 KiB unless given)
        "udp": (["--udp"], both(field("udp", True), field("chunk", 1024))),
        "count": (["--udp", "--count", "7"], field("count", 7)),
        **{name: ([*["--port", "9"], *argv], check) for name, (argv, check) in {
            "tls": (["--tls"], tls_field("enabled", True)),
            "sni": (["--tls", "--sni", "db.test"], tls_field("sni", "db.test")),
            "cafile": (["--tls", "--cafile", _PEM["ca"]], tls_field("cafile", _PEM["ca"])),
            "capath": (["--tls", "--capath", _KEYLOG_DIR], tls_field("capath", _KEYLOG_DIR)),
            "insecure": (["--tls", "--insecure"], tls_field("insecure", True)),
            "cert": (["--tls", "--cert", _PEM["cert"], "--key", _PEM["key"]], tls_field("cert", _PEM["cert"])),
            "key": (["--tls", "--cert", _PEM["cert"], "--key", _PEM["key"]], tls_field("key", _PEM["key"])),
            "tls_min": (["--tls", "--tls-min", "1.3"], tls_field("tls_min", "1.3")),
            "tls_max": (["--tls", "--tls-max", "1.2"], tls_field("tls_max", "1.2")),
            "ciphers": (["--tls", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"],
                        tls_field("ciphers", "ECDHE-RSA-AES128-GCM-SHA256")),
            "alpn": (["--tls", "--alpn", "h2", "--alpn", "http/1.1"], tls_field("alpn", ("h2", "http/1.1"))),
            "keylog": (["--tls", "--keylog", _KEYLOG], tls_field("keylog", _KEYLOG)),
            # what stall repeats: the exchange spec of the wire modes (None: zeros)
            "mode": (["--mode", "line", "--send", "A"], spec("name", "line")),
            "sends": (["--mode", "raw", "--send", "A", "--send", "B"], spec("sends", ("A", "B"))),
            "send_file": (["--mode", "raw", "--send-file", _SEND_FILE.name], spec("send_file", b"PING\r\n")),
            "reply_until": (["--mode", "raw", "--send", "A", "--reply-until", "\\n"], spec("reply_until", "\\n")),
            "reply_bytes": (["--mode", "raw", "--send", "A", "--reply-bytes", "4"], spec("reply_bytes", 4)),
            "reply_prefix": (["--mode", "raw", "--send", "A", "--reply-prefix", ">H"], spec("reply_prefix", ">H")),
            "reply_prefix_adjust": (["--mode", "raw", "--send", "A", "--reply-prefix", ">H",
                                     "--reply-prefix-adjust", "-2"], spec("reply_prefix_adjust", -2)),
            "no_reply": (["--mode", "raw", "--send", "A", "--no-reply"], spec("no_reply", True)),
            "reply_until_close": (["--mode", "raw", "--send", "A", "--reply-until-close"],
                                  spec("reply_until_close", True)),
            "reply_match": (["--mode", "raw", "--send", "A", "--reply-until", "\\n", "--reply-match", "^A"],
                            spec("reply_match", "^A")),
            "eol": (["--mode", "line", "--send", "A", "--eol", "crlf"], spec("eol", "crlf")),
            "commands": (["--mode", "redis", "--command", "GET k"], spec("commands", ("GET k",))),
            "method": (["--mode", "http", "--method", "POST"], spec("method", "POST")),
            "paths": (["--mode", "http", "--path", "/x"], spec("paths", ("/x",))),
            "headers": (["--mode", "http", "--header", "X-A: 1"], spec("headers", ("X-A: 1",))),
            "body": (["--mode", "http", "--method", "POST", "--body", "hi"], spec("body", b"hi")),
            "accept_status": (["--mode", "http", "--accept-status", "404"], spec("accept_status", ("404",))),
            "plugin": (["--protocol", "socktools.examples.memcached:Memcached"],
                       spec("plugin", "socktools.examples.memcached:Memcached")),
            "plugin_options": (["--protocol", "socktools.examples.postgres:Postgres", "--protocol-option",
                                "user=bob"], spec("plugin_options", ("user=bob",))),
        }.items()},
    }),
}


def _fail():
    raise AssertionError("the option did not reach its view")


@pytest.mark.parametrize("command", list(ROUTES))
def test_every_option_has_a_route(command):
    click_command, routes = ROUTES[command]
    options = {p.name for p in click_command.params if p.name != "help"}
    assert options - set(routes) == set(), f"options of {command} without a routing case here"
    assert set(routes) - options == set(), f"routing cases for options {command} no longer has"


CASES = [pytest.param(cmd, name, id=f"{cmd}--{name}") for cmd in ROUTES for name in ROUTES[cmd][1]]


@pytest.mark.parametrize("command, option", CASES)
def test_option_reaches_the_config(monkeypatch, command, option):
    recorder = Recorder(monkeypatch, command)
    baseline = recorder.run()
    argv, check = ROUTES[command][1][option]
    # the option's own flag is in argv: the case tests what it says
    assert any(a in {o for p in ROUTES[command][0].params if p.name == option for o in p.opts} for a in argv)
    check(recorder.run(*argv), baseline)


# -------------------------------------------------------------------- the TLS options (cli/_tls.py)
# Declared once and shared; routed here through `request`, whose engine is recorded the same way.

#: The routing case's files: a CA as PEM (the trustme test dependency makes it), a key for --cert.
def _tls_files(tmp_path):
    trustme = pytest.importorskip("trustme", reason="trustme not installed (pip install trustme)")
    ca = trustme.CA()
    leaf = ca.issue_cert("client.socktools.test")
    paths = {"CA": tmp_path / "ca.pem", "CERT": tmp_path / "c.pem", "KEY": tmp_path / "c.key"}
    ca.cert_pem.write_to_path(str(paths["CA"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["CERT"]))
    leaf.private_key_pem.write_to_path(str(paths["KEY"]))
    return {k: str(v) for k, v in paths.items()}


TLS_ROUTES = {
    "tls": (["--tls"], "enabled", True),
    "sni": (["--tls", "--sni", "db.test"], "sni", "db.test"),
    "cafile": (["--tls", "--cafile", "CA"], "cafile", "CA"),
    "capath": (["--tls", "--capath", "DIR"], "capath", "DIR"),
    "insecure": (["--tls", "--insecure"], "insecure", True),
    "cert": (["--tls", "--cert", "CERT", "--key", "KEY"], "cert", "CERT"),
    "key": (["--tls", "--cert", "CERT", "--key", "KEY"], "key", "KEY"),
    "tls_min": (["--tls", "--tls-min", "1.3"], "tls_min", "1.3"),
    "tls_max": (["--tls", "--tls-max", "1.2"], "tls_max", "1.2"),
    "ciphers": (["--tls", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"], "ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
    "alpn": (["--tls", "--alpn", "h2", "--alpn", "http/1.1"], "alpn", ("h2", "http/1.1")),
    "keylog": (["--tls", "--keylog", "KEYLOG"], "keylog", "KEYLOG"),
}


def test_every_tls_option_has_a_route():
    from socktools.cli import request as cli_request
    from socktools.cli._tls import TLS_PARAMS
    options = {p.name for p in cli_request.command.params}
    assert set(TLS_PARAMS) <= options
    assert set(TLS_ROUTES) == set(TLS_PARAMS)


@pytest.mark.parametrize("option", list(TLS_ROUTES))
def test_tls_option_reaches_the_tls_config(monkeypatch, tmp_path, option):
    import socktools.request.client as client
    files = {**_tls_files(tmp_path), "DIR": str(tmp_path), "KEYLOG": str(tmp_path / "keys.log")}
    calls = []

    def converse(host, port, proto, *, tls, unix=None, **kw):
        calls.append(tls)
        raise SystemExit(0)
    monkeypatch.setattr(client, "converse", converse)
    argv, name, value = TLS_ROUTES[option]
    base = ["request", "--port", "9", "--mode", "redis"]
    assert CliRunner().invoke(main, base).exit_code == 0
    r = CliRunner().invoke(main, base + [files.get(a, a) for a in argv])
    assert r.exit_code == 0, r.output
    baseline, cfg = calls
    want = files.get(value, value) if isinstance(value, str) else value
    assert getattr(cfg, name) == want and getattr(baseline, name) != want, (name, cfg)


def test_request_unix_reaches_the_exchange_and_the_framed_request(monkeypatch):
    """request --unix PATH: the engine gets the path (both the wire exchange and the framed request)."""
    import socktools.request.client as client
    calls = []

    def record(*args, unix=None, **kw):
        calls.append(unix)
        raise SystemExit(0)
    monkeypatch.setattr(client, "converse", record)
    monkeypatch.setattr(client, "request", record)
    for argv in (["--mode", "redis"], ["search", "x"]):
        assert CliRunner().invoke(main, ["request", *argv]).exit_code == 0
        assert CliRunner().invoke(main, ["request", "--unix", _UNIX, *argv]).exit_code == 0
    assert calls == [None, _UNIX, None, _UNIX]

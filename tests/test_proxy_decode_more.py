"""`proxy --decode framed` and `--decode MODULE:CLASS` (a plug-in's stream decoder): the Watch
fed without sockets, usage errors, then through the real proxy -- `flood --mode framed` against
`socktools serve --mode framed`, and `request --protocol` against a real PostgreSQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.errors import OptionError
from socktools.proxy.config import ProxyConfig, ProxySpec
from socktools.proxy.decode import Watch
from socktools.wire import Parser, WireProtocol
from tests.conftest import flood_once
from tests.peers import Exim, Postgres
from tests.proxy_helpers import ProxyProcess
from tests.test_decode_streams import (BINARY, LOGIN_DONE, QUERY, REQUEST, SELECT_1, STARTUP, TERMINATE, _answer,
                                       auth)

PG_FILE = "./socktools/examples/postgres.py:Postgres"
PG = "socktools.examples.postgres:Postgres"


def exchanges(decoder, upstream: bytes, downstream: bytes) -> list:
    seen, stops = [], []
    w = Watch(decoder, lambda ex, done: seen.append((ex.request, ex.reply)), lambda: 1.0, stops.append)
    w.read("upstream", upstream)
    w.delivered("upstream", len(upstream))
    w.read("downstream", downstream)
    w.delivered("downstream", len(downstream))
    assert not stops, stops
    return seen


def test_framed_requests_are_paired_with_their_answers():
    assert exchanges("framed", REQUEST + BINARY, _answer(REQUEST) + _answer(BINARY)) == [
        ('text/json {"action": "search", "value": "morpheus"}',
         'text/json {"result": "Follow the white rabbit. 🐰"}'),
        ("binary/custom-client-binary-type binaryxyz",
         'binary/custom-server-binary-type First 10 bytes of request: binaryxyz')]


@pytest.mark.parametrize("decoder", [PG, PG_FILE])
def test_postgres_login_and_query_pair_up_by_what_the_client_waits_for(decoder):
    login = auth(0) + LOGIN_DONE[len(auth(12, b"v=signature")) + len(auth(0)):]      # trust: Ok, then the session
    assert exchanges(decoder, STARTUP + QUERY + TERMINATE, login + SELECT_1) == [
        ("StartupMessage user=bob database=bob application_name=socktools",
         "AuthenticationOk · ParameterStatus ×14 · BackendKeyData · ReadyForQuery I"),
        ("Query 'select 1'", "RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I")]


@pytest.mark.parametrize("decode, words", [
    ("socktools.examples.memcached:Memcached", "has no stream decoder"),
    ("./no/such/file.py:X", "cannot import './no/such/file.py'"),
    ("socktools.examples.postgres:Nope", "has no 'Nope'"),
    ("echo", "no decoder for 'echo'"),
])
def test_a_decode_that_cannot_decode_is_an_option_error_naming_decode(decode, words):
    with pytest.raises(OptionError, match=words) as info:
        ProxyConfig(proxies=(ProxySpec("p", "127.0.0.1:0", "127.0.0.1:1"),), decode=decode)
    assert info.value.option == "decode"


@pytest.mark.parametrize("decode, words", [
    ("socktools.examples.memcached:Memcached", "no stream decoder"),
    ("./no/such/file.py:X", "cannot import"),
    ("echo", "'echo'"),
])
def test_the_cli_says_so_as_a_usage_error(decode, words):
    r = CliRunner().invoke(main, ["proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--decode", decode])
    assert r.exit_code == 2 and "--decode" in r.output and words in r.output, r.output


def test_the_help_lists_framed_and_plugins():
    r = CliRunner().invoke(main, ["proxy", "--help"])
    assert "framed" in r.output and "MODULE:CLASS" in r.output and "--decode" in r.output


# ------------------------------------------------------------------ through the proxy
def test_flood_framed_through_the_proxy_one_exchange_per_request(start_server):
    srv = start_server("--mode", "framed")
    with ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}", "--decode", "framed") as px:
        doc, run = flood_once("--port", str(px.port), "--mode", "framed", "--conns", "2", "--requests", "40")
        assert run.returncode == 0, run.stderr
        summary = px.stop()
    seen = [e for e in px.events if e["event"] == "exchange"]
    # (flood's requests include each connection's first round trip, which confirms it)
    assert doc["requests"]["traffic_answered"] == 40
    assert len(seen) == doc["requests"]["sent"] == doc["requests"]["answered"], px.stderr()
    assert {(e["request"], e["reply"]) for e in seen} == {
        ('text/json {"action": "search", "value": "morpheus"}', 'text/json {"result": "Follow the white rabbit. 🐰"}')}
    assert all(e["upstream_ms"] is not None and e["client_ms"] >= e["upstream_ms"] for e in seen)
    assert summary is not None and "stops on this connection" not in px.stderr()


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with Postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


def test_postgres_exchanges_through_the_proxy_with_their_summaries(pg):
    with ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{pg.port}", "--decode", PG_FILE) as px:
        r = CliRunner().invoke(main, ["request", "--port", str(px.port), "--protocol", PG, "--protocol-option",
                                      "user=bob", "--protocol-option", "password=s3cret", "--command", "select 1",
                                      "--command", "select * from nope"])
        assert r.exit_code in (0, 1), r.output
        seen = [px.wait_event(lambda e: e["event"] == "exchange" and e.get("request", "").startswith("Query 'select *"))]
        px.stop()
    seen = [(e["request"], e["reply"]) for e in px.events if e["event"] == "exchange"]
    assert seen[0] == ("StartupMessage user=bob database=bob application_name=socktools",
                       "AuthenticationSASL SCRAM-SHA-256")
    assert seen[1] == ("SASLInitialResponse SCRAM-SHA-256", "AuthenticationSASLContinue")
    assert seen[2][0] == "SASLResponse" and seen[2][1].startswith("AuthenticationSASLFinal · AuthenticationOk · ")
    assert seen[2][1].endswith("BackendKeyData · ReadyForQuery I")
    assert seen[3] == ("Query 'select 1'", "RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I")
    assert seen[4][0] == "Query 'select * from nope'"
    assert seen[4][1] == 'ErrorResponse ERROR 42P01 relation "nope" does not exist · ReadyForQuery I'
    assert len(seen) == 5 and "s3cret" not in px.stderr()


def test_a_refused_postgres_login_is_shown_in_the_servers_words(pg):
    with ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{pg.port}", "--decode", PG) as px:
        r = CliRunner().invoke(main, ["request", "--port", str(px.port), "--protocol", PG, "--protocol-option",
                                      "user=carol", "--protocol-option", "password=wrong"])
        assert r.exit_code == 1, r.output
        ev = px.wait_event(lambda e: e["event"] == "exchange" and "ErrorResponse" in e["reply"])
        px.stop()
    assert ev["request"] == "PasswordMessage"
    assert ev["reply"] == 'ErrorResponse FATAL 28P01 password authentication failed for user "carol"'


class _Broken(Parser):
    def feed(self, data: bytes) -> int:
        raise IndexError("a bug in the plug-in")


class BuggyDecoder(WireProtocol):
    """A plug-in whose stream decoder has a bug: only that connection's decoding may stop."""

    def __init__(self, commands: tuple = ()) -> None:
        pass

    def request(self, seq: int, conn: int) -> bytes:
        return b"x"

    def parser(self) -> Parser:
        return _Broken()

    def stream_parser(self, role: str) -> Parser:
        return _Broken()


def test_a_plugin_decoders_bug_stops_decoding_that_connection_with_the_reason():
    stops = []
    w = Watch("tests.test_proxy_decode_more:BuggyDecoder", lambda ex, done: None, lambda: 1.0, stops.append)
    w.read("upstream", b"hello")
    w.read("upstream", b"again")
    assert stops == ["request: the decoder failed: IndexError: a bug in the plug-in"]


def test_smtp_exchanges_through_the_proxy_in_front_of_exim(tmp_path):
    smtp = "socktools.examples.smtp:Smtp"
    with Exim(tmp_path) as exim, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{exim.port}",
                                              "--decode", smtp) as px:
        r = CliRunner().invoke(main, ["request", "--port", str(px.port), "--protocol", smtp, "--command", "NOOP",
                                      "--command", "VRFY bob"])
        assert r.exit_code in (0, 1), r.output
        px.wait_event(lambda e: e["event"] == "exchange" and e["request"] == "VRFY bob")
        px.stop()
    seen = [(e["request"], e["reply"]) for e in px.events if e["event"] == "exchange"]
    assert seen[0][0] == "EHLO localhost"           # the greeting answered no request: not an exchange
    assert seen[0][1].startswith("250 test.invalid Hello localhost") and seen[0][1].endswith(" lines)")
    assert seen[1] == ("NOOP", "250 OK")
    assert seen[2][0] == "VRFY bob" and seen[2][1][:1] in "25" and len(seen) == 3


def test_libpq_clients_through_the_proxy_ssl_request_and_extended_queries(pg, tmp_path):
    """psql and pgbench (libpq): SSLRequest refused by 'N', then the login; pgbench's extended
    protocol pairs Parse..Sync with its answer up to ReadyForQuery."""
    import os
    import subprocess
    from tests.peers import skip_unless
    psql, pgbench = skip_unless("psql"), skip_unless("pgbench")
    script = tmp_path / "one.sql"
    script.write_text("select 1;\n")
    env = dict(os.environ, PGPASSWORD="s3cret", PGSSLMODE="prefer")
    with ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{pg.port}", "--decode", PG) as px:
        where = ["-h", "127.0.0.1", "-p", str(px.port), "-U", "bob"]
        out = subprocess.run([psql, *where, "-d", "bob", "-X", "-c", "select 1 as a; select 2"], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        out = subprocess.run([pgbench, *where, "-n", "-M", "extended", "-f", str(script), "-t", "2", "bob"], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        px.stop()      # (each exchange was printed before its reply reached the client)
    seen = [(e["number"], e["request"], e["reply"]) for e in px.events if e["event"] == "exchange"]
    firsts = {}
    for number, request, reply in seen:
        firsts.setdefault(number, (request, reply))
    assert set(firsts.values()) == {("SSLRequest", "N (no encryption)")} and len(firsts) >= 2
    pairs = [s[1:] for s in seen]
    assert pairs.count(("Query 'select 1 as a; select 2'", "RowDescription · DataRow · CommandComplete SELECT 1 · "
                        "RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I")) == 1
    extended = ("Parse 'select 1;' · Bind · Describe · Execute · Sync",
                "ParseComplete · BindComplete · RowDescription · DataRow · CommandComplete SELECT 1 · ReadyForQuery I")
    assert pairs.count(extended) == 2


def test_a_decoder_that_cannot_be_made_for_a_connection_stops_only_its_decoding():
    stops = []

    def make(role: str):
        raise RuntimeError("no parser today")
    w = Watch(make, lambda ex, done: None, lambda: 1.0, stops.append)
    w.read("upstream", b"x")
    w.delivered("upstream", 1)
    assert stops == ["the decoder failed: RuntimeError: no parser today"]

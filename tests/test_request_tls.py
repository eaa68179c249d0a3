"""`socktools request --tls` against real TLS servers: redis-server's --tls-port and nginx's
``ssl`` listener, with certificates made by trustme; every failure users meet first, in words."""

from __future__ import annotations

import json
import ssl
import subprocess

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd, wait_until
from tests.peers import Certs, Nginx, Redis
from tests.test_json_schemas import validate
from tests.threadserver import ThreadServer, answer_framed


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory, certs):
    with Redis(tmp_path_factory.mktemp("redis"), tls=certs) as server:
        yield server


@pytest.fixture(scope="module")
def nginx_tls(tmp_path_factory, certs):
    with Nginx(tmp_path_factory.mktemp("nginx"), tls=certs) as server:
        yield server


def run(*args, env=None):
    """In-process; stdout and stderr apart (the TLS line and the warnings go to stderr)."""
    return CliRunner().invoke(main, ["request", *map(str, args)], env=env)


def test_redis_ping_over_verified_tls(redis_tls, certs):
    redis_tls.reset()
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--cafile", certs.ca)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "PONG"
    assert "TLSv1.3" in r.stderr and "server name: 127.0.0.1" in r.stderr
    assert redis_tls.calls().get("ping") == 1              # the server's own count


def test_the_json_names_version_cipher_and_alpn_and_follows_the_schema(redis_tls, certs):
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--cafile", certs.ca, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    assert doc["tls"]["version"] == "TLSv1.3" and doc["tls"]["cipher"].startswith("TLS_")
    assert doc["tls"]["alpn"] is None and doc["tls"]["handshake_ms"] > 0
    assert doc["reply"]["value"] == "PONG"


def test_raw_and_line_modes_over_tls(redis_tls, certs):
    raw = run("--port", redis_tls.port, "--mode", "raw", "--send", "PING\\r\\n", "--reply-until", "\\r\\n",
              "--tls", "--cafile", certs.ca)
    line = run("--port", redis_tls.port, "--mode", "line", "--send", "PING", "--eol", "crlf",
               "--tls", "--cafile", certs.ca)
    for r in (raw, line):
        assert r.exit_code == 0 and "+PONG" in r.stdout, r.output


def test_framed_mode_over_tls(certs):
    """The tutorial's framed protocol, served over TLS by a thread that answers as serve does."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(certs.cert), str(certs.key))

    def answer(conn):
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            answer_framed(tls)

    with ThreadServer(answer) as server:
        r = run("--port", server.port, "--tls", "--cafile", certs.ca, "--json", "search", "morpheus")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    assert "Follow the white rabbit" in doc["response"]["value"]["result"]
    assert doc["tls"]["version"] == "TLSv1.3"


def test_an_unknown_ca_fails_in_words_and_insecure_gets_through_with_one_warning(redis_tls):
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls")
    assert r.exit_code == 1
    assert "tls-unknown-ca" in r.stderr and "does not trust" in r.stderr and "--cafile" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--json")
    doc = json.loads(r.stdout.splitlines()[0])
    validate(doc, "request")
    assert r.exit_code == 1 and doc["ok"] is False
    assert doc["phase"] == "handshake" and doc["error"] == "tls-unknown-ca"
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--insecure")
    assert r.exit_code == 0 and r.stdout.strip() == "PONG", r.output
    assert r.stderr.count("--insecure") == 1 and "NOT verified" in r.stderr


def test_an_expired_certificate_fails_in_words(tmp_path):
    expired = Certs(tmp_path, expired=True)
    with Redis(tmp_path, tls=expired) as server:
        r = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", expired.ca)
    assert r.exit_code == 1
    assert "tls-expired" in r.stderr and "has expired" in r.stderr and "renew" in r.stderr


def test_show_bytes_shows_the_handshake_and_the_plaintext(redis_tls, certs):
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--cafile", certs.ca, "--show-bytes")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("connected to 127.0.0.1:") and lines[1].startswith("TLSv1.3 ")
    assert "b'*1\\r\\n$4\\r\\nPING\\r\\n'" in r.stdout and "b'+PONG\\r\\n'" in r.stdout


def test_a_hostname_mismatch_fails_in_words(redis_tls, certs):
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--cafile", certs.ca, "--sni", "wrong.example")
    assert r.exit_code == 1
    assert "tls-hostname-mismatch" in r.stderr and "wrong.example" in r.stderr and "--sni" in r.stderr


def test_plaintext_to_redis_tls_port_says_add_tls(redis_tls):
    r = run("--port", redis_tls.port, "--mode", "redis", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout.splitlines()[0])
    validate(doc, "request")
    assert "add --tls" in doc["message"] and "add --tls" in r.stderr


def test_plaintext_http_to_nginx_ssl_says_add_tls(nginx_tls):
    r = run("--port", nginx_tls.port, "--mode", "http")
    assert r.exit_code == 1
    assert "400" in r.stdout and "plaintext spoken to a TLS port" in r.stderr and "add --tls" in r.stderr


def test_http_over_tls_to_nginx_negotiates_alpn(nginx_tls, certs):
    r = run("--host", "localhost", "--port", nginx_tls.port, "--mode", "http", "--tls", "--cafile", certs.ca,
            "--alpn", "http/1.1", "--path", "/?alpn-check", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    assert doc["reply"]["status"] == 200 and doc["tls"]["alpn"] == "http/1.1"
    assert doc["tls"]["server_name"] == "localhost"
    # nginx's own log has it, decrypted (written as the request ends: may be after we read the reply)
    assert wait_until(lambda: nginx_tls.access_log.read_text().count("GET /?alpn-check HTTP/1.1") == 1, 10)


def test_an_alpn_nginx_does_not_speak_is_its_alert_in_words(nginx_tls, certs):
    r = run("--port", nginx_tls.port, "--mode", "http", "--tls", "--cafile", certs.ca, "--alpn", "h2")
    assert r.exit_code == 1
    assert "tls-alert-no-application-protocol" in r.stderr and "--alpn http/1.1" in r.stderr


def test_tls_to_a_plaintext_port_says_drop_tls(tmp_path):
    with Nginx(tmp_path) as plain:
        r = run("--port", plain.port, "--mode", "http", "--tls", "--insecure")
    assert r.exit_code == 1
    assert "tls-to-plaintext-port" in r.stderr and "drop --tls" in r.stderr


def test_tls_to_a_plaintext_port_that_waits_times_out_with_the_hint(tmp_path):
    """redis' plaintext port takes a ClientHello as the start of a line and waits for its end."""
    with Redis(tmp_path) as plain:
        r = run("--port", plain.port, "--mode", "redis", "--tls", "--insecure", "--timeout", "300ms")
    assert r.exit_code == 1
    assert "TLS handshake with" in r.stderr and "timeout" in r.stderr and "drop --tls" in r.stderr


def test_mutual_tls_with_and_without_a_client_certificate(tmp_path, certs):
    with Redis(tmp_path, tls=certs, auth_clients=True) as server:
        without = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", certs.ca)
        with_cert = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", certs.ca,
                        "--cert", certs.client_cert, "--key", certs.client_key)
        assert server.calls().get("ping") == 1             # only the one with a certificate got in
    assert without.exit_code == 1
    assert "tls-alert-certificate-required" in without.stderr and "--cert" in without.stderr
    assert with_cert.exit_code == 0 and with_cert.stdout.strip() == "PONG", with_cert.output


def test_nginx_mutual_tls_says_give_a_client_certificate(tmp_path, certs):
    """nginx finishes the handshake without a client certificate and answers 400 in words."""
    with Nginx(tmp_path, tls=certs, verify_client=True) as server:
        without = run("--port", server.port, "--mode", "http", "--tls", "--cafile", certs.ca)
        with_cert = run("--port", server.port, "--mode", "http", "--tls", "--cafile", certs.ca,
                        "--cert", certs.client_cert, "--key", certs.client_key)
        # nginx writes its log line as each request ends, which may be after we read the reply
        assert wait_until(lambda: server.log_lines() == 2, 10)
        statuses = server.statuses()
    assert without.exit_code == 1 and "400" in without.stdout
    assert "requires a client certificate" in without.stderr and "--cert" in without.stderr
    assert with_cert.exit_code == 0 and "ok" in with_cert.stdout, with_cert.output
    assert statuses == {"400": 1, "200": 1}                  # nginx's own log


def test_keylog_writes_nss_key_log_lines_from_the_option_and_from_sslkeylogfile(redis_tls, nginx_tls, certs,
                                                                                 tmp_path):
    keys13, keys12 = tmp_path / "redis.keys", tmp_path / "nginx.keys"
    r = run("--port", redis_tls.port, "--mode", "redis", "--tls", "--cafile", certs.ca, "--keylog", keys13)
    assert r.exit_code == 0, r.output
    labels = {line.split()[0] for line in keys13.read_text().splitlines() if not line.startswith("#")}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels
    # TLS 1.2 logs one CLIENT_RANDOM line; the variable instead of the option, as browsers read it
    r = run("--port", nginx_tls.port, "--mode", "http", "--tls", "--cafile", certs.ca, "--tls-max", "1.2",
            env={"SSLKEYLOGFILE": str(keys12)})
    assert r.exit_code == 0, r.output
    lines = [line.split() for line in keys12.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and lines[0][0] == "CLIENT_RANDOM" and len(lines[0][1]) == 64


@pytest.mark.parametrize("args, option, words", [
    (["--sni", "x.test"], "--sni", "give --tls too"),                       # without --tls
    (["--tls", "--cert", "CLIENT"], "--cert", "needs --key"),
    (["--tls", "--tls-min", "1.3", "--tls-max", "1.2"], "--tls-min", "above --tls-max"),
    (["--tls", "--ciphers", "NO-SUCH-CIPHER"], "--ciphers", "knows no cipher"),
    (["--tls", "--cafile", "NOTPEM"], "--cafile", "is not PEM"),
    (["--tls", "--alpn", ""], "--alpn", "not an ALPN protocol name"),
    (["--tls", "--cert", "CLIENT", "--key", "SERVERKEY"], "--key", "is not the key"),   # a key, not this cert's
])
def test_bad_tls_options_are_usage_errors_naming_the_option(certs, tmp_path, args, option, words):
    notpem = tmp_path / "notpem.txt"
    notpem.write_text("hello\n")
    files = {"CLIENT": str(certs.client_cert), "NOTPEM": str(notpem), "SERVERKEY": str(certs.key)}
    r = run("--port", "9", "--mode", "redis", *[files.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    assert option in r.stderr and words in r.stderr, r.stderr


def test_the_real_command_end_to_end(redis_tls, certs):
    """`python -m socktools`, as a user runs it: the reply on stdout, the TLS line on stderr."""
    proc = subprocess.run(socktools_cmd("request", "--port", str(redis_tls.port), "--mode", "redis",
                                        "--command", "ECHO hello", "--tls", "--cafile", str(certs.ca)),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello" and proc.stderr.startswith("TLSv1.3 ")

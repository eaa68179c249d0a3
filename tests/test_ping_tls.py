"""`ping --tls`: per probe the TCP connect and the TLS handshake, timed apart, the version
negotiated; a certificate close to expiry warned about once; a failed handshake a failed probe
named by its TLS key -- against nginx's ``ssl`` listener and redis' --tls-port."""

from __future__ import annotations

import datetime
import json
import re

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.tlsinfo import EXPIRY_WARNING_DAYS
from tests.peers import Certs, Nginx, Redis
from tests.test_json_schemas import validate


@pytest.fixture(scope="module")
def nginx_tls(tmp_path_factory, certs):
    with Nginx(tmp_path_factory.mktemp("nginx"), tls=certs) as server:
        yield server


def ping(*args):
    return CliRunner().invoke(main, ["ping", *map(str, args)])


_OK = re.compile(r"^connected to 127\.0\.0\.1:(\d+): seq=(\d) connect=([\d.]+) ms handshake=([\d.]+) ms TLSv1\.3$")


def test_each_probe_times_connect_and_handshake_apart(nginx_tls, certs):
    r = ping("127.0.0.1", "--port", nginx_tls.port, "--tls", "--cafile", certs.ca, "-c", "3", "-i", "10ms")
    assert r.exit_code == 0, r.output
    probes = [_OK.match(line) for line in r.stdout.splitlines() if line.startswith("connected to")]
    assert len(probes) == 3 and all(probes), r.stdout
    assert [int(m.group(2)) for m in probes] == [1, 2, 3]
    assert all(float(m.group(3)) > 0 and float(m.group(4)) > 0 for m in probes)
    assert "TLS connect" in r.stdout.splitlines()[0]
    assert f"--- 127.0.0.1:{nginx_tls.port} tcp tls ping statistics" in r.stdout
    assert "3 probes sent, 3 connected, 0% loss" in r.stdout
    assert "rtt min/avg/max/stddev = " in r.stdout and "handshake min/avg/max/stddev = " in r.stdout
    assert "expires" not in r.output and "warning" not in r.stderr
    # nginx saw three TLS connections, and no request (a ping only shakes hands)
    assert nginx_tls.log_lines() == 0


def test_the_json_has_both_times_per_probe_and_a_handshake_summary(nginx_tls, certs):
    r = ping("127.0.0.1", "--port", nginx_tls.port, "--tls", "--cafile", certs.ca, "-c", "2", "-i", "10ms", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "ping")
    assert doc["target"]["tls"] is True
    for p in doc["probes"]:
        assert p["ok"] and p["time_ms"] > 0 and p["handshake_ms"] > 0 and p["tls_version"] == "TLSv1.3"
    hs = doc["summary"]["handshake"]
    times = [p["handshake_ms"] for p in doc["probes"]]
    assert hs["min_ms"] == min(times) and hs["max_ms"] == max(times)
    assert doc["certificate"]["sans"] == ["IP:127.0.0.1", "DNS:localhost"] and doc["certificate"]["expiring"] is False
    assert doc["warnings"] == []


def test_a_certificate_expiring_within_30_days_is_warned_about_once(tmp_path):
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10, hours=1)
    certs = Certs(tmp_path, not_after=soon.replace(tzinfo=None, microsecond=0))
    with Nginx(tmp_path, tls=certs) as server:
        r = ping("127.0.0.1", "--port", server.port, "--tls", "--cafile", certs.ca, "-c", "3", "-i", "10ms")
        j = ping("127.0.0.1", "--port", server.port, "--tls", "--cafile", certs.ca, "-c", "2", "-i", "10ms",
                 "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("warning:") == 1
    assert "the server's certificate expires in 10 days" in r.stderr and soon.strftime("%Y-%m-%d") in r.stderr
    assert f"within {EXPIRY_WARNING_DAYS} days" in r.stderr
    doc = json.loads(j.stdout)
    validate(doc, "ping")
    assert doc["certificate"]["days_left"] == 10 and doc["certificate"]["expiring"] is True
    assert len(doc["warnings"]) == 1 and "expires in 10 days" in doc["warnings"][0]


def test_an_untrusted_certificate_is_a_failed_probe_with_its_key_and_hint(nginx_tls):
    r = ping("127.0.0.1", "--port", nginx_tls.port, "--tls", "-c", "2", "-i", "10ms")
    assert r.exit_code == 1
    failed = [line for line in r.stdout.splitlines() if line.startswith("no TLS with")]
    assert len(failed) == 2 and all("tls-unknown-ca" in line and "does not trust" in line for line in failed)
    assert all("connect=" in line for line in failed)               # the TCP part did succeed
    assert "2 probes sent, 0 connected, 100% loss" in r.stdout
    assert "tls-unknown-ca x2; give the CA with --cafile" in r.stdout
    j = ping("127.0.0.1", "--port", nginx_tls.port, "--tls", "-c", "1", "--json")
    doc = json.loads(j.stdout)
    validate(doc, "ping")
    p = doc["probes"][0]
    assert j.exit_code == 1 and p["error"] == "tls-unknown-ca" and p["phase"] == "handshake"
    assert p["handshake_ms"] is None and p["connect_ms"] > 0
    assert doc["summary"]["failures"] == {"tls-unknown-ca": 1}


def test_insecure_pings_an_untrusted_server_and_still_reads_its_certificate(nginx_tls):
    r = ping("127.0.0.1", "--port", nginx_tls.port, "--tls", "--insecure", "-c", "1", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["probes"][0]["ok"] and doc["certificate"]["not_after"] == "3000-01-01T00:00:00Z"
    assert r.stderr.count("--insecure") == 1


def test_tls_to_a_plaintext_port_fails_each_probe_in_words(tmp_path):
    with Nginx(tmp_path) as plain:
        r = ping("127.0.0.1", "--port", plain.port, "--tls", "--insecure", "-c", "1")
    assert r.exit_code == 1
    assert "tls-to-plaintext-port" in r.stdout and "drop --tls" in r.stdout


def test_a_tls_port_that_waits_times_out_the_handshake_with_the_hint(tmp_path):
    """redis' plaintext port takes the ClientHello as the start of a line and waits."""
    with Redis(tmp_path) as plain:
        r = ping("127.0.0.1", "--port", plain.port, "--tls", "--insecure", "-c", "1", "--timeout", "300ms")
    assert r.exit_code == 1
    assert "no TLS with" in r.stdout and "timeout" in r.stdout and "drop --tls" in r.stdout


def test_redis_tls_port_version_choice(tmp_path, certs):
    with Redis(tmp_path, tls=certs) as server:
        r = ping("127.0.0.1", "--port", server.port, "--tls", "--cafile", certs.ca, "--tls-max", "1.2", "-c", "1")
    assert r.exit_code == 0, r.output
    assert "handshake=" in r.stdout and r.stdout.splitlines()[1].endswith(" TLSv1.2")


@pytest.mark.parametrize("args, option, words", [
    (["--sni", "x.test"], "--sni", "give --tls too"),                   # a TLS option without --tls
    (["--tls", "--icmp"], "--tls", "not with --icmp"),
    (["--tls", "--tls-min", "1.3", "--tls-max", "1.2"], "--tls-min", "above --tls-max"),
])
def test_bad_tls_options_are_usage_errors(args, option, words):
    r = ping("127.0.0.1", "--port", "9", *args)
    assert r.exit_code == 2, r.output
    assert option in r.stderr and words in r.stderr


def test_tls_over_a_unix_socket(tmp_path, certs):
    with Nginx(tmp_path, tls=certs, unix=True) as server:
        r = ping("--unix", server.unix, "--tls", "--cafile", certs.ca, "-c", "1")
        named = ping("--unix", server.unix, "--tls", "--cafile", certs.ca, "--sni", "localhost", "-c", "1")
        wrong = ping("--unix", server.unix, "--tls", "--cafile", certs.ca, "--sni", "db.example", "-c", "1")
    assert r.exit_code == 0 and named.exit_code == 0, r.output + named.output
    assert "TLS over Unix connect" in r.stdout and "handshake=" in r.stdout
    assert wrong.exit_code == 1 and "tls-hostname-mismatch" in wrong.stdout

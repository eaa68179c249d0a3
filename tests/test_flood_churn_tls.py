"""--churn and the opening conversation over TLS, against real servers: every new connection
goes through its TCP connect, its TLS handshake and its opening, each timed apart."""

from __future__ import annotations

import pytest

from conftest import flood_once, wait_until
from peers import Nginx, Redis

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("resume", [False, True])
def test_https_churn_1_is_a_handshake_per_request(tmp_path, certs, resume):
    with Nginx(tmp_path, tls=certs) as nginx:
        doc, out = flood_once("--tls", "--cafile", str(certs.ca), "--port", str(nginx.port), "--mode", "http",
                              "--churn", "1", "--conns", "4", "--requests", "200",
                              *(["--tls-resume"] if resume else []))
        assert out.returncode == 0, out.stderr
        sent = doc["requests"]["sent"]
        assert sent == doc["requests"]["answered"] == 204
        assert wait_until(lambda: nginx.log_lines() >= sent, 10)
        c = doc["connections"]
        assert nginx.log_lines() == sent == nginx.connections() == c["established"] + c["reconnects"]
    # a handshake per connection made, timed apart from connect and from the round trips
    assert doc["tls"]["handshakes"] == c["connected"] == doc["handshake_us"]["count"]
    # (a TCP connect is timed as the handshake begins: one the run's end cut off is in connect_us)
    assert doc["connect_us"]["count"] >= c["connected"] and doc["latency_us"]["count"] == 200
    assert doc["churn"]["handshakes_per_second"] == doc["churn"]["per_second"] > 0
    if resume:   # every replacement offers the worker's latest session
        assert doc["tls"]["offered"] >= c["reconnects"] and doc["tls"]["resumed"] >= 1


def test_redis_over_tls_logs_in_after_the_handshake_on_every_connection(tmp_path, certs):
    with Redis(tmp_path, tls=certs, password="pw") as redis:
        redis.reset()
        doc, out = flood_once("--tls", "--cafile", str(certs.ca), "--port", str(redis.port), "--mode", "redis",
                              "--setup", "AUTH pw", "--churn", "5", "--conns", "3", "--requests", "300")
        assert out.returncode == 0, out.stderr
        calls = redis.calls()
    c, opening = doc["connections"], doc["opening"]
    assert calls["ping"] == doc["requests"]["sent"] == 303 and doc["failures_total"] == 0
    assert opening["opened"] == c["established"] + c["reconnects"] >= 303 // 5
    assert calls["auth"] - 1 == opening["opened"] == c["connected"]    # (calls() logs in too)
    # each connection's three setup figures apart: connect, handshake, opening
    assert doc["tls"]["handshakes"] == c["connected"] <= doc["connect_us"]["count"]
    assert doc["open_us"]["count"] == opening["opened"]


def test_a_refusal_after_the_handshake_is_tallied_by_the_servers_words(tmp_path, certs):
    with Redis(tmp_path, tls=certs, password="pw") as redis:
        doc, out = flood_once("--tls", "--cafile", str(certs.ca), "--port", str(redis.port), "--mode", "redis",
                              "--setup", "AUTH nope", "--conns", "3", "--requests", "30")
    assert out.returncode == 1
    assert doc["tls"]["handshakes"] == 3
    assert doc["opening"]["refusals"] == {"WRONGPASS invalid username-password pair or user is disabled.": 3}

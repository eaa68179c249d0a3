"""TLS on either side of `socktools proxy`: terminate it from clients, originate it to the upstream.

Real servers (redis-server with and without --tls-port, nginx with an ssl listener) and
certificates from trustme; the clients are Python's ssl and plain sockets.  Timing checks are
lower bounds only (a toxic's time is at least what was asked; a busy machine only adds).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.peers import Certs, Nginx, Redis
from tests.proxy_helpers import ProxyProcess, connect, in_thread, recv_exactly

PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"


@pytest.fixture
def other_certs(tmp_path):
    """A second, unrelated CA (and its server pair): "the wrong CA" for the first's servers."""
    folder = tmp_path / "other"
    folder.mkdir()
    return Certs(folder)


def tls_connect(port: int, cafile, name: str = "127.0.0.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx.wrap_socket(connect(port), server_hostname=name)


def pings(sock, n: int) -> None:
    for _ in range(n):
        sock.sendall(PING)
        assert recv_exactly(sock, len(PONG)) == PONG


def closed(sock: socket.socket) -> bool:
    """Read until the peer closes (EOF, or a reset: a close with our bytes unread is a reset);
    True if nothing but a TLS record (an alert) came first."""
    got = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except ConnectionResetError:
        pass
    return got == b"" or got[:1] == b"\x15"


def wait_count(px: ProxyProcess, kind: str, n: int, timeout: float = 10.0) -> list:
    """The proxy's events of ``kind`` once there are ``n`` of them (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    while sum(e["event"] == kind for e in px.events) < n:
        if px.next_event(deadline) is None:
            break
    return [e for e in px.events if e["event"] == kind]


def listen_tls(certs: Certs) -> list:
    return ["--listen-tls", "--cert", str(certs.cert), "--key", str(certs.key)]


def test_tls_offload_in_front_of_a_plain_redis(tmp_path, certs):
    """TLS -> plaintext: a TLS client PINGs a plain redis-server through the proxy; redis'
    own count equals the client's, and the connection line has the negotiated version."""
    with Redis(tmp_path) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", *listen_tls(certs)) as px:
        listening = px.wait_event(lambda e: e["event"] == "listening")
        assert listening["listen_tls"]["cert"] == str(certs.cert)
        with tls_connect(px.port, certs.ca) as c:
            version = c.version()
            assert version in ("TLSv1.2", "TLSv1.3")
            pings(c, 7)
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "closed" and ev["client_tls"]["version"] == version
        # Plaintext counts, both sides: what the toxics see (7 PINGs, 7 PONGs).
        assert ev["from_client"] == ev["to_upstream"] == 7 * len(PING)
        assert ev["from_upstream"] == ev["to_client"] == 7 * len(PONG)
        assert redis.calls()["ping"] == 7
        summary = px.stop()
    assert summary["total"]["accepted"] == 1


def test_limit_data_counts_plaintext_bytes_on_a_tls_side(tmp_path, certs):
    """limit_data on the downstream of a TLS listener passes exactly N plaintext bytes (the
    records that carry them are larger), then closes."""
    with Redis(tmp_path) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", *listen_tls(certs),
                         "--toxic", "limit_data:bytes=3") as px:
        with tls_connect(px.port, certs.ca) as c:
            c.sendall(PING)
            got = b""
            try:
                while True:
                    data = c.recv(100)
                    if not data:
                        break
                    got += data
            except (ssl.SSLError, ConnectionResetError):
                pass
        assert got == PONG[:3]
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "closed-by-toxic" and ev["to_client"] == 3
        px.stop()


def test_a_pair_with_tls_on_either_side_is_copied_not_spliced(tmp_path, certs):
    """Splicing moves bytes as they are; a TLS side's are records.  A pair with TLS on one side
    copies both ways, while a plaintext pair of the same run splices (so the check can fail)."""
    from socktools.proxy import splice
    from socktools.proxy.config import ProxyConfig, ProxySpec
    from socktools.proxy.runner import ProxyServer
    from socktools.tlsconf import ServerTlsConfig
    if not splice.AVAILABLE:
        pytest.skip("os.splice is Linux-only (Python 3.10+)")
    with Redis(tmp_path) as redis:
        up = f"127.0.0.1:{redis.port}"
        tls = ServerTlsConfig(cert=str(certs.cert), key=str(certs.key))
        server = ProxyServer(ProxyConfig(proxies=(ProxySpec("tls", "127.0.0.1:0", up, listen_tls=tls),
                                                  ProxySpec("plain", "127.0.0.1:0", up)),
                                         splice="always"), lambda ev: None)
        server.open()
        port = {name: int(p.listen.rsplit(":", 1)[1]) for name, p in server.proxies.items()}
        with in_thread(server, port["plain"]):
            with tls_connect(port["tls"], certs.ca) as a, connect(port["plain"]) as b:
                pings(a, 1)
                pings(b, 1)
                pipes = {name: [(pair.up.pipe is not None, pair.down.pipe is not None)
                                for pair in list(p.pairs)] for name, p in server.proxies.items()}
        assert pipes == {"tls": [(False, False)], "plain": [(True, True)]}
        assert redis.calls()["ping"] == 2


def test_plaintext_client_to_a_tls_only_redis_decoded(tmp_path, certs):
    """plaintext -> TLS: a plaintext client reaches redis' --tls-port; --decode redis sees the
    plaintext between, one exchange per PING, and redis counts the same."""
    with Redis(tmp_path, tls=certs) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", "--upstream-tls",
                         "--upstream-cafile", str(certs.ca), "--upstream-keylog", str(tmp_path / "keys.log"),
                         "--decode", "redis") as px:
        with connect(px.port) as c:
            pings(c, 5)
        done = wait_count(px, "exchange", 5)
        assert [(e["request"], e["reply"]) for e in done] == [("['PING']", "PONG")] * 5
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["upstream_tls"]["version"] in ("TLSv1.2", "TLSv1.3") and "client_tls" not in ev
        assert redis.calls()["ping"] == 5
        px.stop()
    # The upstream session's secrets, for tshark/sniff --keylog (NSS format: LABEL CLIENT_RANDOM SECRET).
    lines = (tmp_path / "keys.log").read_text().split("\n")
    assert any(line.startswith(("CLIENT_RANDOM ", "CLIENT_TRAFFIC_SECRET_0 ")) for line in lines), lines


def test_tls_to_tls_with_a_latency_toxic_and_a_self_signed_listener(tmp_path, certs):
    """TLS -> TLS (re-encrypted), the listener's certificate made by --tls-self-signed: the
    latency toxic acts on the plaintext between (each round trip at least 100 ms)."""
    pytest.importorskip("cryptography", reason="cryptography not installed (pip install cryptography)")
    with Redis(tmp_path, tls=certs) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", "--tls-self-signed",
                         "--upstream-tls", "--upstream-cafile", str(certs.ca),
                         "--toxic", "latency:latency=100") as px:
        listening = px.wait_event(lambda e: e["event"] == "listening")
        made = listening["listen_tls"]
        assert made["self_signed"] and len(made["sha256"]) == 95
        with tls_connect(px.port, made["cert"], "localhost") as c:
            # the certificate names the command that made it (a client's chain view shows it)
            assert ("organizationName", "socktools proxy --tls-self-signed") in \
                [kv for rdn in c.getpeercert()["subject"] for kv in rdn]
            for _ in range(3):
                start = time.perf_counter()
                pings(c, 1)
                assert time.perf_counter() - start >= 0.100
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["client_tls"]["version"] and ev["upstream_tls"]["version"]
        assert redis.calls()["ping"] == 3
        px.stop()
    assert not Path(made["cert"]).exists(), "the throwaway certificate outlived the proxy"


def test_a_bad_upstream_certificate_closes_only_that_client(tmp_path, certs, other_certs):
    """nginx's ssl listener behind three proxies from one config file: the wrong CA, the wrong
    name (SNI), and a good one.  The first two close their client with the verification error
    named in the log and the connection line; the third keeps serving."""
    with Nginx(tmp_path, tls=certs) as nginx:
        up = f"127.0.0.1:{nginx.port}"
        cfg = tmp_path / "proxies.json"
        cfg.write_text(json.dumps({"proxies": [
            {"name": "wrong_ca", "upstream": up, "upstream_tls": {"cafile": str(other_certs.ca)}},
            {"name": "wrong_name", "upstream": up,
             "upstream_tls": {"cafile": str(certs.ca), "sni": "not-this.example"}},
            {"name": "good", "upstream": up, "upstream_tls": {"cafile": str(certs.ca)}},
        ]}))
        with ProxyProcess("--config", str(cfg), expect=3) as px:
            for name, key in (("wrong_ca", "tls-unknown-ca"), ("wrong_name", "tls-hostname-mismatch")):
                with connect(px.ports[name]) as c:
                    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert closed(c)                   # nothing from nginx passed
                ev = px.wait_event(lambda e, n=name: e["event"] == "connection" and e["proxy"] == n)
                assert ev["how"] == f"upstream-{key}"
            with connect(px.ports["good"]) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while True:
                    data = c.recv(65536)
                    if not data:
                        break
                    reply += data
            assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok\n")
            summary = px.stop()
            err = px.stderr()
    for name, key in (("wrong_ca", "tls-unknown-ca"), ("wrong_name", "tls-hostname-mismatch")):
        line = next(line for line in err.splitlines() if f"proxy {name}:" in line)
        assert "failed its TLS handshake" in line and key in line and "--upstream-" in line, line
    assert summary["proxies"]["wrong_ca"]["upstream_failed"] == {"tls-unknown-ca": 1}
    assert summary["proxies"]["wrong_name"]["upstream_failed"] == {"tls-hostname-mismatch": 1}
    assert nginx.log_lines() == 1                 # only the good proxy's request reached nginx


def test_plaintext_to_the_tls_listener_costs_only_that_connection(tmp_path, certs):
    """A client that speaks plaintext to the TLS listener is closed, logged with serve's key for
    it; the TLS client after it is served by the same proxy."""
    with Redis(tmp_path) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", *listen_tls(certs)) as px:
        with connect(px.port) as c:
            c.sendall(PING)
            assert closed(c)                           # (the proxy's alert, then the close: no PONG)
        with tls_connect(px.port, certs.ca) as c:
            pings(c, 2)
        px.wait_event(lambda e: e["event"] == "connection")
        summary = px.stop()
        err = px.stderr()
        assert redis.calls()["ping"] == 2
    assert "tls-plaintext-to-tls-port" in err and "TLS handshake" in err
    assert summary["total"]["client_tls_failed"] == {"tls-plaintext-to-tls-port": 1}
    assert summary["total"]["accepted"] == 1


def test_mutual_tls_on_both_sides(tmp_path, certs):
    """--client-ca: a client without a certificate is refused (that connection only, logged); one
    with a certificate is served, through a proxy that shows redis (--tls-auth-clients yes) its
    own client certificate (--upstream-cert/--upstream-key)."""
    with Redis(tmp_path, tls=certs, auth_clients=True) as redis, \
            ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}", *listen_tls(certs),
                         "--client-ca", str(certs.ca), "--upstream-tls", "--upstream-cafile", str(certs.ca),
                         "--upstream-cert", str(certs.client_cert),
                         "--upstream-key", str(certs.client_key)) as px:
        with tls_connect(px.port, certs.ca) as c:      # no client certificate
            with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
                pings(c, 1)                            # (TLS 1.3: refused after the client's Finished)
        ctx = certs.client_context(client_cert=True)
        with ctx.wrap_socket(connect(px.port), server_hostname="127.0.0.1") as c:
            pings(c, 3)
        px.wait_event(lambda e: e["event"] == "connection")
        assert redis.calls()["ping"] == 3
        summary = px.stop()
    assert summary["total"]["client_tls_failed"] == {"tls-client-sent-no-certificate": 1}


def _closed_after_the_handshake_timeout(spec, caplog) -> object:
    """Run ``spec`` in this process (HANDSHAKE_TIMEOUT shortened to 0.2 s by the caller), connect
    a client that says nothing, and check it is closed no sooner than the timeout; the proxy
    (its counts read while it runs: each is counted before the close)."""
    from socktools.proxy import runner
    from socktools.proxy.config import ProxyConfig
    server = runner.ProxyServer(ProxyConfig(proxies=(spec,)), lambda ev: None)
    server.open()
    proxy = server.proxies[spec.name]
    port = int(proxy.listen.rsplit(":", 1)[1])
    with caplog.at_level("WARNING", logger="socktools.proxy"), in_thread(server, port):
        with connect(port) as c:
            start = time.monotonic()
            c.settimeout(10)
            assert c.recv(100) == b""
            assert time.monotonic() - start >= 0.2
            return {**proxy.stats.upstream_failed, **proxy.stats.client_tls_failed}


def test_an_upstream_that_never_answers_the_handshake_closes_its_client(monkeypatch, caplog):
    """An upstream that takes the connection and never answers the ClientHello (here: a
    listening socket nobody accepts from) closes the client after HANDSHAKE_TIMEOUT (shortened),
    with the reason logged."""
    from socktools.proxy import runner
    from socktools.proxy.config import ProxySpec
    from socktools.tlsconf import TlsConfig
    monkeypatch.setattr(runner, "HANDSHAKE_TIMEOUT", 0.2)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        spec = ProxySpec("p", "127.0.0.1:0", f"127.0.0.1:{mute.getsockname()[1]}",
                         upstream_tls=TlsConfig(enabled=True, insecure=True))
        assert _closed_after_the_handshake_timeout(spec, caplog) == {"timeout": 1}
    assert any("failed its TLS handshake" in r.getMessage() and "timeout" in r.getMessage()
               for r in caplog.records)


def test_a_silent_client_is_closed_after_the_handshake_timeout(certs, monkeypatch, caplog):
    """A client that connects to the TLS listener and says nothing holds no slot for ever: it
    is closed after HANDSHAKE_TIMEOUT (shortened here), logged."""
    from socktools.proxy import runner
    from socktools.proxy.config import ProxySpec
    from socktools.tlsconf import ServerTlsConfig
    monkeypatch.setattr(runner, "HANDSHAKE_TIMEOUT", 0.2)
    spec = ProxySpec("p", "127.0.0.1:0", "127.0.0.1:9",
                     listen_tls=ServerTlsConfig(cert=str(certs.cert), key=str(certs.key)))
    assert _closed_after_the_handshake_timeout(spec, caplog) == {"timeout": 1}
    assert any("TLS handshake" in r.getMessage() and "timeout" in r.getMessage() for r in caplog.records)


def test_config_file_tls_fields_become_the_specs(tmp_path, certs):
    from socktools.proxy.config import load_config_file
    cfg = tmp_path / "p.toml"
    cfg.write_text(f"""
[[proxies]]
name = "a"
upstream = "127.0.0.1:6380"
listen_tls = {{ cert = "{certs.cert}", key = "{certs.key}", client_ca = "{certs.ca}" }}
upstream_tls = {{ cafile = "{certs.ca}", sni = "localhost", tls_min = "1.3", alpn = ["redis"] }}

[[proxies]]
name = "b"
upstream = "127.0.0.1:6381"
upstream_tls = true
""")
    a, b = load_config_file(str(cfg))
    assert a.listen_tls.cert == str(certs.cert) and a.listen_tls.client_ca == str(certs.ca)
    assert a.upstream_tls.enabled and a.upstream_tls.sni == "localhost" and a.upstream_tls.alpn == ("redis",)
    assert a.upstream_tls.tls_min == "1.3"
    assert b.listen_tls is None and b.upstream_tls.enabled and b.upstream_tls.cafile is None


@pytest.mark.parametrize("doc,words", [
    ({"upstream_tls": {"cafile": "NOTPEM"}}, "upstream_tls: cafile"),
    ({"upstream_tls": {"verify": False}}, "unknown field 'verify'"),
    ({"listen_tls": {"cert": "CERT"}}, "listen_tls: key"),
    ({"listen_tls": {"self_signed": True, "cert": "CERT"}}, "listen_tls: cert"),
    ({"upstream_tls": "yes"}, "upstream_tls: expected"),
])
def test_bad_tls_fields_in_a_config_file_name_the_field(tmp_path, certs, doc, words):
    notpem = tmp_path / "notpem.txt"
    notpem.write_text("hello\n")
    text = json.dumps([{"name": "a", "upstream": "127.0.0.1:1", **doc}])
    text = text.replace("NOTPEM", str(notpem)).replace("CERT", str(certs.cert))
    cfg = tmp_path / "p.json"
    cfg.write_text(text)
    r = CliRunner().invoke(main, ["proxy", "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert words in r.output and "--config" in r.output


def test_the_api_creates_plaintext_proxies_and_refuses_tls_fields(certs):
    from socktools.proxy import api
    from socktools.proxy.config import ProxyConfig
    from socktools.proxy.runner import ProxyServer
    server = ProxyServer(ProxyConfig(api="127.0.0.1:0"), lambda ev: None)
    try:
        body = json.dumps({"name": "x", "upstream": "127.0.0.1:1",
                           "upstream_tls": {"cafile": str(certs.ca)}}).encode()
        status, doc = api.handle(server, "POST", "/proxies", body)
        assert status == 400 and "upstream_tls" in doc["error"] and "config" in doc["error"]
        status, doc = api.handle(server, "POST", "/proxies",
                                 json.dumps({"name": "y", "upstream": "127.0.0.1:1"}).encode())
        assert status == 201 and "listen_tls" not in doc and "upstream_tls" not in doc
    finally:
        server.close()


def _usage(tmp_path, certs, *args):
    notpem = tmp_path / "notpem.txt"
    notpem.write_text("hello\n")
    argv = [a.replace("NOTPEM", str(notpem)).replace("CERT", str(certs.cert)).replace("KEY", str(certs.key))
            .replace("CA", str(certs.ca)) for a in args]
    return CliRunner().invoke(main, ["proxy", *argv])


PAIR = ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:1"]


@pytest.mark.parametrize("args,option,words", [
    (PAIR + ["--cert", "CERT", "--key", "KEY"], "--cert", "--listen-tls"),
    (PAIR + ["--client-ca", "CA"], "--client-ca", "--listen-tls"),
    (PAIR + ["--listen-tls", "--cert", "CERT"], "--key", ""),
    (PAIR + ["--listen-tls"], "--cert", "--tls-self-signed"),
    (PAIR + ["--listen-tls", "--cert", "NOTPEM", "--key", "KEY"], "--cert", "not PEM"),
    (PAIR + ["--tls-self-signed", "--cert", "CERT", "--key", "KEY"], "--cert", "--tls-self-signed"),
    (PAIR + ["--listen-tls", "--cert", "CERT", "--key", "CA"], "--key", "is not the key"),
    (PAIR + ["--upstream-cafile", "CA"], "--upstream-cafile", "--upstream-tls"),
    (PAIR + ["--upstream-insecure"], "--upstream-insecure", "--upstream-tls"),
    (PAIR + ["--upstream-tls", "--upstream-cafile", "NOTPEM"], "--upstream-cafile", "not PEM"),
    (PAIR + ["--upstream-tls", "--upstream-cert", "CERT"], "--upstream-cert", "--upstream-key"),
    (PAIR + ["--upstream-tls", "--upstream-tls-min", "1.3", "--upstream-tls-max", "1.2"],
     "--upstream-tls-min", "--upstream-tls-max"),
    (PAIR + ["--upstream-tls", "--upstream-sni", "a b"], "--upstream-sni", "not a host name"),
    (["--listen", "127.0.0.1:0", "--to", "unix:/tmp/x.sock", "--upstream-tls"], "--upstream-sni", "no host name"),
    (["--api", "127.0.0.1:0", "--upstream-tls"], "--upstream-tls", "--listen/--to"),
    (["--api", "127.0.0.1:0", "--listen-tls", "--cert", "CERT", "--key", "KEY"], "--listen-tls", "--listen/--to"),
])
def test_tls_usage_errors_name_the_option(tmp_path, certs, args, option, words):
    r = _usage(tmp_path, certs, *args)
    assert r.exit_code == 2, r.output
    assert f"'{option}'" in r.output and words in r.output, r.output

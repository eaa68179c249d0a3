"""flood --tls against real servers: redis-server with --tls-port and nginx with an ``ssl``
listener (tests/peers.py), certificates made by trustme.  The check is the server's own count
(redis INFO commandstats, nginx's access log); the handshake is its own histogram; verification
failures are tallied under their keys; --keylog is checked by tshark on a capture of the run.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import signal
import subprocess
import threading

import pytest

from conftest import can_capture, socktools_cmd, wait_until
from peers import Certs, Nginx, Redis
from socktools import errors
from socktools.flood.config import FloodConfig
from socktools.tlsconf import TlsConfig
from test_json_schemas import validate
from threadserver import ThreadServer

pytestmark = pytest.mark.timeout(120)


def flood(*args, env=None):
    r = subprocess.run(socktools_cmd("flood", *args), capture_output=True, text=True, timeout=90, env=env)
    doc = None
    if "--json" in args and r.stdout.strip():
        doc = json.loads(r.stdout)
    return r, doc


def tls_args(certs, port, *more):
    return ("--tls", "--cafile", str(certs.ca), "--port", str(port), *more)


def errors_of(doc) -> dict:
    return {(e["phase"], e["error"]): e["count"] for e in doc["errors"]}


# ----------------------------------------------------------------- redis

def test_redis_tls_port_counts_equal_commandstats_and_the_handshake_is_its_own_figure(tmp_path, certs):
    with Redis(tmp_path, tls=certs) as redis:
        redis.reset()
        r, doc = flood(*tls_args(certs, redis.port, "--mode", "redis", "--conns", "6", "--workers", "2",
                                 "--requests", "600", "--json"))
        assert r.returncode == 0, r.stderr
        assert doc["requests"]["sent"] == 606 == redis.calls()["ping"]     # 6 confirming PINGs included
        assert doc["connections"]["established"] == 6 and doc["errors"] == []
        tls = doc["tls"]
        assert tls["handshakes"] == 6 and sum(tls["negotiated"].values()) == 6
        assert all(k.startswith("TLSv1.") for k in tls["negotiated"])
        # TLS handshake time apart from the TCP connect: one of each per connection
        assert doc["connect_us"]["count"] == 6 == doc["handshake_us"]["count"]
        # the kernel carried records: more bytes than the plaintext PINGs and PONGs
        assert doc["bytes"]["sent"] > 606 * len(b"*1\r\n$4\r\nPING\r\n")
        validate(doc, "flood")


def test_redis_mutual_tls_with_cert_and_key_and_refused_without(tmp_path, certs):
    with Redis(tmp_path, tls=certs, auth_clients=True) as redis:
        redis.reset()
        r, doc = flood(*tls_args(certs, redis.port, "--mode", "redis", "--conns", "2", "--workers", "1",
                                 "--requests", "100", "--cert", str(certs.client_cert),
                                 "--key", str(certs.client_key), "--json"))
        assert r.returncode == 0, r.stderr
        assert doc["requests"]["sent"] == 102 == redis.calls()["ping"]
        r, doc = flood(*tls_args(certs, redis.port, "--mode", "redis", "--conns", "2", "--workers", "1",
                                 "--requests", "10", "--connect-timeout", "3s", "--json"))
        assert r.returncode == 1, r.stderr                   # no connection established
        assert doc["connections"]["established"] == 0 and doc["connections"]["failed"] == 2
        keys = {e["error"] for e in doc["errors"]}
        # TLS 1.3: the server refuses the missing certificate after our side finished its handshake
        assert keys <= {"tls-alert-certificate-required", "tls-eof-in-handshake", "ECONNRESET",
                        "tls-alert-handshake-failure", errors.PEER_CLOSED}, keys
        assert sum(e["count"] for e in doc["errors"]) == 2


# ----------------------------------------------------------------- nginx

def test_nginx_https_counts_equal_the_access_log(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/", "--conns", "4",
                                 "--workers", "2", "--requests", "400", "--alpn", "http/1.1", "--json"))
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: nginx.log_lines() == 404, 5)
        assert doc["requests"]["answered"] == 404 == nginx.log_lines()
        assert list(doc["tls"]["negotiated"]) and all(k.endswith(" http/1.1") for k in doc["tls"]["negotiated"])


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls_resume_on_replacements_after_the_server_closes(tmp_path, certs, version):
    """nginx's /close answers with Connection: close: every request needs a new connection, each
    a handshake; with --tls-resume each replacement offers the worker's latest session."""
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/close", "--conns", "2",
                                 "--workers", "1", "--requests", "40", "--tls-resume", "--tls-max", version,
                                 "--json"))
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: nginx.log_lines() == doc["requests"]["answered"], 5)
        assert doc["requests"]["answered"] == 42
        tls = doc["tls"]
        assert tls["handshakes"] == doc["connections"]["connected"] >= 40
        assert all(k.startswith(f"TLSv{version} ") for k in tls["negotiated"])
        assert tls["offered"] >= 38                 # every replacement had a session to offer
        assert tls["resumed"] == tls["offered"] and tls["reuse_ratio"] == 1.0
        assert doc["handshake_us"]["count"] == tls["handshakes"]
        text = subprocess.run(socktools_cmd("flood", *tls_args(certs, nginx.port, "--mode", "http", "--path",
                                                               "/close", "--conns", "1", "--workers", "1",
                                                               "--requests", "5", "--tls-resume")),
                              capture_output=True, text=True, timeout=60).stdout
        assert re.search(r"resumed \d+ of \d+ that offered an earlier session \(100%\)", text), text


def test_without_tls_resume_every_replacement_is_a_full_handshake(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/close", "--conns", "1",
                                 "--workers", "1", "--requests", "10", "--json"))
        assert r.returncode == 0, r.stderr
        assert doc["tls"]["resume"] is False and doc["tls"]["resumed"] is None
        assert doc["tls"]["handshakes"] == 11


def test_nginx_client_certificate_required(tmp_path, certs):
    with Nginx(tmp_path, tls=certs, verify_client=True) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/", "--conns", "2",
                                 "--workers", "1", "--requests", "20", "--cert", str(certs.client_cert),
                                 "--key", str(certs.client_key), "--json"))
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: nginx.log_lines() == 22, 5)
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/", "--conns", "1",
                                 "--workers", "1", "--requests", "5", "--json"))
        # nginx completes the handshake, then answers 400 "No required SSL certificate was sent"
        assert any("client certificate" in h for h in doc["hints"]), doc["hints"]


@pytest.mark.parametrize("case", ["expired", "hostname", "unknown-ca"])
def test_verification_failures_are_tallied_under_their_key(tmp_path, certs, case):
    server_certs = certs
    if case == "expired":
        (tmp_path / "x").mkdir()
        server_certs = Certs(tmp_path / "x", expired=True)
    args = {"expired": ("--cafile", str(server_certs.ca)),
            "hostname": ("--cafile", str(certs.ca), "--sni", "wrong.example"),
            "unknown-ca": ()}[case]
    key = {"expired": "tls-expired", "hostname": "tls-hostname-mismatch", "unknown-ca": "tls-unknown-ca"}[case]
    with Nginx(tmp_path, tls=server_certs) as nginx:
        r, doc = flood("--tls", *args, "--port", str(nginx.port), "--mode", "http", "--conns", "3",
                       "--workers", "1", "--requests", "10", "--json")
        assert r.returncode == 1, r.stderr          # no connection established: flood's all-failed code
        assert errors_of(doc) == {("handshake", key): 3}
        entry = doc["errors"][0]
        assert entry["meaning"] == errors.EXPLANATIONS[key].meaning and entry["fix"]
        assert doc["tls"]["handshakes"] == 0 and nginx.log_lines() == 0


def test_plaintext_spoken_to_a_tls_port_gets_the_hint(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood("--port", str(nginx.port), "--mode", "http", "--conns", "1", "--workers", "1",
                       "--requests", "5", "--json")
        assert doc["hints"] and "plaintext spoken to a TLS port" in doc["hints"][0]
        assert "--tls" in doc["hints"][0]
    with Redis(tmp_path, tls=certs) as redis:
        r, doc = flood("--port", str(redis.port), "--mode", "redis", "--conns", "1", "--workers", "1",
                       "--requests", "5", "--connect-timeout", "3s", "--json")
        assert r.returncode == 1
        assert any("--tls" in h for h in doc["hints"]), doc


def test_tls_spoken_to_a_plaintext_port_is_a_named_handshake_failure(tmp_path, certs):
    with Nginx(tmp_path) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--conns", "2", "--workers", "1",
                                 "--requests", "5", "--json"))
        assert r.returncode == 1
        assert errors_of(doc) == {("handshake", errors.TLS_TO_PLAINTEXT): 2}
        text, _ = flood(*tls_args(certs, nginx.port, "--mode", "http", "--conns", "1", "--workers", "1",
                                  "--requests", "5"))
        assert "handshake" in text.stdout and errors.TLS_TO_PLAINTEXT in text.stdout
        assert errors.EXPLANATIONS[errors.TLS_TO_PLAINTEXT].fix in text.stdout


def test_a_server_stalling_the_handshake_is_a_handshake_timeout(certs):
    """The peer accepts and never answers the ClientHello: the connect timeout still applies,
    tallied in the handshake phase, with the hint that the port may not speak TLS."""
    stop = threading.Event()
    with ThreadServer(lambda s: stop.wait(20)) as srv:
        r, doc = flood(*tls_args(certs, srv.port, "--mode", "redis", "--conns", "2", "--workers", "1",
                                 "--requests", "5", "--connect-timeout", "0.5s", "--json"))
        stop.set()
    assert r.returncode == 1
    assert errors_of(doc) == {("handshake", errors.TIMEOUT): 2}
    assert doc["connect_us"]["count"] == 2 and doc["handshake_us"] is None
    assert any("does not speak TLS" in h for h in doc["hints"]), doc["hints"]


def test_stages_ramp_connections_go_through_the_handshake(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--workers", "1",
                                 "--stages", "0.5s:4:200,0.5s:4:200", "--json"))
        assert r.returncode == 0, r.stderr
        assert doc["connections"]["established"] == 4
        assert doc["tls"]["handshakes"] == 4 == doc["handshake_us"]["count"]
        assert wait_until(lambda: nginx.log_lines() == doc["requests"]["answered"], 5)


# ----------------------------------------------------------------- --keylog, checked by tshark

def test_keylog_from_two_workers_decrypts_the_capture(tmp_path, certs):
    if not shutil.which("tshark"):
        pytest.skip("tshark not installed (apt-get install tshark)")
    if not can_capture():
        pytest.skip("live capture needs root or CAP_NET_RAW")
    keylog = tmp_path / "keys.log"
    pcap = tmp_path / "cap.pcapng"
    with Nginx(tmp_path, tls=certs) as nginx:
        sniff = subprocess.Popen(socktools_cmd("sniff", "--port", str(nginx.port), "-w", str(pcap),
                                               "--timeout", "60s"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert "Capturing on" in sniff.stderr.readline()
            r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/", "--conns", "6",
                                     "--workers", "2", "--requests", "60", "--keylog", str(keylog), "--json"))
            assert r.returncode == 0, r.stderr
            assert wait_until(lambda: nginx.log_lines() == 66, 5)
            sniff.send_signal(signal.SIGINT)
            sniff.wait(30)
        finally:
            if sniff.poll() is None:
                sniff.kill()
                sniff.wait()
    # one file, appended to by both workers: whole NSS lines only, one set of secrets per handshake
    lines = keylog.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+", ln) for ln in body), lines[:5]
    assert sum(ln.startswith("CLIENT_TRAFFIC_SECRET_0 ") for ln in body) == 6
    assert sum(ln.startswith("#") for ln in lines) == 1     # the header: the parent made the file
    out = subprocess.run(["tshark", "-o", f"tls.keylog_file:{keylog}", "-r", str(pcap), "-Y", "http.request",
                          "-T", "fields", "-e", "http.request.uri"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/"] * 66
    without = subprocess.run(["tshark", "-r", str(pcap), "-Y", "http.request"], capture_output=True,
                             text=True, timeout=60)
    assert without.stdout.strip() == ""         # the keys are what decrypts it


def test_sslkeylogfile_is_honoured(tmp_path, certs):
    import os
    keylog = tmp_path / "env.log"
    with Nginx(tmp_path, tls=certs) as nginx:
        r, _ = flood(*tls_args(certs, nginx.port, "--mode", "http", "--conns", "2", "--workers", "2",
                               "--requests", "4"), env={**os.environ, "SSLKEYLOGFILE": str(keylog)})
        assert r.returncode == 0, r.stderr
    assert sum(ln.startswith("CLIENT_TRAFFIC_SECRET_0 ") for ln in keylog.read_text().splitlines()) == 2


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("args,option", [
    (("--tls-resume", "--port", "9"), "--tls-resume"),
    (("--cafile", "x.pem", "--port", "9"), "--cafile"),
    (("--tls", "--cert", "CERT", "--port", "9"), "--cert"),
    (("--tls", "--tls-min", "1.3", "--tls-max", "1.2", "--port", "9"), "--tls-min"),
    (("--tls",), "--tls"),                              # flood's own server speaks plaintext
])
def test_tls_options_are_usage_errors_naming_the_option(certs, args, option):
    args = tuple(str(certs.client_cert) if a == "CERT" else a for a in args)
    r = subprocess.run(socktools_cmd("flood", *args, "--requests", "1"), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"Invalid value for '{option}'" in r.stderr and "Traceback" not in r.stderr


def test_the_tls_config_travels_to_workers_and_cluster_shards(certs):
    cfg = FloodConfig(address=("127.0.0.1", 9), port=9, tls=TlsConfig(enabled=True, cafile=str(certs.ca)),
                      tls_resume=True)
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.tls_on and again.tls.cafile == str(certs.ca)


# ----------------------------------------------------------------- every wire mode, against a Python TLS peer

class TlsPeer:
    """A ThreadServer whose connections are TLS (Python's ssl, server side) and echo or answer the
    framed protocol; it counts what it received, its own figure to hold flood's against."""

    def __init__(self, certs, framed: bool = False) -> None:
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs.cert), str(certs.key))
        self.framed = framed
        self.lock = threading.Lock()
        self.received = self.messages = self.handshakes = 0
        self.srv = ThreadServer(self._handle)
        self.port = self.srv.port

    def _handle(self, raw) -> None:
        import ssl
        from threadserver import answer_framed
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.lock:
            self.handshakes += 1
        while True:
            if self.framed:
                if not answer_framed(s):
                    return
                with self.lock:
                    self.messages += 1
                continue
            data = s.recv(65536)
            if not data:
                return
            with self.lock:
                self.received += len(data)
            s.sendall(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.srv.close()


@pytest.mark.parametrize("mode", ["echo", "framed", "raw", "line", "connect"])
def test_every_wire_mode_over_tls_counts_what_the_peer_saw(certs, mode):
    extra = {"echo": ("--size", "100"), "framed": (), "raw": ("--send", "ping!", "--reply-bytes", "5"),
             "line": ("--send", "hello"), "connect": ("--size", "10")}[mode]
    with TlsPeer(certs, framed=mode == "framed") as peer:
        r, doc = flood(*tls_args(certs, peer.port, "--mode", mode, "--conns", "3", "--workers", "1",
                                 "--requests", "30", *extra, "--json"))
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: peer.handshakes == doc["tls"]["handshakes"], 5)
        if mode == "connect":       # churn: each cycle a TCP connect, a handshake, one echo, a close
            assert doc["connections"]["cycles"] == 30 == doc["tls"]["handshakes"]
            assert wait_until(lambda: peer.received == 30 * 10, 5)
        elif mode == "framed":
            assert wait_until(lambda: peer.messages == doc["requests"]["sent"] == 33, 5)
        else:
            size = {"echo": 100, "raw": 5, "line": 6}[mode]
            assert wait_until(lambda: peer.received == 33 * size, 5), (peer.received, doc["requests"])
            assert doc["tls"]["handshakes"] == 3
        assert doc["errors"] == []


def test_tls_over_a_local_dask_cluster(tmp_path, certs):
    """--cluster: the TlsConfig travels to the shards (it pickles); each makes its own context."""
    pytest.importorskip("distributed", reason="Dask not installed (pip install 'dask[distributed]')")
    with Redis(tmp_path, tls=certs) as redis:
        redis.reset()
        r, doc = flood(*tls_args(certs, redis.port, "--mode", "redis", "--conns", "4", "--cluster", "local:2",
                                 "--requests", "200", "--json"))
        assert r.returncode == 0, r.stderr
        assert doc["requests"]["sent"] == 204 == redis.calls()["ping"]
        assert doc["tls"]["handshakes"] == 4 == doc["handshake_us"]["count"]


def test_a_replacement_stalled_in_its_handshake_meets_the_connect_timeout(certs):
    """The first connection answers once and closes (Connection: close); its replacement's
    handshake is never answered: the connect timeout ends it, in the handshake phase."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.cert), str(certs.key))
    first, stop = threading.Event(), threading.Event()

    def handler(raw):
        if first.is_set():
            stop.wait(20)               # later connections: accepted, never a ServerHello
            return
        first.set()
        s = ctx.wrap_socket(raw, server_side=True)
        s.recv(65536)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        s.close()

    with ThreadServer(handler) as srv:
        r, doc = flood(*tls_args(certs, srv.port, "--mode", "http", "--conns", "1", "--workers", "1",
                                 "--duration", "5s", "--connect-timeout", "0.5s", "--json"))
        stop.set()
    assert errors_of(doc).get(("handshake", errors.TIMEOUT)) == 1, doc["errors"]
    assert doc["tls"]["handshakes"] == 1


def test_the_html_report_shows_the_handshake_and_the_tls_tally(tmp_path, certs):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install matplotlib)")
    from socktools.report import html
    with Nginx(tmp_path, tls=certs) as nginx:
        r, doc = flood(*tls_args(certs, nginx.port, "--mode", "http", "--path", "/close", "--conns", "1",
                                 "--workers", "1", "--requests", "5", "--tls-resume", "--json"))
        assert r.returncode == 0, r.stderr
    page = html.render(doc)
    assert "TLS handshake" in page and "6 handshakes" in page and "resumed 5 of 5 offered" in page


def test_tls_resume_in_connect_churn(certs):
    """--mode connect: each cycle is a new connection; with --tls-resume each offers the session
    the worker's latest handshake got (TLS 1.3: its ticket came with the echo)."""
    with TlsPeer(certs) as peer:
        r, doc = flood(*tls_args(certs, peer.port, "--mode", "connect", "--conns", "1", "--workers", "1",
                                 "--requests", "20", "--tls-resume", "--json"))
        assert r.returncode == 0, r.stderr
        tls = doc["tls"]
        assert doc["connections"]["cycles"] == 20 == tls["handshakes"]
        assert tls["offered"] == 19 and tls["resumed"] == 19

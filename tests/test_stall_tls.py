"""stall --tls: the full-buffer case through OpenSSL (SSLWantWriteError), and real TLS servers
(redis' --tls-port, nginx's ssl listener) that answer and close.  Certificates from trustme."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import socktools_cmd
from tests.peers import Nginx, Redis

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="stall reads Linux's TCP_INFO, queue ioctls and socket table")


def _stall(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(socktools_cmd("stall", *args), capture_output=True, text=True, timeout=60)


class _Sink:
    def __init__(self, server) -> None:
        self.server = server
        self.port = server.address[1]
        self.cafile = next(e["tls"]["cert"] for e in server.events if e.get("event") == "listening")


@pytest.fixture
def sink():
    """A TLS server that handshakes and never reads, named to stall as a target (--port):
    `socktools serve --mode sink --tls-self-signed`, trusted through --cafile."""
    pytest.importorskip("cryptography", reason="cryptography not installed (pip install cryptography)")
    from socktools.core.embedded import EmbeddedServer
    with EmbeddedServer(mode="sink", args=["--tls-self-signed"]) as server:
        yield _Sink(server)


def test_tls_full_buffer_is_ssl_want_write_with_both_queues_holding_records(sink):
    r = _stall("--port", str(sink.port), "--tls", "--cafile", sink.cafile, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "stalled" and doc["transport"] == "tls"
    assert doc["fill"]["exception"] == "SSLWantWriteError"
    assert doc["fill"]["errno_name"] == "SSL_ERROR_WANT_WRITE"
    t = doc["tls"]
    assert t["version"] in ("TLSv1.2", "TLSv1.3") and t["cipher"]
    assert t["plaintext_accepted"] == doc["settle"]["total_accepted"] > 0
    # the kernels hold TLS records: more bytes than the plaintext (headers and tags at least)
    assert t["ciphertext_written"] > t["plaintext_accepted"]
    snap = doc["snapshot"]
    a = snap["arithmetic"]
    assert a["counted"] == "TLS record bytes" and a["accepted"] == t["ciphertext_written"]
    assert a["in_queues"] == snap["receiver"]["recv_q"] + snap["sender"]["send_q"]
    # every record byte is in one of the queues or was read by the sink's TLS layer (it may take
    # records with the handshake's last flight): the sink's own count of bytes read says which
    read = -a["difference"]
    assert 0 <= read <= 65536
    sink.server.stop()
    assert sink.server.summary["bytes_in"] == t["handshake_bytes"] + read
    assert "not exposed by ssl.SSLSocket" in t["held_by_tls"]
    _check_inference(doc)
    from tests.test_json_schemas import validate
    validate(doc, "stall")


def test_tls_text_report_says_the_queues_hold_records(sink):
    r = _stall("--port", str(sink.port), "--tls", "--cafile", sink.cafile)
    assert r.returncode == 0, r.stderr
    assert "SSLWantWriteError" in r.stdout and "TLS layer (ssl.SSLSocket" in r.stdout
    assert "hold TLS records (ciphertext)" in r.stdout
    # the TLS layers' own bytes (its session tickets in our Recv-Q, records its TLS layer read
    # with the handshake) are said as such: not answers, not a reader, no deadlock
    text = " ".join(r.stdout.split())
    assert "The peer accepted the connection and never called recv()" in text
    assert "TLS session tickets" in text
    assert "deadlock" not in text and "but more slowly than this program writes" not in text


def test_tls_to_redis_tls_port_closed_by_its_output_buffer_limit(tmp_path, certs):
    with Redis(tmp_path, tls=certs) as redis:
        redis.command("CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0")
        r = _stall("--port", str(redis.port), "--tls", "--cafile", str(certs.ca), "--mode", "redis",
                   "--command", "SET k v", "--timeout", "20s", "--json")
        calls = redis.calls().get("set", 0)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "peer-closed" and doc["transport"] == "tls"
    assert doc["answer"]["decoder"] == "redis" and doc["answer"]["replies"][0] == "OK"
    assert 0 < calls <= doc["whole_requests"]


def test_tls_to_nginx_zeros_answered_400_and_closed(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:
        r = _stall("--port", str(nginx.port), "--tls", "--cafile", str(certs.ca), "--timeout", "5s")
    assert r.returncode == 1, r.stderr
    assert "The peer answered and closed the connection" in r.stdout and "HTTP 400" in r.stdout


def test_tls_failed_handshake_json_is_one_object(tmp_path, certs):
    with Nginx(tmp_path, tls=certs) as nginx:      # no --cafile: the test CA is unknown
        r = _stall("--port", str(nginx.port), "--tls", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["outcome"] == "failed" and doc["phase"] == "handshake"
    assert doc["error"].startswith("tls-")


def test_tls_own_sink_stalls_and_drains():
    # no target: the embedded sink with --tls-self-signed, trusted by exactly its certificate
    r = _stall("--tls", "--drain", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "stalled" and doc["peer"]["kind"] == "embedded"
    assert doc["peer"]["command"].endswith("--tls-self-signed")
    assert doc["config"]["tls"]["cafile"].endswith("/cert.pem")
    assert doc["fill"]["exception"] == "SSLWantWriteError"
    assert doc["snapshot"]["arithmetic"]["counted"] == "TLS record bytes"
    # all in the queues, but for what the sink's TLS layer may read with the handshake
    assert -65536 <= doc["snapshot"]["arithmetic"]["difference"] <= 0
    assert doc["drain"]["completed"] and doc["drain"]["final_writable"]
    _check_inference(doc)


def test_tls_own_sink_without_cryptography_says_what_to_install(tmp_path):
    # a cryptography that cannot be imported, first on the path of stall and of the sink it starts
    fake = tmp_path / "cryptography"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    for extra in ([], ["--json"]):
        r = subprocess.run(socktools_cmd("stall", "--tls", *extra), capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode == 3, r.stderr
        assert "--tls-self-signed needs the cryptography package: pip install cryptography" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"] == "missing-package" and "pip install cryptography" in doc["message"]


def _check_inference(doc) -> None:
    """Over TLS 1.3, the refused send()'s record bytes in the kernel and the rest that OpenSSL
    holds add up to one whole record of it (the partly written one)."""
    t = doc["tls"]
    if t["version"] != "TLSv1.3":
        pytest.skip(f"this OpenSSL negotiated {t['version']}: the held-bytes inference is for TLS 1.3 "
                    f"(one overhead for every suite)")
    assert t["records"] == -(-doc["settle"]["total_accepted"] // 16384)
    assert t["record_overhead"] == 22
    assert t["beyond_plaintext"] == 22 * t["records"] + t["refused_in_kernel"]
    record = min(doc["config"]["chunk"], 16384) + 22
    assert 0 < t["held_by_openssl"] <= record
    assert (t["refused_in_kernel"] + t["held_by_openssl"]) % record == 0


@pytest.mark.parametrize("in_kernel,held", [(1000, 16406 - 1000), (16406 + 500, 16406 - 500), (0, None)])
def test_the_held_bytes_inference_walks_the_refused_sends_records(in_kernel, held):
    from socktools.stall.tlsview import tls_view
    accepted, records = 2 * 65536, 8
    written = accepted + 22 * records + in_kernel
    v = tls_view({"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"}, written, accepted, records, 65536)
    assert v.refused_in_kernel == in_kernel and v.held_by_openssl == held
    assert v.beyond_plaintext == 22 * records + in_kernel


def test_no_inference_over_tls_1_2_or_without_the_kernels_count():
    from socktools.stall.tlsview import tls_view
    v12 = tls_view({"version": "TLSv1.2"}, 70000, 65536, 4, 65536)
    assert v12.record_overhead is None and v12.held_by_openssl is None and v12.beyond_plaintext == 4464
    none = tls_view({"version": "TLSv1.3"}, None, 65536, 4, 65536)
    assert none.ciphertext_written is None and none.held_by_openssl is None

"""`socktools serve --tls`: echo, framed and sink over TLS, mutual TLS, the self-signed
certificate, and what a client that gets it wrong costs (only its own connection).

Certificates come from trustme (tests/peers.py ``Certs``).  The clients are Python's ``ssl``
over a socket whose every byte is counted (:class:`WireClient`), so the server's own counts
(its JSON summary: TLS records in and out, handshakes, requests) can be held to what the
clients put on the wire; ``openssl s_client`` and ``redis-cli --tls`` are independent TLS
stacks.  The failure keys are also checked sans-I/O: two ``ssl.SSLObject``s over memory BIOs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from typing import Optional

import pytest
from click.testing import CliRunner

from socktools import errors, protocol, reference
from socktools.cli import main
from socktools.errors import OptionError
from socktools.tlsconf import ServerTlsConfig, fingerprint, server_context
from tests.conftest import children_of, socktools_cmd, wait_until
from tests.peers import Certs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """Another CA and its certificates: trusted by nobody here."""
    return Certs(tmp_path_factory.mktemp("stranger"))


def tls_args(c: Certs, *more: str) -> list:
    return ["--tls", "--cert", str(c.cert), "--key", str(c.key), *more]


class WireClient:
    """A blocking TLS client over ``ssl.SSLObject`` that counts the bytes it puts on and takes
    off the wire (what the server counts as ``bytes_in``/``bytes_out``)."""

    def __init__(self, address, ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.sent = 0          # wire bytes
        self.received = 0
        try:
            self._pump(self.obj.do_handshake)
        except BaseException:
            self.sock.close()
            raise

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)
            self.sent += len(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.received += len(data)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def _pump(self, step):
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            except ssl.SSLError:
                self._flush()             # our alert, as a socket-based client would send it
                raise
            self._flush()
            return result

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def recv_exactly(self, n: int) -> bytes:
        got = b""
        while len(got) < n:
            got += self._pump(lambda: self.obj.read(n - len(got)))
        return got

    def recv_message(self) -> protocol.Message:
        dec = protocol.Decoder()
        while True:
            event = dec.next_event()
            if event is not protocol.NEED_DATA:
                return event
            dec.receive_data(self._pump(lambda: self.obj.read(65536)))

    def close(self) -> None:
        """close_notify, then read to the server's EOF (its close_notify and FIN), counting."""
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)
        self.read_to_eof()

    def read_to_eof(self) -> None:
        """Count what the server still sends (its close_notify) until it closes."""
        while self._fill():
            pass
        self.sock.close()


def _pair(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, first_client_bytes: Optional[bytes] = None):
    """Run a handshake between two SSLObjects over memory (no sockets); the server's exception."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    if first_client_bytes is not None:
        s_in.write(first_client_bytes)
    for _ in range(20):
        for obj, out, into in ((client, c_out, s_in), (server, s_out, c_in)):
            if obj is client and first_client_bytes is not None:
                continue
            try:
                obj.do_handshake()
                if obj is server:
                    obj.read(1)           # TLS 1.3: the client certificate is checked after the handshake
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if obj is server:
                    return exc
            data = out.read()
            if data:
                into.write(data)
        if first_client_bytes is not None and not s_in.pending:
            s_in.write_eof()
    return None


def _server_ctx(c: Certs, client_ca: Optional[Certs] = None) -> ssl.SSLContext:
    return server_context(ServerTlsConfig(cert=str(c.cert), key=str(c.key),
                                          client_ca=str(client_ca.ca) if client_ca else None))


# --------------------------------------------------------------------- config and keys (no sockets)

def test_server_config_names_the_option_that_is_wrong(certs, tmp_path):
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    cases = [
        ({}, "cert"),                                          # --tls and nothing else
        ({"cert": str(certs.cert)}, "key"),
        ({"key": str(certs.key)}, "cert"),
        ({"self_signed": True, "cert": str(certs.cert)}, "cert"),
        ({"cert": str(not_pem), "key": str(certs.key)}, "cert"),
        ({"cert": str(certs.cert), "key": str(certs.key), "client_ca": str(tmp_path / "none.pem")}, "client_ca"),
        ({"cert": str(certs.cert), "key": str(certs.key), "tls_min": "1.3", "tls_max": "1.2"}, "tls_min"),
        ({"cert": str(certs.cert), "key": str(certs.key), "alpn": ("",)}, "alpn"),
        ({"cert": str(certs.cert), "key": str(certs.key), "ciphers": "NO-SUCH-CIPHER"}, "ciphers"),
    ]
    for fields, option in cases:
        with pytest.raises(OptionError) as caught:
            ServerTlsConfig(**fields)
        assert caught.value.option == option, (fields, caught.value)
    assert ServerTlsConfig(self_signed=True).cert is None


def test_server_context_refuses_a_key_that_is_not_the_certificates(certs):
    with pytest.raises(OptionError) as caught:
        server_context(ServerTlsConfig(cert=str(certs.cert), key=str(certs.client_key)))
    assert caught.value.option == "key"
    ctx = _server_ctx(certs, client_ca=certs)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert _server_ctx(certs).verify_mode == ssl.CERT_NONE


def test_fingerprint_is_the_sha256_of_the_certificate_der(certs):
    with open(certs.cert) as fh:
        der = ssl.PEM_cert_to_DER_cert(fh.read().split("-----END CERTIFICATE-----")[0]
                                       + "-----END CERTIFICATE-----\n")
    expected = hashlib.sha256(der).hexdigest().upper()
    got = fingerprint(str(certs.cert))
    assert got.replace(":", "") == expected and len(got) == 95


def test_server_side_failure_keys_say_what_the_client_did(certs, stranger):
    """Real ssl exceptions from a server SSLObject, each under the key worded from its side."""
    good_client = certs.client_context()
    assert errors.tls_server_key(_pair(_server_ctx(certs), good_client, b"GET / HTTP/1.1\r\n\r\n")) \
        == errors.TLS_PLAINTEXT_TO_TLS
    assert errors.tls_server_key(_pair(_server_ctx(certs), good_client, b"PING\r\n")) == errors.TLS_PLAINTEXT_TO_TLS
    assert errors.tls_server_key(_pair(_server_ctx(certs), good_client, b"")) == "tls-client-left-in-handshake"
    assert errors.tls_server_key(_pair(_server_ctx(certs, client_ca=certs), good_client)) \
        == "tls-client-sent-no-certificate"
    assert errors.tls_server_key(_pair(_server_ctx(certs, client_ca=certs),
                                       stranger.client_context(client_cert=True))) \
        == "tls-client-refused-certificate"          # the stranger's client does not trust our CA
    foreign_cert = ssl.create_default_context(cafile=str(certs.ca))
    foreign_cert.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
    assert errors.tls_server_key(_pair(_server_ctx(certs, client_ca=certs), foreign_cert)) \
        == "tls-client-certificate-rejected"
    assert _pair(_server_ctx(certs, client_ca=certs), certs.client_context(client_cert=True)) is None
    for key in ("tls-client-left-in-handshake", "tls-client-sent-no-certificate", "tls-client-refused-certificate",
                "tls-client-certificate-rejected", "tls-client-alert"):
        assert key in errors.EXPLANATIONS


# --------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv,option", [
    (["--cert", "C"], "--cert"),
    (["--client-ca", "C"], "--client-ca"),
    (["--tls"], "--cert"),
    (["--tls-min", "1.3"], "--tls-min"),
])
def test_tls_options_without_tls_or_with_a_piece_missing_are_usage_errors(argv, option):
    r = CliRunner().invoke(main, ["serve", *argv])
    assert r.exit_code == 2, r.output
    assert option in r.output


def test_mismatched_key_and_self_signed_with_cert_are_usage_errors(certs):
    r = CliRunner().invoke(main, ["serve", "--tls", "--cert", str(certs.cert), "--key", str(certs.client_key)])
    assert r.exit_code == 2 and "--key" in r.output and "not the key" in r.output, r.output
    r = CliRunner().invoke(main, ["serve", "--tls-self-signed", "--cert", str(certs.cert), "--key", str(certs.key)])
    assert r.exit_code == 2 and "--cert" in r.output and "--tls-self-signed" in r.output, r.output
    r = CliRunner().invoke(main, [*["serve"], *tls_args(certs, "--tls-min", "1.3", "--tls-max", "1.2")])
    assert r.exit_code == 2 and "--tls-min" in r.output, r.output


# --------------------------------------------------------------------- the modes over TLS

def test_echo_over_tls_counts_equal_the_clients_wire_bytes(start_server, certs):
    srv = start_server("--mode", "echo", *tls_args(certs), json_events=True)
    listening = json.loads(srv.first_line)
    assert listening["tls"]["cert"] == str(certs.cert) and listening["tls"]["self_signed"] is False
    sent = received = 0
    for i in range(3):
        client = WireClient(srv.address, certs.client_context())
        payload = bytes(range(256)) * (4 + i)
        client.send(payload)
        assert client.recv_exactly(len(payload)) == payload
        assert client.obj.version() in ("TLSv1.2", "TLSv1.3")
        client.close()
        sent, received = sent + client.sent, received + client.received
    srv.stop()
    summary = srv.final_summary()
    assert summary["accepted"] == summary["closed"] == summary["handshakes"] == 3
    assert summary["bytes_in"] == sent and summary["bytes_out"] == received
    assert summary["errors"] == {}


def test_framed_over_tls_answers_every_request(start_server, certs):
    srv = start_server("--mode", "framed", *tls_args(certs), json_events=True)
    client = WireClient(srv.address, certs.client_context())
    for _ in range(4):
        client.send(reference.make_request("search", "morpheus", keep_alive=True))
        assert client.recv_message().value == {"result": "Follow the white rabbit. \U0001f430"}
    client.send(reference.make_request("search", "ring"))     # not keep-alive: the server closes
    assert client.recv_message().value["result"].startswith("In the caves")
    client.read_to_eof()
    srv.stop()
    summary = srv.final_summary()
    assert summary["requests"] == summary["responses"] == 5
    assert summary["handshakes"] == 1 and summary["protocol_errors"] == {}
    assert summary["bytes_in"] == client.sent and summary["bytes_out"] == client.received


def test_sink_over_tls_completes_the_handshake_then_reads_only_after_sigusr1(start_server, certs):
    srv = start_server("--mode", "sink", *tls_args(certs), json_events=True)
    client = WireClient(srv.address, certs.client_context())      # the handshake needs the sink to read
    client.send(b"z" * 3000)
    srv.drain()
    client.close()
    srv.stop()
    summary = srv.final_summary()
    assert summary["handshakes"] == 1 and summary["bytes_out"] == client.received
    assert summary["bytes_in"] == client.sent


def test_two_supervised_workers_each_serve_tls(start_server, certs):
    srv = start_server("--mode", "echo", "--workers", "2", *tls_args(certs), json_events=True)
    assert wait_until(lambda: len(children_of(srv.pid)) == 2)
    clients = [WireClient(srv.address, certs.client_context()) for _ in range(8)]
    for i, client in enumerate(clients):
        client.send(b"%d" % i)
        assert client.recv_exactly(1) == b"%d" % i
    for client in clients:
        client.close()
    srv.stop()
    summary = srv.final_summary()
    assert summary["handshakes"] == summary["accepted"] == 8
    assert summary["bytes_in"] == sum(c.sent for c in clients)
    assert summary["bytes_out"] == sum(c.received for c in clients)


# --------------------------------------------------------------------- mutual TLS

def test_client_ca_refuses_a_client_without_a_certificate_and_serves_one_with(start_server, certs):
    srv = start_server("--mode", "echo", *tls_args(certs, "--client-ca", str(certs.ca)), json_events=True)
    with pytest.raises(ssl.SSLError):
        bare = WireClient(srv.address, certs.client_context())     # TLS 1.3: refused at the first read
        bare.send(b"hi")
        bare.recv_exactly(2)
    assert srv.wait_for_log("tls-client-sent-no-certificate")
    good = WireClient(srv.address, certs.client_context(client_cert=True))
    good.send(b"hello")
    assert good.recv_exactly(5) == b"hello"
    assert good.obj.getpeercert()["subject"]
    good.close()
    served = 1
    if shutil.which("redis-cli"):
        # another TLS stack presenting its client certificate: the echo of its PING
        out = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs.ca), "--cert", str(certs.client_cert),
                              "--key", str(certs.client_key), "-h", "127.0.0.1", "-p", str(srv.port), "PING"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == "PING", out
        served += 1
    srv.stop()
    summary = srv.final_summary()
    assert summary["errors"] == {"tls-client-sent-no-certificate": 1}
    assert summary["handshakes"] == served and summary["accepted"] == served + 1


# --------------------------------------------------------------------- the throwaway certificate

def test_self_signed_fingerprint_is_the_served_certificates(start_server):
    pytest.importorskip("cryptography", reason="--tls-self-signed needs cryptography (pip install cryptography)")
    srv = start_server("--mode", "echo", "--tls-self-signed", json_events=True)
    tls = json.loads(srv.first_line)["tls"]
    assert tls["self_signed"] is True and set(tls["names"]) == {"localhost", "127.0.0.1", "::1"}
    assert os.stat(os.path.dirname(tls["cert"])).st_mode & 0o077 == 0      # a private folder
    ctx = ssl.create_default_context(cafile=tls["cert"])                    # verification on
    for name in ("127.0.0.1", "localhost"):
        client = WireClient(srv.address, ctx, server_hostname=name)
        served = client.obj.getpeercert(binary_form=True)
        digest = hashlib.sha256(served).hexdigest().upper()
        assert tls["sha256"] == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        client.send(b"ok")
        assert client.recv_exactly(2) == b"ok"
        client.close()
    srv.stop()
    assert not os.path.exists(tls["cert"]) and not os.path.exists(os.path.dirname(tls["cert"]))


def test_self_signed_human_lines_tell_a_client_what_to_trust(start_server):
    pytest.importorskip("cryptography", reason="--tls-self-signed needs cryptography (pip install cryptography)")
    srv = start_server("--mode", "echo", "--tls-self-signed")
    assert "TLS echo server listening on 127.0.0.1:" in srv.first_line
    lines = []
    deadline = time.monotonic() + 30
    while not any("--cafile" in line for line in lines):
        line = srv._readline(deadline)               # the raw reader EmbeddedServer used for the first line
        assert line is not None, f"no --cafile line in {lines}"
        lines.append(line)
    text = "".join(lines)
    assert "SHA-256 fingerprint" in text and "self-signed for localhost, 127.0.0.1, ::1" in text
    cert = text.split("--cafile ", 1)[1].split()[0]
    if shutil.which("openssl"):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-CAfile", cert,
                              "-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"],
                             input=b"", capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert b"Verification: OK" in out.stderr + out.stdout
    srv.stop()


# --------------------------------------------------------------------- a client that gets it wrong

def test_a_plaintext_client_costs_only_its_own_connection(start_server, certs):
    srv = start_server("--mode", "echo", *tls_args(certs), json_events=True)
    with socket.create_connection(srv.address, timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(4096)               # the server's alert record, then it closes
        except ConnectionResetError:
            answer = b""
        assert answer[:1] in (b"", b"\x15")
    assert srv.wait_for_log("tls-plaintext-to-tls-port")
    assert "Traceback" not in srv.log_seen
    client = WireClient(srv.address, certs.client_context())            # and the server still serves
    client.send(b"still here")
    assert client.recv_exactly(10) == b"still here"
    client.close()
    srv.stop()
    summary = srv.final_summary()
    assert summary["errors"] == {errors.TLS_PLAINTEXT_TO_TLS: 1}
    assert summary["accepted"] == 2 and summary["handshakes"] == 1 and summary["open"] == 0


def test_a_client_that_does_not_trust_the_certificate_is_logged_by_its_alert(start_server, certs, stranger):
    srv = start_server("--mode", "echo", *tls_args(certs), json_events=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        WireClient(srv.address, stranger.client_context())
    assert srv.wait_for_log("tls-client-refused-certificate")
    srv.stop()
    assert srv.final_summary()["errors"] == {"tls-client-refused-certificate": 1}


# --------------------------------------------------------------------- independent clients

def test_request_tls_and_redis_cli_tls_against_serve(start_server, certs):
    srv = start_server("--mode", "echo", *tls_args(certs), json_events=True)
    out = subprocess.run(socktools_cmd("request", "--tls", "--cafile", str(certs.ca), "--port", str(srv.port),
                                       "--mode", "line", "--send", "hello over tls"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(b"hello over tls\n")      # request shows a line reply as bytes
    calls = 1
    if shutil.which("redis-cli"):
        # redis-cli's own TLS (OpenSSL via hiredis): the echo of its PING is an array holding "PING"
        out = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs.ca), "-h", "127.0.0.1",
                              "-p", str(srv.port), "PING"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "PING"
        calls += 1
    srv.stop()
    summary = srv.final_summary()
    assert summary["handshakes"] == calls and summary["errors"] == {}


def test_tls_over_a_unix_socket(tmp_path, certs):
    """--tls and --unix together: the handshake over AF_UNIX, the name checked is the certificate's."""
    from tests.test_serve_unix import UnixServer
    srv = UnixServer(tmp_path / "tls.sock", "--mode", "echo", *tls_args(certs))
    try:
        assert srv.listening["tls"]["cert"] == str(certs.cert)
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(10)
        raw.connect(srv.path)
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"over unix")
            got = b""
            while len(got) < 9:
                got += s.recv(64)
            assert got == b"over unix"
            s.unwrap()           # close_notify both ways, then the socket closes
    finally:
        summary = srv.stop()
    assert summary["handshakes"] == 1 and summary["errors"] == {}
    assert not os.path.exists(srv.path)


def test_the_stats_line_and_summary_show_handshakes_only_with_tls():
    from socktools.serve.report import render_rates, render_stats
    from socktools.serve.stats import ServerStats
    plain = ServerStats(accepted=10, closed=10).to_dict()
    tls = ServerStats(accepted=10, closed=10, handshakes=8).to_dict()
    assert "handshake" not in render_rates(plain, {}, 2.0) and "handshake" not in render_stats(plain)
    assert "4.0 handshakes/s" in render_rates(tls, {}, 2.0)
    assert "TLS handshakes 8" in render_stats(tls)
    assert ServerStats.from_dict(tls).add(ServerStats.from_dict(tls)).handshakes == 16


def test_alpn_and_version_bounds_reach_the_handshake(start_server, certs):
    srv = start_server("--mode", "echo", *tls_args(certs, "--alpn", "http/1.1", "--tls-min", "1.3"),
                       json_events=True)
    offer = certs.client_context()
    offer.set_alpn_protocols(["h2", "http/1.1"])
    client = WireClient(srv.address, offer)
    assert client.obj.selected_alpn_protocol() == "http/1.1" and client.obj.version() == "TLSv1.3"
    client.close()
    old = certs.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        WireClient(srv.address, old)
    assert srv.wait_for_log("tls-no-common-version")
    srv.stop()
    summary = srv.final_summary()
    assert summary["errors"] == {"tls-no-common-version": 1} and summary["handshakes"] == 1

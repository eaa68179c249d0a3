"""`request --tls`: the certificate chain the server sent, and the TLS record layer in
--show-bytes -- against nginx's ``ssl`` listener, with certificates made by trustme; the record
splitter itself fed without sockets (whole, byte by byte, at random splits)."""

from __future__ import annotations

import datetime
import json
import random
import re
import ssl

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.tlsinfo import EXPIRY_WARNING_DAYS, MAX_RECORD, CertInfo, TlsRecords, expiry_words
from tests.peers import Certs, Nginx, Redis
from tests.test_json_schemas import validate


@pytest.fixture(scope="module")
def chain_certs(tmp_path_factory):
    """A leaf issued by an intermediate CA: the server sends two certificates."""
    return Certs(tmp_path_factory.mktemp("certs"), intermediate=True)


@pytest.fixture(scope="module")
def nginx_chain(tmp_path_factory, chain_certs):
    with Nginx(tmp_path_factory.mktemp("nginx"), tls=chain_certs) as server:
        yield server


def run(*args):
    return CliRunner().invoke(main, ["request", *map(str, args)])


def test_the_chain_as_sent_is_shown_leaf_first_with_names_sans_and_days_left(nginx_chain, chain_certs):
    r = run("--port", nginx_chain.port, "--mode", "http", "--tls", "--cafile", chain_certs.ca)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("HTTP 200")                       # stdout stays the reply
    err = r.stderr
    assert "certificate chain: 2 sent by the server, verified" in err
    leaf_at, inter_at = err.index("[0] subject: O=trustme"), err.index("[1] subject: O=trustme")
    assert leaf_at < inter_at
    leaf, inter = err[leaf_at:inter_at], err[inter_at:]
    assert "SANs: IP:127.0.0.1, DNS:localhost" in leaf and "Testing cert" in leaf
    field = lambda text, name: text.split(f"{name}: ", 1)[1].split("\n", 1)[0]   # noqa: E731
    assert field(leaf, "issuer") == field(inter, "subject")          # the intermediate signed the leaf
    assert field(inter, "issuer") != field(inter, "subject")         # and the root the intermediate
    assert "not after 3000-01-01 00:00 UTC (" in leaf and "days left)" in leaf
    assert "EXPIRED" not in err and "expires in" not in err


def test_the_json_chain_follows_the_schema(nginx_chain, chain_certs):
    r = run("--port", nginx_chain.port, "--mode", "http", "--tls", "--cafile", chain_certs.ca, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc, "request")
    tls = doc["tls"]
    assert tls["verified"] is True and tls["chain_sent"] == 2 and len(tls["chain"]) == 2
    leaf, inter = tls["chain"]
    assert leaf["sans"] == ["IP:127.0.0.1", "DNS:localhost"] and leaf["issuer"] == inter["subject"]
    assert leaf["not_after"] == "3000-01-01T00:00:00Z" and leaf["days_left"] > 300_000
    assert leaf["expired"] is False and leaf["expiring"] is False
    assert tls["version"] == "TLSv1.3" and tls["cipher"].startswith("TLS_") and "alpn" in tls


def test_insecure_still_shows_the_chain_and_says_it_is_not_verified(tmp_path):
    """A server the client does not trust at all: the chain is shown as it came, unverified."""
    certs = Certs(tmp_path)
    with Redis(tmp_path, tls=certs) as server:
        r = run("--port", server.port, "--mode", "redis", "--tls", "--insecure")
        j = run("--port", server.port, "--mode", "redis", "--tls", "--insecure", "--json")
    assert r.exit_code == 0 and r.stdout.strip() == "PONG", r.output
    # redis-server sends its CA after the leaf (OpenSSL builds the chain from --tls-ca-cert-file)
    assert "certificate chain: 2 sent by the server, NOT verified (insecure)" in r.stderr
    assert "SANs: IP:127.0.0.1, DNS:localhost" in r.stderr
    doc = json.loads(j.stdout)
    validate(doc, "request")
    assert doc["tls"]["verified"] is False and doc["tls"]["chain"][0]["sans"] == ["IP:127.0.0.1", "DNS:localhost"]


def test_a_certificate_expiring_in_10_days_says_so(tmp_path):
    soon = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=10, hours=1)
    certs = Certs(tmp_path, not_after=soon.replace(tzinfo=None))
    with Redis(tmp_path, tls=certs) as server:
        r = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", certs.ca)
        j = run("--port", server.port, "--mode", "redis", "--tls", "--cafile", certs.ca, "--json")
    assert r.exit_code == 0, r.output
    assert "(expires in 10 days)" in r.stderr
    assert soon.strftime("not after %Y-%m-%d %H:%M UTC") in r.stderr
    leaf = json.loads(j.stdout)["tls"]["chain"][0]
    assert leaf["days_left"] == 10 and leaf["expiring"] is True and leaf["expired"] is False


def test_an_expired_certificate_with_insecure_shows_expired(tmp_path):
    certs = Certs(tmp_path, expired=True)
    with Redis(tmp_path, tls=certs) as server:
        r = run("--port", server.port, "--mode", "redis", "--tls", "--insecure")
    assert r.exit_code == 0, r.output
    assert "not after 2020-02-01 00:00 UTC (EXPIRED " in r.stderr and " days ago)" in r.stderr


def test_show_bytes_lists_the_tls_records_and_the_plaintext(nginx_chain, chain_certs):
    """TLS 1.2 shows the most in the clear: the server's flight named message by message,
    then ChangeCipherSpec and the encrypted Finished; the request and reply as plaintext."""
    r = run("--port", nginx_chain.port, "--mode", "http", "--tls", "--cafile", chain_certs.ca, "--tls-max", "1.2",
            "--show-bytes")
    assert r.exit_code == 0, r.output
    out = r.stdout
    records = [line.strip() for line in out.splitlines() if line.startswith(("  > ", "  < "))]
    assert records[0].startswith("> handshake ") and records[0].endswith(": ClientHello")
    server_flight = [x for x in records if x.startswith("< handshake") and "ServerHello" in x]
    assert server_flight and "Certificate" in server_flight[0] + "".join(records)
    assert any("ServerHelloDone" in x for x in records)
    assert "> change_cipher_spec 1 bytes" in records and "< change_cipher_spec 1 bytes" in records
    assert any(re.fullmatch(r"> handshake \d+ bytes \(encrypted\)", x) for x in records)   # Finished
    assert any(x.startswith("> application_data ") for x in records)
    assert any(x.startswith("< application_data ") for x in records)
    assert "TLS records as they crossed the wire" in out
    assert ">>> sent " in out and "b'GET / HTTP/1.1\\r\\n" in out                  # and the plaintext
    assert "<<< received " in out and "HTTP/1.1 200 OK" in out


def test_the_record_bytes_add_up_to_what_the_kernel_carried(nginx_chain, chain_certs):
    r = run("--port", nginx_chain.port, "--mode", "http", "--tls", "--cafile", chain_certs.ca, "--json",
            "--show-bytes")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)                     # --json: the records in the document, no text trace
    validate(doc, "request")
    tls = doc["tls"]
    assert tls["records_total"] == len(tls["records"])
    for way in ("out", "in"):
        mine = [x for x in tls["records"] if x["direction"] == way]
        assert sum(5 + x["length"] for x in mine) == tls["wire_bytes"][way]
    assert tls["records"][0]["what"] == ["ClientHello"] and tls["records"][0]["direction"] == "out"


# ---------------------------------------------------------------- the splitter, without sockets
def _record(rtype: int, body: bytes, version: int = 0x0303) -> bytes:
    return bytes([rtype]) + version.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def _hs(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


# a TLS 1.2 server's flight: ServerHello+Certificate (the certificate spilling into a second
# record), ServerHelloDone, ChangeCipherSpec, an encrypted Finished, application data, an alert
_CERT = _hs(11, b"c" * 3000)
_FLIGHT_MSGS = _hs(2, b"s" * 70) + _CERT
_STREAM = (_record(22, _FLIGHT_MSGS[:1000]) + _record(22, _FLIGHT_MSGS[1000:] + _hs(14, b"")) +
           _record(20, b"\x01") + _record(22, b"f" * 40) + _record(23, b"a" * 100) + _record(21, b"\x01\x00"))
_EXPECTED = ["handshake 1000 bytes: ServerHello, Certificate", f"handshake {len(_FLIGHT_MSGS) - 1000 + 4} bytes: "
             "ServerHelloDone", "change_cipher_spec 1 bytes", "handshake 40 bytes (encrypted)",
             "application_data 100 bytes", "alert 2 bytes (encrypted)"]


@pytest.mark.parametrize("split", ["whole", "bytewise", "random"])
def test_records_are_the_same_however_the_bytes_arrive(split):
    rng = random.Random(7)
    if split == "whole":
        chunks = [_STREAM]
    elif split == "bytewise":
        chunks = [_STREAM[i:i + 1] for i in range(len(_STREAM))]
    else:
        cuts = sorted(rng.sample(range(1, len(_STREAM)), 40))
        chunks = [_STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(_STREAM)])]
    splitter = TlsRecords()
    got = [r for chunk in chunks for r in splitter.feed(chunk)]
    assert [r.describe() for r in got] == _EXPECTED
    assert not splitter.broken and splitter.unparsed == 0


def test_an_alert_in_the_clear_is_named():
    (alert,) = TlsRecords().feed(_record(21, b"\x02\x30"))
    assert alert.what == ("fatal", "unknown_ca") and alert.describe() == "alert 2 bytes: fatal, unknown_ca"


def test_bytes_that_are_not_tls_stop_the_parsing_and_are_counted():
    splitter = TlsRecords()
    assert splitter.feed(b"HTTP/1.1 400 Bad Request\r\n") == []
    assert splitter.broken and splitter.unparsed == len(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_record_longer_than_tls_allows_is_not_buffered():
    splitter = TlsRecords()
    head = bytes([22, 3, 3]) + (MAX_RECORD + 1).to_bytes(2, "big")
    assert splitter.feed(head + b"x" * 100) == [] and splitter.broken and splitter.unparsed == 105


def test_expiry_words_and_days_left():
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)
    cert = CertInfo("CN=a", "CN=b", (), now - datetime.timedelta(days=1), now + datetime.timedelta(days=10, hours=2))
    assert cert.days_left(now) == 10 and cert.to_dict(now)["expiring"] is True
    assert expiry_words(10) == "expires in 10 days" and expiry_words(1) == "expires in 1 day"
    assert expiry_words(0) == "expires today" and expiry_words(-3) == "EXPIRED 3 days ago"
    assert expiry_words(EXPIRY_WARNING_DAYS) == "" and expiry_words(EXPIRY_WARNING_DAYS - 1) != ""
    gone = CertInfo("CN=a", "CN=b", (), now, now - datetime.timedelta(hours=1))
    assert gone.days_left(now) == -1 and gone.to_dict(now)["expired"] is True


def test_cert_info_from_what_openssl_decodes():
    info = {"subject": ((("organizationName", "Example"),), (("commonName", "example.test"),)),
            "issuer": ((("commonName", "Example CA"),),), "notBefore": "Jan  1 00:00:00 2026 GMT",
            "notAfter": "Mar  1 12:30:00 2027 GMT", "subjectAltName": (("DNS", "example.test"), ("IP Address", "::1"))}
    cert = CertInfo.from_info(info)
    assert cert.subject == "O=Example, CN=example.test" and cert.issuer == "CN=Example CA"
    assert cert.sans == ("DNS:example.test", "IP:::1")
    assert cert.not_after == datetime.datetime(2027, 3, 1, 12, 30, tzinfo=datetime.timezone.utc)
    assert ssl.cert_time_to_seconds(info["notAfter"]) == cert.not_after.timestamp()


def test_a_long_tls_reply_lists_records_up_to_the_cap_and_counts_the_rest(nginx_chain, chain_certs, monkeypatch):
    from socktools.request import client
    monkeypatch.setattr(client, "MAX_RECORDS_SHOWN", 5)
    r = run("--port", nginx_chain.port, "--mode", "http", "--path", "/big", "--tls", "--cafile", chain_certs.ca,
            "--json", "--show-bytes")
    assert r.exit_code == 0, r.output
    tls = json.loads(r.stdout)["tls"]
    assert len(tls["records"]) == 5 and tls["records_total"] > 10      # 100 kB in 16 KiB records, and more
    text = run("--port", nginx_chain.port, "--mode", "http", "--path", "/big", "--tls", "--cafile",
               chain_certs.ca, "--show-bytes")
    assert "more records counted, not listed)" in text.stdout

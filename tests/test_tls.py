"""The TLS foundation without sockets: TlsConfig's checks, the context it makes, and the words
(socktools.errors) for real OpenSSL failures -- made by handshakes between two ``SSLObject``s
over memory BIOs, so every error here is one OpenSSL really raised."""

from __future__ import annotations

import datetime
import pickle
import ssl

import pytest

from socktools import errors
from socktools.errors import OptionError
from socktools.tlsconf import TlsConfig, client_context, server_name

trustme = pytest.importorskip("trustme", reason="trustme not installed (pip install trustme)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, an expired one."""
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.socktools.test")
    expired = ca.issue_cert("127.0.0.1", not_before=datetime.datetime(2020, 1, 1),
                            not_after=datetime.datetime(2020, 2, 1))
    paths = {"ca": tmp / "ca.pem", "client_cert": tmp / "client.pem", "client_key": tmp / "client.key",
             "server_key": tmp / "server.key", "notpem": tmp / "notpem.txt"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    paths["notpem"].write_text("not a certificate\n")
    return {"ca_obj": ca, "server": server, "expired": expired, "tmp": tmp,
            **{k: str(v) for k, v in paths.items()}}


# ------------------------------------------------------------------ TlsConfig's checks

def _bad_cases(pki):
    missing = str(pki["tmp"] / "missing.pem")
    return [
        ({"sni": "example.test"}, "sni"),                      # a TLS option without --tls
        ({"insecure": True}, "insecure"),
        ({"alpn": ("h2",)}, "alpn"),
        ({"enabled": True, "cert": pki["client_cert"]}, "cert"),          # --cert without --key
        ({"enabled": True, "key": pki["client_key"]}, "key"),
        ({"enabled": True, "tls_min": "1.3", "tls_max": "1.2"}, "tls_min"),
        ({"enabled": True, "tls_min": "1.1"}, "tls_min"),
        ({"enabled": True, "cafile": missing}, "cafile"),
        ({"enabled": True, "cafile": pki["notpem"]}, "cafile"),
        ({"enabled": True, "cafile": "ca\udcff.pem"}, "cafile"),          # bytes that are not UTF-8
        ({"enabled": True, "capath": pki["ca"]}, "capath"),               # a file, not a folder
        ({"enabled": True, "ciphers": "NO-SUCH-CIPHER"}, "ciphers"),
        ({"enabled": True, "alpn": ("",)}, "alpn"),
        ({"enabled": True, "alpn": ("x" * 256,)}, "alpn"),
        ({"enabled": True, "sni": "two words"}, "sni"),
        ({"enabled": True, "keylog": str(pki["tmp"] / "no-such-dir" / "keys.log")}, "keylog"),
    ]


def test_every_bad_value_is_refused_naming_its_option(pki):
    for fields, option in _bad_cases(pki):
        with pytest.raises(OptionError) as info:
            TlsConfig(**fields)
        assert info.value.option == option, (fields, info.value.option, str(info.value))


def test_a_good_config_is_frozen_and_pickles(pki):
    cfg = TlsConfig(enabled=True, sni="localhost", cafile=pki["ca"], cert=pki["client_cert"],
                    key=pki["client_key"], tls_min="1.2", tls_max="1.3", alpn=["http/1.1", "h2"])
    assert cfg.alpn == ("http/1.1", "h2")
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(AttributeError):
        cfg.sni = "other"          # type: ignore[misc]
    assert server_name(cfg, "127.0.0.1") == "localhost"
    assert server_name(TlsConfig(enabled=True), "127.0.0.1") == "127.0.0.1"


def test_the_context_verifies_by_default_and_insecure_turns_both_checks_off(pki):
    ctx = client_context(TlsConfig(enabled=True, cafile=pki["ca"], tls_min="1.3", alpn=("h2",)))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    ctx = client_context(TlsConfig(enabled=True, insecure=True, tls_max="1.2"))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2


def test_a_key_that_is_not_the_certificates_is_refused_naming_key(pki):
    cfg = TlsConfig(enabled=True, cert=pki["client_cert"], key=pki["server_key"])   # both PEM, not a pair
    with pytest.raises(OptionError) as info:
        client_context(cfg)
    assert info.value.option == "key"


def test_keylog_from_the_option_or_from_sslkeylogfile(pki, monkeypatch):
    env_file, opt_file = str(pki["tmp"] / "env.keys"), str(pki["tmp"] / "opt.keys")
    monkeypatch.setenv("SSLKEYLOGFILE", env_file)
    assert client_context(TlsConfig(enabled=True)).keylog_filename == env_file
    assert client_context(TlsConfig(enabled=True, keylog=opt_file)).keylog_filename == opt_file
    monkeypatch.setenv("SSLKEYLOGFILE", str(pki["tmp"] / "no-such-dir" / "k.log"))
    with pytest.raises(OptionError) as info:
        client_context(TlsConfig(enabled=True))
    assert info.value.option == "keylog" and "SSLKEYLOGFILE" in str(info.value)


# ------------------------------------------------------------------ real OpenSSL failures, in memory

def _handshake(client_ctx, server_ctx, name="127.0.0.1"):
    """Pump a client and a server SSLObject against each other; the client's SSLError, or None.
    After the handshake the client reads once: a TLS 1.3 server's verdict on the client
    certificate (certificate_required) arrives only then."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = False
    for _ in range(20):                  # a handshake is 2-3 flights each way; 20 is plenty
        try:
            if client_done:
                client.read(1)
            else:
                client.do_handshake()
                client_done = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        s_in.write(c_out.read())
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass                         # the server's alert is in s_out: the client meets it next
        c_in.write(s_out.read())
    return None


def _server(pki, cert="server", **kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki[cert].configure_cert(ctx)
    for attr, value in kw.items():
        setattr(ctx, attr, value)
    return ctx


def _client(pki, trust=True, **kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trust:
        ctx.load_verify_locations(pki["ca"])
    for attr, value in kw.items():
        setattr(ctx, attr, value)
    return ctx


def _key_and_line(exc):
    key = errors.exception_key(exc)
    return key, errors.one_line(exc, "TLS handshake with 127.0.0.1:1")


def test_a_good_handshake_raises_nothing(pki):
    assert _handshake(_client(pki), _server(pki)) is None


def test_verification_reasons_have_their_keys_and_words(pki):
    cases = [
        (_handshake(_client(pki, trust=False), _server(pki)), "tls-unknown-ca", "does not trust"),
        (_handshake(_client(pki), _server(pki), name="wrong.example"), "tls-hostname-mismatch",
         "not for the name"),
        (_handshake(_client(pki), _server(pki, cert="expired")), "tls-expired", "expired"),
    ]
    for exc, key, words in cases:
        assert isinstance(exc, ssl.SSLCertVerificationError), (key, exc)
        got, line = _key_and_line(exc)
        assert got == key, (got, exc)
        assert words in line and "errno" not in line, line


def test_a_self_signed_certificate_is_named_so(pki, tmp_path):
    ca = pki["ca_obj"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.cert_pem.write_to_path(str(tmp_path / "self.pem"))
    ca.private_key_pem.write_to_path(str(tmp_path / "self.key"))
    ctx.load_cert_chain(str(tmp_path / "self.pem"), str(tmp_path / "self.key"))   # the CA serves itself
    client = _client(pki, trust=False)
    client.check_hostname = False
    exc = _handshake(client, ctx)
    assert errors.exception_key(exc) == "tls-self-signed", exc


def test_alerts_the_server_sends_have_their_keys_and_words(pki):
    wants_cert = dict(verify_mode=ssl.CERT_REQUIRED)
    server13 = _server(pki, **wants_cert)
    server13.load_verify_locations(pki["ca"])
    cases = [
        # TLS 1.3: the client finishes first; the server's refusal comes on the first read
        (_client(pki), server13, "tls-alert-certificate-required", "requires a client certificate"),
        (_client(pki, maximum_version=ssl.TLSVersion.TLSv1_2), server13, "tls-alert-handshake-failure",
         "could not agree"),
        (_client(pki, maximum_version=ssl.TLSVersion.TLSv1_2),
         _server(pki, minimum_version=ssl.TLSVersion.TLSv1_3), "tls-alert-protocol-version",
         "does not speak the TLS versions offered"),
    ]
    # a client certificate from a CA the server does not list
    stranger = trustme.CA().issue_cert("stranger.socktools.test")
    foreign = _client(pki)
    stranger.configure_cert(foreign)
    cases.append((foreign, server13, "tls-alert-unknown-ca", "does not trust the CA of the client certificate"))
    for client, server, key, words in cases:
        exc = _handshake(client, server)
        assert exc is not None, key
        got, line = _key_and_line(exc)
        assert got == key, (got, exc)
        assert words in line and "alert " in line, line


def test_tls_to_a_plaintext_answer_is_named_so():
    """What a plaintext server answers to a ClientHello (nginx's 400 page) read as TLS."""
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    client = ctx.wrap_bio(c_in, c_out)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    c_in.write(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n")
    with pytest.raises(ssl.SSLError) as info:
        client.do_handshake()
    key, line = _key_and_line(info.value)
    assert key == errors.TLS_TO_PLAINTEXT and "drop --tls" in line


# ------------------------------------------------------------------ plaintext to a TLS port: the hints

def test_plaintext_to_a_tls_port_is_recognised_from_what_came_back():
    alert = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])      # a TLS alert record
    nginx = b"HTTP/1.1 400 Bad Request\r\n\r\n<center>The plain HTTP request was sent to HTTPS port</center>"
    assert "add --tls" in errors.tls_hint(alert, errors.PEER_CLOSED, tls=False)
    assert "add --tls" in errors.tls_hint(nginx, None, tls=False)
    assert "add --tls" in errors.tls_hint(b"", "ECONNRESET", tls=False)       # redis resets
    assert errors.tls_hint(b"+PONG\r\n", None, tls=False) == ""
    assert errors.tls_hint(b"", "ECONNREFUSED", tls=False) == ""
    assert "drop --tls" in errors.tls_hint(b"", errors.TIMEOUT, tls=True)    # a plaintext server waiting
    assert errors.tls_hint(b"", "ECONNRESET", tls=True) == ""


def test_every_tls_key_is_explained():
    for key in ("tls-unknown-ca", "tls-hostname-mismatch", "tls-expired", "tls-self-signed",
                "tls-alert-handshake-failure", "tls-alert-unknown-ca", "tls-alert-bad-certificate",
                "tls-alert-protocol-version", errors.TLS_PLAINTEXT_TO_TLS, errors.TLS_TO_PLAINTEXT):
        exp = errors.lookup(key)
        assert exp is not None and exp.name == key and exp.meaning and exp.fix, key


@pytest.mark.parametrize("text, key", [
    ("ssl.SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", errors.TLS_TO_PLAINTEXT),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate",
     "tls-unknown-ca"),
    ("certificate verify failed: certificate has expired (_ssl.c:1006)", "tls-expired"),
    ("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)", "tls-alert-unknown-ca"),
    ("SSLV3_ALERT_HANDSHAKE_FAILURE", "tls-alert-handshake-failure"),
    ("tls-hostname-mismatch", "tls-hostname-mismatch"),
])
def test_explain_takes_tls_messages_as_python_prints_them(text, key):
    from click.testing import CliRunner
    from socktools.cli import main
    assert errors.lookup_text(text).name == key
    r = CliRunner().invoke(main, ["explain", text])
    assert r.exit_code == 0 and key in r.output, r.output

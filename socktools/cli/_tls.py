"""The TLS client options, declared once for every command that connects, and their TlsConfig."""

from __future__ import annotations

import click

from socktools.cli._common import build_config

__all__ = ["tls_options", "tls_config", "TLS_PARAMS"]

_OPTIONS = [
    click.option("--tls", is_flag=True, help="Speak TLS: a handshake after connect, verifying the "
                                             "server's certificate and name."),
    click.option("--sni", metavar="NAME", default=None,
                 help="The server name sent (SNI) and checked against its certificate.  [default: the host]"),
    click.option("--cafile", metavar="FILE", default=None,
                 help="Trust the CA certificates in this PEM file instead of the system's."),
    click.option("--capath", metavar="DIR", default=None,
                 help="Trust the CA certificates in this directory (c_rehash'd) instead of the system's."),
    click.option("--insecure", is_flag=True, help="Do not verify the server's certificate or name (testing only)."),
    click.option("--cert", metavar="FILE", default=None, help="Client certificate, PEM (mutual TLS; needs --key)."),
    click.option("--key", metavar="FILE", default=None, help="The client certificate's private key, PEM."),
    click.option("--tls-min", type=click.Choice(["1.2", "1.3"]), default=None, help="Lowest TLS version offered."),
    click.option("--tls-max", type=click.Choice(["1.2", "1.3"]), default=None, help="Highest TLS version offered."),
    click.option("--ciphers", metavar="LIST", default=None,
                 help="OpenSSL cipher list for TLS 1.2, e.g. ECDHE-RSA-AES128-GCM-SHA256."),
    click.option("--alpn", multiple=True, metavar="PROTO",
                 help="Offer this application protocol (ALPN), e.g. http/1.1 or h2; repeat, in order."),
    click.option("--keylog", metavar="FILE", default=None,
                 help="Append the session secrets to FILE in NSS key log format (wireshark, tshark); "
                      "$SSLKEYLOGFILE is honoured too."),
]

TLS_PARAMS = ("tls", "sni", "cafile", "capath", "insecure", "cert", "key", "tls_min", "tls_max", "ciphers",
              "alpn", "keylog")


def tls_options(f):
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def tls_config(params: dict):
    """The TlsConfig for the options given (popped from ``params``), checked: a bad value is a
    usage error naming its option.  ``--insecure`` says so on stderr, once."""
    from socktools.tlsconf import TlsConfig, client_context

    values = {name: params.pop(name, None) for name in TLS_PARAMS}
    cfg = build_config(TlsConfig, enabled=bool(values.pop("tls")), insecure=bool(values.pop("insecure")),
                       alpn=tuple(values.pop("alpn") or ()), **values)
    if cfg.enabled:
        build_config(client_context, cfg=cfg)     # files that only OpenSSL can judge (a key not the cert's)
        if cfg.insecure:
            click.echo("warning: --insecure: the server's certificate and name are NOT verified; "
                       "anyone in the path can read and change this exchange", err=True)
    return cfg


# ------------------------------------------------------------------ the server's side (serve --tls)

_SERVER_OPTIONS = [
    click.option("--tls", is_flag=True, help="Speak TLS on every connection, with --cert/--key (or "
                                             "--tls-self-signed, which implies it)."),
    click.option("--cert", metavar="FILE", default=None,
                 help="The server's certificate chain, PEM, leaf first (with --tls; needs --key)."),
    click.option("--key", metavar="FILE", default=None, help="The certificate's private key, PEM."),
    click.option("--tls-self-signed", is_flag=True,
                 help="Make a throwaway certificate for localhost, 127.0.0.1 and ::1 at start; print "
                      "its SHA-256 fingerprint and the file clients give as --cafile.  Needs the "
                      "cryptography package."),
    click.option("--client-ca", metavar="FILE", default=None,
                 help="Require client certificates signed by a CA in this PEM file (mutual TLS)."),
    click.option("--tls-min", type=click.Choice(["1.2", "1.3"]), default=None, help="Lowest TLS version accepted."),
    click.option("--tls-max", type=click.Choice(["1.2", "1.3"]), default=None, help="Highest TLS version accepted."),
    click.option("--ciphers", metavar="LIST", default=None,
                 help="OpenSSL cipher list for TLS 1.2, e.g. ECDHE-ECDSA-AES128-GCM-SHA256."),
    click.option("--alpn", multiple=True, metavar="PROTO",
                 help="Accept this application protocol (ALPN) when a client offers it; repeat, in order "
                      "of preference."),
]

SERVER_TLS_PARAMS = ("tls", "cert", "key", "tls_self_signed", "client_ca", "tls_min", "tls_max", "ciphers", "alpn")


def server_tls_options(f):
    for opt in reversed(_SERVER_OPTIONS):
        f = opt(f)
    return f


def server_tls_config(params: dict):
    """The ServerTlsConfig for serve's TLS options (popped from ``params``), or None for
    plaintext; checked: a bad value, or a TLS option without --tls, is a usage error naming
    the option.  The files given are loaded once here (a key not the certificate's)."""
    from socktools.tlsconf import ServerTlsConfig, server_context

    values = {name: params.pop(name, None) for name in SERVER_TLS_PARAMS}
    values["alpn"] = tuple(values["alpn"] or ())
    on, self_signed = bool(values.pop("tls")), bool(values.pop("tls_self_signed"))
    if not on and not self_signed:
        for name, value in values.items():
            if value:
                build_config(_refuse, option=name)
        return None
    cfg = build_config(ServerTlsConfig, self_signed=self_signed, **values)
    if not self_signed:
        build_config(server_context, cfg=cfg)
    return cfg


def _refuse(option: str):
    from socktools.errors import OptionError
    raise OptionError(option, "is a TLS option: give --tls (or --tls-self-signed) too")

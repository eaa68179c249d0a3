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

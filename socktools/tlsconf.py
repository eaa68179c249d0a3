"""TLS settings, once for every command: frozen configs and the contexts they make.

``TlsConfig`` holds what the user asked for (``--tls``, ``--sni``, ``--cafile``...),
checks it when it is built (an :class:`~socktools.errors.OptionError` naming the
option: the CLI turns that into a usage error) and pickles, so a parent can hand
it to worker processes.  ``client_context`` turns it into an ``ssl.SSLContext``;
``server_name`` says which name the handshake sends (SNI) and checks.
``ServerTlsConfig`` and ``server_context`` are the same for ``serve --tls``.  No
sockets here: the commands wrap their own.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Optional

from socktools.errors import OptionError

__all__ = ["TlsConfig", "client_context", "server_name", "negotiated", "TLS_VERSIONS", "KEYLOG_ENV",
           "MAX_ALPN_PROTOCOL", "MAX_PEM_FILE", "ServerTlsConfig", "server_context", "fingerprint"]

#: The versions ``--tls-min``/``--tls-max`` take.  Nothing below 1.2: RFC 8996 deprecated
#: TLS 1.0 and 1.1 and OpenSSL 3 refuses them at its default security level anyway.
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

#: The variable browsers, curl and Python's own ``ssl.create_default_context`` read for
#: a key log file; ``--keylog`` wins when both are given.
KEYLOG_ENV = "SSLKEYLOGFILE"

#: An ALPN protocol name is 1 to 255 bytes on the wire (RFC 7301, 3.1: an 8-bit length).
MAX_ALPN_PROTOCOL = 255

#: A certificate, key or CA file read to check it is PEM: a CA bundle is ~200 KiB
#: (Debian's ca-certificates.crt); 16 MiB is far past any real one and still bounded.
MAX_PEM_FILE = 16 << 20

_PEM_MARK = b"-----BEGIN "


@dataclass(frozen=True)
class TlsConfig:
    """What one command's TLS client does.  ``enabled=False`` (the default) is plaintext,
    and then every other field must be left at its default."""

    enabled: bool = False
    sni: Optional[str] = None        # the name sent and checked; None: the host given
    cafile: Optional[str] = None     # trust these CAs instead of the system store
    capath: Optional[str] = None     # a c_rehash'd directory of CAs
    insecure: bool = False           # no verification at all (certificate nor name)
    cert: Optional[str] = None       # client certificate (mutual TLS), PEM
    key: Optional[str] = None        # its private key, PEM
    tls_min: Optional[str] = None    # "1.2" / "1.3"; None: OpenSSL's floor (1.2 here)
    tls_max: Optional[str] = None
    ciphers: Optional[str] = None    # an OpenSSL cipher string (TLS 1.2 suites)
    alpn: tuple = ()                 # ("h2", "http/1.1"): offered in this order
    keylog: Optional[str] = None     # NSS key log file; None: $SSLKEYLOGFILE if set

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpn", tuple(self.alpn))
        if not self.enabled:
            for name in ("sni", "cafile", "capath", "insecure", "cert", "key", "tls_min", "tls_max",
                         "ciphers", "alpn", "keylog"):
                if getattr(self, name):
                    raise OptionError(name, "is a TLS option: give --tls too")
            return
        if self.sni is not None:
            _check_text("sni", self.sni)
            if not self.sni or any(c.isspace() for c in self.sni) or len(self.sni) > 253:
                raise OptionError("sni", f"{self.sni!r} is not a host name (1 to 253 characters, no spaces)")
        for name in ("cafile", "cert", "key"):
            path = getattr(self, name)
            if path is not None:
                _check_pem(name, path)
        if self.capath is not None:
            _check_text("capath", self.capath)
            if not os.path.isdir(self.capath):
                raise OptionError("capath", f"{self.capath!r} is not a directory")
        if self.cert and not self.key:
            raise OptionError("cert", "needs --key (the client certificate's private key)")
        if self.key and not self.cert:
            raise OptionError("key", "needs --cert (the certificate that goes with the key)")
        _check_choices(self)
        if self.keylog is not None:
            _check_text("keylog", self.keylog)
            folder = os.path.dirname(os.path.abspath(self.keylog))
            if not os.path.isdir(folder):
                raise OptionError("keylog", f"the folder of {self.keylog!r} does not exist")


def _check_text(option: str, value: str) -> None:
    """A value from a command line may hold bytes that are not UTF-8 (PEP 383): no file or
    host can be named by them, so say so instead of failing later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(option, f"{value!r} is not UTF-8 text") from None


def _check_choices(cfg) -> None:
    """The settings a client and a server share: versions, ciphers, ALPN names."""
    for name in ("tls_min", "tls_max"):
        value = getattr(cfg, name)
        if value is not None and value not in TLS_VERSIONS:
            raise OptionError(name, f"{value!r} is not a TLS version: use {' or '.join(TLS_VERSIONS)}")
    if cfg.tls_min and cfg.tls_max and TLS_VERSIONS[cfg.tls_min] > TLS_VERSIONS[cfg.tls_max]:
        raise OptionError("tls_min", f"{cfg.tls_min} is above --tls-max {cfg.tls_max}")
    if cfg.ciphers is not None:
        _check_text("ciphers", cfg.ciphers)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(cfg.ciphers)
        except ssl.SSLError:
            raise OptionError("ciphers", f"OpenSSL knows no cipher in {cfg.ciphers!r} "
                              f"(`openssl ciphers -v` lists them)") from None
    for proto in cfg.alpn:
        _check_text("alpn", proto)
        size = len(proto.encode("utf-8"))
        if not 1 <= size <= MAX_ALPN_PROTOCOL or not proto.isprintable() or not proto.isascii():
            raise OptionError("alpn", f"{proto!r} is not an ALPN protocol name "
                              f"(1 to {MAX_ALPN_PROTOCOL} printable ASCII characters, e.g. http/1.1, h2)")


def _check_pem(option: str, path: str) -> None:
    _check_text(option, path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_PEM_FILE)
    except OSError as exc:
        raise OptionError(option, f"cannot read {path!r}: {exc.strerror}") from None
    if _PEM_MARK not in head:
        raise OptionError(option, f"{path!r} is not PEM (no '-----BEGIN' line)")


def server_name(cfg: TlsConfig, host: str) -> str:
    """The name the handshake sends as SNI and checks the certificate against: ``--sni``,
    else the host given (an address is checked against the certificate's IP SANs, and
    OpenSSL sends no SNI for it, as RFC 6066 3 says)."""
    return cfg.sni or host


def client_context(cfg: TlsConfig) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for ``cfg``: verification on (the system store, or --cafile /
    --capath), the host name checked, unless ``insecure``; the client certificate, versions,
    ciphers, ALPN and key log as asked.  Files are read here: ``ssl.SSLError``/``OSError``
    from a key that does not match its certificate leaves as :class:`OptionError`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)      # check_hostname and CERT_REQUIRED on
    if cfg.insecure:
        ctx.check_hostname = False                     # must go first: CERT_NONE requires it
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.cafile or cfg.capath:
        ctx.load_verify_locations(cafile=cfg.cafile, capath=cfg.capath)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cfg.cert:
        try:
            ctx.load_cert_chain(cfg.cert, cfg.key)
        except ssl.SSLError as exc:
            raise OptionError("key", f"{cfg.key!r} is not the key of {cfg.cert!r}, or not a key "
                              f"({exc.reason or exc})") from None
    _apply_choices(ctx, cfg)
    keylog = cfg.keylog or os.environ.get(KEYLOG_ENV)
    if keylog:
        try:
            ctx.keylog_filename = keylog               # appended to, one line per secret
        except OSError as exc:
            where = "" if cfg.keylog else f" (from ${KEYLOG_ENV})"
            raise OptionError("keylog", f"cannot write {keylog!r}{where}: {exc.strerror}") from None
    return ctx


def _apply_choices(ctx: ssl.SSLContext, cfg) -> None:
    """Versions, ciphers and ALPN as ``cfg`` (client or server) asks."""
    if cfg.tls_min:
        ctx.minimum_version = TLS_VERSIONS[cfg.tls_min]
    if cfg.tls_max:
        ctx.maximum_version = TLS_VERSIONS[cfg.tls_max]
    if cfg.ciphers:
        ctx.set_ciphers(cfg.ciphers)
    if cfg.alpn:
        ctx.set_alpn_protocols(list(cfg.alpn))


def negotiated(sock) -> dict:
    """What a finished handshake settled, from an ``SSLSocket`` or ``SSLObject``."""
    cipher = sock.cipher()
    return {"version": sock.version(), "cipher": cipher[0] if cipher else None,
            "alpn": sock.selected_alpn_protocol()}


@dataclass(frozen=True)
class ServerTlsConfig:
    """What ``serve --tls`` does: its certificate and key (PEM files), or ``self_signed`` (serve
    makes a throwaway pair at start: :mod:`socktools.serve.selfsigned`); ``client_ca`` requires
    every client to present a certificate signed by one of those CAs (mutual TLS)."""

    cert: Optional[str] = None       # the server's certificate chain, PEM, leaf first
    key: Optional[str] = None        # its private key, PEM
    self_signed: bool = False        # make a throwaway certificate instead of cert/key
    client_ca: Optional[str] = None  # require client certificates signed by these CAs
    tls_min: Optional[str] = None
    tls_max: Optional[str] = None
    ciphers: Optional[str] = None    # an OpenSSL cipher string (TLS 1.2 suites)
    alpn: tuple = ()                 # protocols accepted, in the server's order of preference

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpn", tuple(self.alpn))
        if self.self_signed:
            for name in ("cert", "key"):
                if getattr(self, name):
                    raise OptionError(name, "not with --tls-self-signed: give your own --cert/--key, or "
                                            "let serve make a throwaway pair")
        elif not self.cert or not self.key:
            missing = "cert" if not self.cert else "key"
            raise OptionError(missing, f"--tls needs --cert FILE and --key FILE (the server's certificate "
                                       f"and private key), or --tls-self-signed for a throwaway pair")
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None:
                _check_pem(name, path)
        _check_choices(self)


def server_context(cfg: ServerTlsConfig) -> ssl.SSLContext:
    """The ``ssl.PROTOCOL_TLS_SERVER`` context for ``cfg`` (its ``cert``/``key`` given: a
    self-signed pair is made first).  Files OpenSSL cannot use -- a key that is not the
    certificate's, a CA file with no certificate in it -- leave as :class:`OptionError`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key)
    except ssl.SSLError as exc:
        raise OptionError("key", f"{cfg.key!r} is not the key of {cfg.cert!r}, or one of them is not a "
                          f"certificate/key ({exc.reason or exc})") from None
    if cfg.client_ca:
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca)
        except ssl.SSLError as exc:
            raise OptionError("client_ca", f"{cfg.client_ca!r} holds no usable CA certificate "
                              f"({exc.reason or exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED          # no certificate, or an unknown CA: handshake refused
    _apply_choices(ctx, cfg)
    return ctx


def fingerprint(cert_file: str) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as ``AB:CD:...`` (the
    form ``openssl x509 -fingerprint -sha256`` and browsers print)."""
    import hashlib
    with open(cert_file, "rb") as fh:
        text = fh.read(MAX_PEM_FILE).decode("ascii", "replace")
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start:end])).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

"""``serve --tls-self-signed``: a throwaway certificate for the loopback names, made at start.

The certificate is its own issuer, so a client trusts it by naming the certificate file as
its CA (``--cafile CERT``, ``curl --cacert``, ``openssl s_client -CAfile``); its SHA-256
fingerprint is printed so a client that pins by fingerprint can compare.  Made with the
``cryptography`` package (the ``tls`` extra, :mod:`socktools.optional`); written to a fresh
private folder (mode 0700, key 0600) that ``serve`` removes when it exits.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from typing import NamedTuple

from socktools.optional import MissingPackage

__all__ = ["SelfSigned", "make_self_signed", "NAMES", "ADDRESSES", "VALID_DAYS"]

#: The names and addresses the certificate is for: what a client on this machine dials.
NAMES = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")

#: Validity.  The certificate lives as long as one server run, but a client that warns about a
#: certificate near its end (``ping --tls`` warns within 30 days, as monitoring tools do) should
#: not warn about this one: 90 days, like an ACME certificate.  Backdated an hour, so a client
#: whose clock runs a little behind does not call it "not yet valid".
VALID_DAYS = 90
BACKDATE = datetime.timedelta(hours=1)

#: The folder's name in the temporary directory (tempfile adds a random tail).
FOLDER_PREFIX = "socktools-tls-"


class SelfSigned(NamedTuple):
    folder: str     # the private folder holding both files (removed by serve at exit)
    cert: str       # PEM certificate: give it to clients as their CA file
    key: str        # PEM private key (mode 0600)


def make_self_signed(folder: str | None = None, made_by: str = "socktools serve") -> SelfSigned:
    """A new key and self-signed certificate for :data:`NAMES` and :data:`ADDRESSES`, written
    as PEM into ``folder`` (a new private temporary folder when None); its organization names
    the command that made it (``made_by``), which is what a client's chain view shows.  Raises
    :class:`~socktools.optional.MissingPackage` without ``cryptography``."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise MissingPackage("tls", "--tls-self-signed") from None

    # P-256 ECDSA: the handshake's signature costs a fraction of RSA-2048's (the server signs once
    # per full handshake), and every TLS 1.2/1.3 client accepts it.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{made_by} --tls-self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    sans = [x509.DNSName(n) for n in NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            # an end-entity certificate that is its own trust anchor: not a CA, so it cannot sign others
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    folder = folder or tempfile.mkdtemp(prefix=FOLDER_PREFIX)     # mode 0700
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    return SelfSigned(folder, cert_path, key_path)

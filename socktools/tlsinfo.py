"""What a TLS connection shows a person: the certificates the server sent, and the records.

Sans-I/O, like :mod:`socktools.protocol`: no sockets here.  Two parts:

* :func:`peer_chain` -- the certificate chain *as the server sent it* (leaf first), each
  decoded to subject, issuer, SANs and validity, verified or not.  ``getpeercert()`` gives
  only the leaf, and only after verification; Python 3.13 added
  ``SSLObject.get_unverified_chain()``, which is a thin wrapper over the method the C module
  has had since 3.10 (``_sslobj.get_unverified_chain()``, returning ``_ssl.Certificate``
  objects whose ``get_info()`` is OpenSSL's own decoding, the same dict ``getpeercert()``
  gives).  We call that method (the project supports 3.10+), so no extra package is needed
  and ``--insecure`` connections show their chain too; docs/request.md says why.
* :class:`TlsRecords` -- one direction's byte stream split into TLS records (type, version,
  length) as they crossed the wire, with the handshake messages and alerts named while they
  are still in the clear.  Fed whole, byte by byte or at random splits, it says the same.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from typing import Optional

__all__ = ["EXPIRY_WARNING_DAYS", "MAX_CHAIN", "CertInfo", "peer_chain", "expiry_words", "TlsRecords",
           "Record", "MAX_RECORD", "RECORD_TYPES", "HANDSHAKE_TYPES", "ALERTS"]

#: A certificate that expires within this many days is called out ("expires in 12 days") by
#: request and warned about once by ping.  30: Let's Encrypt's certificates live 90 days and
#: certbot renews them when 30 are left, so a certificate under 30 days is one whose renewal
#: should already have happened.
EXPIRY_WARNING_DAYS = 30

#: Certificates of one chain decoded and shown.  Real chains are 2 to 4 (leaf, one or two
#: intermediates, sometimes the root); the TLS 1.3 certificate list is bounded only by its
#: 2^24-byte length, so a hostile server could send hundreds: the rest are counted, not shown.
MAX_CHAIN = 10

_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "stateOrProvinceName": "ST", "localityName": "L", "emailAddress": "emailAddress",
          "domainComponent": "DC", "serialNumber": "serialNumber"}
_SAN = {"IP Address": "IP", "DNS": "DNS", "URI": "URI", "email": "email", "DirName": "DirName"}


def _name(rdns) -> str:
    """``((('commonName', 'x'),), (('organizationName', 'y'),))`` -> ``CN=x, O=y``."""
    return ", ".join("+".join(f"{_SHORT.get(k, k)}={v}" for k, v in rdn) for rdn in rdns or ())


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), datetime.timezone.utc)


@dataclass(frozen=True)
class CertInfo:
    """One certificate of the chain, as a person reads it."""

    subject: str                 # "CN=localhost, O=Example" (the RFC 4514 short names, in order)
    issuer: str
    sans: tuple                  # ("DNS:localhost", "IP:127.0.0.1")
    not_before: datetime.datetime
    not_after: datetime.datetime

    @classmethod
    def from_info(cls, info: dict) -> "CertInfo":
        """From the dict OpenSSL decodes (``getpeercert()``'s shape)."""
        return cls(_name(info.get("subject")), _name(info.get("issuer")),
                   tuple(f"{_SAN.get(k, k)}:{v}" for k, v in info.get("subjectAltName", ())),
                   _utc(info["notBefore"]), _utc(info["notAfter"]))

    def days_left(self, now: datetime.datetime) -> int:
        """Whole days until not-after (negative once expired: -3 is three days ago)."""
        return (self.not_after - now) // datetime.timedelta(days=1)

    def to_dict(self, now: datetime.datetime) -> dict:
        days = self.days_left(now)
        return {"subject": self.subject, "issuer": self.issuer, "sans": list(self.sans),
                "not_before": self.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), "days_left": days,
                "expired": self.not_after <= now, "expiring": days < EXPIRY_WARNING_DAYS}


def peer_chain(tls) -> tuple[list, int]:
    """The certificates the server sent on ``tls`` (an ``SSLObject`` or ``SSLSocket`` after its
    handshake), leaf first, as :class:`CertInfo` -- at most :data:`MAX_CHAIN` -- and how many it
    sent in all.  Verified or not: the chain is what came over the wire."""
    sslobj = getattr(tls, "_sslobj", tls)
    chain = sslobj.get_unverified_chain() or []
    return [CertInfo.from_info(c.get_info()) for c in chain[:MAX_CHAIN]], len(chain)


def expiry_words(days: int) -> str:
    """``EXPIRED 3 days ago`` / ``expires in 12 days`` (under :data:`EXPIRY_WARNING_DAYS`), else ``""``."""
    if days < 0:
        return f"EXPIRED {-days} day{'s' if days != -1 else ''} ago"
    if days < EXPIRY_WARNING_DAYS:
        return "expires today" if days == 0 else f"expires in {days} day{'s' if days != 1 else ''}"
    return ""


# ------------------------------------------------------------------------ the record layer
#: A TLS record's body is at most 2^14 + 2048 bytes (RFC 5246 6.2.3, TLSCiphertext; TLS 1.3
#: allows less, 2^14 + 256).  A longer length field is not TLS: the rest of that direction is
#: counted as such, not parsed (and no buffer grows past this).
MAX_RECORD = (1 << 14) + 2048

RECORD_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data", 24: "heartbeat"}
HANDSHAKE_TYPES = {0: "HelloRequest", 1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket",
                   5: "EndOfEarlyData", 8: "EncryptedExtensions", 11: "Certificate", 12: "ServerKeyExchange",
                   13: "CertificateRequest", 14: "ServerHelloDone", 15: "CertificateVerify",
                   16: "ClientKeyExchange", 20: "Finished", 24: "KeyUpdate"}
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
          40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
          44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
          47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
          51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
          86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
          110: "unsupported_extension", 112: "unrecognized_name", 116: "certificate_required",
          120: "no_application_protocol"}
_VERSIONS = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}


@dataclass(frozen=True)
class Record:
    """One record as it crossed the wire: its type, the version in its header (TLS 1.3 writes
    1.2 there, RFC 8446 5.1), the body's length, and what it carried when that was readable."""

    type: int
    version: int
    length: int
    encrypted: bool = False
    what: tuple = ()             # handshake message names, or the alert's level and name

    @property
    def type_name(self) -> str:
        return RECORD_TYPES.get(self.type, f"type {self.type}")

    def describe(self) -> str:
        """``handshake 512 bytes: ServerHello, Certificate`` / ``application_data 45 bytes (encrypted)``."""
        text = f"{self.type_name} {self.length} bytes"
        if self.what:
            text += ": " + ", ".join(self.what)
        elif self.encrypted and self.type != 23:
            text += " (encrypted)"
        return text

    def to_dict(self) -> dict:
        return {"type": self.type_name, "version": _VERSIONS.get(self.version, hex(self.version)),
                "length": self.length, "encrypted": self.encrypted, "what": list(self.what)}


class TlsRecords:
    """One direction of a TLS connection, split into :class:`Record` as the bytes arrive.

    ``feed(data)`` returns the records completed by ``data``.  Records read in the clear
    (before this side's ChangeCipherSpec, or any record of TLS 1.3 before its keys -- which
    shows as application_data from then on) name their handshake messages and alerts; later
    ones are ``encrypted``.  Bodies are buffered only while they are readable, at most
    :data:`MAX_RECORD`; a header that is not TLS stops the parsing (``broken``) and the rest
    is counted in ``unparsed``.
    """

    def __init__(self) -> None:
        self._head = bytearray()       # a record header being gathered (up to 5 bytes)
        self._body = bytearray()       # a readable record's body being gathered
        self._left = 0                 # body bytes still to come for the current record
        self._current: Optional[tuple] = None   # (type, version, length) of the current record
        self._hs_skip = 0              # handshake bytes of a message that began in an earlier record
        self._hs_head = bytearray()    # a handshake message header split across records
        self.encrypted = False         # this direction sent ChangeCipherSpec (or is TLS 1.3 protected)
        self.broken = False
        self.unparsed = 0

    def feed(self, data: bytes) -> list:
        out: list = []
        view = memoryview(data)
        while view:
            if self.broken:
                self.unparsed += len(view)
                break
            if self._current is None:
                take = min(5 - len(self._head), len(view))
                self._head += view[:take]
                view = view[take:]
                if len(self._head) < 5:
                    break
                rtype, major, minor, length = self._head[0], self._head[1], self._head[2], \
                    int.from_bytes(self._head[3:5], "big")
                if rtype not in RECORD_TYPES or major != 3 or length > MAX_RECORD:
                    self.broken = True
                    self.unparsed += 5
                    self._head.clear()
                    continue
                self._current = (rtype, (major << 8) | minor, length)
                self._left = length
                self._head.clear()
            take = min(self._left, len(view))
            if self._readable():
                self._body += view[:take]
            view = view[take:]
            self._left -= take
            if self._left == 0:
                out.append(self._finish())
        return out

    def _readable(self) -> bool:
        return not self.encrypted and self._current is not None and self._current[0] in (21, 22)

    def _finish(self) -> Record:
        rtype, version, length = self._current
        body, readable = bytes(self._body), self._readable()
        self._body.clear()
        self._current = None
        what: tuple = ()
        if readable and rtype == 22:
            what = self._handshake_names(body)
        elif readable and rtype == 21 and len(body) == 2:
            what = ("fatal" if body[0] == 2 else "warning", ALERTS.get(body[1], f"alert {body[1]}"))
        record = Record(rtype, version, length, rtype == 23 or (self.encrypted and rtype != 20), what)
        if rtype == 20:
            self.encrypted = True      # what follows in this direction is under the new keys
        return record

    def _handshake_names(self, body: bytes) -> tuple:
        """The handshake messages that start in this record (one may span several records)."""
        names = []
        i = min(self._hs_skip, len(body))
        self._hs_skip -= i
        while i < len(body):
            need = 4 - len(self._hs_head)
            self._hs_head += body[i:i + need]
            i += need
            if len(self._hs_head) < 4:
                break
            mtype, mlen = self._hs_head[0], int.from_bytes(self._hs_head[1:4], "big")
            self._hs_head.clear()
            names.append(HANDSHAKE_TYPES.get(mtype, f"handshake type {mtype}"))
            step = min(mlen, len(body) - i)
            i += step
            self._hs_skip = mlen - step
        return tuple(names)

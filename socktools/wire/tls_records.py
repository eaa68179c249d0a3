"""The TLS record layer and handshake, dissected from one direction's bytes (sans-I/O).

``TlsRecords(role).feed(data)`` takes the ordered bytes of one direction of a
connection, in pieces of any size, and returns a :class:`TlsRecord` for each record
it completed: its type and length, and for the cleartext part of the handshake what
a troubleshooter asks first -- the ClientHello's SNI, offered ALPN protocols and
versions, the ServerHello's chosen version (from supported_versions in TLS 1.3) and
cipher suite by IANA name -- alerts by name, ChangeCipherSpec, and "encrypted, N
bytes" for what it cannot read.  No socket, no clock, no crypto: decryption
(``sniff --keylog``) lives in ``socktools.capture.tls_decrypt`` and hands its
plaintext records back through :func:`describe_inner`.

Hostile or broken input (a record longer than TLS allows, a handshake message
claiming more than any real one, bytes that are not TLS) raises
:class:`TlsMalformed` with the reason; the caller shows the raw bytes from there on.
Every buffer is bounded by a named limit below.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from socktools.tlsinfo import ALERTS, HANDSHAKE_TYPES, MAX_RECORD, RECORD_TYPES

__all__ = ["TlsRecords", "TlsRecord", "TlsMalformed", "looks_like_tls", "MAX_RECORD_LENGTH",
           "MAX_HANDSHAKE_LENGTH", "CONTENT_TYPES", "ALERTS", "CIPHER_SUITES", "version_name",
           "cipher_name", "alert_text", "parse_handshake", "describe_inner", "HandshakeInfo"]

#: The longest record TLS allows on the wire (2^14 + 2048, RFC 5246 §6.2.3): tlsinfo's bound,
#: one number for request's record view and sniff's.  A longer length field is not TLS (or is
#: an attack): stop, say so, never buffer it.
MAX_RECORD_LENGTH = MAX_RECORD

#: The longest handshake message reassembled across records.  A Certificate chain is the
#: largest real one; OpenSSL refuses a peer's chain past 100 KiB (``max_cert_list``'s
#: default is 100 KiB) and so do we, with room: 128 KiB bounds the buffer of each direction.
MAX_HANDSHAKE_LENGTH = 128 << 10

#: Items of one list shown (ALPN protocols, offered versions): a ClientHello offers a
#: handful; a hostile one may offer thousands, and one line must stay one line.
MAX_LISTED = 16

CONTENT_TYPES = RECORD_TYPES      # the tables are tlsinfo's: one set of names for request and sniff
_TYPE_TITLES = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "Application data",
                24: "Heartbeat"}

#: Cipher suites by their IANA names: every TLS 1.3 suite and the TLS 1.2 ones OpenSSL
#: enables by default or that servers still meet (the rest are shown by number).
CIPHER_SUITES = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x5600: "TLS_FALLBACK_SCSV",
}

_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
             0x0304: "TLS 1.3"}

#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256("HelloRetryRequest").
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

_EXT_SNI, _EXT_ALPN, _EXT_VERSIONS = 0, 16, 43
_HEADER = struct.Struct("!BHH")


def _grease(v: int) -> bool:
    """RFC 8701's reserved values (0x0a0a, 0x1a1a, ...), sent to keep peers honest."""
    return v & 0x0F0F == 0x0A0A and v >> 8 == v & 0xFF


def version_name(v: int) -> str:
    if _grease(v):
        return "GREASE"
    return _VERSIONS.get(v, f"0x{v:04x}")


def cipher_name(v: int) -> str:
    if _grease(v):
        return "GREASE"
    return CIPHER_SUITES.get(v, f"0x{v:04X}")


def alert_text(level: int, description: int) -> str:
    lvl = {1: "warning", 2: "fatal"}.get(level, f"level {level}")
    return f"{lvl} {ALERTS.get(description, f'alert {description}')}"


def looks_like_tls(head: bytes) -> Optional[bool]:
    """Could a stream starting with ``head`` be TLS?  (None: too few bytes to say.)

    A TLS stream opens with a handshake record of version 3.1-3.4: 0x16 0x03 0x01..0x04
    (a ClientHello's record says 3.1 for compatibility, a ServerHello's 3.3).
    """
    if not head:
        return None
    if head[0] != 0x16:
        return False
    if len(head) >= 2 and head[1] != 0x03:
        return False
    if len(head) >= 3:
        return 1 <= head[2] <= 4
    return None


class TlsMalformed(Exception):
    """The bytes break the TLS record layer or a handshake message; ``str()`` says how."""


class TlsRecord(NamedTuple):
    """One record: ``type`` (a :data:`CONTENT_TYPES` name), record ``version`` and
    ``length`` (of its fragment), ``text`` (one line for humans) and ``fields`` (the
    dissection, JSON-able); ``fragment`` is the record's payload (for decryption),
    ``header`` its 5 bytes."""

    type: str
    version: str
    length: int
    text: str
    fields: dict
    header: bytes
    fragment: bytes


class HandshakeInfo(NamedTuple):
    """What a handshake message says: ``name``, ``fields`` (JSON-able), ``text`` (short)."""

    name: str
    fields: dict
    text: str


class _Reader:
    """Bounds-checked reads over one handshake message; a short read is TlsMalformed."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise TlsMalformed(f"{self.what} is cut short: a field of {n} byte(s) at offset "
                               f"{self.pos} runs past its {len(self.data)} bytes")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, width: int) -> bytes:
        return self.take(int.from_bytes(self.take(width), "big"))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _extensions(r: _Reader) -> list:
    """(type, data) of each extension, if the message has an extensions block."""
    if not r.left:
        return []
    block = _Reader(r.vector(2), r.what + "'s extensions")
    out = []
    while block.left:
        kind = block.u16()
        out.append((kind, block.vector(2)))
    return out


def _listed(items: list) -> list:
    return items[:MAX_LISTED] + ([f"... {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else [])


def _client_hello(body: bytes) -> HandshakeInfo:
    r = _Reader(body, "ClientHello")
    legacy = r.u16()
    random = r.take(32)
    r.vector(1)                              # legacy_session_id
    suites_raw = r.vector(2)
    r.vector(1)                              # compression methods
    fields: dict = {"legacy_version": version_name(legacy), "random": random.hex(),
                    "cipher_suites": _listed([cipher_name(int.from_bytes(suites_raw[i:i + 2], "big"))
                                              for i in range(0, len(suites_raw) - 1, 2)])}
    for kind, data in _extensions(r):
        e = _Reader(data, "ClientHello extension")
        if kind == _EXT_SNI and data:
            names = _Reader(e.vector(2), "server_name list")
            while names.left:
                name_type, name = names.u8(), names.vector(2)
                if name_type == 0:
                    fields["sni"] = name.decode("ascii", "replace")
        elif kind == _EXT_ALPN:
            protos = _Reader(e.vector(2), "ALPN list")
            offered = []
            while protos.left:
                offered.append(protos.vector(1).decode("ascii", "replace"))
            fields["alpn"] = _listed(offered)
        elif kind == _EXT_VERSIONS:
            vs = e.vector(1)
            fields["supported_versions"] = _listed(
                [version_name(int.from_bytes(vs[i:i + 2], "big")) for i in range(0, len(vs) - 1, 2)])
    parts = ["ClientHello"]
    if "sni" in fields:
        parts.append(f"SNI {fields['sni']}")
    if "alpn" in fields:
        parts.append(f"ALPN {','.join(fields['alpn'])}")
    offered = [v for v in fields.get("supported_versions", [version_name(legacy)]) if v != "GREASE"]
    parts.append(f"versions {','.join(offered)}")
    return HandshakeInfo("ClientHello", fields, ", ".join(parts))


def _server_hello(body: bytes) -> HandshakeInfo:
    r = _Reader(body, "ServerHello")
    legacy = r.u16()
    random = r.take(32)
    r.vector(1)
    suite = r.u16()
    r.u8()                                   # compression method
    version = legacy
    name = "HelloRetryRequest" if random == HELLO_RETRY_RANDOM else "ServerHello"
    fields: dict = {"random": random.hex(), "cipher_suite": cipher_name(suite), "cipher_suite_id": suite}
    for kind, data in _extensions(r):
        e = _Reader(data, "ServerHello extension")
        if kind == _EXT_VERSIONS and len(data) >= 2:
            version = e.u16()
        elif kind == _EXT_ALPN:
            protos = _Reader(e.vector(2), "ALPN list")
            if protos.left:
                fields["alpn"] = protos.vector(1).decode("ascii", "replace")
    fields["version"] = version_name(version)
    fields["version_id"] = version
    text = f"{name}, {fields['version']}, {fields['cipher_suite']}"
    if "alpn" in fields:
        text += f", ALPN {fields['alpn']}"
    return HandshakeInfo(name, fields, text)


def _encrypted_extensions(body: bytes) -> HandshakeInfo:
    r = _Reader(body, "EncryptedExtensions")
    fields: dict = {}
    block = _Reader(r.vector(2), "EncryptedExtensions' extensions")
    while block.left:
        kind, data = block.u16(), block.vector(2)
        if kind == _EXT_ALPN:
            protos = _Reader(_Reader(data, "ALPN").vector(2), "ALPN list")
            if protos.left:
                fields["alpn"] = protos.vector(1).decode("ascii", "replace")
    text = "EncryptedExtensions" + (f", ALPN {fields['alpn']}" if "alpn" in fields else "")
    return HandshakeInfo("EncryptedExtensions", fields, text)


def parse_handshake(kind: int, body: bytes) -> HandshakeInfo:
    """One whole handshake message (type and body) in words; TlsMalformed if it is cut short."""
    if kind == 1:
        return _client_hello(body)
    if kind == 2:
        return _server_hello(body)
    if kind == 8:
        return _encrypted_extensions(body)
    name = HANDSHAKE_TYPES.get(kind, f"handshake type {kind}")
    return HandshakeInfo(name, {}, name)


class TlsRecords:
    """One direction's record layer: bytes in, :class:`TlsRecord` out.

    ``encrypted`` turns on at this direction's ChangeCipherSpec in TLS 1.2 and before
    (what follows is encrypted, the Finished included).  Not in TLS 1.3 (``tls13``: set by
    this direction's own ServerHello, or by the caller from the other direction's): there
    a ChangeCipherSpec is only for middleboxes, may come before a cleartext second
    ClientHello or ServerHello (after a HelloRetryRequest), and what is encrypted is an
    application_data record anyway.  After :class:`TlsMalformed` the object stays broken.
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self.buf = bytearray()
        self.handshake = bytearray()     # a handshake message spanning records, so far
        self.encrypted = False
        self.tls13 = False
        self.records = 0
        self.broken: Optional[str] = None

    @property
    def buffered(self) -> int:
        return len(self.buf) + len(self.handshake)

    def feed(self, data: bytes) -> list:
        """The records ``data`` completed.  Bytes that break TLS end the list there and set
        ``broken`` (the reason); feeding a broken stream again raises TlsMalformed."""
        if self.broken is not None:
            raise TlsMalformed(self.broken)
        self.buf += data
        out = []
        try:
            while len(self.buf) >= 5:
                ctype, version, length = _HEADER.unpack_from(self.buf)
                self._check_header(ctype, version, length)
                if len(self.buf) < 5 + length:
                    break
                header = bytes(self.buf[:5])
                fragment = bytes(self.buf[5:5 + length])
                # read before it is dropped: a record that breaks TLS stays in buf, the bytes
                # a caller shows with the reason
                out.append(self._record(ctype, version, header, fragment))
                del self.buf[:5 + length]
            if self.buf:
                # the header of the record in progress is checked as soon as it is there
                head = bytes(self.buf[:5])
                if head[0] not in CONTENT_TYPES or (len(head) >= 2 and head[1] != 3):
                    self._check_header(head[0], head[1] << 8 if len(head) >= 2 else 0x0300, 0)
        except TlsMalformed as exc:
            self.broken = str(exc)       # the records before it stand
        return out

    def _check_header(self, ctype: int, version: int, length: int) -> None:
        if ctype not in CONTENT_TYPES:
            raise TlsMalformed(f"record {self.records + 1}: content type {ctype} is not a TLS record type "
                               f"(20-24)")
        if version >> 8 != 3:
            raise TlsMalformed(f"record {self.records + 1}: version 0x{version:04x} is not TLS (3.x)")
        if length > MAX_RECORD_LENGTH:
            raise TlsMalformed(f"record {self.records + 1}: length {length:,} is more than TLS allows "
                               f"({MAX_RECORD_LENGTH:,}: 2^14 + 2048)")

    def _record(self, ctype: int, version: int, header: bytes, fragment: bytes) -> TlsRecord:
        self.records += 1
        name = CONTENT_TYPES[ctype]
        n = len(fragment)
        fields: dict = {"record": name, "length": n}
        title = _TYPE_TITLES[ctype]
        if self.handshake and ctype != 22:
            # RFC 8446 §5.1: a handshake message spanning records is never interleaved
            raise TlsMalformed(f"record {self.records} ({name}) came in the middle of a "
                               f"handshake message ({len(self.handshake):,} bytes of it seen; its "
                               f"length runs past its record)")
        if ctype == 20:
            text = title
            self.encrypted = not self.tls13
        elif self.encrypted or ctype == 23:
            text = f"{title}: encrypted, {n} bytes"
            fields["encrypted"] = True
        elif ctype == 21:
            if n != 2:
                raise TlsMalformed(f"record {self.records}: an alert is 2 bytes, this one {n}")
            fields["alert"] = ALERTS.get(fragment[1], f"alert {fragment[1]}")
            fields["level"] = {1: "warning", 2: "fatal"}.get(fragment[0], str(fragment[0]))
            text = f"{title}: {alert_text(fragment[0], fragment[1])}"
        elif ctype == 22:
            messages = self.handshake_messages(fragment)
            if any(m.fields.get("version_id") == 0x0304 for m in messages):
                self.tls13 = True            # a ServerHello or HelloRetryRequest said so
            fields["handshake"] = [dict(m.fields, type=m.name) for m in messages]
            shown = "; ".join(m.text for m in messages) or \
                f"part of a message ({len(self.handshake):,} bytes so far)"
            text = f"{title}: {shown}"
        else:
            text = f"{title}, {n} bytes"
        return TlsRecord(name, version_name(version), n, text, fields, header, fragment)

    def handshake_messages(self, fragment: bytes) -> list:
        """The handshake messages this fragment completes (they may span records)."""
        self.handshake += fragment
        out = []
        while len(self.handshake) >= 4:
            kind = self.handshake[0]
            length = int.from_bytes(self.handshake[1:4], "big")
            if length > MAX_HANDSHAKE_LENGTH:
                name = HANDSHAKE_TYPES.get(kind, f"type {kind}")
                raise TlsMalformed(f"record {self.records}: handshake message {name} claims "
                                   f"{length:,} bytes, more than {MAX_HANDSHAKE_LENGTH:,} "
                                   f"(MAX_HANDSHAKE_LENGTH) and more than its record's {len(fragment):,}")
            if len(self.handshake) < 4 + length:
                break
            body = bytes(self.handshake[4:4 + length])
            del self.handshake[:4 + length]
            out.append(parse_handshake(kind, body))
        return out

    def cut_short(self) -> Optional[str]:
        """At the end of the stream: what was left unfinished, if anything."""
        if self.buf:
            return f"the stream ended inside a record ({len(self.buf)} of its bytes seen)"
        if self.handshake:
            return f"the stream ended inside a handshake message ({len(self.handshake)} bytes of it)"
        return None


def describe_inner(content_type: int, plaintext: bytes, records: TlsRecords) -> tuple:
    """A decrypted record in words: (text, fields).  Handshake messages go through the
    direction's reassembly (``records.handshake``), alerts get their names; application
    data is left to the caller's decoders."""
    title = _TYPE_TITLES.get(content_type, f"content type {content_type}")
    fields: dict = {"decrypted": True, "inner_type": CONTENT_TYPES.get(content_type, content_type)}
    if content_type == 22:
        saved = records.handshake
        try:
            messages = records.handshake_messages(plaintext)
        except TlsMalformed:
            records.handshake = saved
            raise
        fields["handshake"] = [dict(m.fields, type=m.name) for m in messages]
        return f"{title} (decrypted): {'; '.join(m.text for m in messages) or 'part of a message'}", fields
    if content_type == 21 and len(plaintext) == 2:
        fields["alert"] = ALERTS.get(plaintext[1], f"alert {plaintext[1]}")
        fields["level"] = {1: "warning", 2: "fatal"}.get(plaintext[0], str(plaintext[0]))
        return f"{title} (decrypted): {alert_text(plaintext[0], plaintext[1])}", fields
    return f"{title}: {len(plaintext)} bytes decrypted", fields

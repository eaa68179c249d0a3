"""``sniff --keylog``: TLS record decryption with the secrets of an NSS key log (sans-I/O).

A key log (``SSLKEYLOGFILE``, Python's ``SSLContext.keylog_filename``, curl, browsers)
holds one line per secret: ``LABEL <client_random hex> <secret hex>``.  TLS 1.2 needs
the master secret (``CLIENT_RANDOM``) and derives the record keys with the PRF (RFC
5246 §6.3); TLS 1.3 logs each traffic secret (``CLIENT_HANDSHAKE_TRAFFIC_SECRET``,
``SERVER_TRAFFIC_SECRET_0``, ...) and derives key and IV with HKDF-Expand-Label (RFC
8446 §7).  Both are a few HMACs (the standard library's ``hmac``); only the AEAD
itself (AES-GCM, ChaCha20-Poly1305) needs the ``cryptography`` package -- the ``tls``
extra -- imported when the first record is decrypted.  Why our own and not scapy's TLS
layer: docs/sniff.md, "Decrypting TLS" (measured on the same capture).

The file is read as it grows (a live capture starts before the client writes its
lines), from where the last read stopped, only when a connection's secret is missing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from typing import Optional

__all__ = ["KeyLog", "TlsSession", "Decryptor", "NoKey", "KeyNotYet", "SUITES", "MAX_KEYLOG_CLIENTS",
           "MAX_KEYLOG_LINE", "load_aead"]

#: Connections (client randoms) whose secrets are held.  A churning flood writes one set
#: per connection; sniff keeps up to its own connection bound (tracker.MAX_CONNECTIONS,
#: 100,000), and the oldest go first: a few hundred bytes each, tens of MB at most.
MAX_KEYLOG_CLIENTS = 100_000

#: The longest key log line taken: a label (at most 31 characters), a 64-hex client random
#: and a secret of at most 48 bytes (SHA-384) come to under 230; anything longer is not a
#: key log line, and a file with no newline cannot make us hold it whole.
MAX_KEYLOG_LINE = 512

#: cipher suite -> (AEAD, key length, hash of the PRF/HKDF, fixed IV length in TLS 1.2)
SUITES = {
    0x1301: ("aes-gcm", 16, "sha256", 12), 0x1302: ("aes-gcm", 32, "sha384", 12),
    0x1303: ("chacha20-poly1305", 32, "sha256", 12),
    0xC02B: ("aes-gcm", 16, "sha256", 4), 0xC02F: ("aes-gcm", 16, "sha256", 4),
    0x009E: ("aes-gcm", 16, "sha256", 4), 0x009C: ("aes-gcm", 16, "sha256", 4),
    0xC02C: ("aes-gcm", 32, "sha384", 4), 0xC030: ("aes-gcm", 32, "sha384", 4),
    0x009F: ("aes-gcm", 32, "sha384", 4), 0x009D: ("aes-gcm", 32, "sha384", 4),
    0xCCA8: ("chacha20-poly1305", 32, "sha256", 12), 0xCCA9: ("chacha20-poly1305", 32, "sha256", 12),
    0xCCAA: ("chacha20-poly1305", 32, "sha256", 12),
}

_TAG = 16
_READ_BLOCK = 1 << 20     # a key log is read in blocks of this size (bounded memory)


class NoKey(Exception):
    """This connection's records cannot be decrypted; ``str()`` says why, once."""


class KeyNotYet(NoKey):
    """The key log has no secrets for this connection yet.  Live, the client writes them
    as it reads the ServerHello, which sniff may see first: the caller may hold the
    records a little and ask again."""


def load_aead():
    """The AEAD classes, or :class:`socktools.optional.MissingPackage` naming the extra."""
    try:
        import cryptography  # noqa: F401  (the package itself first: a blocked one stops here)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    except ImportError:
        from socktools.optional import MissingPackage
        raise MissingPackage("tls", "--keylog") from None
    return {"aes-gcm": AESGCM, "chacha20-poly1305": ChaCha20Poly1305}


class KeyLog:
    """The secrets of an NSS key log file, by client random, read as the file grows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.secrets: OrderedDict = OrderedDict()   # client_random -> {label: secret}
        self.ignored = 0                            # lines that are not key log lines

    def lookup(self, client_random: bytes) -> Optional[dict]:
        found = self.secrets.get(client_random)
        if found is None and self._grew():
            self.read()
            found = self.secrets.get(client_random)
        return found

    def _grew(self) -> bool:
        try:
            return os.stat(self.path).st_size != self.offset
        except OSError:
            return False

    def read(self) -> None:
        """Take the lines appended since the last read (a truncated file: from its start),
        a block at a time: a key log of a long flood may be hundreds of MB."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:       # rewritten: start again
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                while True:
                    data = f.read(_READ_BLOCK)
                    if not data:
                        break
                    self.offset += len(data)
                    self._lines(data)
        except OSError:
            return

    def _lines(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_KEYLOG_LINE:
            # a line this long is no key log line: drop it, and the rest of it with it
            self.partial, self.ignored = b"", self.ignored + 1
        for line in lines:
            self._take(line)

    def _take(self, line: bytes) -> None:
        parts = line.split()
        if len(line) > MAX_KEYLOG_LINE or len(parts) != 3 or line.startswith(b"#"):
            self.ignored += bool(line.strip()) and not line.startswith(b"#")
            return
        try:
            label, random, secret = parts[0].decode("ascii"), bytes.fromhex(parts[1].decode()), \
                bytes.fromhex(parts[2].decode())
        except (UnicodeDecodeError, ValueError):
            self.ignored += 1
            return
        entry = self.secrets.get(random)
        if entry is None:
            if len(self.secrets) >= MAX_KEYLOG_CLIENTS:
                self.secrets.popitem(last=False)
            entry = self.secrets[random] = {}
        entry[label] = secret


# ------------------------------------------------------------------ key derivation
def _hkdf_expand_label(secret: bytes, label: str, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label(secret, label, "", length) of RFC 8446 §7.1."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hash_name).digest()
        out += block
        i += 1
    return out[:length]


def _prf12(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """The TLS 1.2 PRF, P_hash(secret, label + seed) (RFC 5246 §5)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, hash_name).digest()
        out += hmac.new(secret, a + seed, hash_name).digest()
    return out[:length]


class Decryptor:
    """One direction's record protection: ``open(header, fragment) -> (type, plaintext)``.

    TLS 1.3 directions move through epochs (handshake keys, then application keys,
    then each KeyUpdate's); the caller says when with :meth:`next_epoch`.
    """

    def __init__(self, aead_class, suite: tuple, *, key: bytes = b"", iv: bytes = b"",
                 epochs: tuple = ()) -> None:
        """TLS 1.2: the record ``key`` and fixed ``iv``.  TLS 1.3: ``epochs``, the logged
        traffic secrets in order (handshake, then application); the first is taken now."""
        self.aead_class = aead_class
        self.suite = suite
        self.tls13 = bool(epochs)
        self.aead = aead_class(key) if key else None
        self.iv = iv
        self.seq = 0
        self.later = list(epochs)     # TLS 1.3: the traffic secrets of the epochs still to come
        self.secret: Optional[bytes] = None
        if self.tls13:
            self.next_epoch()

    def next_epoch(self, secret: Optional[bytes] = None) -> bool:
        """TLS 1.3: switch to the next traffic secret (``secret``, or the next logged one)."""
        if secret is None:
            if not self.later:
                return False
            secret = self.later.pop(0)
        kind, key_len, hash_name, _ = self.suite
        self.secret = secret
        self.aead = self.aead_class(_hkdf_expand_label(secret, "key", key_len, hash_name))
        self.iv = _hkdf_expand_label(secret, "iv", 12, hash_name)
        self.seq = 0
        return True

    def key_update(self) -> None:
        """TLS 1.3 KeyUpdate: the next application secret derives from this one."""
        _, _, hash_name, _ = self.suite
        size = hashlib.new(hash_name).digest_size
        self.next_epoch(_hkdf_expand_label(self.secret, "traffic upd", size, hash_name))

    def _nonce(self, explicit: bytes = b"") -> bytes:
        if explicit:                      # TLS 1.2 AES-GCM: 4-byte salt + 8 bytes in the record
            return self.iv + explicit
        padded = self.seq.to_bytes(12, "big")
        return bytes(a ^ b for a, b in zip(self.iv, padded))

    def open(self, header: bytes, fragment: bytes) -> tuple:
        """(content type, plaintext) of one record, or ``InvalidTag`` (wrong key)."""
        if self.tls13:
            plain = self.aead.decrypt(self._nonce(), fragment, header)
            self.seq += 1
            inner = plain.rstrip(b"\x00")
            if not inner:
                raise ValueError("a TLS 1.3 record with no content type")
            return inner[-1], inner[:-1]
        ctype, version = header[0], header[1:3]
        if self.suite[0] == "aes-gcm":
            explicit, body = fragment[:8], fragment[8:]
            nonce = self._nonce(explicit)
        else:
            body, nonce = fragment, self._nonce()
        size = len(body) - _TAG
        if size < 0:
            raise ValueError("a record shorter than its authentication tag")
        aad = self.seq.to_bytes(8, "big") + bytes([ctype]) + version + size.to_bytes(2, "big")
        plain = self.aead.decrypt(nonce, body, aad)
        self.seq += 1
        return ctype, plain


class TlsSession:
    """What one connection's two directions share: the randoms, the version and suite
    the ServerHello chose, and the key log; makes each direction's :class:`Decryptor`."""

    def __init__(self, keylog: Optional[KeyLog]) -> None:
        self.keylog = keylog
        self.client_random: Optional[bytes] = None
        self.server_random: Optional[bytes] = None
        self.version: Optional[int] = None
        self.suite: Optional[int] = None
        self.told = False                 # "no key for this connection" is said once

    def decryptor(self, role: str) -> Decryptor:
        """A new decryptor for ``role``'s direction (``request``: the client's), or NoKey."""
        if self.keylog is None:
            raise NoKey("no --keylog given")
        if self.client_random is None or self.suite is None:
            raise NoKey("the handshake's hellos were not captured (the capture started mid-connection)")
        params = SUITES.get(self.suite)
        if params is None:
            from socktools.wire.tls_records import cipher_name
            raise NoKey(f"cipher suite {cipher_name(self.suite)} is not one sniff decrypts "
                        f"(AES-GCM and ChaCha20-Poly1305 only)")
        secrets = self.keylog.lookup(self.client_random)
        if not secrets:
            raise KeyNotYet(f"no key for this connection in {self.keylog.path} (client random "
                            f"{self.client_random.hex()[:16]}…)")
        aeads = load_aead()
        side = "CLIENT" if role == "request" else "SERVER"
        if self.version == 0x0304:
            epochs = [secrets[label] for label in (f"{side}_HANDSHAKE_TRAFFIC_SECRET",
                                                   f"{side}_TRAFFIC_SECRET_0") if label in secrets]
            if not epochs:
                raise NoKey(f"no key for this connection: the key log has no {side}_TRAFFIC_SECRET_0 "
                            f"for it")
            return Decryptor(aeads[params[0]], params, epochs=tuple(epochs))
        master = secrets.get("CLIENT_RANDOM")
        if master is None:
            raise NoKey("no key for this connection: the key log has no CLIENT_RANDOM line for it")
        kind, key_len, hash_name, iv_len = params
        block = _prf12(master, b"key expansion", self.server_random + self.client_random,
                       2 * (key_len + iv_len), hash_name)
        ck, sk = block[:key_len], block[key_len:2 * key_len]
        civ, siv = block[2 * key_len:2 * key_len + iv_len], block[2 * key_len + iv_len:]
        key, iv = (ck, civ) if role == "request" else (sk, siv)
        return Decryptor(aeads[kind], params, key=key, iv=iv)

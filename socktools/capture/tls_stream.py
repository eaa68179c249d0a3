"""One direction of a TLS connection in sniff: records in words, and (with --keylog) the
decrypted application data handed to the ``--decode`` parsers.

``reassembly.StreamDecoder`` hands this the ordered bytes once the stream's first bytes
say TLS (``tls_records.looks_like_tls``).  The dissection is ``socktools.wire.tls_records``;
the keys are ``tls_decrypt``; the plaintext goes to ``inner`` (another stream decoder,
fed the plaintext stream's offsets), whose events come out under the same packet.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from socktools.capture.events import Note, TlsEvent, preview_bytes
from socktools.capture.tls_decrypt import KeyNotYet, NoKey, TlsSession
from socktools.wire.tls_records import TlsMalformed, TlsRecords, describe_inner

__all__ = ["TlsStream"]

_APPLICATION, _HANDSHAKE, _ALERT = 23, 22, 21

#: Encrypted bytes of one direction held while its key is not in the key log yet.  Live,
#: the server's first encrypted flight (TLS 1.3: EncryptedExtensions to Finished, the
#: certificate chain included) can reach sniff before the client has written the secrets
#: it derives from the ServerHello; 64 KiB holds such a flight (a chain of a few
#: certificates is a few KiB) and bounds what a connection with no key at all costs.
MAX_WAITING_BYTES = 64 << 10


class TlsStream:
    """Records of one direction; ``feed(offset, data, packet)`` -> events, ``finish()``."""

    def __init__(self, role: str, session: TlsSession, inner=None) -> None:
        self.role = role
        self.session = session
        self.records = TlsRecords(role)
        self.inner = inner                 # a StreamDecoder for the plaintext, or None
        self.decryptor = None
        self.gave_up: Optional[str] = None  # why this direction is shown encrypted
        self.waiting: list = []            # (record, index) held until the key log has the key
        self.waiting_bytes = 0
        self.plain_offset = 0
        self.chunks: deque = deque()       # (start, end, packet) not yet in a whole record
        self.consumed = 0
        self.count = 0
        self.broken = False

    def feed(self, offset: int, data: bytes, packet: int) -> list:
        """The events of the records ``data`` completed; bytes that break TLS set
        ``records.broken`` (the caller shows raw bytes from there, with the reason)."""
        self.chunks.append((offset, offset + len(data), packet))
        if self.session.version == 0x0304:
            self.records.tls13 = True        # the other direction's ServerHello said so
        events: list = []
        for rec in self.records.feed(data):
            events += self._record(rec, packet)
        return events

    def finish(self, packet: int) -> list:
        out = self.finish_waiting(packet)
        why = self.records.cut_short()
        if why:
            held = bytes(self.records.buf or self.records.handshake)
            out.append(Note("truncated", f"{self.role} TLS stream: {why}: {preview_bytes(held)}"))
        if self.inner is not None:
            out += self.inner.finish(packet)
        return out

    def finish_waiting(self, packet: int) -> list:
        """The stream ends: records held for their key are decrypted now or given up."""
        return self._late(packet, final=True) if self.waiting else []

    # ------------------------------------------------------------------ internals
    def _spanned(self, size: int) -> tuple:
        start, end = self.consumed, self.consumed + size
        spanned = [c[2] for c in self.chunks if c[0] < end and c[1] > start]
        while self.chunks and self.chunks[0][1] <= end:
            self.chunks.popleft()
        self.consumed = end
        return len(set(spanned)), spanned[0] if spanned else 0

    def _record(self, rec, packet: int) -> list:
        self.count += 1
        segments, first = self._spanned(5 + rec.length)
        fields = dict(rec.fields)
        self._learn(fields)
        text = rec.text
        after: list = []
        if fields.get("encrypted"):
            text, after = self._decrypt(rec, fields, text, packet)
        event = TlsEvent(self.role, self.count, rec.type, rec.length, text, fields, segments, first)
        return [event] + after

    def _learn(self, fields: dict) -> None:
        """The hellos say what the keys need: the randoms, the version, the suite."""
        for msg in fields.get("handshake", ()):
            if msg["type"] == "ClientHello" and self.role == "request":
                self.session.client_random = bytes.fromhex(msg["random"])
            elif msg["type"] in ("ServerHello", "HelloRetryRequest") and self.role == "response":
                # a HelloRetryRequest says the version already; its random is a constant
                if msg["type"] == "ServerHello":
                    self.session.server_random = bytes.fromhex(msg["random"])
                self.session.version = msg["version_id"]
                self.session.suite = msg["cipher_suite_id"]
            msg.pop("random", None)       # 32 random bytes: noise in the view and the JSON
            msg.pop("version_id", None)
            msg.pop("cipher_suite_id", None)

    def _decrypt(self, rec, fields: dict, text: str, packet: int) -> tuple:
        """(text, events after the record's own): the record decrypted, or said why not."""
        if self.session.keylog is None or self.gave_up is not None:
            return text, []
        late: list = []
        if self.decryptor is None:
            if self.waiting:
                late = self._late(packet)
            else:
                try:
                    self.decryptor = self.session.decryptor(self.role)
                except KeyNotYet:
                    pass
                except NoKey as exc:
                    return text, self._give_up(str(exc))
            if self.decryptor is None:
                if self.gave_up is None and self.waiting_bytes + rec.length <= MAX_WAITING_BYTES:
                    self.waiting.append((rec, self.count))
                    self.waiting_bytes += rec.length
                    return text, late
                return text, late + self._give_up(self.gave_up or self._why_no_key())
        text, after = self._decrypt_now(rec, fields, text, packet)
        return text, late + after

    def _why_no_key(self) -> str:
        try:
            self.session.decryptor(self.role)
        except NoKey as exc:
            return str(exc)
        return "no key for this connection"

    def _give_up(self, why: str) -> list:
        self.gave_up = why
        self.waiting.clear()
        self.waiting_bytes = 0
        if self.session.told:
            return []
        self.session.told = True              # once per connection, not per direction
        return [Note("tls-key", f"{why}; its records are shown encrypted")]

    def _late(self, packet: int, final: bool = False) -> list:
        """Ask the key log again for the records held; decrypt them in order if it has the key
        now (each said again, decrypted, under this packet), else hold on (or, at the end of
        the stream, give up)."""
        try:
            self.decryptor = self.session.decryptor(self.role)
        except KeyNotYet as exc:
            return self._give_up(str(exc)) if final else []
        except NoKey as exc:
            return self._give_up(str(exc))
        events: list = []
        held, self.waiting, self.waiting_bytes = self.waiting, [], 0
        for rec, index in held:
            if self.gave_up is not None:
                break
            fields = dict(rec.fields)
            text, after = self._decrypt_now(rec, fields, rec.text, packet)
            events.append(TlsEvent(self.role, index, rec.type, rec.length, text + " (its key came later)",
                                   fields, 1, packet))
            events += after
        return events

    def _decrypt_now(self, rec, fields: dict, text: str, packet: int) -> tuple:
        notes: list = []
        try:
            ctype, plain = self._open(rec)
        except Exception as exc:  # noqa: BLE001 - InvalidTag, a short record: the key does not fit
            self.gave_up = f"record {self.count} does not decrypt with the logged secret ({type(exc).__name__})"
            return text, [Note("tls-key", f"{self.role} {self.gave_up}; shown encrypted from here")]
        try:
            words, inner_fields = describe_inner(ctype, plain, self.records)
        except TlsMalformed as exc:
            return text + " (decrypted, malformed)", [Note("tls-malformed", f"{self.role} {exc}")]
        fields.update(inner_fields)
        fields["plaintext_length"] = len(plain)
        self._after(ctype, fields)
        if ctype == _APPLICATION:
            notes += self._plaintext(plain, packet)
        return words, notes

    def _open(self, rec) -> tuple:
        dec = self.decryptor
        if not dec.tls13:
            return dec.open(rec.header, rec.fragment)
        while True:
            try:
                return dec.open(rec.header, rec.fragment)
            except Exception:
                # the handshake secret missing from the log, or the Finished not seen:
                # the next logged epoch may fit (and then stays)
                if not dec.next_epoch():
                    raise

    def _after(self, ctype: int, fields: dict) -> None:
        """TLS 1.3: a Finished ends the handshake keys, a KeyUpdate replaces the traffic keys."""
        if not self.decryptor.tls13 or ctype != _HANDSHAKE:
            return
        for msg in fields.get("handshake", ()):
            if msg["type"] == "Finished":
                self.decryptor.next_epoch()
            elif msg["type"] == "KeyUpdate":
                self.decryptor.key_update()

    def _plaintext(self, plain: bytes, packet: int) -> list:
        if self.inner is None or not plain:
            return []
        start = self.plain_offset
        self.plain_offset += len(plain)
        out = self.inner.feed(start, plain, packet)
        if self.inner.showing_raw:
            out.append(Note("raw", f"{self.role} plaintext: {preview_bytes(plain)}"))
        return out


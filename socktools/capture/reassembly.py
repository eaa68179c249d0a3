"""Per-direction TCP stream reassembly, fed through the project's framed decoder.

One :class:`StreamDecoder` per direction of a connection puts segments back
in stream order (dropping retransmitted bytes, holding early ones until the
gap fills), hands the ordered bytes to :class:`socktools.protocol.Decoder` —
the same decoder the server and the clients use — and reports each message
with the packets it spanned, attached to the packet that completed it.

Decode modes: ``framed`` decodes and reports protocol errors; ``auto`` tries
the framed decoder and, beside it, the wire parsers (redis, http, line) on
the first bytes of the stream: the first to complete a message decodes the
rest (line, which takes almost anything with a newline, only once every other
has failed or the stream ended).  When none parses within
:data:`AUTO_DECIDE_BYTES`, or by the FIN, the direction falls back to ``raw``
(a hex/ASCII preview of each segment) and the bytes held while deciding are
shown in the note that says so; ``none`` skips payloads entirely.  ``redis``, ``http`` and
``line`` run the parsers flood and request use (:mod:`socktools.wire`) on
the ordered bytes instead, one per direction.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Optional

# (MessageEvent, Note, _PREVIEW and preview_bytes are imported from here by the views and fastlane)
from socktools.capture.events import _PREVIEW, MessageEvent, Note, TlsEvent, preview_bytes  # noqa: F401
from socktools.protocol import NEED_DATA, Decoder, Message, RemoteProtocolError
from socktools.wire import modes
from socktools.wire.framed import CONTENT_PREVIEW as _CONTENT_PREVIEW, content_preview
from socktools.wire.raw import NOT_TEXT
from socktools.wire.tls_records import looks_like_tls

__all__ = ["DECODE_MODES", "MessageEvent", "Note", "StreamDecoder", "preview_bytes",
           "message_comment", "SNIFF_MAX_CONTENT", "MAX_PENDING", "AUTO_DECIDE_BYTES"]

#: Decoders of other protocols: the wire parsers, run on the reassembled stream.
WIRE_DECODES = modes.decoders()

DECODE_MODES = ("auto", "framed", "raw", "none", "tls") + WIRE_DECODES
#: ``sniff --decode``'s help.
DECODE_HELP = (f"Payloads: auto = TLS records, the framed protocol, {', '.join(WIRE_DECODES[:-1])} or "
               f"{WIRE_DECODES[-1]}, whichever parses the start of each stream, else a hex/ASCII preview; "
               f"tls = TLS records (with --keylog, auto on the plaintext); "
               f"{'/'.join(WIRE_DECODES)} = those messages, by the parsers flood uses (with --keylog: "
               f"inside TLS).")

#: A sniffer should follow any server the user runs, including one started with
#: a raised content cap, but must stay bounded: 16 MiB per message in flight.
SNIFF_MAX_CONTENT = 16 << 20

#: Bytes held per direction while waiting for a missing segment.  Past this the
#: gap is taken as real (the packet was not captured) and decoding stops for
#: that direction; 4 MiB is a few round trips of a loopback window.
MAX_PENDING = 4 << 20

#: ``auto`` guesses the protocol from at most this many bytes per direction: an
#: HTTP request head (nginx reads one into 8 KiB buffers, most fit in 1 KiB), a
#: redis command or a line of text is complete well within it.  Past it, an
#: undecided direction is shown raw (or left to the framed decoder, whose own
#: header cap applies) and nothing more is held for guessing: with up to
#: tracker.MAX_CONNECTIONS streams, a guess must stay small.
AUTO_DECIDE_BYTES = 4096

def _looks_framed(buf: bytes) -> Optional[bool]:
    """Early recognition for ``auto``: can these first bytes start a framed message?

    The decoder would wait for the whole claimed header before judging (``GET``
    claims a 18,245-byte header); a JSON header that is an object must start
    with ``{`` (or whitespace), so the third byte decides at once.
    """
    if len(buf) < 3:
        return None
    if buf[0] == 0 and buf[1] == 0:
        return False
    return buf[2] in b"{ \t\r\n"


class StreamDecoder:
    """Reassembles one direction of a connection and decodes what it can.

    ``feed(offset, data, packet)`` takes a segment's payload at its stream
    offset (0 = first byte after the SYN) and returns the events it completed;
    ``finish(packet)`` is called at FIN.  ``showing_raw`` tells the caller to
    show a preview of each segment's payload instead.
    """

    __slots__ = ("mode", "role", "state", "next", "pending", "pending_bytes", "decoder",
                 "chunks", "consumed", "count", "head", "max_pending", "wire", "protocol",
                 "guesses", "held", "session", "tls", "undecided")

    def __init__(self, mode: str, role: str, *, max_content: int = SNIFF_MAX_CONTENT,
                 max_pending: int = MAX_PENDING, session=None) -> None:
        if mode not in DECODE_MODES:
            raise ValueError(f"decode mode must be one of {DECODE_MODES}")
        self.mode = mode
        self.role = role
        # trying (auto, nothing decided) | framed | raw | off
        self.state = {"auto": "trying", "framed": "framed", "raw": "raw", "none": "off",
                      "tls": "trying"}.get(mode, "wire")
        self.wire = None
        self.protocol = mode             # what the bytes are decoded as (auto: once found)
        if self.state == "wire":
            self.wire = modes.get(mode).stream_parser(role)
        # auto: the wire parsers still in the running, fed beside the framed decoder, and
        # the bytes they were fed (to show raw if none wins); both end at the verdict
        # (None: auto, not started; the parsers are made at the first bytes, and only
        # those the first bytes allow: a framed stream makes none)
        self.guesses: Optional[list] = None if mode == "auto" else []
        self.held: Optional[bytearray] = bytearray() if mode == "auto" else None
        self.next = 0
        self.pending: dict[int, tuple[bytes, int]] = {}
        self.pending_bytes = 0
        self.max_pending = max_pending
        self.decoder = Decoder(max_content) if self.state in ("trying", "framed") and mode != "tls" else None
        self.chunks: deque = deque()     # (start, end, packet) fed but not yet in a message
        self.consumed = 0                # stream offset where the message in progress starts
        self.count = 0                   # messages decoded
        self.head = b""                  # first bytes, while auto is still deciding
        # TLS: recognised by the first bytes where the mode allows it (auto, tls, or any
        # mode given a connection's TLS session, i.e. with --keylog); then self.tls (a
        # TlsStream) takes the bytes and this decoder's own state is "tls"
        if mode in ("auto", "tls") and session is None:
            from socktools.capture.tls_decrypt import TlsSession
            session = TlsSession(None)
        self.session = session if mode not in ("raw", "none") else None
        self.tls = None
        # segments held while fewer than 3 bytes say whether this is TLS: (offset, data, packet)
        self.undecided: Optional[list] = [] if self.session is not None else None

    @property
    def showing_raw(self) -> bool:
        return self.state == "raw"

    @property
    def decoding(self) -> bool:
        return self.state in ("trying", "framed", "wire", "tls")

    def feed(self, offset: int, data: bytes, packet: int) -> list:
        if not data or not self.decoding:
            return []
        end = offset + len(data)
        if end <= self.next:
            return []                    # retransmission of bytes already delivered
        if offset > self.next:           # early: hold until the gap fills
            if offset not in self.pending or len(self.pending[offset][0]) < len(data):
                old = self.pending.get(offset)
                self.pending_bytes += len(data) - (len(old[0]) if old else 0)
                self.pending[offset] = (data, packet)
            if self.pending_bytes > self.max_pending:
                return self._gap(packet)
            return []
        if offset < self.next:
            data = data[self.next - offset:]
            offset = self.next
        events = self._deliver(offset, data, packet)
        while self.pending and self.decoding:
            ready = [o for o in self.pending if o <= self.next]
            if not ready:
                break
            for o in sorted(ready):
                chunk, pkt = self.pending.pop(o)
                self.pending_bytes -= len(chunk)
                if o + len(chunk) > self.next and self.decoding:
                    events += self._deliver(self.next, chunk[self.next - o:], pkt)
        return events

    def finish(self, packet: int) -> list:
        """The sender closed (FIN): a message cut short is worth saying."""
        if not self.decoding:
            return []
        if self.pending:
            return self._gap(packet)
        if self.undecided:
            return self._not_tls(packet, final=True)
        if self.state == "tls":
            self.state = "off"
            return self.tls.finish(packet)
        if self.state == "wire":
            return self._wire_finish()
        if self.decoder is None:         # auto: framed ruled out, the wire parsers undecided
            return self._guess_at_end("the stream ended")
        self.decoder.receive_data(b"")
        try:
            self.decoder.next_event()
        except RemoteProtocolError as exc:
            if self.state == "trying" and self.count == 0:
                self.decoder = None
                return self._guess_at_end(str(exc))
            self.state = "raw"
            return [Note("truncated", f"{self.role} stream ended mid-message: {exc}")]
        self.state = "off"
        return []

    # ------------------------------------------------------------------ internals
    def _deliver(self, offset: int, data: bytes, packet: int) -> list:
        if self.undecided is not None:
            return self._tls_or_not(offset, data, packet)
        if self.state == "tls":
            self.next = offset + len(data)
            return self._tls_feed(offset, data, packet)
        self.next = offset + len(data)
        if self.state == "wire":
            self.chunks.append((offset, self.next, packet))
            return self._wire_feed(data)
        if self.state == "trying":
            self.chunks.append((offset, self.next, packet))
            if self.held is not None:
                self.held += data
            if self.guesses is None or self.guesses:
                found = self._guess(data)
                if found is not None:
                    return found
            if self.held is not None and len(self.held) > AUTO_DECIDE_BYTES:
                self.guesses = []
                if self.decoder is None:
                    return self._raw(f"nothing parsed the first {AUTO_DECIDE_BYTES} bytes",
                                     len(data))
                self.held = None         # the framed decoder goes on alone, as it did
            if self.decoder is None:     # framed ruled out, still guessing
                return []
            if len(self.head) < 3:
                self.head += data[:3]
            if _looks_framed(self.head) is False:
                self.decoder = None
                return self._guess_or_raw("the first bytes cannot start a framed message",
                                          len(data))
        else:
            self.chunks.append((offset, self.next, packet))
        events: list = []
        try:
            self.decoder.receive_data(data)
            while True:
                ev = self.decoder.next_event()
                if ev is NEED_DATA:
                    break
                events.append(self._message(ev))
        except RemoteProtocolError as exc:
            if self.state == "trying" and self.count == 0:
                self.decoder = None
                return events + self._guess_or_raw(str(exc), len(data))
            self.state = "raw"
            events.append(Note("decode-error", f"{self.role} stream broke the framed protocol after "
                                               f"{self.count} message(s): {exc}; showing raw bytes"))
        return events

    def _message(self, msg: Message) -> MessageEvent:
        start, end = self.consumed, self.consumed + msg.wire_size
        spanned = [c[2] for c in self.chunks if c[0] < end and c[1] > start]
        while self.chunks and self.chunks[0][1] <= end:
            self.chunks.popleft()
        self.consumed = end
        self.count += 1
        if self.state == "trying":
            self.state = "framed"
            self.protocol = "framed"
            self.guesses = []
            self.held = None
        return MessageEvent(self.role, self.count, msg.header, msg.content_type,
                            content_preview(msg), msg.wire_size, len(set(spanned)),
                            spanned[0] if spanned else 0)

    def abandon(self, packet: int) -> list:
        """The connection was reset: a TLS stream's records still waiting for their key are
        decrypted if the key log has it now, else given up, said once."""
        if self.state == "tls" and self.tls.waiting:
            return self.tls.finish_waiting(packet)
        return []

    # ------------------------------------------------------------------ TLS
    def _tls_or_not(self, offset: int, data: bytes, packet: int) -> list:
        """The first bytes decide: TLS (a TlsStream takes them) or the mode's own decoding."""
        self.undecided.append((offset, data, packet))
        self.next = offset + len(data)
        head = b"".join(d for _, d, _ in self.undecided)[:3]
        verdict = looks_like_tls(head)
        if verdict is None and len(head) < 3:
            return []
        if not verdict:
            return self._not_tls(packet)
        held, self.undecided = self.undecided, None
        from socktools.capture.tls_stream import TlsStream
        inner_mode = "auto" if self.mode in ("auto", "tls") else self.mode
        inner = StreamDecoder(inner_mode, self.role) if self.session.keylog is not None else None
        self.tls = TlsStream(self.role, self.session, inner)
        self.state = "tls"
        self.protocol = "tls"
        self.decoder = None
        self.guesses = []
        self.held = None
        events: list = []
        for o, d, p in held:
            events += self._tls_feed(o, d, p)
            if self.state != "tls":
                break
        return events

    def _not_tls(self, packet: int, final: bool = False) -> list:
        held, self.undecided = self.undecided, None
        if self.mode == "tls":
            self.state = "raw"
            self.chunks.clear()
            before = b"".join(d for _, d, _ in (held if final else held[:-1]))
            events = [Note("not-framed", f"{self.role} stream is not TLS (the first bytes are not "
                                         f"a handshake record, 16 03 01-04); showing raw bytes")]
            if before:
                events.append(Note("raw", f"{self.role} bytes before that ({len(before)}): "
                                          f"{preview_bytes(before)}"))
            return events
        events: list = []
        for o, d, p in held:
            events += self._deliver(o, d, p)
        if final:
            events += self.finish(packet)
        return events

    def _tls_feed(self, offset: int, data: bytes, packet: int) -> list:
        events = self.tls.feed(offset, data, packet)
        records = self.tls.records
        if records.broken is None:
            return events
        self.state = "raw"
        self.chunks.clear()
        events.append(Note("tls-malformed", f"{self.role} stream breaks TLS: {records.broken}; "
                                            f"showing raw bytes"))
        # the bytes in question: the record (or handshake message) it was reading
        held = records.buf or records.handshake
        if held:
            events.append(Note("raw", f"{self.role} bytes it was reading ({len(held):,}): "
                                      f"{preview_bytes(bytes(held))}"))
        return events

    # ------------------------------------------------------------------ wire decoders
    def _wire_feed(self, data: bytes) -> list:
        from socktools.wire.base import WireError
        try:
            self.wire.feed(data)
        except WireError as exc:
            return self._wire_messages() + self._wire_broken(str(exc))
        return self._wire_messages()

    def _wire_finish(self) -> list:
        from socktools.wire.base import WireError
        try:
            self.wire.eof()
        except WireError as exc:
            self.state = "raw"
            return self._wire_messages() + [Note("truncated", f"{self.role} stream ended mid-message: {exc}")]
        self.state = "off"
        return self._wire_messages()

    def _wire_broken(self, reason: str) -> list:
        self.state = "raw"
        self.wire = None
        self.chunks.clear()
        return [Note("decode-error", f"{self.role} stream is not {self.protocol} after {self.count} "
                                     f"message(s): {reason}; showing raw bytes")]

    def _wire_messages(self) -> list:
        """MessageEvents for the replies the wire parser completed, with the packets they spanned."""
        parser = self.wire
        if parser is None or not parser.keep:
            return []
        events = []
        for reply in parser.keep:
            start, end = self.consumed, self.consumed + reply.size
            spanned = [c[2] for c in self.chunks if c[0] < end and c[1] > start]
            while self.chunks and self.chunks[0][1] <= end:
                self.chunks.popleft()
            self.consumed = end
            self.count += 1
            text = reply.summary
            if len(text) > _CONTENT_PREVIEW:
                text = text[:_CONTENT_PREVIEW - 1] + "…"
            events.append(MessageEvent(self.role, self.count, _wire_header(reply.fields), self.protocol, text,
                                       reply.size, len(set(spanned)), spanned[0] if spanned else 0))
        parser.keep.clear()
        parser.failures.clear()
        return events

    # ------------------------------------------------------------------ auto's guess
    def _guess(self, data: bytes) -> Optional[list]:
        """Feed the wire parsers still in the running; the events of a verdict, or None."""
        from socktools.wire.base import WireError
        if self.guesses is None:
            self.guesses = _guessers(self.role, self.held[0])
        alive = []
        text = _is_text(data)
        for name, parser in self.guesses:
            if modes.get(name).catch_all and not text:
                continue                 # ruled out without waiting for a newline

            try:
                parser.feed(data)
            except WireError:
                continue
            alive.append((name, parser))
        self.guesses = alive
        for name, parser in alive:
            # the first to complete a message wins; line (nearly anything with a newline)
            # only when nothing else can still win
            if parser.keep and (not modes.get(name).catch_all or (self.decoder is None and len(alive) == 1)):
                return self._adopt(name, parser)
        if len(self.held) > AUTO_DECIDE_BYTES:
            for name, parser in alive:
                # still parsing, and not just buffering while it waits (an HTTP reply's
                # long body is counted as it comes; a redis parser waiting for CRLF holds all)
                if not modes.get(name).catch_all and parser.buffered < len(self.held):
                    return self._adopt(name, parser)
        if not alive and self.decoder is None:
            return self._raw("the first bytes are none of them", len(data))
        return None

    def _guess_or_raw(self, reason: str, current: int) -> list:
        """The framed decoder was just ruled out: a wire parser that already has a message
        wins, one still waiting keeps the stream undecided, else raw."""
        if not self.guesses:
            return self._raw(f"{reason}; no other parser takes them", current)
        for name, parser in self.guesses:
            if parser.keep and (not modes.get(name).catch_all or len(self.guesses) == 1):
                return self._adopt(name, parser)
        return []

    def _guess_at_end(self, reason: str) -> list:
        """FIN while undecided: the first parser with whole messages and a clean end wins."""
        from socktools.wire.base import WireError
        for name, parser in self.guesses:
            try:
                parser.eof()
            except WireError:
                continue
            if parser.keep:
                events = self._adopt(name, parser)
                self.state = "off"
                return events
        return self._raw(reason, 0)

    def _adopt(self, name: str, parser) -> list:
        self.state = "wire"
        self.protocol = name
        self.wire = parser
        self.decoder = None
        self.guesses = []
        self.held = None
        return self._wire_messages()

    def _raw(self, reason: str, current: int) -> list:
        """Nothing parses: show raw from now on, and show here the bytes held while deciding
        (all but the ``current`` segment's, which gets the usual per-packet preview)."""
        held = bytes(self.held[:len(self.held) - current]) if self.held else b""
        self.guesses = []
        self.held = None
        tried = "the framed protocol" if self.mode != "auto" else \
            "the framed protocol, redis, http or line"
        events = self._not_framed(reason, tried)
        if held:
            events.append(Note("raw", f"{self.role} bytes before that ({len(held)}): "
                                      f"{preview_bytes(held)}"))
        return events

    def _not_framed(self, reason: str, tried: str = "the framed protocol") -> list:
        self.state = "raw"
        self.decoder = None
        self.chunks.clear()
        return [Note("not-framed", f"{self.role} stream is not {tried} ({reason}); "
                                   f"showing raw bytes")]

    def _gap(self, packet: int) -> list:
        missing = min(self.pending) - self.next if self.pending else 0
        self.state = "off"
        self.pending.clear()
        self.pending_bytes = 0
        self.decoder = None
        return [Note("gap", f"{self.role} stream is missing {missing} bytes at offset {self.next} "
                            f"(not captured); stopped decoding it")]


#: Control bytes no line of text holds (tab, CR and LF aside): line is for text.
_NOT_TEXT = NOT_TEXT


def _is_text(data: bytes) -> bool:
    return len(data.translate(None, _NOT_TEXT)) == len(data)


def _guessers(role: str, first: int) -> list:
    """(name, parser) for each wire protocol auto may find in a stream starting with byte
    ``first`` (the registry's test of a first byte: a framed flood's first bytes rule out every
    one), in the order they are preferred (HTTP only where httptools is installed)."""
    out = []
    for name in WIRE_DECODES:
        mode = modes.get(name)
        if not mode.may_start(first):
            continue
        try:
            out.append((name, mode.stream_parser(role)))
        except ImportError:
            pass
    return out


def _wire_header(fields: dict) -> dict:
    """The JSON-able, short part of a wire reply's fields (its type, status, headers)."""
    out = {}
    if "type" in fields:
        out["type"] = fields["type"]
    if fields.get("status"):
        out["status"] = fields["status"]
    if fields.get("headers"):
        out["headers"] = dict(fields["headers"][:20])
    return out


def message_comment(events) -> str:
    """What a pcapng packet comment says about the messages this packet completed."""
    lines = []
    for ev in events:
        if isinstance(ev, MessageEvent):
            segs = "1 segment" if ev.segments == 1 else \
                f"{ev.segments} segments from packet {ev.first_packet}"
            lines.append(f"socktools: {ev.role} #{ev.index}: {ev.content_type}, "
                         f"{ev.wire_size} bytes in {segs}")
            lines.append(f"header {json.dumps(ev.header, ensure_ascii=False)}")
            lines.append(f"content {ev.content_preview}")
        elif isinstance(ev, TlsEvent):
            lines.append(f"socktools: {ev.role} TLS #{ev.index}: {ev.text}")
        else:
            lines.append(f"socktools: {ev.text}")
    return "\n".join(lines)

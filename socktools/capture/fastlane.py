"""The fast lane: the common packet tracked and printed in one loop, without a record.

Why: the general path costs ~25 us of Python per packet — a ``Segment``, the
tracker's full analysis, a 23-field ``PacketRecord``, then a line assembled
from it — and at 40,000 packets/s on a busy machine that is more than the
reader has, so the ring fills and the kernel drops.  Almost every packet of a
busy capture is the same shape: Ethernet (Linux ``lo``), IPv4 without
options, an ACK of a connection already known, nothing remarkable about it.
For that shape this loop reads the headers with one ``unpack_from``, finds the
connection with one dict lookup on 12 bytes of the frame
(:attr:`Tracker.fast <socktools.capture.tracker.Tracker.fast>`), checks that
none of the tracker's marks could apply, updates the same connection state
the tracker keeps, and prints the line with one format string.

Everything else takes the general path, packet by packet, in order:
:meth:`Sniffer.one <socktools.capture.session.Sniffer.one>` then
:meth:`TextView.render <socktools.capture.lines.TextView.render>`.  That
includes the first packet, handshakes, FIN and RST, any packet that may carry
a mark (possible retransmission, keep-alive, dup ACK, zero window, window
full), the first payload of a stream and any packet that completes a decoded
message, IPv6, other link types, and unusual TCP options.  The lane decides
before it changes any state, so a packet it hands over is analysed by the
tracker from exactly the state it would have seen.  The contract — the two
paths print the same bytes — is a test (``tests/test_sniff_fastlane.py``).
"""

from __future__ import annotations

import struct

from socktools.capture.dissect import LINKTYPE_ETHERNET, flag_names, format_ip
from socktools.capture.reassembly import _PREVIEW, MessageEvent, message_comment, preview_bytes
from socktools.capture.tracker import UNWRAP_FROM, PacketRecord, unwrap

__all__ = ["FastLane"]

# From offset 14, IPv4 without options then TCP, only the fields the lane uses: total
# length, fragment, protocol, seq, ack, flags, window (and the time stamps after NOP, NOP,
# kind 8, length 10).  Skipping the rest ("x") saves building nine objects per packet.
_ETH_IPV4_TCP = struct.Struct("!2xH2xHxB14xIIxBH4x")
_ETH_IPV4_TCP_TS = struct.Struct("!2xH2xHxB14xIIxBH4x4xII")
_PORTS = struct.Struct("!HH")
# The line as bytes: formatting bytes and writing them costs a third less than
# formatting text and having the text layer encode it (measured).
_LINE = b"%5d %11.6f %s %s Seq=%d Ack=%d Win=%d Len=%d"
_LINE_TS = _LINE + b" TSval=%d TSecr=%d"
_LINE_AT = _LINE.replace(b"%11.6f", b"%s")
_LINE_TS_AT = _LINE_TS.replace(b"%11.6f", b"%s")
_TS_LAYOUT = b"\x01\x01\x08\x0a"       # NOP, NOP, Timestamp: every segment after the handshake
_IPV4_NO_OPTIONS = b"\x08\x00\x45"     # ethertype IPv4, version 4, header length 20
_M = 0xFFFFFFFF
_ACK, _SYN_FIN_RST = 0x10, 0x07

#: Raw previews of payloads seen (a flood repeats one payload); cleared when full.
_PREVIEW_CACHE = 4096

_PREVIEW_PAD = b"\n" + b" " * 18 + b"| "   # the line under, as TextView.details prints it
_make_record = tuple.__new__


class FastLane:
    """Tracks and renders raw packets for one :class:`~socktools.capture.session.Sniffer`.

    The lane works on the sniffer's tracker, writer and counters, so the two
    paths can take turns packet by packet; ``view`` is the
    :class:`~socktools.capture.lines.TextView` whose lines the lane matches.
    The lane runs for the relative and the other time columns; with ``-X`` or
    ``--show`` every packet takes the general path.
    """

    def __init__(self, sniffer, view, *, quiet: bool = False) -> None:
        self.sniffer = sniffer
        self.view = view
        self.quiet = quiet
        self.enabled = not view.hexdump and view.show is None
        self._ends: dict[bytes, bytes] = {}       # frame[26:38] -> "a:p → b:q", encoded
        self._flags: dict[int, bytes] = {}        # 0x18 -> b"[PSH, ACK]"
        self._previews: dict[bytes, bytes] = {}
        # the lane writes bytes: encoded as the output would encode the view's text
        encoding, errors = view.encoding, view.errors
        self._encode = lambda text: text.encode(encoding, errors)

    def run(self, raw: list) -> bytes:
        """Track (and render, unless quiet) a list of ``(ts, frame, wirelen, linktype)``;
        returns the lines, encoded as ``view.encoding`` says."""
        sn = self.sniffer
        tracker = sn.tracker
        fast_get = tracker.fast.get if self.enabled else {}.get
        decoding = tracker.decode != "none"
        view = self.view
        render = view.render
        quiet = self.quiet
        at = None if view.relative else view.clock.at
        writer = sn.writer
        write = writer.write if writer is not None else None
        ends_get, flags_get, previews_get = self._ends.get, self._flags.get, self._previews.get
        unpack, unpack_ts = _ETH_IPV4_TCP.unpack_from, _ETH_IPV4_TCP_TS.unpack_from
        out: list[bytes] = []
        emit = out.append
        encode = self._encode
        captured = sn.captured
        t0 = sn.t0
        ts = sn.last_ts
        for ts, frame, wirelen, linktype in raw:
            # (the table fills only once the general path has seen a packet: t0 is set)
            if linktype == LINKTYPE_ETHERNET and frame[12:15] == _IPV4_NO_OPTIONS:
                key = frame[26:38]
                entry = fast_get(key)
            else:
                entry = None
            n = len(frame)
            if entry is not None and n >= 54:
                # the TCP header is 20 bytes, or 32 with the time stamp option alone
                doff = frame[46] >> 4
                if doff == 8 and n >= 66 and frame[54:58] == _TS_LAYOUT:
                    total, frag, proto, seq, ack, flags, window, tsval, tsecr = \
                        unpack_ts(frame, 14)
                    start = 66
                elif doff == 5:
                    total, frag, proto, seq, ack, flags, window = unpack(frame, 14)
                    tsval = tsecr = None
                    start = 54
                else:
                    start = 0
                conn, d, r, i = entry
                end = 14 + total if start and total else n
                plen = end - start if end > start else 0
                # the shape the lane takes: a plain ACK of a known connection, nothing pending
                # a mark (zero window, ZWP/keep-alive follow-ups) or the tracker's first looks
                if (start and flags & 0x17 == _ACK and proto == 6 and not frag & 0x1FFF
                        and window and d.settled and r.base is not None):
                    # the tracker's unwrap: the 64-bit offset nearest the next expected one,
                    # which is the 32-bit difference itself for the first 2 GiB of a stream
                    near = d.next
                    rel = (seq - d.base) & _M
                    if near >= UNWRAP_FROM:
                        rel = unwrap(rel, near)
                    ack_rel = (ack - r.base) & _M
                    if r.next >= UNWRAP_FROM:
                        ack_rel = unwrap(ack_rel, r.next)
                    stream = d.stream
                    if plen:
                        # new bytes at or past the next expected ones (else Retransmission,
                        # Keep-Alive or a probe), that do not fill the peer's window, of a
                        # stream whose decoder exists already (or never will)
                        plain = rel >= near and r.win and (
                            not conn.handshake_seen or r.ack is None
                            or rel + plen < r.ack + r.win) and (
                            stream is not None or not decoding or d.fin or conn.reset)
                    else:
                        # not Keep-Alive (seq - 1), not a Dup ACK / Window Update (same ack)
                        plain = not (rel == near - 1 and d.packets) and not (
                            rel == near and ack_rel == d.ack and d.win is not None)
                    # the handshake's last ACK times the connection (tracker: iRTT)
                    if plain and not (ack_rel == 1 and conn.rtt is None and
                                      conn.syn_ts is not None and i == conn.client and r.syn):
                        win = window * d.scale_opt if conn.scaled else window
                        if rel + plen > near:
                            d.next = rel + plen
                        d.win = win
                        d.ack = ack_rel
                        d.packets += 1
                        d.bytes += plen
                        conn.last_ts = ts
                        captured += 1
                        preview = False
                        if plen and stream is not None and decoding:
                            stop = end if end < n else n          # the payload captured
                            if stop > start:
                                state = stream.state
                                if state == "raw":
                                    preview = True
                                elif state != "off":
                                    payload = frame[start:stop]
                                    events = stream.feed(rel - 1, payload, captured)
                                    if events or stream.state == "raw":
                                        if events:
                                            d.messages += sum(1 for e in events
                                                              if type(e) is MessageEvent)
                                        # rare (a message completed, a verdict): as a record
                                        self._record(conn, i, captured, ts, t0, frame, linktype,
                                                     wirelen, flags, rel, ack_rel, win, plen,
                                                     tuple(events), payload, tsval, tsecr, emit)
                                        continue
                        if write is not None:
                            write(ts, frame, wirelen, linktype, None)
                        if quiet:
                            continue
                        ends = ends_get(key)
                        if ends is None:
                            ends = self._ends_text(key, frame)
                        ftext = flags_get(flags)
                        if ftext is None:
                            ftext = self._flags[flags] = \
                                f"[{', '.join(flag_names(flags))}]".encode("ascii")
                        # %-formatting: the same text as TextView.line's f-string, and a
                        # third cheaper ("%5d" is parsed once, "{:>5}" per call)
                        if tsval is None:
                            if at is None:
                                line = _LINE % (captured, (ts - t0) / 1e9, ends, ftext, rel,
                                                ack_rel, win, plen)
                            else:
                                line = _LINE_AT % (captured, at(ts, (ts - t0) / 1e9).encode(),
                                                   ends, ftext, rel, ack_rel, win, plen)
                        elif at is None:
                            line = _LINE_TS % (captured, (ts - t0) / 1e9, ends, ftext, rel,
                                               ack_rel, win, plen, tsval, tsecr)
                        else:
                            line = _LINE_TS_AT % (captured, at(ts, (ts - t0) / 1e9).encode(),
                                                  ends, ftext, rel, ack_rel, win, plen, tsval,
                                                  tsecr)
                        if preview:
                            head = start + _PREVIEW + 1
                            text = previews_get(frame[start:head if head < stop else stop])
                            if text is None:
                                text = self._preview(frame[start:stop])
                            line += text
                        emit(line)
                        continue
            # the general path
            sn.captured = captured
            rec = sn.one(ts, frame, wirelen, linktype)
            captured = sn.captured
            t0 = sn.t0
            if not quiet:
                emit(encode("\n".join(render(rec))))
        sn.captured = captured
        sn.last_ts = ts
        if out:
            out.append(b"")
            return b"\n".join(out)
        return b""

    def _preview(self, payload: bytes) -> bytes:
        """The preview line (newline included), remembered by what decides it: the bytes
        shown and whether more follow."""
        key = payload[:_PREVIEW + 1]
        text = self._previews.get(key)
        if text is None:
            text = _PREVIEW_PAD + self._encode(preview_bytes(payload))
            if len(self._previews) >= _PREVIEW_CACHE:
                self._previews.clear()
            self._previews[key] = text
        return text

    def _ends_text(self, key: bytes, frame: bytes) -> bytes:
        sport, dport = _PORTS.unpack_from(frame, 34)
        text = self._encode(
            f"{format_ip(key[:4])}:{sport} {self.view.arrow} {format_ip(key[4:8])}:{dport}")
        if len(self._ends) >= 65536:
            self._ends.clear()
        self._ends[key] = text
        return text

    def _record(self, conn, i, number, ts, t0, frame, linktype, wirelen, flags, rel, ack_rel,
                win, plen, events, payload, tsval, tsecr, emit) -> None:
        """A packet the lane tracked that completed a message or a verdict: record, render."""
        src, dst = conn.texts[i]
        sport, dport = _PORTS.unpack_from(frame, 34)
        raw = conn.halves[i].stream is not None and conn.halves[i].stream.state == "raw"
        rec = _make_record(PacketRecord, (
            number, (ts - t0) / 1e9, ts, "TCP", src, sport, dst, dport, flag_names(flags), rel,
            ack_rel, win, plen, (), conn.id, events, preview_bytes(payload) if raw else None, "",
            None, frame, linktype, tsval, tsecr))
        writer = self.sniffer.writer
        if writer is not None:
            writer.write(ts, frame, wirelen, linktype,
                         message_comment(events) if events else None)
        if not self.quiet:
            emit(self._encode("\n".join(self.view.render(rec))))

"""sniff's text view: a record in, its lines out (the packet line, decoded messages, dumps).

Data to text only: no click, no writing.  The CLI (``socktools.cli.sniff``)
chooses the options, passes a ``style`` function when the terminal has
colour, and writes what :meth:`TextView.render` returns.  The fast lane
(``fastlane.py``) prints the same packet line for the common case without
building a record; :meth:`TextView.line` is the reference it must match.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from socktools.capture.events import DatagramEvent
from socktools.capture.reassembly import MessageEvent, TlsEvent
from socktools.capture.render import Clock, Selection, hexdump

__all__ = ["TextView", "RED_MARKS", "arrows_for"]

#: Marks printed in bold red (the rest of the marks are yellow).
RED_MARKS = frozenset(("ZeroWindow", "RST", "Retransmission"))

#: Detail lines (decoded messages, previews, dumps) start under the endpoints.
PAD = " " * 18


def arrows_for(encoding: Optional[str]) -> tuple[str, str]:
    """The arrow and the hook the output can encode: ``→``/``↳``, else ``->``/``\\_``."""
    try:
        "→↳".encode(encoding or "ascii")
        return "→", "↳"
    except (UnicodeEncodeError, LookupError):
        return "->", "\\_"


class TextView:
    """Turns :class:`~socktools.capture.tracker.PacketRecord` objects into text lines.

    ``style(text, fg=, bold=)`` colours a mark or a message heading (None: no
    colour); ``show`` is a :class:`~socktools.capture.render.Selection` of
    packets to print scapy's dissection under (None: none); ``encoding`` and
    ``errors`` are the output's, for what is written as bytes.
    """

    def __init__(self, *, time_format: str = "r", hexdump: bool = False,
                 show: Optional[Selection] = None, framed_port: Optional[int] = None,
                 arrow: str = "→", hook: str = "↳",
                 style: Optional[Callable[..., str]] = None,
                 encoding: str = "utf-8", errors: str = "strict") -> None:
        self.clock = Clock(time_format)
        self.relative = time_format == "r"
        self.hexdump = hexdump
        self.show = show
        self.framed_port = framed_port
        self.arrow, self.hook = arrow, hook
        self.style = style
        # how the output encodes text (the fast lane writes bytes, encoded the same way)
        self.encoding, self.errors = encoding, errors
        self._ends: dict = {}
        self._flags: dict = {}

    def render(self, rec) -> list[str]:
        """Every line one record prints: the packet line, then its details."""
        lines = [self.line(rec)]
        if rec.events or rec.preview is not None:
            lines.extend(self.details(rec))
        if self.hexdump:
            lines.extend(hexdump(rec.frame, PAD))
        if self.show is not None and rec.number in self.show:
            lines.extend(self.scapy_show(rec))
        return lines

    def _mark(self, name: str) -> str:
        text = f"[{name}]"
        if self.style is not None:
            return self.style(text, fg="red" if name in RED_MARKS else "yellow",
                              bold=name in RED_MARKS)
        return text

    def line(self, r) -> str:
        """``  4   0.000152 127.0.0.1:56902 → 127.0.0.1:65432 [PSH, ACK] Seq=1 Ack=1 Win=65536 Len=146``

        The endpoints and flags of a line are cached as text (a capture sees few
        of each).
        """
        stamp = f"{r.time:>11.6f}" if self.relative else self.clock(r)
        if r.proto != "TCP":
            ends = f"{r.src} {self.arrow} {r.dst} " if r.src else ""
            if r.sport is None:
                return f"{r.number:>5} {stamp} {ends}{r.proto} {r.info}"
            # UDP, as tshark puts it; flood's header decoded on the same line
            text = f"{r.number:>5} {stamp} {ends}UDP {r.sport} {self.arrow} {r.dport} Len={r.length}"
            for ev in r.events:
                if type(ev) is DatagramEvent:
                    text += " " + ev.text
            return text
        key = (r.src, r.sport, r.dst, r.dport)
        ends = self._ends.get(key)
        if ends is None:
            src = f"[{r.src}]:{r.sport}" if ":" in r.src else f"{r.src}:{r.sport}"
            dst = f"[{r.dst}]:{r.dport}" if ":" in r.dst else f"{r.dst}:{r.dport}"
            ends = f"{src} {self.arrow} {dst}"
            if len(self._ends) < 65536:
                self._ends[key] = ends
        flags = self._flags.get(r.flags)
        if flags is None:
            flags = self._flags[r.flags] = (f"[{', '.join(r.flags)}]", "ACK" in r.flags)
        ack = f" Ack={r.ack}" if flags[1] and r.ack is not None else ""
        text = f"{r.number:>5} {stamp} {ends} {flags[0]} Seq={r.seq}{ack} Win={r.window} Len={r.length}"
        o = r.options
        if o:
            text += (f" MSS={o['MSS']}" if "MSS" in o else "") + \
                (" SACK_PERM" if o.get("SACK_PERM") else "")
        if r.tsval is not None:                     # where tshark puts them: before WS
            text += f" TSval={r.tsval} TSecr={r.tsecr}"
        if o and "WS" in o:
            text += f" WS={o['WS']}"
        if r.marks:
            text += " " + " ".join(self._mark(m) for m in r.marks)
        return text

    def details(self, r) -> list[str]:
        """Decoded messages and notes completed by this packet, then its raw preview."""
        out = []
        for ev in r.events:
            if isinstance(ev, MessageEvent):
                segs = "1 segment" if ev.segments == 1 else \
                    f"{ev.segments} segments from packet {ev.first_packet}"
                head = (f"{PAD}{self.hook} {ev.role} #{ev.index}: {ev.content_type}, "
                        f"{ev.wire_size} bytes in {segs}")
                out.append(self.style(head, fg="cyan") if self.style is not None else head)
                out.append(f"{PAD}  header  {json.dumps(ev.header, ensure_ascii=False)}")
                out.append(f"{PAD}  content {ev.content_preview}")
            elif isinstance(ev, TlsEvent):
                segs = "" if ev.segments == 1 else f" ({ev.segments} segments from packet {ev.first_packet})"
                head = f"{PAD}{self.hook} {ev.role} TLS #{ev.index}: {ev.text}{segs}"
                out.append(self.style(head, fg="magenta") if self.style is not None else head)
            elif isinstance(ev, DatagramEvent):
                continue                     # on the packet line
            else:
                out.append(f"{PAD}! {ev.text}")
        if r.preview is not None:
            out.append(f"{PAD}| {r.preview}")
        return out

    def scapy_show(self, r) -> list[str]:
        """scapy's layered dissection of the frame (imports scapy on first use)."""
        from socktools.capture._scapy import show
        try:
            text = show(r.frame, r.linktype, self.framed_port)
        except Exception as exc:  # a dissection aid must never stop the capture
            text = f"(scapy could not dissect packet {r.number}: {exc})"
        return [PAD + ln if ln else "" for ln in text.rstrip("\n").split("\n")]

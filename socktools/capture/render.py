"""Pieces of sniff's text view that need no click: time columns, hex dumps, scapy's show().

The CLI (``socktools.cli.sniff``) lays lines out; these functions turn a
record's data into the text of one column or block.
"""

from __future__ import annotations

import time
from typing import Optional

__all__ = ["TIME_FORMATS", "Clock", "hexdump", "parse_selection", "Selection"]

#: ``--time`` choices, after tshark's ``-t``: relative to the first packet (the
#: default), delta from the previous packet shown, absolute local time of day,
#: absolute with the date, and seconds since the epoch.
TIME_FORMATS = ("r", "d", "a", "ad", "e")

_PRINTABLE = bytes(b if 32 <= b < 127 else 46 for b in range(256))


class Clock:
    """The time column for each record, in one of :data:`TIME_FORMATS`."""

    def __init__(self, fmt: str = "r") -> None:
        if fmt not in TIME_FORMATS:
            raise ValueError(f"time format must be one of {TIME_FORMATS}")
        self.fmt = fmt
        self._prev: Optional[int] = None
        # the date and time of day of the last second seen: strftime and localtime
        # cost microseconds, and a busy capture sees thousands of packets per second
        self._sec: Optional[int] = None
        self._day = ""

    def __call__(self, rec) -> str:
        return self.at(rec.ts_ns, rec.time)

    def at(self, ts: int, since_first: float) -> str:
        """The column for a packet stamped ``ts`` (ns), ``since_first`` s after the first."""
        fmt = self.fmt
        if fmt == "r":
            text = f"{since_first:>11.6f}"
        elif fmt == "d":
            delta = 0 if self._prev is None else ts - self._prev
            text = f"{delta / 1e9:>11.6f}"
        else:
            sec, ns = divmod(ts, 1_000_000_000)
            if fmt == "e":
                text = f"{sec}.{ns:09d}"
            else:
                if sec != self._sec:
                    self._sec = sec
                    self._day = time.strftime("%Y-%m-%d %H:%M:%S" if fmt == "ad" else "%H:%M:%S",
                                              time.localtime(sec))
                text = f"{self._day}.{ns:09d}"
        self._prev = ts
        return text


def hexdump(data: bytes, indent: str = "") -> list[str]:
    """tshark ``-x`` style: offset, 16 bytes in hex (two groups of 8), then ASCII."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = chunk.hex(" ")
        if len(chunk) > 8:
            hexes = hexes[:23] + " " + hexes[23:]
        lines.append(f"{indent}{off:04x}  {hexes:<48}  {chunk.translate(_PRINTABLE).decode('ascii')}")
    return lines


class Selection:
    """Packet numbers chosen by ``--show``: everything, or ``5,9-12`` (1-based, inclusive)."""

    def __init__(self, ranges: tuple = ()) -> None:
        self.ranges = tuple(ranges)         # () means every packet

    def __contains__(self, number: int) -> bool:
        return not self.ranges or any(a <= number <= b for a, b in self.ranges)

    @property
    def last(self) -> Optional[int]:
        """The highest packet number chosen (None: unbounded)."""
        return max(b for _, b in self.ranges) if self.ranges else None


def parse_selection(text: str) -> Selection:
    """``"all"``/``""`` -> every packet; ``"5,9-12"`` -> 5, 9, 10, 11, 12.  Raises ValueError."""
    text = text.strip()
    if text in ("", "all"):
        return Selection()
    ranges = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"{part!r} is not a packet number or range (examples: 5, 9-12)") \
                from None
        if a < 1 or b < a:
            raise ValueError(f"{part!r}: packet numbers start at 1 and a range goes up (9-12)")
        ranges.append((a, b))
    return Selection(ranges)

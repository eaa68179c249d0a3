"""What a stream decoder reports under a packet: messages, TLS records and notes (data only).

Kept apart from ``reassembly`` so the TLS layer (``tls_stream``), which reassembly
drives, makes the same events without importing it back.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["MessageEvent", "Note", "TlsEvent", "DatagramEvent", "preview_bytes"]

_PREVIEW = 16            # bytes shown in a raw preview, as one hexdump line



class MessageEvent(NamedTuple):
    """A framed message completed by a packet.

    ``role`` is ``request`` (client to server) or ``response``; ``index`` counts
    messages in that direction from 1; ``segments`` is how many packets carried
    its bytes and ``first_packet`` the number of the first of them.
    """

    role: str
    index: int
    header: dict
    content_type: str
    content_preview: str
    wire_size: int
    segments: int
    first_packet: int


class Note(NamedTuple):
    """Something about a stream worth a line: ``kind`` is a stable slug."""

    kind: str    # not-framed | raw | decode-error | gap | truncated | tls-malformed | tls-key
    #              | datagram-cut | not-datagram
    text: str


class DatagramEvent(NamedTuple):
    """One of flood's UDP datagrams (``sktU`` header), placed by ``capture/datagrams.py``.

    ``role``: ``request``, ``reply`` (to the request in packet ``request_packet``, ``rtt_ns``
    later by the capture's clock), ``duplicate``, ``duplicate-reply``, ``unmatched-reply``
    (its request is not in the capture) or ``untracked`` (past the bound on sockets);
    ``sent_ns`` is the header's send time, the sender's own monotonic clock; ``text`` is
    what the packet line says."""

    sock: int
    seq: int
    sent_ns: int
    role: str
    rtt_ns: Optional[int]
    request_packet: Optional[int]
    text: str


class TlsEvent(NamedTuple):
    """A TLS record completed by a packet: ``index`` counts records in this direction
    from 1, ``record`` is its content type's name, ``length`` its fragment's; ``text``
    is the one line a human reads, ``fields`` the dissection (JSON-able)."""

    role: str
    index: int
    record: str
    length: int
    text: str
    fields: dict
    segments: int
    first_packet: int


#: bytes.translate table: printable ASCII stays, everything else becomes "."
_PRINTABLE = bytes(b if 32 <= b < 127 else 46 for b in range(256))


def preview_bytes(data: bytes, limit: int = _PREVIEW) -> str:
    """``b"GET /"`` -> ``"47 45 54 20 2f  GET /"`` (hex of the first bytes, then ASCII)."""
    head = data[:limit]
    more = "…" if len(data) > limit else ""
    return f"{head.hex(' ')}  {head.translate(_PRINTABLE).decode('ascii')}{more}"

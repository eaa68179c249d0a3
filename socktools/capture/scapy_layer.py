"""A scapy layer for the framed protocol: dissect, reassemble and build socktools messages.

For people who already work in scapy.  Importing this module imports scapy
(and nothing else of sniff); nothing in socktools imports it unless asked.

    >>> from scapy.all import rdpcap, sniff, TCPSession
    >>> from socktools.capture.scapy_layer import Framed, bind
    >>> bind(65432)                                   # TCP port 65432 carries Framed
    >>> pkts = sniff(offline="run.pcap", session=TCPSession)
    >>> pkts[3][Framed].show()
    >>> pkts[3][Framed].message().value               # a socktools.protocol.Message
    {'action': 'search', 'value': 'morpheus'}

One message on the wire is a 2-byte big-endian length, a UTF-8 JSON header of
that many bytes, and ``content-length`` bytes of content (docs/protocol.md).
The layer reads the content length from the header, so one Framed packet is
one message; bytes after it become scapy's ``Padding``, which is how
:class:`scapy.sessions.TCPSession` finds the next message in the same segment.

Reassembly: TCPSession keeps a buffer per direction and calls
:meth:`Framed.tcp_reassemble` with everything buffered so far; returning None
means "need more", returning a packet empties the buffer (its padding is fed
back for the next message).  We answer None until the whole message is there,
and set ``metadata["tcp_min_len"]`` to the length still needed so TCPSession
does not call us again for every segment of a 100 KB message (scapy's LDAP
layer does the same).  The header is validated by
:func:`socktools.protocol.parse_header`, the function the server, the clients
and sniff use, so this layer agrees with them on what is a message.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any, Optional

for _name in ("scapy", "scapy.runtime", "scapy.loading"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from scapy.config import conf  # noqa: E402
from scapy.fields import FieldLenField, StrLenField  # noqa: E402
from scapy.layers.inet import TCP  # noqa: E402
from scapy.packet import Packet, bind_layers  # noqa: E402

from socktools import protocol  # noqa: E402

__all__ = ["Framed", "bind", "MAX_CONTENT"]

#: The cap a reader applies to ``content-length`` before it waits for that
#: many bytes: sniff's own (16 MiB), so a scapy session follows the same
#: servers sniff follows, raised content caps included.
MAX_CONTENT = 16 << 20

_LEN = struct.Struct("!H")


def _content_length(pkt: "Framed") -> int:
    """The header's content-length, or 0 when the header is not a framed header."""
    try:
        n = json.loads(pkt.header)["content-length"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return 0
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_CONTENT else 0


def _can_start(data: bytes) -> bool:
    """Can ``data`` start a framed message?  A JSON header object begins with "{"."""
    if len(data) < 3:
        return len(data) < 2 or data[:2] != b"\x00\x00"
    return data[:2] != b"\x00\x00" and data[2] in b"{ \t\r\n"


class _JSONHeaderField(StrLenField):
    """The JSON header: bytes on the wire, shown as the JSON text it is."""

    def i2repr(self, pkt: Optional[Packet], x: Any) -> str:
        if isinstance(x, bytes):
            try:
                return x.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return super().i2repr(pkt, x)


class Framed(Packet):
    """One framed-protocol message: ``hdrlen`` (2 bytes), ``header`` (JSON), ``content``.

    Build one with ``Framed(header=b'{...}', content=b'...')`` (``hdrlen`` is
    filled in), or better from socktools' encoder: ``Framed(encode_json({...}))``.
    """

    name = "socktools framed message"
    fields_desc = [
        FieldLenField("hdrlen", None, length_of="header", fmt="!H"),
        _JSONHeaderField("header", b"", length_from=lambda p: p.hdrlen),
        StrLenField("content", b"", length_from=_content_length),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: Optional[bytes] = None, *args: Any, **kargs: Any) -> type:
        # Dissecting packet by packet (rdpcap, no TCPSession), a bound port's segment
        # may be the middle of a message, or not this protocol at all: only bytes that
        # can start a message (a JSON object after the prefix) become Framed.
        if _pkt is not None and not _can_start(_pkt):
            return conf.raw_layer
        return cls

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        # A message ends where content-length says; what follows is the next
        # message (TCPSession re-dissects the padding), never our payload.
        return b"", s

    def header_dict(self) -> Optional[dict]:
        """The JSON header as a dict, or None when it does not parse."""
        try:
            value = json.loads(self.header)
        except (ValueError, TypeError, RecursionError):
            return None
        return value if isinstance(value, dict) else None

    def message(self, max_content: int = MAX_CONTENT) -> protocol.Message:
        """This message decoded by :class:`socktools.protocol.Decoder`.

        Raises :class:`socktools.protocol.RemoteProtocolError` when it breaks
        the protocol, or ValueError when the message is incomplete.
        """
        dec = protocol.Decoder(max_content)
        dec.receive_data(_LEN.pack(len(self.header)) + bytes(self.header) + bytes(self.content))
        ev = dec.next_event()
        if not isinstance(ev, protocol.Message):
            raise ValueError("incomplete framed message (not all of it was captured)")
        return ev

    def mysummary(self) -> str:
        head = self.header_dict() or {}
        return self.sprintf(f"Framed {head.get('content-type', '?')} "
                            f"{len(self.content)}/{head.get('content-length', '?')} bytes")

    @classmethod
    def tcp_reassemble(cls, data: bytes, metadata: dict, session: dict) -> Optional[Packet]:
        """TCPSession's hook: a Framed packet once a whole message is buffered, else None."""
        if len(data) < 3:
            return None
        hdrlen = _LEN.unpack_from(data)[0]
        if not _can_start(data):
            # A JSON header object starts with "{": no need to wait for the 18,245
            # bytes that "GET" claims before saying this is not the framed protocol.
            return conf.raw_layer(data)
        if len(data) < 2 + hdrlen:
            metadata["tcp_min_len"] = 2 + hdrlen
            return None
        try:
            header = protocol.parse_header(data[2:2 + hdrlen], MAX_CONTENT) if hdrlen else None
        except protocol.RemoteProtocolError:
            header = None
        if header is None:
            # Not the framed protocol (or broken): hand back the bytes as they are,
            # which also empties TCPSession's buffer for this direction.
            return conf.raw_layer(data)
        need = 2 + hdrlen + header["content-length"]
        if len(data) < need:
            metadata["tcp_min_len"] = need
            return None
        return cls(data)


def bind(port: int) -> None:
    """Tell scapy that TCP ``port`` (either direction) carries framed messages."""
    bind_layers(TCP, Framed, dport=port)
    bind_layers(TCP, Framed, sport=port)

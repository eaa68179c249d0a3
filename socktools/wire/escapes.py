"""C-style escapes and ``{seq}``/``{conn}`` placeholders for request and delimiter texts.

What a user types on the command line (``--send 'GET / HTTP/1.0\\r\\n\\r\\n'``,
``--reply-until '\\r\\n'``) becomes bytes here, and nowhere else.  Escapes:
``\\r \\n \\t \\\\ \\0 \\xHH``; every other backslash is an error, said with its
position -- a silent pass-through would put a literal backslash on the wire.
Text outside escapes is encoded as UTF-8, and bytes that were not UTF-8 on the
command line are sent as typed (:func:`typed_bytes`).

Placeholders: ``{seq}`` (the request's number on its connection: 0, 1, 2...)
and ``{conn}`` (the connection's number in the run; together they are unique); ``{{`` and ``}}`` stand for literal braces.  Any other
``{name}`` is an error, so a typo is not sent verbatim.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["EscapeError", "unescape", "typed_bytes", "readable", "Template", "PLACEHOLDERS"]

PLACEHOLDERS = ("seq", "conn")

_SIMPLE = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", "0": b"\0"}
_HEX = re.compile(r"[0-9a-fA-F]{2}")


class EscapeError(ValueError):
    """A text that cannot become bytes: a bad escape or an unknown placeholder."""


def typed_bytes(text: str) -> bytes:
    """``text`` from the command line as the bytes the user typed: UTF-8, and each byte that
    was not UTF-8 as itself (Python hands those over surrogate-escaped, PEP 383, as
    ``os.fsencode`` undoes).  A surrogate no command line can carry is an :class:`EscapeError`."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise EscapeError(f"U+{ord(bad):04X} at position {exc.start} of {ascii(text)} is a lone "
                          f"surrogate, not text (write bytes as \\xHH)") from None


def readable(text: str) -> str:
    """``text`` fit to print: each byte that was not UTF-8 on the command line as ``\\xHH``
    (a stream in a UTF-8 locale refuses the surrogate that stands for it)."""
    try:
        return typed_bytes(text).decode("utf-8", "backslashreplace")
    except EscapeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unescape(text: str) -> bytes:
    """``'PING\\\\r\\\\n'`` (as typed) -> ``b'PING\\r\\n'``; raises :class:`EscapeError`."""
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out += typed_bytes(text[i:])
            break
        out += typed_bytes(text[i:j])
        if j + 1 >= n:
            raise EscapeError(f"a lone backslash at the end of {text!r} (write \\\\ for one)")
        c = text[j + 1]
        if c in _SIMPLE:
            out += _SIMPLE[c]
            i = j + 2
        elif c == "x":
            digits = text[j + 2:j + 4]
            if not _HEX.fullmatch(digits):
                raise EscapeError(f"\\x needs two hex digits at position {j} of {text!r}")
            out.append(int(digits, 16))
            i = j + 4
        else:
            raise EscapeError(f"unknown escape \\{c} at position {j} of {text!r} "
                              f"(known: \\r \\n \\t \\\\ \\0 \\xHH)")
    return bytes(out)


class Template:
    """Request bytes with placeholders, rendered fast: the literal parts are bytes already.

    ``Template(b'SET k:{seq} v')`` -> ``render(7, 0) == b'SET k:7 v'``.  A
    template without placeholders is :attr:`fixed` (its bytes every time).
    """

    __slots__ = ("parts", "fixed", "render", "names")

    def __init__(self, raw: bytes) -> None:
        parts: list = []     # bytes, or a placeholder name
        literal = bytearray()
        i = 0
        n = len(raw)
        while i < n:
            b = raw[i:i + 1]
            if b == b"{":
                if raw[i + 1:i + 2] == b"{":
                    literal += b"{"
                    i += 2
                    continue
                end = raw.find(b"}", i)
                name = raw[i + 1:end].decode("ascii", "replace") if end > 0 else ""
                if end < 0 or name not in PLACEHOLDERS:
                    shown = raw[i:end + 1 if end > 0 else i + 12].decode("utf-8", "replace")
                    raise EscapeError(f"unknown placeholder {shown!r} (known: {{seq}} {{conn}}; "
                                      f"write {{{{ for a literal brace)")
                parts.append(bytes(literal))
                parts.append(name)
                literal = bytearray()
                i = end + 1
            elif b == b"}" and raw[i + 1:i + 2] == b"}":
                literal += b"}"
                i += 2
            else:
                literal += b
                i += 1
        parts.append(bytes(literal))
        self._compile(tuple(p for p in parts if p != b""), bytes(literal) if len(parts) == 1 else None)

    def _compile(self, parts: tuple, fixed: Optional[bytes]) -> None:
        """``render`` as one ``bytes % args`` (the literal parts' % doubled): a request per call
        is on flood's hot path, and one C-level format beats joining the pieces."""
        self.parts = parts
        self.fixed = fixed
        #: The placeholders it uses: a template without ``conn`` says the same on every connection.
        self.names = frozenset(p for p in parts if type(p) is not bytes)
        if fixed is not None:
            self.render = lambda seq, conn: fixed
            return
        fmt = b"".join(p.replace(b"%", b"%%") if type(p) is bytes else b"%d" for p in parts)
        order = tuple(p for p in parts if type(p) is not bytes)
        if order == ("seq",):
            self.render = lambda seq, conn: fmt % seq
        elif order == ("conn",):
            self.render = lambda seq, conn: fmt % conn
        else:
            self.render = lambda seq, conn: fmt % tuple(seq if n == "seq" else conn for n in order)

    @classmethod
    def from_text(cls, text: str) -> "Template":
        return cls(unescape(text))

    def plus(self, tail: bytes) -> "Template":
        """This template with ``tail`` (plain bytes) appended."""
        t = Template(b"")
        parts = list(self.parts)
        if parts and type(parts[-1]) is bytes:
            parts[-1] += tail
        else:
            parts.append(tail)
        t._compile(tuple(parts), None if self.fixed is None else self.fixed + tail)
        return t


def rotation(templates: Sequence[Template]):
    """``request(seq, conn)`` over ``templates`` in turn (request ``seq`` uses ``seq % n``)."""
    n = len(templates)
    if n == 1:
        render = templates[0].render
        return render
    renders = [t.render for t in templates]
    return lambda seq, conn: renders[seq % n](seq, conn)

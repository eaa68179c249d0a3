"""The registry of exchange modes: every built-in wire protocol, described once.

A mode is a name, a line of help, the command-line options that shape it, and where its
code lives: a builder (a :class:`~socktools.wire.options.WireSpec` in, a
:class:`~socktools.wire.base.WireProtocol` out, or a
:class:`~socktools.wire.options.WireOptionError` naming the option to blame), a summary
(what each connection sends, for reports) and, for modes sniff can decode, a stream decoder
(``role`` in, a decoding parser out) with a test of a stream's first byte for ``--decode
auto``.  They are named as ``module:function`` strings, loaded when first used: this module
imports nothing, so the CLI reads it for its choices and help without loading a protocol.

flood, request and sniff's choices, flood's config, ``WireSpec.summary``, sniff's decoders
and ``--decode auto`` all read :data:`MODES`.  A new wire protocol is its own module (build,
parser, optionally summary and stream decoder) plus one entry here -- see
docs/architecture.md, "Where a new wire protocol goes".  User plug-ins (``--protocol``) need
no entry: they are loaded by name (:func:`socktools.wire.spec.load_plugin`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["Mode", "MODES", "get", "names", "decoders", "stream_decoders", "taking", "help_text", "UnknownMode",
           "REQUEST_MODES", "REQUEST_HELP"]


@dataclass(frozen=True)
class Mode:
    name: str
    help: str                          # one line: what is sent, how replies are framed
    options: tuple                     # the command-line options that shape this exchange
    builder: str                       # "module:function": WireSpec -> WireProtocol
    summarizer: str                    # "module:function": WireSpec -> dict (what is sent)
    decoder: Optional[str] = None      # "module:function": role -> a decoding Parser (sniff)
    starts: Optional[str] = None       # "module:function": first byte -> may this be one (auto)
    rules: str = ""                    # the rules a peer breaks with a protocol-error ({exchange}:
                                       # how flood describes this run's exchange; {size}: --size)
    request: bool = True               # `socktools request --mode` offers it
    #: takes nearly anything (line: any text with a newline): ``--decode auto`` picks it only
    #: once every other decoder has failed, and drops it at the first chunk that is not text
    catch_all: bool = False
    #: "module:function": (spec, protocol) -> a factory of the built-in opening (--greeting,
    #: --setup), framed and judged by this mode's parser; None: the mode takes no opening
    opener: Optional[str] = None
    #: sniff reads this protocol its own way, not through ``decoder``: the framed protocol has
    #: reassembly's own decoder, which reports each message with the packets it spanned and
    #: the protocol's errors, and ``--decode auto`` already tries it first.  Its ``decoder``
    #: serves only ``proxy --decode``; keeping it out of :func:`decoders` leaves sniff's
    #: choices, ``--decode auto``'s guesses and stall's reading of an answer as they were.
    sniff_own: bool = False

    def build(self, spec: Any) -> Any:
        return _load(self.builder)(spec)

    def summary(self, spec: Any) -> dict:
        return _load(self.summarizer)(spec)

    def stream_parser(self, role: str) -> Any:
        """A decoding parser (``keep`` set) for one direction (``request``/``response``)."""
        if self.decoder is None:
            raise UnknownMode(f"no stream decoder for {self.name!r} (known: {', '.join(stream_decoders())})")
        parser = _load(self.decoder)(role)
        parser.keep = []
        return parser

    def opening(self, spec: Any, proto: Any) -> Any:
        """The built-in opening's factory for ``spec`` (``proto.opening``)."""
        return _load(self.opener)(spec, proto)

    def may_start(self, first: int) -> bool:
        """Could a stream of this protocol start with byte ``first``?"""
        return self.starts is None or _load(self.starts)(first)


class UnknownMode(ValueError):
    """A mode name the registry does not hold (the message lists the ones it does)."""


def _load(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


#: The built-in opening's options (socktools.wire.options.OPENING_FLAGS, spelled here: this
#: module imports nothing): the modes whose replies have words take them.
_OPENING = ("--greeting", "--greeting-match", "--setup")

#: Every built-in exchange, in the order the help lists them.
MODES: tuple = (
    Mode("echo", "payloads that must come back whole (--size)", ("--size",),
         "socktools.wire.framed:build_echo", "socktools.wire.framed:summary_echo",
         rules="the echo exchange (each reply the request's own {size:,} bytes)", request=False),
    Mode("framed", "the framed protocol of docs/protocol.md (ACTION VALUE)", ("--action", "--value"),
         "socktools.wire.framed:build_framed", "socktools.wire.framed:summary_framed",
         decoder="socktools.wire.framed:stream_parser", sniff_own=True,
         rules="the framed protocol (docs/protocol.md)"),
    Mode("raw", "your --send bytes, replies framed by --reply-*",
         ("--send", "--send-file", "--reply-until", "--reply-bytes", "--reply-prefix",
          "--reply-prefix-adjust", "--reply-until-close", "--no-reply", "--reply-match", *_OPENING),
         "socktools.wire.raw:build_raw", "socktools.wire.raw:summary_raw",
         rules="the reply framing you chose ({exchange})", opener="socktools.wire.raw:opening_raw"),
    Mode("line", "one line each way (--send, --eol)",
         ("--send", "--send-file", "--eol", "--reply-match", *_OPENING),
         "socktools.wire.raw:build_line", "socktools.wire.raw:summary_line",
         opener="socktools.wire.raw:opening_line",
         decoder="socktools.wire.raw:line_stream_parser", starts="socktools.wire.raw:line_may_start",
         rules="the line protocol (one reply line, ending in a newline, per request)", catch_all=True),
    Mode("redis", "RESP commands (--command)", ("--command", *_OPENING),
         "socktools.wire.redis:build", "socktools.wire.redis:summary",
         opener="socktools.wire.redis:opening",
         decoder="socktools.wire.redis:stream_parser", starts="socktools.wire.redis:may_start",
         rules="RESP, the Redis protocol (a reply starts with + - : $ * and its lines end in CRLF)"),
    Mode("http", "HTTP/1.1 keep-alive (--method, --path, --header, --body, --accept-status)",
         ("--method", "--path", "--header", "--body", "--accept-status"),
         "socktools.wire.http:build", "socktools.wire.http:summary",
         decoder="socktools.wire.http:stream_parser", starts="socktools.wire.http:may_start",
         rules="HTTP/1.1 (a status line, headers, a body framed by Content-Length, chunks or the close)"),
)

_BY_NAME = {m.name: m for m in MODES}


def get(name: str) -> Mode:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownMode(f"unknown mode {name!r} (known: {', '.join(names())})") from None


def names(*, request: bool = False) -> tuple:
    """The modes' names (``request``: those `socktools request` offers)."""
    return tuple(m.name for m in MODES if m.request or not request)


def help_text(*, request: bool = False) -> str:
    """``--mode``'s help: one clause per mode."""
    return "; ".join(f"{m.name}: {m.help}" for m in MODES if m.request or not request) + "."


def decoders() -> tuple:
    """The modes sniff can decode from a reassembled stream, in ``--decode auto``'s order
    (the catch-all ones last)."""
    return tuple(m.name for m in sorted((m for m in MODES if m.decoder and not m.sniff_own),
                                        key=lambda m: m.catch_all))


def stream_decoders() -> tuple:
    """Every mode with a stream decoder (``proxy --decode``): sniff's and the framed protocol."""
    return tuple(m.name for m in sorted((m for m in MODES if m.decoder), key=lambda m: m.catch_all))


def taking(option: str) -> tuple:
    """The modes an option shapes (``--reply-match`` -> raw, line)."""
    return tuple(m.name for m in MODES if option in m.options)


#: What `socktools request --mode` offers, and its help.
REQUEST_MODES = names(request=True)
REQUEST_HELP = help_text(request=True)

"""What the user asked for, as a frozen, picklable spec; :func:`build` makes the protocol.

The spec carries option texts exactly as typed; building validates them, so
a bad escape, a bad struct format, two framings at once or a plug-in that
cannot be loaded is a :class:`WireOptionError` naming the option -- the CLI
turns it into a usage error.  Flood workers build their own copy from the
spec (a protocol object need not be picklable).  Which modes exist, and
where each one's code lives, is the registry's (:mod:`socktools.wire.modes`).
"""

from __future__ import annotations

import importlib
import os
import sys

from socktools.wire import modes
from socktools.wire.base import WireProtocol
from socktools.wire.options import WireOptionError, WireSpec

__all__ = ["WireSpec", "WireOptionError", "build", "load_plugin", "MODES", "STREAM_MODES", "stream_parser"]

#: Exchange modes with a built-in protocol ("connect" is flood's churn, on echo).
MODES = modes.names()
#: Protocols sniff can decode from a reassembled stream, both directions.
STREAM_MODES = modes.decoders()

#: Options that shape some modes only, and how a spec says it was given one: any other
#: mode refuses them, naming the modes that take them (from the registry).
GATED = (("--reply-until", lambda s: s.reply_until is not None),
         ("--reply-bytes", lambda s: s.reply_bytes is not None),
         ("--reply-prefix", lambda s: s.reply_prefix is not None),
         ("--reply-until-close", lambda s: s.reply_until_close),
         ("--no-reply", lambda s: s.no_reply),
         ("--reply-match", lambda s: s.reply_match is not None),
         ("--greeting", lambda s: s.greeting),
         ("--greeting-match", lambda s: s.greeting_match is not None),
         ("--setup", lambda s: bool(s.setups)))


def stream_parser(mode: str, role: str):
    """A decoding parser (``keep`` set) for one direction of a captured stream.

    ``role`` is ``request`` (client to server) or ``response``: Redis and line
    protocols frame both the same way, HTTP has a parser for each.
    """
    return modes.get(mode).stream_parser(role)


def build(spec: WireSpec) -> WireProtocol:
    """The protocol object for ``spec``; raises :class:`WireOptionError`."""
    if spec.plugin:
        for flag, given in GATED[-3:]:
            if given(spec):   # a plug-in's opening is its own (WireProtocol.opening)
                raise WireOptionError(flag, f"only for --mode {' and '.join(modes.taking(flag))}; "
                                            f"a plug-in's opening is its own opening()")
        return load_plugin(spec.plugin)(tuple(spec.commands))
    try:
        mode = modes.get(spec.mode)
    except modes.UnknownMode as exc:
        raise WireOptionError("--mode", str(exc)) from None
    for flag, given in GATED:
        if given(spec) and flag not in mode.options:
            raise WireOptionError(flag, f"only for --mode {' and '.join(modes.taking(flag))}")
    proto = mode.build(spec)
    if spec.opens:
        proto.opening = mode.opening(spec, proto)
    return proto


def load_plugin(ref: str):
    """``"package.module:Name"`` -> the class, checked for the interface; raises WireOptionError."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise WireOptionError("--protocol", f"{ref!r}: write package.module:ClassName")
    # Like uvicorn's --app-dir default: a module beside the user's working
    # directory is found when socktools runs as a console script, too.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of the user's module is theirs to see
        raise WireOptionError("--protocol", f"cannot import {module_name!r}: "
                                            f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise WireOptionError("--protocol", f"module {module_name!r} has no {attr!r}")
    missing = [m + "()" for m in ("request", "parser") if not callable(getattr(cls, m, None))]
    if missing:
        raise WireOptionError("--protocol", f"{ref} lacks the exchange interface: no "
                                            f"{' or '.join(missing)} method (see docs/plugins.md)")
    return _checked(cls, ref)


def _checked(cls, ref: str):
    def make(commands: tuple):
        try:
            obj = cls(commands)
        except Exception as exc:
            raise WireOptionError("--protocol", f"{ref}({commands!r}) failed: "
                                                f"{type(exc).__name__}: {exc}") from None
        try:
            parser = obj.parser()
        except Exception as exc:
            raise WireOptionError("--protocol", f"{ref}.parser() failed: {type(exc).__name__}: {exc}") from None
        try:
            obj.opening() if callable(getattr(obj, "opening", None)) else None
        except Exception as exc:
            raise WireOptionError("--protocol", f"{ref}.opening() failed: {type(exc).__name__}: {exc}") from None
        if not callable(getattr(parser, "feed", None)):
            raise WireOptionError("--protocol", f"{ref}.parser() returned an object without feed(data)")
        lacking = [a for a in ("failures", "buffered") if not hasattr(parser, a)]
        if lacking:
            raise WireOptionError("--protocol", f"{ref}.parser() lacks {' and '.join(lacking)} (subclass "
                                                f"socktools.wire.Parser, or see docs/plugins.md)")
        return obj if isinstance(obj, WireProtocol) else _Adapted(obj)
    return make


class _Adapted(WireProtocol):
    """A plug-in that does not subclass WireProtocol: its methods as they are (bound, no extra
    call on the hot path), the optional attributes it lacks at WireProtocol's defaults."""

    def __init__(self, obj) -> None:
        self.obj = obj
        self.request = obj.request
        self.parser = obj.parser
        for name in ("name", "fixed_request", "reply_size", "replies", "may_close", "read_size", "tally",
                     "shared_requests", "surplus_kind", "until_close", "echoes", "opening"):
            if hasattr(obj, name):
                setattr(self, name, getattr(obj, name))
        if callable(getattr(obj, "describe", None)):
            self.describe = obj.describe

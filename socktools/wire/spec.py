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

__all__ = ["WireSpec", "WireOptionError", "build", "load_plugin", "plugin_options", "MODES", "STREAM_MODES", "stream_parser",
           "stream_decoder"]

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


def stream_decoder(name: str, flag: str = "--decode"):
    """``role -> parser`` (``keep`` a list) for both directions of a conversation: ``name`` is a
    mode with a stream decoder (:func:`~socktools.wire.modes.stream_decoders`) or a plug-in
    (``package.module:Class``, ``./file.py:Class``: any name with a ``:``) whose
    ``stream_parser(role)`` gives one.  The plug-in is built once, as ``Class(())`` with its
    defaults: decoding sends nothing, so the options that shape requests or a login do not
    matter.  Raises :class:`WireOptionError` naming ``flag``, with flood's ``--protocol``
    words for a plug-in that cannot be loaded."""
    if ":" not in name:
        if name not in modes.stream_decoders():
            raise WireOptionError(flag, f"no decoder for {name!r} (decoders: {', '.join(modes.stream_decoders())}, "
                                        f"or a plug-in's MODULE:CLASS)")
        return modes.get(name).stream_parser
    try:
        proto = load_plugin(name)(())
    except WireOptionError as exc:
        raise WireOptionError(flag, exc.message) from None
    try:
        parsers = [proto.stream_parser(role) for role in ("request", "response")]
    except Exception as exc:  # the plug-in's own bug, shown as its words
        raise WireOptionError(flag, f"{name}.stream_parser() failed: {type(exc).__name__}: {exc}") from None
    if any(p is None or not callable(getattr(p, "feed", None)) for p in parsers):
        raise WireOptionError(flag, f"{name} has no stream decoder: {flag} needs its stream_parser(role) to give "
                                    f"a parser for requests and for replies (see docs/plugins.md)")

    def make(role: str):
        parser = proto.stream_parser(role)
        if parser.keep is None:
            parser.keep = []
        return parser
    return make


def build(spec: WireSpec) -> WireProtocol:
    """The protocol object for ``spec``; raises :class:`WireOptionError`."""
    if spec.plugin:
        for flag, given in GATED[-3:]:
            if given(spec):   # a plug-in's opening is its own (WireProtocol.opening)
                raise WireOptionError(flag, f"only for --mode {' and '.join(modes.taking(flag))}; "
                                            f"a plug-in's opening is its own opening()")
        return load_plugin(spec.plugin)(tuple(spec.commands), **plugin_options(spec.plugin_options))
    if spec.plugin_options:
        raise WireOptionError("--protocol-option", "only with --protocol (a plug-in's own options)")
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


def plugin_options(texts: tuple) -> dict:
    """``--protocol-option KEY=VALUE`` texts as the keyword arguments of the plug-in's class."""
    options = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.isidentifier():
            raise WireOptionError("--protocol-option", f"{text!r}: write KEY=VALUE (KEY a Python name)")
        options[key] = value
    return options


def load_plugin(ref: str):
    """``"package.module:Name"`` or ``"path/to/file.py:Name"`` -> the class, checked for the
    interface; raises WireOptionError."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise WireOptionError("--protocol", f"{ref!r}: write package.module:ClassName or ./file.py:ClassName")
    # Like uvicorn's --app-dir default: a module beside the user's working
    # directory is found when socktools runs as a console script, too.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            module = _from_file(module_name)
        else:
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


def _from_file(path: str):
    """A plug-in module loaded from its file (``--protocol ./pg.py:Postgres``), once per process."""
    import hashlib
    import importlib.util

    full = os.path.abspath(path)
    name = "socktools_plugin_" + hashlib.sha1(full.encode()).hexdigest()[:12]   # one module per file
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _checked(cls, ref: str):
    def make(commands: tuple, **options):
        if options:
            import inspect
            try:
                inspect.signature(cls).bind(commands, **options)
            except (TypeError, ValueError) as exc:
                raise WireOptionError("--protocol-option", f"{ref} does not take {', '.join(options)}: {exc}") from None
        try:
            obj = cls(commands, **options)
        except Exception as exc:
            flag = "--protocol-option" if options else "--protocol"
            raise WireOptionError(flag, f"{ref}({commands!r}) failed: "
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
                     "shared_requests", "surplus_kind", "until_close", "echoes", "opening", "stream_parser"):
            if hasattr(obj, name):
                setattr(self, name, getattr(obj, name))
        if callable(getattr(obj, "describe", None)):
            self.describe = obj.describe

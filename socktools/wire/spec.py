"""What the user asked for, as a frozen, picklable spec; :func:`build` makes the protocol.

The spec carries option texts exactly as typed; building validates them, so
a bad escape, a bad struct format, two framings at once or a plug-in that
cannot be loaded is a :class:`WireOptionError` naming the option -- the CLI
turns it into a usage error.  Flood workers build their own copy from the
spec (a protocol object need not be picklable).
"""

from __future__ import annotations

import importlib
import os
import sys
import re
from dataclasses import dataclass
from typing import Optional

from socktools.errors import OptionError
from socktools.wire.base import WireProtocol
from socktools.wire.escapes import EscapeError, Template, typed_bytes, unescape

__all__ = ["WireSpec", "WireOptionError", "build", "load_plugin", "MODES", "STREAM_MODES", "stream_parser"]

#: Protocols sniff can decode from a reassembled stream, both directions.
STREAM_MODES = ("redis", "http", "line")


def stream_parser(mode: str, role: str):
    """A decoding parser (``keep`` set) for one direction of a captured stream.

    ``role`` is ``request`` (client to server) or ``response``: Redis and line
    protocols frame both the same way, HTTP has a parser for each.
    """
    if mode == "redis":
        from socktools.wire.redis import RespParser
        parser = RespParser()
    elif mode == "line":
        from socktools.wire.raw import _UntilParser
        parser = _UntilParser(b"\n", None)
    elif mode == "http":
        from socktools.wire.http import HttpParser
        parser = HttpParser(frozenset(range(100, 600)), requests=role == "request")
    else:
        raise ValueError(f"no stream decoder for {mode!r} (known: {', '.join(STREAM_MODES)})")
    parser.keep = []
    return parser

#: Exchange modes with a built-in protocol ("connect" is flood's churn, on echo).
MODES = ("echo", "framed", "raw", "line", "redis", "http")


#: Command-line flags whose config field is spelled otherwise.
_FIELDS = {"--send": "sends", "--command": "commands", "--path": "paths", "--header": "headers",
           "--protocol": "plugin", "--accept-status": "accept_status"}


class WireOptionError(OptionError):
    """A bad exchange option.  ``flag`` is the command-line option to blame (``--reply-until``),
    ``option`` its field (``reply_until``, as :class:`~socktools.errors.OptionError` has it)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(_FIELDS.get(flag, flag.lstrip("-").replace("-", "_")), message)
        self.flag = flag
        self.message = message


@dataclass(frozen=True)
class WireSpec:
    mode: str = "echo"
    size: int = 64                          # echo
    action: str = "search"                  # framed
    value: str = "morpheus"
    sends: tuple = ()                       # raw/line: request texts (escapes, placeholders)
    send_file: Optional[bytes] = None       # raw: the request's bytes from a file
    reply_until: Optional[str] = None
    reply_bytes: Optional[int] = None
    reply_prefix: Optional[str] = None
    reply_prefix_adjust: int = 0
    no_reply: bool = False
    reply_until_close: bool = False
    reply_match: Optional[str] = None
    eol: str = "lf"
    commands: tuple = ()                    # redis / plug-ins
    method: str = "GET"                     # http
    paths: tuple = ()
    headers: tuple = ()
    body: bytes = b""
    accept_status: tuple = ()
    plugin: Optional[str] = None            # "package.module:Name"
    host: str = "127.0.0.1"                 # the target, for HTTP's Host header

    @property
    def name(self) -> str:
        return "plugin" if self.plugin else self.mode

    def summary(self) -> dict:
        """What each connection sends, as JSON data for reports: texts as typed (escapes and
        placeholders unexpanded), a ``--send-file`` as its size and its first bytes."""
        if self.plugin:
            return {"mode": "plugin", "plugin": self.plugin, "commands": list(self.commands)}
        out = {"mode": self.mode}
        if self.mode in ("echo", "framed"):
            out["request_bytes"] = len(build(self).request(0, 0))
            if self.mode == "framed":
                out.update(action=self.action, value=self.value)
        elif self.mode in ("raw", "line"):
            if self.send_file is not None:
                head = self.send_file[:SEND_FILE_SHOWN]
                out.update(send=[head.decode("utf-8", "backslashreplace")], send_file_bytes=len(self.send_file))
            else:
                out["send"] = list(self.sends)
            if self.mode == "line":
                out["eol"] = self.eol
        elif self.mode == "redis":
            from socktools.wire.redis import DEFAULT_COMMANDS
            out["commands"] = list(self.commands or DEFAULT_COMMANDS)
        elif self.mode == "http":
            from socktools.wire.http import DEFAULT_PATHS
            given = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in self.headers)}
            out.update(method=self.method.upper(), paths=list(self.paths or DEFAULT_PATHS),
                       headers=len(self.headers), host=given.get("host", self.host), body_bytes=len(self.body))
        return out


#: How much of a --send-file a report keeps: enough to recognise the request (a request line and
#: its first headers), while the JSON stays small whatever the file's size.
SEND_FILE_SHOWN = 512

EOLS = {"lf": b"\n", "crlf": b"\r\n", "\\n": b"\n", "\\r\\n": b"\r\n"}


def _templates(spec: WireSpec, option: str = "--send") -> list:
    if spec.send_file is not None:
        if spec.sends:
            raise WireOptionError("--send-file", "give --send or --send-file, not both")
        try:
            return [Template(spec.send_file)]
        except EscapeError as exc:
            raise WireOptionError("--send-file", str(exc)) from None
    if not spec.sends:
        raise WireOptionError(option, f"--mode {spec.mode} needs at least one --send")
    try:
        return [Template.from_text(s) for s in spec.sends]
    except EscapeError as exc:
        raise WireOptionError(option, str(exc)) from None


def _match(spec: WireSpec) -> Optional[bytes]:
    if spec.reply_match is None:
        return None
    try:
        pattern = typed_bytes(spec.reply_match)   # a bytes pattern: it may match any byte typed
    except EscapeError as exc:
        raise WireOptionError("--reply-match", str(exc)) from None
    try:
        re.compile(pattern)
    except re.error as exc:
        raise WireOptionError("--reply-match", f"not a regular expression: {exc}") from None
    return pattern


def build(spec: WireSpec) -> WireProtocol:
    """The protocol object for ``spec``; raises :class:`WireOptionError`."""
    if spec.plugin:
        return load_plugin(spec.plugin)(tuple(spec.commands))
    mode = spec.mode
    used = [name for name, on in (("--reply-until", spec.reply_until is not None),
                                  ("--reply-bytes", spec.reply_bytes is not None),
                                  ("--reply-prefix", spec.reply_prefix is not None),
                                  ("--reply-until-close", spec.reply_until_close),
                                  ("--no-reply", spec.no_reply)) if on]
    if mode != "raw":
        if used:
            raise WireOptionError(used[0], "only for --mode raw")
        if spec.reply_match is not None and mode != "line":
            raise WireOptionError("--reply-match", "only for --mode raw and line")
    if mode == "echo":
        from socktools.wire.framed import EchoProtocol
        return EchoProtocol(spec.size)
    if mode == "framed":
        from socktools.wire.framed import FramedProtocol
        return FramedProtocol(spec.action, spec.value)
    if mode == "raw":
        from socktools.wire.raw import RawProtocol, prefix_struct
        templates = _templates(spec)
        if len(used) != 1:
            raise WireOptionError(used[1] if used else "--reply-until",
                                  f"give exactly one reply framing, not {' and '.join(used)}" if used else
                                  "give one reply framing: --reply-until, --reply-bytes, --reply-prefix, "
                                  "--reply-until-close or --no-reply")
        until = None
        if spec.reply_until is not None:
            try:
                until = unescape(spec.reply_until)
            except EscapeError as exc:
                raise WireOptionError("--reply-until", str(exc)) from None
            if not until:
                raise WireOptionError("--reply-until", "the delimiter is empty")
        if spec.reply_bytes is not None and spec.reply_bytes < 1:
            raise WireOptionError("--reply-bytes", "must be >= 1")
        if spec.reply_prefix is not None:
            try:
                prefix_struct(spec.reply_prefix)
            except ValueError as exc:
                raise WireOptionError("--reply-prefix", str(exc)) from None
        elif spec.reply_prefix_adjust:
            raise WireOptionError("--reply-prefix-adjust", "only with --reply-prefix")
        if spec.no_reply and spec.reply_match is not None:
            raise WireOptionError("--reply-match", "there are no replies to check with --no-reply")
        return RawProtocol(templates, until=until, size=spec.reply_bytes, prefix=spec.reply_prefix,
                           adjust=spec.reply_prefix_adjust, no_reply=spec.no_reply,
                           until_close=spec.reply_until_close, match=_match(spec))
    if mode == "line":
        from socktools.wire.raw import LineProtocol
        eol = EOLS.get(spec.eol.lower())
        if eol is None:
            raise WireOptionError("--eol", f"{spec.eol!r}: use lf or crlf")
        return LineProtocol(_templates(spec), eol=eol, match=_match(spec))
    if mode == "redis":
        from socktools.wire.redis import RedisProtocol
        try:
            return RedisProtocol(tuple(spec.commands) or ("PING",))
        except (ValueError, EscapeError) as exc:
            raise WireOptionError("--command", str(exc)) from None
    if mode == "http":
        from socktools.wire.http import HttpProtocol, parse_accept
        try:
            accept = parse_accept(spec.accept_status) if spec.accept_status else None
        except ValueError as exc:
            raise WireOptionError("--accept-status", str(exc)) from None
        try:
            return HttpProtocol(spec.host, method=spec.method, paths=tuple(spec.paths) or ("/",),
                                headers=spec.headers, body=spec.body, accept=accept)
        except (ValueError, EscapeError) as exc:   # RequestPartError names its option
            raise WireOptionError(getattr(exc, "option", "--path"), str(exc)) from None
    raise WireOptionError("--mode", f"unknown mode {mode!r} (known: {', '.join(MODES)})")


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
                     "shared_requests"):
            if hasattr(obj, name):
                setattr(self, name, getattr(obj, name))
        if callable(getattr(obj, "describe", None)):
            self.describe = obj.describe

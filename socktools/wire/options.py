"""What the user asked of an exchange, as a frozen, picklable spec, and the checks every
mode's builder shares: option texts as typed, turned into request templates and patterns,
or a :class:`WireOptionError` naming the option to blame."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from socktools.errors import OptionError
from socktools.wire.escapes import EscapeError, Template, typed_bytes

__all__ = ["WireSpec", "WireOptionError", "templates", "reply_match", "EOLS", "SEND_FILE_SHOWN",
           "opening_steps", "OPENING_FLAGS"]


#: Command-line flags whose config field is spelled otherwise.
_FIELDS = {"--setup": "setups", "--send": "sends", "--command": "commands", "--path": "paths", "--header": "headers",
           "--protocol": "plugin", "--protocol-option": "plugin_options", "--accept-status": "accept_status"}


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
    plugin_options: tuple = ()              # --protocol-option KEY=VALUE texts, as typed
    host: str = "127.0.0.1"                 # the target, for HTTP's Host header
    greeting: bool = False                  # the opening: wait for the server's first message
    greeting_match: Optional[str] = None    # ... and check it (a regex; implies greeting)
    setups: tuple = ()                      # ... then these messages, each reply awaited and judged

    @property
    def opens(self) -> bool:
        """A built-in opening was asked for (--greeting, --greeting-match, --setup)."""
        return self.greeting or self.greeting_match is not None or bool(self.setups)

    @property
    def name(self) -> str:
        return "plugin" if self.plugin else self.mode

    def summary(self) -> dict:
        """What each connection sends, as JSON data for reports: texts as typed (escapes and
        placeholders unexpanded), a ``--send-file`` as its size and its first bytes."""
        if self.plugin:
            # option values as typed, but never a password or secret in a report
            options = {k: "(hidden)" if any(w in k.lower() for w in ("pass", "secret")) else v
                       for k, _, v in (t.partition("=") for t in self.plugin_options)}
            return {"mode": "plugin", "plugin": self.plugin, "commands": list(self.commands), "options": options}
        from socktools.wire import modes
        out = {"mode": self.mode, **modes.get(self.mode).summary(self)}
        if self.opens:   # (the --setup texts are not shown: an AUTH carries a password)
            out["opening"] = {"greeting": self.greeting or self.greeting_match is not None,
                              "greeting_match": self.greeting_match, "setup": len(self.setups)}
        return out


#: How much of a --send-file a report keeps: enough to recognise the request (a request line and
#: its first headers), while the JSON stays small whatever the file's size.
SEND_FILE_SHOWN = 512

EOLS = {"lf": b"\n", "crlf": b"\r\n", "\\n": b"\n", "\\r\\n": b"\r\n"}


def templates(spec: WireSpec, option: str = "--send") -> list:
    """The ``--send`` texts (or the ``--send-file`` bytes) as request templates."""
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


def reply_match(spec: WireSpec) -> Optional[bytes]:
    """``--reply-match`` as a checked bytes pattern (or None)."""
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


#: The built-in opening's options (flood declares them; the registry says which modes take them).
OPENING_FLAGS = ("--greeting", "--greeting-match", "--setup")


def opening_steps(spec: WireSpec, encode) -> tuple:
    """The built-in opening of ``spec`` as (steps, greeting pattern): ``("greeting", None)``
    first with --greeting or --greeting-match, then ``("setup N", encode(text))`` for each
    --setup; ``encode`` is the mode's (a ValueError from it names --setup).  A --setup is
    sent as typed once per connection: a {seq}/{conn} placeholder would be a request's."""
    match = None
    if spec.greeting_match is not None:
        try:
            match = typed_bytes(spec.greeting_match)
            re.compile(match)
        except EscapeError as exc:
            raise WireOptionError("--greeting-match", str(exc)) from None
        except re.error as exc:
            raise WireOptionError("--greeting-match", f"not a regular expression: {exc}") from None
    steps = [("greeting", None)] if spec.greeting or match is not None else []
    for i, text in enumerate(spec.setups, 1):
        try:
            message = encode(text)
        except (ValueError, EscapeError) as exc:
            raise WireOptionError("--setup", f"{text!r}: {exc}") from None
        if message is None:
            raise WireOptionError("--setup", f"{text!r}: sent once per connection, as typed: "
                                             f"no {{seq}} or {{conn}} (write {{{{ for a brace)")
        if not message:
            raise WireOptionError("--setup", "an empty setup message")
        steps.append((f"setup {i}", message))
    return tuple(steps), match

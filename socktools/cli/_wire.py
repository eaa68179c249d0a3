"""The exchange options that flood and request share, declared once, and their WireSpec."""

from __future__ import annotations

import click

from socktools.cli._common import BYTESIZE

__all__ = ["wire_options", "wire_spec", "WIRE_PARAMS", "opening_options", "OPENING_PARAMS"]

_OPTIONS = [
    click.option("--send", "sends", multiple=True, metavar="TEXT",
                 help="raw/line: the request; C escapes (\\r \\n \\t \\\\ \\xHH \\0) and {seq} {conn} "
                      "placeholders.  Repeat to rotate through several."),
    click.option("--send-file", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="raw: the request is this file's bytes (placeholders still apply)."),
    click.option("--reply-until", metavar="DELIM", default=None,
                 help="raw: a reply ends with DELIM (escapes as --send), e.g. '\\r\\n'."),
    click.option("--reply-bytes", type=BYTESIZE, default=None, help="raw: every reply is exactly N bytes."),
    click.option("--reply-prefix", metavar="FMT", default=None,
                 help="raw: a reply starts with its length in struct notation (>H, >I, <Q...)."),
    click.option("--reply-prefix-adjust", type=int, default=0, show_default=True,
                 help="raw: body bytes = prefix length + N (negative if the length counts the prefix)."),
    click.option("--reply-until-close", is_flag=True,
                 help="raw: a reply is every byte until the server closes; flood opens a new "
                      "connection for each request (servers that answer once and hang up)."),
    click.option("--no-reply", is_flag=True, help="raw: write-only stream at --rate; replies are not awaited (a connection the "
                                            "server does not drain holds at most 256 KiB; requests due "
                                            "beyond it are counted late, not queued)."),
    click.option("--reply-match", metavar="REGEX", default=None,
                 help="raw/line: a reply not matching REGEX counts as failure wrong-reply."),
    click.option("--eol", type=click.Choice(["lf", "crlf"]), default="lf", show_default=True,
                 help="line: the line ending appended to each request."),
    click.option("--command", "commands", multiple=True, metavar="CMD",
                 help="redis (and plug-ins): e.g. 'SET key:{seq} v'; repeat to rotate.  [default: PING]"),
    click.option("--method", default="GET", show_default=True, help="http: the request method (HEAD: responses framed without a body)."),
    click.option("--path", "paths", multiple=True, metavar="PATH",
                 help="http: the request target, may carry {seq}; repeat to rotate.  [default: /]"),
    click.option("--header", "headers", multiple=True, metavar="'K: V'", help="http: a request header (repeatable)."),
    click.option("--body", default=None, metavar="TEXT|@FILE", help="http: the request body."),
    click.option("--accept-status", multiple=True, metavar="CODES",
                 help="http: statuses that are not failures, added to 1xx-3xx, e.g. 404 or 4xx,5xx; "
                      "!CODE or !CLASS takes one away (!2xx: a 2xx is a failure)."),
    click.option("--protocol", "plugin", metavar="MODULE:CLASS", default=None,
                 help="Your own exchange protocol class, package.module:Class or ./file.py:Class "
                      "(see docs/plugins.md); --command texts go to it."),
    click.option("--protocol-option", "plugin_options", multiple=True, metavar="KEY=VALUE",
                 help="A keyword argument for the --protocol class (repeatable), e.g. user=bob."),
]

#: The built-in opening conversation (flood's; the modes registry says which modes take them).
_OPENING_OPTIONS = [
    click.option("--greeting", is_flag=True,
                 help="raw/line/redis: wait for the server's first message (SMTP's 220, FTP's banner) "
                      "before anything is sent on a connection; framed as the mode frames replies."),
    click.option("--greeting-match", metavar="REGEX", default=None,
                 help="Check the greeting against REGEX (implies --greeting); one that does not match "
                      "refuses the connection with the greeting's words."),
    click.option("--setup", "setups", multiple=True, metavar="TEXT",
                 help="raw/line/redis: send TEXT once per connection before the measured requests, "
                      "await its reply and check it (redis: a command line, e.g. 'AUTH s3cret'; an "
                      "error reply refuses; line: a 4xx/5xx line refuses).  Repeat: sent in order."),
]
OPENING_PARAMS = ("greeting", "greeting_match", "setups")

WIRE_PARAMS = ("sends", "send_file", "reply_until", "reply_bytes", "reply_prefix", "reply_prefix_adjust",
               "reply_until_close", "no_reply", "reply_match", "eol", "commands", "method", "paths", "headers", "body",
               "accept_status", "plugin", "plugin_options")


_NAMES = {"setups": "--setup", "sends": "--send", "commands": "--command", "paths": "--path", "headers": "--header",
          "plugin": "--protocol", "plugin_options": "--protocol-option"}


def option_name(param: str) -> str:
    return _NAMES.get(param, "--" + param.replace("_", "-"))


def given_params(ctx) -> list:
    """The exchange options the user typed (not left at their defaults)."""
    return [p for p in WIRE_PARAMS + OPENING_PARAMS if p in ctx.params
            and ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT]


def opening_options(f=None, *, greeting: bool = True):
    """The opening's options on a command; ``greeting=False``: without ``--greeting`` (request
    declares its own, whose help says how it shows the greeting)."""
    if f is None:
        return lambda g: opening_options(g, greeting=greeting)
    for opt in reversed(_OPENING_OPTIONS if greeting else _OPENING_OPTIONS[1:]):
        f = opt(f)
    return f


def wire_options(f):
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc.strerror}", param_hint=option)
    except UnicodeEncodeError:      # a lone surrogate: no file can have that name
        raise click.BadParameter(f"{path!r} cannot be a file name", param_hint=option) from None


def wire_spec(mode: str, host: str, params: dict, **extra):
    """A WireSpec from the CLI values (not yet validated: building it does that)."""
    from socktools.wire.spec import WireSpec

    body = params.get("body")
    if body is None:
        body_bytes = b""
    elif body.startswith("@"):
        body_bytes = _read(body[1:], "--body")
    else:
        from socktools.wire.escapes import EscapeError, typed_bytes
        try:
            body_bytes = typed_bytes(body)       # sent as typed, bytes that are not UTF-8 too
        except EscapeError as exc:
            raise click.BadParameter(str(exc), param_hint="'--body'") from None
    send_file = params.get("send_file")
    return WireSpec(mode="plugin" if params.get("plugin") else mode,
                    sends=tuple(params.get("sends") or ()),
                    send_file=_read(send_file, "--send-file") if send_file else None,
                    reply_until=params.get("reply_until"), reply_bytes=params.get("reply_bytes"),
                    reply_prefix=params.get("reply_prefix"),
                    reply_prefix_adjust=params.get("reply_prefix_adjust") or 0,
                    reply_until_close=bool(params.get("reply_until_close")),
                    no_reply=bool(params.get("no_reply")), reply_match=params.get("reply_match"),
                    eol=params.get("eol") or "lf", commands=tuple(params.get("commands") or ()),
                    method=params.get("method") or "GET", paths=tuple(params.get("paths") or ()),
                    headers=tuple(params.get("headers") or ()), body=body_bytes,
                    accept_status=tuple(params.get("accept_status") or ()), plugin=params.get("plugin"),
                    plugin_options=tuple(params.get("plugin_options") or ()),
                    host=host, greeting=bool(params.get("greeting")), greeting_match=params.get("greeting_match"),
                    setups=tuple(params.get("setups") or ()), **extra)

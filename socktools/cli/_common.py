"""Shared click pieces: option types, error exits, duration and address parsing."""

from __future__ import annotations

import importlib
import re
import sys
from typing import Optional

import click

#: Exit codes: 0 ok, 1 the operation failed (refused, reset, protocol error...),
#: 2 usage error (click's own), 3 missing privilege or platform feature,
#: 99 flood ran but a --threshold failed (k6's code for the same outcome).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_THRESHOLD = 99
#: The most connections a command may ask for: ten times the largest run measured on one
#: machine (1,000,000); a machine runs out of kernel memory (~6 KiB a socket) far sooner,
#: and a typo must not become a plan for 10^20 sockets (and an `ulimit -n` advice to match).
MAX_CONNS = 10_000_000
#: The most processes a command may start: far past any machine's CPUs (flood's plan already
#: warns at 4 per CPU), and each one costs ~24 MiB and two of the parent's descriptors.
MAX_PROCESSES = 1024
#: The most requests, probes, packets or refreshes a count may ask for: 2**53, the largest
#: integer a JSON number (an IEEE double) holds exactly -- every count lands in a --json.
MAX_COUNT = 2 ** 53
#: listen()'s backlog: the kernel trims it to net.core.somaxconn anyway, and 65,535 is what
#: that could hold until Linux 5.4 (and what nginx and redis document as the ceiling).
MAX_BACKLOG = 65_535


#: 128 + the signal, as a shell reports a process the signal ended: Ctrl-C (SIGINT)
#: before anything could be reported, and SIGTERM after the report was printed.
EXIT_INTERRUPTED = 128 + 2
EXIT_SIGTERM = 128 + 15


def shown(text: str) -> str:
    """``text`` as the user typed it, fit for a message: bytes that are not UTF-8 (which
    arrive surrogate-escaped) as ``\\xff``, quoted when it has spaces or is empty."""
    import shlex
    from socktools.wire.escapes import readable
    return shlex.quote(readable(text))

#: The longest duration any option takes (timeouts, intervals, run lengths): a year is longer
#: than anyone means, and far below where sleep() and socket timeouts overflow time_t.
MAX_DURATION = 366 * 86400.0
#: The largest size any option takes (payloads, chunks, socket buffers, caps): 2 GiB - 1, what
#: setsockopt's C int holds; one message or send() chunk beyond it is a typo here.
MAX_BYTES = (1 << 31) - 1
#: The fastest --rate / --connect-rate: a billion per second is beyond any machine (the
#: fastest loopback runs measured here are ~10^6/s); inf and nan are typos, not rates.
MAX_RATE = 1e9

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"10s"`` / ``"500ms"`` / ``"2m"`` / ``"1.5"`` -> seconds; raises ValueError."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 10s, 500ms, 2m, 1.5)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds > MAX_DURATION:
            self.fail(f"{value!r} is more than a year: at most {MAX_DURATION / 86400:.0f} days", param, ctx)
        return seconds

    @staticmethod
    def text(seconds: float) -> str:
        """``60.0`` -> ``"60s"``, ``0.5`` -> ``"0.5s"``: a duration as help shows it, the way
        a user types it (and :func:`parse_duration` reads it back exactly)."""
        seconds = float(seconds)
        return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds!r}s"


class ByteSize(click.ParamType):
    """``4096`` / ``64k`` / ``1M`` / ``1MiB`` -> bytes."""

    name = "BYTES"
    _RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = self._RE.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a size in bytes (examples: 4096, 64k, 1M)", param, ctx)
        mult = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]
        size = int(m.group(1)) * mult
        if size > MAX_BYTES:
            self.fail(f"{value!r} is more than 2 GiB: at most {MAX_BYTES:,} bytes", param, ctx)
        return size


class Port(click.ParamType):
    name = "PORT"

    def convert(self, value, param, ctx):
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a port number", param, ctx)
        if not 0 <= port <= 65535:
            self.fail(f"{port} is out of range 0-65535", param, ctx)
        return port


def _load(source: str):
    module, _, attr = source.partition(":")
    return getattr(importlib.import_module(module), attr)


class LazyChoice(click.Choice):
    """A :class:`click.Choice` whose choices are an engine's constant, named ``"module:NAME"``
    and imported only when a value is checked or the command's own help is shown: building
    the command (``socktools --help`` builds them all) then imports no engine."""

    def __init__(self, source: str, case_sensitive: bool = True) -> None:
        self._source = source
        self._choices = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self):
        if self._choices is None:
            self._choices = tuple(_load(self._source))
        return self._choices

    @choices.setter
    def choices(self, value) -> None:
        self._choices = tuple(value)


class LazyDefault:
    """An option default that is an engine's constant (``"socktools.protocol:DEFAULT_MAX_CONTENT"``),
    imported on first use; give the option ``cls=LazyOption`` so help shows the real value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self):
        return _load(self.source)


class LazyOption(click.Option):
    """An option whose default (:class:`LazyDefault`) or help (``lazy_help="module:NAME"``, a
    string an engine builds, e.g. from the registry of modes) is read only when shown."""

    def __init__(self, *args, lazy_help: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_help = lazy_help

    def get_help_record(self, ctx):
        if self.lazy_help is not None:
            self.help, self.lazy_help = _load(self.lazy_help), None
        return super().get_help_record(ctx)

    def get_default(self, ctx, call=True):
        value = super().get_default(ctx, call=call)
        value = value() if isinstance(value, LazyDefault) else value
        if isinstance(self.type, Duration) and isinstance(value, (int, float)):
            value = Duration.text(value)   # help writes `60s` (as the plain defaults do), not 60.0
        return value


class Rate(click.ParamType):
    """Per second, more than 0 and at most :data:`MAX_RATE` (not inf, not nan)."""

    name = "FLOAT"

    def convert(self, value, param, ctx):
        try:
            rate = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number per second", param, ctx)
        if not 0 < rate <= MAX_RATE:      # false for nan too
            self.fail(f"{value!r} is out of range: more than 0, at most {MAX_RATE:,.0f} per second",
                      param, ctx)
        return rate


DURATION = Duration()
RATE = Rate()
BYTESIZE = ByteSize()
PORT = Port()


def parse_address_range(text: str) -> list[str]:
    """``127.0.0.2-127.0.0.9`` or ``127.0.0.2,127.0.0.3`` -> list of addresses."""
    import ipaddress
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = ipaddress.ip_address(lo_s.strip()), ipaddress.ip_address(hi_s.strip())
            if lo.version != hi.version or int(hi) < int(lo):
                raise ValueError(f"{part!r} is not an ascending range of one address family")
            if int(hi) - int(lo) > 65535:
                raise ValueError(f"{part!r} spans more than 65,536 addresses")
            out.extend(str(ipaddress.ip_address(i)) for i in range(int(lo), int(hi) + 1))
        else:
            out.append(str(ipaddress.ip_address(part)))
    if not out:
        raise ValueError("empty address list")
    return out


#: Key in the root click context's ``meta``: the wall-clock time the command began.
STARTED_KEY = "socktools.started"


def stamped(document: dict) -> dict:
    """``document`` with the run metadata every ``--json`` carries (:mod:`socktools.runinfo`):
    version, start time (when the command began) and host facts."""
    import time
    from socktools.runinfo import stamp
    ctx = click.get_current_context(silent=True)
    started = ctx.find_root().meta.get(STARTED_KEY) if ctx is not None else None
    return stamp(document, started or time.time())


def die(message: str, code: int = EXIT_FAILED) -> "NoReturn":  # noqa: F821
    """Print ``socktools: <message>`` on stderr and exit with ``code``."""
    click.echo(f"socktools: {message}", err=True)
    sys.exit(code)


def build_config(factory, **fields):
    """``factory(**fields)``, with the config's own :class:`~socktools.errors.OptionError`
    turned into a click usage error naming the option (exit 2): the config validates,
    the CLI only says which option was wrong."""
    from socktools.errors import OptionError
    try:
        return factory(**fields)
    except OptionError as exc:
        ctx = click.get_current_context(silent=True)
        raise click.BadParameter(str(exc), ctx=ctx, param_hint=_option_hint(ctx, exc.option)) from None


def _option_hint(ctx, field: str) -> str:
    """The option the user typed for a config field: the click parameter of that name if there
    is one (``--max-conns``), else the field spelled as an option."""
    for param in (ctx.command.params if ctx is not None else ()):
        if param.name == field and getattr(param, "opts", None):
            return param.get_error_hint(ctx)   # names its variable when the value came from it
    return f"'--{field.replace('_', '-')}'"


def warn_target(command: str, address) -> None:
    """One line on stderr when ``command`` is about to send to a non-loopback address (never a refusal)."""
    from socktools.addresses import target_warning
    line = target_warning(command, address)
    if line:
        click.echo(line, err=True)


class UnixPath(click.ParamType):
    """``--unix PATH``: an existing Unix-domain socket.  The path is kept as given (any bytes,
    surrogate-escaped as Python hands them over); one that cannot be bytes (a lone surrogate),
    does not exist or is not a socket is a usage error with the OS's reason."""

    name = "path"

    def convert(self, value, param, ctx):
        import os

        from socktools.addresses import unix_problem
        try:
            os.fsencode(value)
        except UnicodeError:
            self.fail("not a file name: it holds a character that is not bytes (a lone surrogate; "
                      "give it as UTF-8)", param, ctx)
        problem = unix_problem(value)
        if problem:
            from socktools.addresses import format_addr
            self.fail(f"{format_addr(value)}: {problem}", param, ctx)
        return value


def unix_option(help_extra=""):
    return click.option("--unix", "unix", type=UnixPath(), default=None, metavar="PATH",
                        help="A Unix-domain socket to connect to instead of --host/--port (no DNS)." + help_extra)


def check_target(ctx, host: str, unix) -> None:
    """--unix excludes --host and --port; a path given as --host is meant for --unix."""
    from click.core import ParameterSource
    if unix is not None:
        for name in ("host", "port"):
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
                raise click.UsageError(f"--unix names the whole target: give --unix or --{name}, not both")
    else:
        refuse_path_as_host(host, "'--host'")


def refuse_path_as_host(host: str, hint: str) -> None:
    """A path (it has a '/') given where a host goes is meant for --unix: say so, naming ``hint``."""
    if "/" in (host or ""):
        raise click.BadParameter("a path is not a host: give a Unix socket as --unix PATH", param_hint=hint)


def host_option(default="127.0.0.1", help_extra=""):
    return click.option("--host", default=default, show_default=True, metavar="HOST",
                        help="Address or name; ::1 for IPv6." + help_extra)


def port_option(default=65432, help_extra=""):
    return click.option("--port", "-p", type=PORT, default=default, show_default=True,
                        help="TCP port." + help_extra)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log lines to stderr as ``HH:MM:SS level message``."""
    import logging
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("socktools")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

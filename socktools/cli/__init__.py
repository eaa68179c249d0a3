"""The click switchboard: each subcommand builds one frozen config and calls one function.

Only this package imports click, prints for humans, or chooses exit codes.
Subcommand modules keep heavy imports (scapy, hdrhistogram) inside their
command functions so that ``socktools --help`` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import time

import click

from socktools import __version__
from socktools.optional import MissingPackage

# name -> module under socktools.cli that defines a click command called `command`.
# Loaded lazily: `socktools serve` imports only what serve needs.
COMMANDS = {
    "serve": "serve",
    "request": "request",
    "flood": "flood",
    "sockets": "sockets",
    "explain": "explain",
    "ping": "ping",
    "doctor": "doctor",
    "stall": "stall",
    "sniff": "sniff",
    "demo": "demo",
    "report": "report",
    "proxy": "proxy",
}


#: Errors writing our own output (stdout to a closed pipe, a full disk or quota,
#: a file too large): the command's work is done or moot, so they end in one line
#: on stderr and exit 1 -- never a traceback, never "Exception ignored" at exit.
_OUTPUT_ERRNOS = frozenset(getattr(errno, n) for n in ("EPIPE", "ENOSPC", "EDQUOT", "EFBIG", "EIO")
                           if hasattr(errno, n))


#: Exit status when the reader of our stdout went away (``socktools sockets | head``):
#: 128 + SIGPIPE, what ss, grep and every C tool the signal ends report.
EXIT_SIGPIPE = 128 + 13


def _output_failed(exc: OSError) -> "NoReturn":  # noqa: F821
    """Say it in one line on stderr; silence stdout so the exit flush cannot fail again; exit 1.

    A closed pipe is the exception: the reader had what it wanted (``| head``), which is a
    normal end, so it ends quietly with :data:`EXIT_SIGPIPE`, as ss and grep do.
    """
    from socktools.errors import errno_name
    what = f"write {exc.filename}" if exc.filename else "write output"
    try:
        # The recipe of Python's signal docs (SIGPIPE note): point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
    if exc.errno == errno.EPIPE and not exc.filename:
        sys.exit(EXIT_SIGPIPE)
    reason = exc.strerror or ""
    try:
        sys.stderr.write(f"socktools: cannot {what}: {errno_name(exc.errno)} (errno {exc.errno}) - {reason}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    sys.exit(1)


def _guard_output(call):
    """Run ``call()``, flush stdout before leaving, and turn output errors into :func:`_output_failed`."""
    try:
        try:
            return call()
        finally:
            try:
                sys.stdout.flush()  # fail here, in our hands, not in the interpreter's exit
            except (AttributeError, ValueError):
                pass
    except OSError as exc:
        if exc.errno in _OUTPUT_ERRNOS:
            _output_failed(exc)
        raise


def _unavailable(call):
    """Run ``call()``; a missing optional package, wherever it was found, ends every command
    the same way: its install hint on one line, exit 3 (README: "a privilege, platform
    feature or optional package is missing")."""
    try:
        return call()
    except MissingPackage as exc:
        from socktools.cli._common import EXIT_UNAVAILABLE, die
        die(str(exc), EXIT_UNAVAILABLE)


class LazyGroup(click.Group):
    def main(self, *args, **kwargs):
        # --help/--version write before any command runs: guard them too.
        try:
            return _guard_output(lambda: super(LazyGroup, self).main(*args, **kwargs))
        except SystemExit:
            import warnings
            with warnings.catch_warnings():  # deprecated for click 9 (hence click<9 in pyproject)
                warnings.simplefilter("ignore", DeprecationWarning)
                from click.utils import PacifyFlushWrapper
            if isinstance(sys.stdout, PacifyFlushWrapper):  # click swallowed an EPIPE: say it
                _output_failed(OSError(errno.EPIPE, "Broken pipe"))
            raise

    def invoke(self, ctx):
        # Inside click's own handler, which would swallow EPIPE with no word.
        try:
            return _guard_output(lambda: _unavailable(lambda: super(LazyGroup, self).invoke(ctx)))
        except KeyboardInterrupt:
            # A command with no report of its own to print (request, explain...): Ctrl-C ends
            # it with 130 (README's table), not click's "Aborted!" and 1.
            from socktools.cli._common import EXIT_INTERRUPTED, die
            die("interrupted", EXIT_INTERRUPTED)

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        command = importlib.import_module(f"socktools.cli.{module}").command
        if not getattr(command, "_socktools_wired", False):
            _name_envvars(name, command)
            _check_text(command)
            command._socktools_wired = True
        return command


#: Repeatable options whose values are free text -- a Redis command, a request, an HTTP
#: header or path -- take one value per line from their variable
#: (``SOCKTOOLS_FLOOD_COMMAND='SET k v'``); click's default splits on whitespace, which
#: suits token lists (``--threshold``, ``--state``, ``--accept-status``) and is kept for them.
ONE_PER_LINE = frozenset({"--send", "--command", "--path", "--header"})


#: Options whose value goes on the wire as the bytes typed, escapes and all: bytes that are
#: not UTF-8 are sent as they are (wire.escapes.typed_bytes).  Every other text option and
#: argument needs text (a host, a JSON value, a module name...) and refuses them.
AS_TYPED = frozenset({"--send", "--reply-until", "--reply-match", "--command", "--path", "--header", "--body"})


def _not_text(value: str) -> "str | None":
    """Why ``value`` (as the command line decoded it, PEP 383) is not text, or None."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        raw = value[exc.start]
        if 0xDC80 <= ord(raw) <= 0xDCFF:
            return f"byte 0x{ord(raw) - 0xDC00:02x} at position {exc.start} is not UTF-8"
        return f"U+{ord(raw):04X} at position {exc.start} is a lone surrogate"


class _Text(click.types.StringParamType):
    """Text that must be UTF-8: an option that is not sent as typed (:data:`AS_TYPED`)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        why = _not_text(value) if isinstance(value, str) else None
        if why:
            from socktools.cli._common import shown
            self.fail(f"{shown(value)} is not UTF-8 text: {why}", param, ctx)
        return value


_TEXT = _Text()


class _FileName(click.ParamType):
    """A :class:`click.Path` that first refuses a name no file can have (a lone surrogate, which
    ``os.fsencode`` cannot turn back into bytes); any bytes a command line carries are a name."""

    def __init__(self, path: click.Path) -> None:
        self.path = path
        self.name = path.name

    def __getattr__(self, attr):
        return getattr(self.path, attr)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                os.fsencode(value)
            except UnicodeEncodeError:
                self.fail(f"{ascii(value)} cannot be a file name: "
                          f"{_not_text(value)}", param, ctx)
        return self.path.convert(value, param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        return self.path.shell_complete(ctx, param, incomplete)


def _check_text(command: click.Command) -> None:
    """Every text parameter of ``command`` refuses bytes that are not UTF-8 with a usage error
    naming it, unless it is sent as typed (:data:`AS_TYPED`); file names take any bytes."""
    for param in command.params:
        if type(param.type) is click.types.StringParamType and not set(param.opts) & AS_TYPED:
            param.type = _TEXT
        elif type(param.type) is click.Path:
            param.type = _FileName(param.type)


class _Lines(click.types.StringParamType):
    """Text whose variable holds one value per line (blank lines and a trailing CR ignored)."""

    envvar_note = "repeatable: one value per line"

    def split_envvar_value(self, rv: str):
        return [line[:-1] if line.endswith("\r") else line for line in (rv or "").split("\n")
                if line.strip("\r")]


_LINES = _Lines()


class _Bool(click.types.BoolParamType):
    """A flag's variable: click's own error lists an empty string first among the values."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a valid boolean: use 1, true, yes, on or 0, false, no, off",
                      param, ctx)


_BOOL = _Bool()

#: Key in ``ctx.meta``: names of the parameters whose value came from their variable.
_FROM_ENV = "socktools.from_env"


_FROM_VARIABLE_CLASSES: dict = {}


def _from_variable(cls: type) -> type:
    """``cls`` (an option class), made to blame a value its variable gave on the variable:
    ``SOCKTOOLS_FLOOD_CONNS=abc (for '--conns')``, in click's messages and in
    :func:`socktools.cli._common.build_config`'s alike.  Every option that has a variable
    gets it (:func:`_name_envvars`).

    click records where a value came from only after converting it, so the source is
    noted here, as the value is read.  (A direct subclass: CPython refuses to swap an
    object's class for one with a mixin in front.)
    """
    if cls not in _FROM_VARIABLE_CLASSES:
        class FromVariable(cls):
            def consume_value(self, ctx, opts):
                value, source = super().consume_value(ctx, opts)
                if source is click.core.ParameterSource.ENVIRONMENT:
                    ctx.meta.setdefault(_FROM_ENV, set()).add(self.name)
                return value, source

            def get_error_hint(self, ctx):
                hint = super().get_error_hint(ctx)
                if ctx is not None and self.name in ctx.meta.get(_FROM_ENV, ()):
                    from socktools.cli._common import shown
                    return f"{self.envvar}={shown(os.environ.get(self.envvar, ''))} (for {hint})"
                return hint

        FromVariable.__name__ = FromVariable.__qualname__ = cls.__name__
        _FROM_VARIABLE_CLASSES[cls] = FromVariable
    return _FROM_VARIABLE_CLASSES[cls]


def _name_envvars(name: str, command: click.Command) -> None:
    """Every visible option reads ``SOCKTOOLS_<COMMAND>_<OPTION>``, named after the flag users type.

    click's ``auto_envvar_prefix`` would name them after the Python parameter
    (``--json`` -> ``..._AS_JSON``); naming them here, once, keeps the variable
    and the flag the same word (docs/environment.md lists them all).  Free-text repeatables
    (:data:`ONE_PER_LINE`) split their variable on lines, not spaces.
    """
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None and not param.hidden:
            flags = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            if flags:
                flag = max(param.opts, key=len) if any(o.startswith("--") for o in param.opts) else flags[0]
                param.envvar = f"SOCKTOOLS_{name.upper()}_{flag.lstrip('-').upper().replace('-', '_')}"
                param.__class__ = _from_variable(type(param))
                if type(param.type) is click.types.BoolParamType:
                    param.type = _BOOL
                if (param.multiple and flag in ONE_PER_LINE
                        and type(param.type) is click.types.StringParamType):
                    param.type = _LINES


# auto_envvar_prefix: every option can come from SOCKTOOLS_<COMMAND>_<OPTION> (docs/environment.md).
@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                              "auto_envvar_prefix": "SOCKTOOLS"})
@click.version_option(__version__, prog_name="socktools")
@click.pass_context
def main(ctx):
    """Serve, load, break and watch sockets on your own machine: TCP, TLS, UDP, Unix.

    Everything binds and connects to loopback (127.0.0.1) unless you ask
    otherwise.

    \b
    Examples:
      socktools demo                                 # the guided tour, ~30 s
      socktools serve --mode framed --port 0         # a framed-protocol server
      socktools request search morpheus --port 65432 # one framed request
      socktools flood --conns 500                    # load a server it starts itself
      socktools stall                                # reproduce BlockingIOError
      socktools sniff --port 65432 --count 10        # watch the packets (root)
      socktools explain ECONNRESET                   # what an error means
      socktools report run.json -o run.html          # a saved flood result as a page
      socktools proxy --listen 127.0.0.1:16379 --to 127.0.0.1:6379 --toxic latency:latency=100
      socktools flood --udp --conns 10 --requests 10000   # datagrams, every loss accounted
    """
    from socktools.cli._common import STARTED_KEY
    ctx.meta[STARTED_KEY] = time.time()
    _warn_unknown_variables(ctx)


def _warn_unknown_variables(ctx) -> None:
    """One line on stderr for each ``SOCKTOOLS_*`` variable no option reads (a typo would
    otherwise be ignored without a word), naming the closest real one."""
    given = sorted(k for k in os.environ if k.startswith("SOCKTOOLS_"))
    if not given:
        return          # the common case costs nothing: no command module is imported
    known = {p.envvar for name in COMMANDS for p in main.get_command(ctx, name).params
             if isinstance(p, click.Option) and isinstance(p.envvar, str)}
    import difflib
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            click.echo(f"socktools: warning: ignoring {name}: no option reads it{hint}; "
                       f"see docs/environment.md", err=True)

"""The click switchboard: each subcommand builds one frozen config and calls one function.

Only this package imports click, prints for humans, or chooses exit codes.
Subcommand modules keep heavy imports (scapy, hdrhistogram) inside their
command functions so that ``socktools --help`` stays fast.
"""

from __future__ import annotations

import importlib
import time

import click

from socktools import __version__

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
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        command = importlib.import_module(f"socktools.cli.{module}").command
        _name_envvars(name, command)
        return command


def _name_envvars(name: str, command: click.Command) -> None:
    """Every visible option reads ``SOCKTOOLS_<COMMAND>_<OPTION>``, named after the flag users type.

    click's ``auto_envvar_prefix`` would name them after the Python parameter
    (``--json`` -> ``..._AS_JSON``); naming them here, once, keeps the variable
    and the flag the same word (docs/environment.md lists them all).
    """
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None and not param.hidden:
            flags = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            if flags:
                flag = max(param.opts, key=len) if any(o.startswith("--") for o in param.opts) else flags[0]
                param.envvar = f"SOCKTOOLS_{name.upper()}_{flag.lstrip('-').upper().replace('-', '_')}"


# auto_envvar_prefix: every option can come from SOCKTOOLS_<COMMAND>_<OPTION> (docs/environment.md).
@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                              "auto_envvar_prefix": "SOCKTOOLS"})
@click.version_option(__version__, prog_name="socktools")
@click.pass_context
def main(ctx):
    """Serve, load, break and watch TCP sockets on your own machine.

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
    """
    from socktools.cli._common import STARTED_KEY
    ctx.meta[STARTED_KEY] = time.time()

"""``socktools explain ERR``: what an errno / exception / socktools failure means.

Every word comes from socktools.errors, the same table request, serve and
flood print from, so the explanation a user looks up is the one they saw.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import click

from socktools.cli._common import EXIT_FAILED, die

if TYPE_CHECKING:  # pragma: no cover  (loaded inside the command: --help stays light)
    from socktools import errors

# Exceptions that cover many errnos: there is no single answer for them.
_GENERIC = {"OSERROR", "SOCKET.ERROR", "ERROR", "IOERROR", "CONNECTIONERROR", "ENVIRONMENTERROR"}
# "[Errno 111] Connection refused" / "errno 111" / "Errno111" -> 111
_ERRNO_IN_TEXT = re.compile(r"\berrno\s*(-?\d+)", re.IGNORECASE)


def resolve(text: str) -> errors.Explanation | None:
    """ERR as typed -> an Explanation; accepts names, numbers, exceptions and whole messages
    (``[Errno 111] Connection refused``, ``TimeoutError: timed out``, ``Connection refused``)."""
    from socktools import errors
    text = text.strip()
    m = _ERRNO_IN_TEXT.search(text)
    if m:
        text = m.group(1)
    if text.lower().startswith(("builtins.", "socket.")) and text.lower() != "socket.timeout" \
            and ":" not in text:
        text = text.split(".", 1)[1]
    return errors.lookup(text) or errors.lookup_text(text)


def _as_dict(exp: errors.Explanation) -> dict:
    return {"name": exp.name, "errno": exp.number, "exception": exp.exception,
            "meaning": exp.meaning, "causes": list(exp.causes), "fix": exp.fix}


def _render(exp: errors.Explanation, typed: str) -> str:
    title = exp.name
    facts = []
    if exp.number is not None and exp.name.startswith("EAI_"):
        facts.append(f"getaddrinfo code {exp.number} on this system")
    elif exp.number is not None:
        facts.append(f"errno {exp.number} on this system")
    else:
        facts.append("socktools pseudo-error, no errno")
    facts.append(f"raised as {exp.exception}")
    lines = [f"{title}  ({', '.join(facts)})"]
    if typed.strip().upper() not in (exp.name.upper(), str(exp.number)):
        lines[0] += f"  <- {typed.strip()}"
    lines += [f"  {exp.meaning}", "", "Usual causes:"]
    if exp.causes:
        lines += [f"  - {c}" for c in exp.causes]
    else:
        lines.append("  (not in socktools' table: the line above is the system's own text)")
    lines += ["", "What to try:", f"  {exp.fix}"]
    return "\n".join(lines)


def _render_list() -> str:
    from socktools import errors
    rows = [(e.name, "-" if e.number is None else str(e.number), e.exception, e.meaning)
            for e in errors.EXPLANATIONS.values()]
    w0 = max(len(r[0]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    head = f"{'NAME':<{w0}}  ERRNO  {'EXCEPTION':<{w2}}  MEANING"
    body = [f"{n:<{w0}}  {num:>5}  {exc:<{w2}}  {meaning}" for n, num, exc, meaning in rows]
    tail = ["", "Exception names (ConnectionResetError...) and numbers (111) work too; "
                "any other errno name gets the system's one-line text."]
    return "\n".join([head, *body, *tail])


@click.command("explain", context_settings={"max_content_width": 100})
@click.argument("err", required=False, metavar="ERR")
@click.option("--list", "list_all", is_flag=True, help="List every error socktools explains.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(err, list_all, as_json):
    """Explain a socket error: what it means, why it happens, what to try.

    ERR can be any of:

    \b
      errno name        ECONNREFUSED, EWOULDBLOCK
      errno number      111
      resolver error    EAI_NONAME, "[Errno -2] Name or service not known"
      Python exception  BlockingIOError, ConnectionResetError
      socktools name    peer-closed, protocol-error, timeout
      whole message     "[Errno 111] Connection refused", "TimeoutError: timed out",
                        "Connection refused"

    \b
    Examples:
      socktools explain ECONNREFUSED
      socktools explain 98
      socktools explain BlockingIOError
      socktools explain peer-closed
      socktools explain --list
    """
    from socktools import errors
    if list_all:
        if as_json:
            from socktools.cli._common import stamped
            click.echo(json.dumps(stamped({"explanations": [_as_dict(e) for e in errors.EXPLANATIONS.values()]}),
                                  indent=2))
        else:
            click.echo(_render_list())
        return
    if err is None:
        raise click.UsageError("give an error to explain (e.g. ECONNREFUSED), or --list")
    exp = resolve(err)
    if exp is None:
        if err.strip().upper() in _GENERIC:
            die(f"{err.strip()} covers many errors; give the errno from the message "
                f"('[Errno 98] ...' -> `socktools explain 98`) or see `socktools explain --list`",
                EXIT_FAILED)
        near = errors.suggest(err)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        die(f"unknown error {err.strip()!r}{hint}; see `socktools explain --list`", EXIT_FAILED)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(_as_dict(exp)), indent=2, ensure_ascii=False))
    else:
        click.echo(_render(exp, err))

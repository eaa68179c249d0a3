"""``python -m socktools`` and the ``socktools`` script.

The top-level ``--help`` is printed from text rendered ahead of time (see
:mod:`socktools.cli.helpcache`), so the screen people run most does not wait
for click to import.  So is the plain ``socktools sockets`` table, the command
timed against ``ss -tan`` (:mod:`socktools.sockets.plain`, byte for byte what
the switchboard prints).  Everything else goes to the click switchboard.
"""

from __future__ import annotations

import os
import sys


def _cached_help(argv: list) -> "str | None":
    """The pre-rendered ``socktools --help`` when it is exactly what click would print, else None."""
    if argv[1:] not in (["--help"], ["-h"]) or os.path.basename(argv[0]) != "socktools":
        return None
    import shutil

    from socktools._help_text import TEXT

    # The width rule of click's HelpFormatter, with socktools' max_content_width of 100.
    return TEXT.get(max(min(shutil.get_terminal_size().columns, 100) - 2, 50))  # = helpcache.help_width


def _plain_sockets(argv: list) -> "str | None":
    """``socktools sockets`` with no option: the table's text, or None (take the switchboard).

    A ``SOCKTOOLS_SOCKETS_*`` variable is an option too (docs/environment.md), so
    with one set the switchboard reads it; so it does with any ``SOCKTOOLS_*`` one,
    to warn about a mistyped name.
    """
    if argv[1:] != ["sockets"] or any(k.startswith("SOCKTOOLS_") for k in os.environ):
        return None
    from socktools.sockets.plain import table_text

    text = table_text()
    return None if text is None else text + "\n"


def _write(text: str) -> None:
    """Write a ready screen; an output error ends as the switchboard's one line, exit 1."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        from socktools.cli import _OUTPUT_ERRNOS, _output_failed

        if exc.errno in _OUTPUT_ERRNOS:
            _output_failed(exc)
        raise


def main() -> None:
    text = _plain_sockets(sys.argv)
    if text is None:
        text = _cached_help(sys.argv)
    if text is not None:
        _write(text)
        return
    from socktools.cli import main as switchboard

    switchboard()


if __name__ == "__main__":  # pragma: no branch
    main()

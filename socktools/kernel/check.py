"""One judged limit (a :class:`Check`), the unit of ``socktools doctor``: shared by its checkers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Check", "round_up"]


@dataclass(frozen=True)
class Check:
    key: str                 # stable id, e.g. "rlimit_nofile"
    title: str               # what the limit is, for people
    value: str               # the value as read, for people
    status: str              # ok | low | warn | info | absent
    need: str                # what N connections need, for people
    note: str                # why it matters
    fix: Optional[str]       # the command that raises it (None when nothing to do)
    raw: Any = None          # the numbers as read, for --json


def round_up(n: int) -> int:
    """A friendly number at least ``n`` for a suggested setting (65536, 131072, ...)."""
    step = 1024
    while step < n:
        step *= 2
    return step

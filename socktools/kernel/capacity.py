"""What a process may raise for itself before holding many sockets -- and saying so.

Only one limit is ours to change without touching the system: the open-file
limit of this process (``RLIMIT_NOFILE``).  Anyone may raise the soft limit up
to the hard one; a process with ``CAP_SYS_RESOURCE`` (root, usually -- not
always in a container) may raise the hard limit too, up to ``fs.nr_open`` -- the kernel's ceiling for any
process (1,048,576 by default).  Children inherit the result.

:func:`raise_nofile` does exactly that and returns a :class:`Change` (or None
when nothing changed) for the command to print in one line.  System-wide
settings (sysctls) are never changed here: ``socktools doctor`` names them,
with the command that raises each, and the operator decides.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from typing import Optional

__all__ = ["Change", "raise_nofile", "privileged", "nr_open", "tighten_timer_slack"]

#: Bit of CAP_SYS_RESOURCE in /proc/self/status CapEff (include/uapi/linux/capability.h):
#: the capability that lets a process raise a hard resource limit.
CAP_SYS_RESOURCE = 24

#: fs.nr_open when /proc does not say: the kernel's default (include/linux/fs.h, 1024 * 1024).
NR_OPEN_DEFAULT = 1 << 20


@dataclass(frozen=True)
class Change:
    """One limit this process changed for itself."""

    name: str
    before: tuple
    after: tuple
    why: str

    @property
    def line(self) -> str:
        (s0, h0), (s1, h1) = self.before, self.after
        text = f"raised {self.name} from {_fmt(s0)} (hard {_fmt(h0)}) to {_fmt(s1)}"
        if h1 != h0:
            text += f" (hard {_fmt(h1)})"
        return f"{text}: {self.why}"


def _fmt(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY else f"{n:,}"


def privileged() -> bool:
    """May this process raise a hard resource limit (CAP_SYS_RESOURCE)?

    The capability decides, not the user id: root in a container often runs
    without CAP_SYS_RESOURCE ("not allowed to raise maximum limit").  Where
    /proc does not say, root is taken at its word.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return hasattr(os, "geteuid") and os.geteuid() == 0


def nr_open() -> int:
    """``fs.nr_open``: no process's open-file limit can go above it."""
    from socktools.kernel.sysctl import sysctl_int
    value = sysctl_int("fs.nr_open")
    return NR_OPEN_DEFAULT if value is None else value


def raise_nofile(want: Optional[int] = None) -> Optional[Change]:
    """Raise RLIMIT_NOFILE as far as this process may (or to ``want``, if less); say what changed.

    Unprivileged: soft up to hard.  Privileged: soft and hard up to
    ``fs.nr_open``.  Returns None when the limit was already there (or could
    not be changed: the caller's planner then reports the shortfall).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    ceiling = nr_open()
    may_raise_hard = privileged() and hard != inf and hard < ceiling
    top = ceiling if may_raise_hard else (ceiling if hard == inf else hard)
    target = top if want is None else min(top, max(want, 0))
    if soft != inf and soft >= target:
        return None
    new_hard = max(hard, target) if may_raise_hard else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
    except (ValueError, OSError):
        return None
    after = resource.getrlimit(resource.RLIMIT_NOFILE)
    why = ("a privileged process may raise its hard limit up to fs.nr_open" if after[1] != hard
           else "the soft limit may be raised up to the hard one")
    return Change("the open-file limit (RLIMIT_NOFILE)", (soft, hard), after, why)


def tighten_timer_slack() -> None:
    """Ask Linux to wake the calling thread within 1 us of a timeout, not the default 50 us:
    the pacer of --rate counts latency from scheduled times, so its lateness is measurement
    error.  Per thread (prctl PR_SET_TIMERSLACK); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        PR_SET_TIMERSLACK = 29
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass

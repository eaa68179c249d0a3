"""Read the kernel's tunables under /proc/sys: the one reader every command uses.

``read_sysctl("net.core.somaxconn")`` -> ``"4096"``; the typed helpers return
None, never raise, when a knob is absent (not Linux, a container without it,
a module not loaded) or unreadable, so callers say "unknown" instead of failing.
Reading only: nothing here changes a setting.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["read_sysctl", "sysctl_ints", "sysctl_int", "port_range", "somaxconn", "PROC_SYS"]

#: Where the tunables live; tests point it at a directory of their own.
PROC_SYS = "/proc/sys"


def read_sysctl(name: str) -> Optional[str]:
    """``"net.core.somaxconn"`` -> ``"4096"``, or None when the knob does not exist here."""
    try:
        with open(f"{PROC_SYS}/{name.replace('.', '/')}") as f:
            return f.read().strip()
    except OSError:
        return None


def sysctl_ints(name: str) -> Optional[list[int]]:
    """Every integer of a knob (``net.ipv4.tcp_mem`` has three), or None."""
    text = read_sysctl(name)
    if text is None:
        return None
    try:
        return [int(x) for x in text.split()]
    except ValueError:
        return None


def sysctl_int(name: str) -> Optional[int]:
    """The first integer of a knob, or None."""
    values = sysctl_ints(name)
    return values[0] if values else None


def port_range() -> Optional[tuple[int, int]]:
    """``(low, high)`` of the ephemeral port range (net.ipv4.ip_local_port_range), or None."""
    values = sysctl_ints("net.ipv4.ip_local_port_range")
    return (values[0], values[1]) if values and len(values) == 2 else None


def somaxconn() -> Optional[int]:
    """net.core.somaxconn, the cap the kernel puts on every listen() backlog, or None."""
    return sysctl_int("net.core.somaxconn")

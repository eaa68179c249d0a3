"""Which processes hold which sockets: the ``/proc/<pid>/fd`` walk that ``ss -p`` does.

The kernel has no reverse index from a socket to its holders, so every tool
(ss, lsof, netstat -p) reads every descriptor link of every process and keeps
those that say ``socket:[<inode>]``.  What makes it fast here:

* each ``fd`` directory is opened once and its links are read relative to
  that descriptor (``readlink(name, dir_fd=...)``): the kernel then resolves
  one path component per link instead of four ``/proc`` lookups;
* the comparison is a string prefix and a set lookup, nothing per link is
  allocated beyond the link text itself;
* ``comm`` is read only for processes that hold a wanted socket.

Another user's process cannot be read without privilege: its sockets keep
no owner (the CLI says so).  A process that exits mid-walk is skipped.
"""

from __future__ import annotations

import os

from .entry import Owner

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def scan(inodes, proc: str = "/proc") -> dict[int, tuple[Owner, ...]]:
    """Map socket inode -> ``(Owner(pid, name, fd), ...)`` for the inodes asked about."""
    if not inodes:
        return {}
    wanted = inodes if isinstance(inodes, (set, frozenset)) else set(inodes)
    found: dict[int, list[Owner]] = {}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return {}
    readlink, listdir = os.readlink, os.listdir
    for pid in pids:
        try:
            dfd = os.open(f"{proc}/{pid}/fd", _O_DIR)
        except OSError:         # gone, or another user's process without privilege
            continue
        try:
            names = listdir(dfd)
            name = None
            for fd in names:
                try:
                    link = readlink(fd, dir_fd=dfd)
                except OSError:
                    continue
                if link[:8] != "socket:[":
                    continue
                inode = int(link[8:-1])
                if inode in wanted:
                    if name is None:
                        name = _comm(pid)
                    found.setdefault(inode, []).append(Owner(int(pid), name, int(fd)))
        except OSError:
            pass
        finally:
            os.close(dfd)
    return {inode: tuple(sorted(v)) for inode, v in found.items()}

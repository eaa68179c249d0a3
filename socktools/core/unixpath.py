"""The file of a listening Unix-domain socket: replacing a stale one, removing our own.

A server that died leaves its socket file behind, and ``bind()`` then fails with EADDRINUSE
although nobody listens.  Every command that listens on a path (``serve --unix``, ``proxy
--listen unix:PATH``) treats the file the same way, here: a socket file whose ``connect()``
is refused is stale and is removed; a live listener, or a file that is not a socket, is never
touched -- the caller says so in its own words (:class:`PathTaken`).  At exit a command removes
the file only if it is still the one it bound (same device and inode: another server may have
replaced it meanwhile).
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Optional

__all__ = ["PathTaken", "clear_stale", "identity", "remove_if_ours", "STALE_PROBE_TIMEOUT"]

#: How long the probe that tells a stale socket file from a live one waits.  A live listener
#: accepts (or refuses) at once; only a server too busy to take a connection from its backlog
#: is slow, and a second is plenty for that on one machine.
STALE_PROBE_TIMEOUT = 1.0


class PathTaken(Exception):
    """The path cannot be listened on: ``why`` is ``"not-a-socket"``, ``"in-use"`` (a
    listener accepted the probe) or ``"probe-failed"`` (``cause``: the probe's OSError)."""

    def __init__(self, why: str, cause: Optional[OSError] = None) -> None:
        super().__init__(why)
        self.why = why
        self.cause = cause


def clear_stale(path: str) -> bool:
    """Remove the socket file at ``path`` if connecting to it is refused (a stale file): True.
    False when there is nothing at ``path``.  Raises :class:`PathTaken` otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise PathTaken("not-a-socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(STALE_PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)               # nobody listens: a stale file of a process gone
        return True
    except OSError as exc:
        raise PathTaken("probe-failed", exc) from None
    finally:
        probe.close()
    raise PathTaken("in-use")


def identity(path: str) -> Optional[tuple]:
    """(device, inode) of the file at ``path`` -- the socket just bound there -- or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_if_ours(path: str, ident: Optional[tuple]) -> Optional[OSError]:
    """Remove ``path`` if it is still the file ``ident`` names; the OSError of a failed
    removal (for the caller to log), else None."""
    if ident is None:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if (st.st_dev, st.st_ino) != ident:
        return None
    try:
        os.unlink(path)
    except OSError as exc:
        return exc
    return None

"""Who ran what, when and where: the metadata every ``--json`` document carries.

One helper for all commands, so that a JSON document kept by CI can always
be told apart from another one later: the socktools version, the start time
(ISO 8601, UTC, like iperf3's ``start.timestamp``) and the machine (name,
kernel, CPUs, Python).  Base layer: standard library only, nothing heavy.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from datetime import datetime, timezone
from typing import Optional

__all__ = ["host_facts", "iso_utc", "meta", "stamp", "usable_cpus"]


def iso_utc(wall: float) -> str:
    """``time.time()`` -> ``2026-12-01T07:44:03.123Z`` (milliseconds, UTC)."""
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, as `nproc` says), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_facts() -> dict:
    """The machine: name, OS, kernel release, CPUs (online and usable), Python."""
    uname = platform.uname()
    return {"hostname": socket.gethostname(),
            "os": uname.system,
            "kernel": uname.release,
            "machine": uname.machine,
            "cpus": os.cpu_count() or 1,
            "cpus_usable": usable_cpus(),
            "python": f"{platform.python_implementation()} {platform.python_version()}"}


def meta(started: Optional[float] = None) -> dict:
    """``{"socktools_version", "started", "system"}`` for a run that began at ``started`` (wall clock).

    The machine is under ``system`` (iperf3's word), not ``host``: several
    documents already use ``host`` for the address they bound or targeted.
    """
    from socktools import __version__
    return {"socktools_version": __version__,
            "started": iso_utc(time.time() if started is None else started),
            "system": host_facts()}


def stamp(document: dict, started: Optional[float] = None) -> dict:
    """``document`` with the metadata first (a document's own keys win on a clash)."""
    return {**meta(started), **document}

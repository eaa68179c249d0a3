"""flood's own server, for a run that names none: one ``socktools serve`` child, local or
``--cluster local:N`` alike (:class:`socktools.core.embedded.EmbeddedServer`)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable

from socktools.flood.config import FloodConfig, server_mode
from socktools.flood.result import FloodError

__all__ = ["embedded_server"]


@contextlib.contextmanager
def embedded_server(cfg: FloodConfig, emit: Callable[[dict], None]):
    """flood's own server when the run names none (local and ``--cluster local:N`` runs alike):
    yields the config aimed at it and its description (None without one); stops it after."""
    if not cfg.embedded:
        yield cfg, None
        return
    from socktools.core.embedded import EmbeddedServer, EmbeddedServerError
    server = EmbeddedServer(server_mode(cfg.mode), host=cfg.host or "127.0.0.1",
                            workers=cfg.server_workers, args=("--udp",) if cfg.udp else ())
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise FloodError(str(exc)) from None
    info = {"command": server.display_command, "workers": cfg.server_workers,
            "pid": server.proc.pid if server.proc else None}
    emit({"event": "server", **info})
    try:
        yield replace(cfg, address=server.address, family=server.family), info
    finally:
        info["summary"] = server.stop()

"""Listening sockets for the proxies and the API, and the errors of the proxy table."""

from __future__ import annotations

import errno
import socket

from socktools import errors
from socktools.addresses import format_addr, resolve

__all__ = ["ProxyError", "NotFound", "Conflict", "bind_listener", "BACKLOG"]

#: listen() backlog of each proxy: the kernel caps it at net.core.somaxconn (4096 here).
BACKLOG = 1024


class ProxyError(Exception):
    """A proxy could not start (its listen address); the message says why and what to do."""


class NotFound(LookupError):
    """No proxy or toxic of that name (the API's 404)."""


class Conflict(Exception):
    """A proxy or toxic of that name exists already (the API's 409)."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A nonblocking listening socket, or :class:`ProxyError` explaining the errno."""
    try:
        family, sockaddr = resolve(host, port, passive=True)
    except OSError as exc:
        raise ProxyError(errors.one_line(exc, f"resolve {host!r}")) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = format_addr(sockaddr)
        if exc.errno == errno.EADDRINUSE:
            raise ProxyError(f"cannot listen on {where}: EADDRINUSE - address already in use: another "
                             f"process is listening there. Find it with `socktools sockets --listen "
                             f"--port {port}`, stop it, or choose another port (port 0 picks a free "
                             f"one).") from None
        raise ProxyError(f"cannot listen on {where}: {errors.one_line(exc, during='bind')}") from None
    sock.setblocking(False)
    return sock

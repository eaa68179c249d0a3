"""Listening sockets for the proxies and the API, and the errors of the proxy table."""

from __future__ import annotations

import errno
import socket

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.core import unixpath

__all__ = ["ProxyError", "NotFound", "Conflict", "bind_listener", "bind_unix_listener", "close_listener",
           "BACKLOG"]

#: listen() backlog of each proxy: the kernel caps it at net.core.somaxconn (4096 here).
BACKLOG = 1024
# The Unix sockets this process bound, by listener fd: (path, (device, inode)), so that a stop
# removes the file only while it is still the one we made.
_OWN_PATHS: dict = {}


class ProxyError(Exception):
    """A proxy could not start (its listen address); the message says why and what to do."""


class NotFound(LookupError):
    """No proxy or toxic of that name (the API's 404)."""


class Conflict(Exception):
    """A proxy or toxic of that name exists already (the API's 409)."""


def bind_listener(host: str, port: int, *, reuseport: bool = False) -> socket.socket:
    """A nonblocking listening socket, or :class:`ProxyError` explaining the errno.
    ``reuseport``: one of a SO_REUSEPORT group (``--workers``: one per worker, same port)."""
    try:
        family, sockaddr = resolve(host, port, passive=True)
    except OSError as exc:
        raise ProxyError(errors.one_line(exc, f"resolve {host!r}")) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def bind_unix_listener(path: str) -> socket.socket:
    """A nonblocking listening Unix-domain socket at ``path``, or :class:`ProxyError`.

    An existing file there is replaced only when it is a socket nobody listens on (a connect
    is refused: the process that made it is gone) -- anything else is left alone and is an error.
    """
    where = format_addr(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            _remove_stale(path, where)
            sock.bind(path)
        sock.listen(BACKLOG)
        ident = unixpath.identity(path)
    except ProxyError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise ProxyError(f"cannot listen on {where}: {errors.one_line(exc, during='bind')}") from None
    sock.setblocking(False)
    _OWN_PATHS[sock.fileno()] = (path, ident)
    return sock


def _remove_stale(path: str, where: str) -> None:
    try:
        unixpath.clear_stale(path)
    except unixpath.PathTaken as exc:
        if exc.why == "not-a-socket":
            raise ProxyError(f"cannot listen on {where}: it exists and is not a socket (the proxy replaces "
                             f"only a stale socket file)") from None
        raise ProxyError(f"cannot listen on {where}: EADDRINUSE - another process listens there; stop it "
                         f"or choose another path") from None


def close_listener(sock: socket.socket) -> None:
    """Close a listener; a Unix socket's file goes too, if it is still the one we bound."""
    own = _OWN_PATHS.pop(sock.fileno(), None)
    sock.close()
    if own is not None:
        unixpath.remove_if_ours(*own)

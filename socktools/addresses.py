"""Address resolution and formatting: numeric first, names via getaddrinfo.

Exposure checks (:func:`is_wildcard`, :func:`is_loopback`) parse the address
*after* resolution: ``0``, ``0x0``, ``0.0``, ``::0`` and ``0:0:0:0:0:0:0:0``
all bind every interface, and ``127.1`` is loopback, however the text looks.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from typing import Any, Optional

__all__ = ["resolve", "format_addr", "is_loopback", "is_wildcard", "family_of", "ip_of",
           "not_local", "target_warning", "unix_problem"]


def family_of(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.strip("[]")).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


def resolve(host: str, port: int, *, passive: bool = False, unix: Optional[str] = None) -> tuple[int, Any]:
    """Return ``(family, sockaddr)`` for a TCP endpoint; numeric addresses skip DNS.

    With ``unix`` (a path, ``--unix``) the target is that Unix-domain socket:
    ``(AF_UNIX, path)``, and ``host``/``port`` are not looked at -- no DNS.
    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    if unix is not None:
        return socket.AF_UNIX, unix
    host = host.strip("[]")
    flags = socket.AI_PASSIVE if passive else 0
    if family_of(host) != socket.AF_UNSPEC:
        flags |= socket.AI_NUMERICHOST
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def format_addr(sockaddr: Any) -> str:
    """``('127.0.0.1', 80)`` -> ``127.0.0.1:80``; ``('::1', 80, 0, 0)`` -> ``[::1]:80``;
    a Unix socket's path as printable text (bytes that are not UTF-8 as ``\\xff``)."""
    if isinstance(sockaddr, (tuple, list)) and len(sockaddr) >= 2:
        host, port = sockaddr[0], sockaddr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(sockaddr, (str, bytes)):
        try:  # a path is any bytes (surrogate-escaped in a str): shown, never a UnicodeError
            return os.fsencode(sockaddr).decode("utf-8", "backslashreplace")
        except UnicodeError:
            return ascii(sockaddr)
    return str(sockaddr)


def unix_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a Unix-socket target (the OS's reason, or "not a socket"); None
    when it is one.  Checked before a run, so a typo ends at once instead of in every connect."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:   # ValueError: an embedded NUL byte
        return getattr(exc, "strerror", None) or str(exc)
    if not stat.S_ISSOCK(mode):
        return "not a socket"
    return None


def ip_of(host: Any, *, passive: bool = False):
    """The IP address ``host`` stands for, parsed with :mod:`ipaddress` after resolution.

    ``host`` is a name, any numeric form ``getaddrinfo`` accepts (``0x0``,
    ``127.1``, ``[::1]``) or a sockaddr tuple; ``passive`` resolves the way a
    server binds (an empty host is the wildcard).  IPv4-mapped IPv6 addresses
    come back as the IPv4 address they map.  None when it does not resolve.
    """
    if isinstance(host, (tuple, list)):
        host = host[0] if host else ""
    text = str(host).strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        if not text and not passive:
            return None
        try:
            infos = socket.getaddrinfo(text or None, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                       socket.AI_PASSIVE if passive else 0)
            ip = ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])
        except (OSError, ValueError, IndexError, UnicodeError):
            return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def is_loopback(host: Any) -> bool:
    """True when ``host`` (a name, any numeric form, or a sockaddr) resolves to a loopback address."""
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


def is_wildcard(host: Any) -> bool:
    """True when binding ``host`` would listen on every interface (``0``, ``0x0``, ``::0``, ``""``...)."""
    ip = ip_of(host, passive=True)
    return ip is not None and ip.is_unspecified


def not_local(hosts, family: int = socket.AF_INET) -> tuple:
    """The first of ``hosts`` this machine cannot bind, as ``(host, OSError)``; None when all can.

    A throwaway socket per address, bound to port 0 and closed: nothing is
    sent and nothing stays open.  EADDRNOTAVAIL means the address is not on
    this machine (man 2 bind).
    """
    for host in hosts:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0, 0, 0) if family == socket.AF_INET6 else (host, 0))
        except OSError as exc:
            return host, exc
        finally:
            sock.close()
    return None


def target_warning(command: str, address: Any) -> str | None:
    """One line for stderr when ``command`` is about to send to a non-loopback ``address``."""
    ip = ip_of(address)
    if ip is not None and (ip.is_loopback or ip.is_unspecified):  # 0.0.0.0 as a target is this host
        return None
    shown = format_addr(address) if isinstance(address, (tuple, list)) else str(address)
    return (f"socktools {command}: warning: {shown} is not a loopback address: this traffic leaves "
            f"the machine (make sure you may load that host)")

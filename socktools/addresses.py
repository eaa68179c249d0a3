"""Address resolution and formatting (SPEC §4): numeric first, names via getaddrinfo."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

__all__ = ["resolve", "format_addr", "is_loopback", "is_wildcard", "family_of"]


def family_of(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.strip("[]")).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


def resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, Any]:
    """Return ``(family, sockaddr)`` for a TCP endpoint; numeric addresses skip DNS.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    host = host.strip("[]")
    flags = socket.AI_PASSIVE if passive else 0
    if family_of(host) != socket.AF_UNSPEC:
        flags |= socket.AI_NUMERICHOST
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def format_addr(sockaddr: Any) -> str:
    """``('127.0.0.1', 80)`` -> ``127.0.0.1:80``; ``('::1', 80, 0, 0)`` -> ``[::1]:80``."""
    if isinstance(sockaddr, (tuple, list)) and len(sockaddr) >= 2:
        host, port = sockaddr[0], sockaddr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(sockaddr)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")

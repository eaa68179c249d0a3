"""ss-like filters over socket entries: states and state groups, addresses, ports.

Pure: a :class:`SocketFilter` is built (and validated) once from user text and
applied to entries read by any source.  The state part is also handed to the
kernel as a bit mask so that a dump of ``--state listen`` carries only
listeners.  Address filters match inet sockets only (a Unix socket has no IP).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional

from .entry import SocketEntry, state_mask

__all__ = ["SocketFilter", "AddressMatch", "parse_address"]


@dataclass(frozen=True)
class AddressMatch:
    """``10.0.0.0/8``, ``127.0.0.1:80``, ``[::1]:8080``, ``:443`` (any host, one port)."""

    network: Optional[ipaddress._BaseNetwork]
    port: Optional[int]

    def matches(self, host: str, port: int, hosts: dict) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is None:
            return True
        addr = hosts.get(host)
        if addr is None:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                addr = False
            hosts[host] = addr
        if addr is False:
            return False
        if addr.version != self.network.version:
            # ::ffff:127.0.0.1 (an IPv4 peer of a dual-stack socket) matches 127.0.0.0/8.
            mapped = getattr(addr, "ipv4_mapped", None)
            return mapped is not None and mapped in self.network
        return addr in self.network


def parse_address(text: str) -> AddressMatch:
    """Parse an address filter; raises ``ValueError`` with an example on nonsense."""
    t = text.strip()
    host, port = t, None
    if t.startswith("["):                       # [::1]:80 or [::1]
        close = t.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']' (example: [::1]:8080)")
        host, rest = t[1:close], t[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = rest[1:]
    elif t.count(":") == 1:                     # 127.0.0.1:80, :80, 10.0.0.0/8:80
        host, port = t.split(":")
    if port is not None:
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: port {port!r} is not 0-65535")
        port = int(port)
    network = None
    if host not in ("", "*"):
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an address or network "
                             f"(examples: 127.0.0.1, 10.0.0.0/8, [::1]:8080, :443)") from None
    return AddressMatch(network, port)


@dataclass(frozen=True)
class SocketFilter:
    """What to keep.  Every given criterion must hold (ss's ``and``); a list of
    addresses for one side matches any of them (ss's ``or``).

    ``states`` holds state names and ss groups (``connected``, ``synchronized``,
    ``bucket``, ``big``, ``all``); ``port`` matches either end.
    """

    states: tuple[str, ...] = ()
    src: tuple[AddressMatch, ...] = ()
    dst: tuple[AddressMatch, ...] = ()
    sport: Optional[int] = None
    dport: Optional[int] = None
    port: Optional[int] = None

    def __post_init__(self) -> None:
        state_mask(self.states)             # raises ValueError naming the bad state

    @property
    def state_numbers(self) -> Optional[frozenset]:
        return state_mask(self.states) if self.states else None

    @property
    def kernel_states(self) -> int:
        """The idiag_states bit mask for the kernel (all bits: no state filter)."""
        nums = self.state_numbers
        return 0xFFFFFFFF if nums is None else sum(1 << n for n in nums)

    @property
    def trivial(self) -> bool:
        return not (self.src or self.dst or self.sport is not None or self.dport is not None
                    or self.port is not None)

    def apply(self, entries: Iterable[SocketEntry]) -> list[SocketEntry]:
        """The entries that match (states are assumed filtered by the reader already)."""
        if self.trivial:
            return list(entries)
        hosts: dict = {}
        out = []
        for e in entries:
            lport, rport = e.local[1], e.remote[1]
            unix = e.proto.startswith("u_")
            if self.port is not None and (unix or (lport != self.port and rport != self.port)):
                continue
            if self.sport is not None and (unix or lport != self.sport):
                continue
            if self.dport is not None and (unix or rport != self.dport):
                continue
            if self.src and (unix or not any(m.matches(e.local[0], lport, hosts) for m in self.src)):
                continue
            if self.dst and (unix or not any(m.matches(e.remote[0], rport, hosts) for m in self.dst)):
                continue
            out.append(e)
        return out

"""What a proxy counts: connections, how they ended, bytes each way (plaintext: with TLS on a
side, the bytes inside its records, which the toxics see -- not the records themselves)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ProxyStats"]


@dataclass
class ProxyStats:
    accepted: int = 0
    closed: int = 0
    resets: int = 0                                        # pairs ended by a reset, passed on or a toxic's
    upstream_failed: dict = field(default_factory=dict)    # errno key -> connects that failed
    ended: dict = field(default_factory=dict)              # how pairs ended -> count
    client_tls_failed: dict = field(default_factory=dict)  # TLS listener: handshakes failed, by key
    from_client: int = 0
    to_upstream: int = 0
    from_upstream: int = 0
    to_client: int = 0

    def add_pair(self, how: str, counts: dict) -> None:
        self.closed += 1
        self.ended[how] = self.ended.get(how, 0) + 1
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)

    def add(self, other: "ProxyStats") -> None:
        """Add ``other``'s counts to these (a deleted proxy's, or for the total)."""
        for key, value in other.to_dict().items():
            if isinstance(value, dict):
                mine = getattr(self, key)
                for k, v in value.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, key, getattr(self, key) + value)

    def to_dict(self) -> dict:
        return asdict(self)

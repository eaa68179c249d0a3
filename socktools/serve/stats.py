"""A worker's counters: plain data that adds up across workers and crosses a pipe as a dict."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ServerStats", "DatagramStats", "stats_class"]


class _Counters:
    """Counters that add up (``_COUNTERS``, integers) and tables of counts by name
    (``_TABLES``, dicts): the one way both kinds of server stats add, serialise and load."""

    _COUNTERS: tuple = ()
    _TABLES: tuple = ()

    def add(self, other):
        out = type(self)(**{k: getattr(self, k) + getattr(other, k) for k in self._COUNTERS})
        for name in self._TABLES:
            merged = dict(getattr(self, name))
            for k, v in getattr(other, name).items():
                merged[k] = merged.get(k, 0) + v
            setattr(out, name, merged)
        return out

    def _derived(self) -> dict:
        """What ``to_dict`` says besides the counters and tables."""
        return {}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._COUNTERS}
        d.update(self._derived())
        for name in self._TABLES:
            d[name] = dict(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict):
        s = cls(**{k: d.get(k, 0) for k in cls._COUNTERS})
        for name in cls._TABLES:
            setattr(s, name, dict(d.get(name, {})))
        return s


@dataclass
class ServerStats(_Counters):
    """Counters of one worker, or of all merged.  Plain data: add, serialise, compare."""

    accepted: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    responses: int = 0
    idle_closed: int = 0
    accept_paused: int = 0
    handshakes: int = 0         # TLS handshakes completed (serve --tls)
    protocol_errors: dict = field(default_factory=dict)   # kind -> count
    errors: dict = field(default_factory=dict)            # errno name -> count (connection errors)

    _COUNTERS = ("accepted", "closed", "bytes_in", "bytes_out", "requests", "responses",
                 "idle_closed", "accept_paused", "handshakes")
    _TABLES = ("protocol_errors", "errors")

    @property
    def open(self) -> int:
        return self.accepted - self.closed

    def count_error(self, key: str) -> None:
        """One more connection error named ``key`` (an errno name, or an exception's)."""
        self.errors[key] = self.errors.get(key, 0) + 1

    def count_protocol_error(self, kind: str) -> None:
        self.protocol_errors[kind] = self.protocol_errors.get(kind, 0) + 1

    def _derived(self) -> dict:
        return {"open": self.open}


@dataclass
class DatagramStats(_Counters):
    """Counters of one ``--udp`` worker, or of all merged.  Every datagram received is
    answered, refused by our own full send buffer (``send_dropped``) or failed to send for
    another reason (``send_errors``, by errno name); in sink mode none is answered::

        echo: datagrams_in == datagrams_out + send_dropped + sum(send_errors)

    ``kernel_drops`` is not the worker's count: it is what the kernel dropped at the server's
    sockets (their receive buffers were full), read from the sockets by whoever holds them
    (:func:`socktools.kernel.udpstats.socket_drops`); a worker leaves it 0."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    send_dropped: int = 0
    kernel_drops: int = 0
    send_errors: dict = field(default_factory=dict)   # errno name -> count (sendto failed)
    recv_errors: dict = field(default_factory=dict)   # errno name -> count (recvfrom failed)

    _COUNTERS = ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out", "send_dropped", "kernel_drops")
    _TABLES = ("send_errors", "recv_errors")

    #: A UDP server holds no connection: nothing is open, nothing can be lost with a worker.
    open = 0

    def _derived(self) -> dict:
        return {"udp": True}


def stats_class(udp: bool):
    """The counters a server keeps: :class:`DatagramStats` with ``--udp``, else :class:`ServerStats`."""
    return DatagramStats if udp else ServerStats

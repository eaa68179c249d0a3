"""What ``socktools stall`` is asked to do: :class:`StallConfig`, frozen, validated once here.

A bad combination raises :class:`socktools.errors.OptionError` naming the
field (which is also the CLI option), so the CLI can say which option is wrong
without repeating the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from socktools.addresses import is_loopback
from socktools.errors import OptionError
from socktools.wire import modes as _modes

__all__ = ["StallConfig", "OptionError", "DEFAULT_CHUNK", "DEFAULT_SETTLE", "DEFAULT_TIMEOUT",
           "SAMPLE_INTERVAL", "DEFAULT_UDP_CHUNK", "DEFAULT_UDP_COUNT", "MAX_UDP_COUNT"]

#: 64 KiB per send(): big enough that the fill takes few syscalls (a default loopback
#: send buffer grows to 4 MiB), small enough that the partial send before EAGAIN is visible.
DEFAULT_CHUNK = 65536
#: Steady state = nothing changed for this long.  On Linux loopback the last change after
#: the first EAGAIN comes when the first zero-window probe (RTO minimum 200 ms) gets a
#: window update back; 0.5 s leaves margin without making the command feel slow.
DEFAULT_SETTLE = 0.5
#: Upper bound for each of fill, settle and drain: a peer that keeps up never blocks us,
#: a slow reader never lets the queues settle, and the command must still end by itself.
DEFAULT_TIMEOUT = 10.0
#: How often the queues are recorded while settling and draining.
SAMPLE_INTERVAL = 0.05
#: --udp: bytes per datagram.  1 KiB costs ~2.3 KiB of a receive buffer (the kernel charges
#: the buffer's truesize, not the payload), so a default buffer (212,992 bytes) holds about
#: ninety of them: the default count overflows it a hundred times over, and a tiny
#: --rcvbuf still holds one or two.
DEFAULT_UDP_CHUNK = 1024
#: --udp: datagrams sent.  Enough to overflow any default receive buffer many times (a
#: net.core.rmem_max of 4 MiB holds ~1,800 of 1 KiB), few enough to take a few tens of ms.
DEFAULT_UDP_COUNT = 10_000
#: --udp: the most datagrams one run sends.  A load loop is bounded: a million 1 KiB
#: datagrams take a few seconds on loopback (~3 µs per send()), and more shows nothing new
#: -- the receiver's buffer was full after its first few hundred.
MAX_UDP_COUNT = 1_000_000



@dataclass(frozen=True)
class StallConfig:
    """What ``socktools stall`` was asked to do.  ``port=None``: start an embedded sink on ``host``."""

    host: str = "127.0.0.1"
    port: Optional[int] = None
    chunk: Optional[int] = None       # bytes per send(); None: DEFAULT_CHUNK, with --udp DEFAULT_UDP_CHUNK
    sndbuf: Optional[int] = None      # our SO_SNDBUF, set before connect
    rcvbuf: Optional[int] = None      # the embedded sink's SO_RCVBUF (``serve --rcvbuf``)
    settle: float = DEFAULT_SETTLE
    drain: bool = False
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = 5.0
    sample_interval: float = SAMPLE_INTERVAL
    unix: Optional[str] = None        # a Unix-domain socket to stall instead of host/port
    tls: Any = None                   # a socktools.tlsconf.TlsConfig (enabled) or None
    spec: Any = None                  # a socktools.wire.WireSpec: what to repeat; None: zeros
    udp: bool = False                 # datagrams to a receiver that never reads (stall/udp.py)
    count: Optional[int] = None       # --udp: datagrams to send (None: DEFAULT_UDP_COUNT)

    @property
    def external(self) -> bool:
        """The peer is another program (--port or --unix), not the embedded sink."""
        return self.port is not None or self.unix is not None

    def __post_init__(self) -> None:
        if self.chunk is None:      # each kind of run has its own default size; the one place it is chosen
            object.__setattr__(self, "chunk", DEFAULT_UDP_CHUNK if self.udp else DEFAULT_CHUNK)
        if self.chunk < 1:
            raise OptionError("chunk", "must be at least 1 byte")
        if self.settle < 0:
            raise OptionError("settle", "must be 0 or more")
        if self.timeout <= 0:
            raise OptionError("timeout", "must be more than 0")
        if self.sample_interval <= 0:
            raise OptionError("sample_interval", "must be more than 0")
        if self.udp:
            self._check_udp()
        elif self.count is not None:
            raise OptionError("count", "--count is the number of datagrams --udp sends; over TCP stall "
                              "sends until send() blocks")
        target = "--unix" if self.unix is not None else "--port"
        if self.external and self.rcvbuf is not None:
            raise OptionError("rcvbuf", f"--rcvbuf sets the embedded sink's SO_RCVBUF; with {target} the "
                              "server is another program, whose buffers stall cannot change")
        if self.external and self.drain:
            raise OptionError("drain", f"--drain tells the embedded sink to start reading; with {target} "
                              "the server is another program, which stall cannot make read")
        if not self.external and not is_loopback(self.host):
            raise OptionError("host", f"{self.host} is not a loopback address: the embedded sink listens "
                              "only on loopback (127.0.0.1, ::1); add --port to stall a server there")

    @property
    def datagrams(self) -> int:
        """--udp: how many datagrams to send."""
        return DEFAULT_UDP_COUNT if self.count is None else self.count

    def _check_udp(self) -> None:
        """What a datagram stall can do: datagrams of --chunk bytes, --count of them, to its own
        receiver or a UDP server at --port; nothing of TCP's (a stream, a handshake, a drain)."""
        from socktools.wire.datagram import MAX_DATAGRAM
        if self.chunk > MAX_DATAGRAM:
            raise OptionError("chunk", f"with --udp --chunk is the datagram's size: at most {MAX_DATAGRAM:,} "
                              f"bytes (the largest UDP payload over IPv4), not {self.chunk:,}")
        if self.count is not None and not 1 <= self.count <= MAX_UDP_COUNT:
            raise OptionError("count", f"from 1 to {MAX_UDP_COUNT:,} datagrams (a bounded run; the "
                              f"receiver's buffer is full after its first few hundred), not {self.count:,}")
        if self.unix is not None:
            raise OptionError("unix", "--udp is UDP over IP: not with --unix")
        if self.tls is not None and self.tls.enabled:
            raise OptionError("tls", "not with --udp: TLS runs over a stream (datagrams would need DTLS, "
                              "which socktools does not speak)")
        if self.drain:
            raise OptionError("drain", "not with --udp: a UDP receiver that starts reading finds only what "
                              "its buffer held; the dropped datagrams are gone (stall counts what its "
                              "own receiver held by reading it at the end)")
        if self.spec is not None:
            raise OptionError("mode", "not with --udp: stall --udp sends datagrams of --chunk bytes, "
                              "no wire mode's requests")

    def to_dict(self) -> dict:
        """JSON-ready: the exchange as its summary (texts as typed, a file as its size), TLS as
        its options (file names, not contents)."""
        from dataclasses import fields
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tls", "spec")}
        if self.unix is not None:   # any bytes; shown as text (a lone surrogate is no JSON)
            from socktools.addresses import format_addr
            out["unix"] = format_addr(self.unix)
        out["tls"] = asdict(self.tls) if self.tls is not None and self.tls.enabled else None
        out["exchange"] = self.spec.summary() if self.spec is not None else None
        return out



#: ``stall --mode``'s help, from the registry of exchanges (its choices are the registry's
#: ``REQUEST_MODES``): the CLI reads it only when help is shown.
MODE_HELP = ("Repeat this exchange's requests, made as request and flood make them: " + _modes.REQUEST_HELP
             + "  [default: zeros, or the --send bytes as they are]")

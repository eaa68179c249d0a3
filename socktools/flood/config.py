"""The frozen, picklable description of one flood run, and how it splits over workers."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Optional

from socktools.errors import OptionError
from socktools.flood import stages as stg
from socktools.tlsconf import TlsConfig
from socktools.wire import modes as wire_modes
from socktools.wire.spec import WireOptionError, WireSpec, build

__all__ = ["FloodConfig", "MODES", "split", "server_mode", "parse_cluster", "LOCAL_MAX"]

#: connect: churn (connect, one echo, close); plugin: ``wire.plugin`` names the class.
#: flood's modes: every exchange of the registry (socktools.wire.modes), and flood's own --
#: ``connect`` (churn: connect, one echo, close, again) and ``plugin`` (``--protocol``).
MODES = (*wire_modes.names(), "connect", "plugin")
#: What ``--mode`` offers (a plug-in is chosen with ``--protocol``).
CHOICES = tuple(m for m in MODES if m != "plugin")
#: ``--mode``'s help, one clause per mode.
MODE_HELP = "; ".join([f"{m.name}: {m.help}" for m in wire_modes.MODES]
                      + ["connect: connect, one echo, close, again (churn)"]) + "."
#: Longest traffic phase: a load that runs for more than a day is a mistake, not a test.
MAX_DURATION = 86_400.0

#: Most requests in flight per connection: redis-benchmark's -P is unbounded,
#: but past a few hundred the kernel's socket buffer, not the pipeline, is
#: the limit; 1024 keeps a connection's send-time queue small.
MAX_PIPELINE = 1024


#: ``--cluster local:N`` at most: N Python processes on this machine (each holds one shard).
LOCAL_MAX = 64


def server_mode(mode: str) -> str:
    """The `socktools serve` mode flood's own server runs for a flood ``mode``."""
    return "framed" if mode == "framed" else "echo"


def parse_cluster(spec: str) -> tuple:
    """``"local:4"`` -> ``("local", 4)``; ``"tcp://h:8786"`` / ``"h:8786"`` -> ``("address", "tcp://h:8786")``.

    Raises ValueError saying what is expected.
    """
    spec = spec.strip()
    if spec.startswith("local:") or spec == "local":
        count = spec.partition(":")[2]
        if not count.isdigit() or not 1 <= int(count) <= LOCAL_MAX:
            raise ValueError(f"local:N needs N from 1 to {LOCAL_MAX} (worker processes), not {spec!r}")
        return "local", int(count)
    if "://" not in spec:
        spec = "tcp://" + spec
    scheme, _, rest = spec.partition("://")
    if scheme not in ("tcp", "tls", "ucx", "ws", "wss") or not rest:
        raise ValueError(f"expected local:N or a scheduler address like tcp://HOST:8786, not {spec!r}")
    if scheme in ("tcp", "tls") and not rest.rpartition(":")[2].isdigit():
        # dask has no default port for these: it would fail inside the run, with a traceback
        raise ValueError(f"a scheduler address needs its port: {scheme}://{rest}:8786, not {spec!r}")
    return "address", spec


def split(total: int, parts: int, index: int) -> int:
    """Share of ``total`` for part ``index`` of ``parts``: the first ``total % parts`` get one more."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)


@dataclass(frozen=True)
class FloodConfig:
    """Everything a flood worker needs.  Frozen and picklable: each worker gets a copy.

    ``address`` is the resolved socket address (as ``getaddrinfo`` returns it)
    and ``family`` its address family; ``host``/``port`` are what the user
    typed.  ``address=None`` means "start an embedded server" (the runner then
    fills in a copy with the real address before spawning workers).

    Connection ``i`` (0-based, over the whole run) belongs to worker
    ``i % workers`` and binds to ``sources[i % len(sources)]`` when sources
    are given.
    """

    mode: str = "echo"
    conns: int = 100                        # None with stages: the largest target
    workers: int = 1                        # 0 = flood chooses (``workers_chosen`` False)
    host: str = "127.0.0.1"
    port: int = 0
    address: Optional[tuple] = None
    family: int = socket.AF_INET
    size: int = 64                          # echo/connect payload bytes
    action: str = "search"                  # framed request
    value: str = "morpheus"
    duration: Optional[float] = 10.0        # traffic phase; None = until --requests are done
    requests: Optional[int] = None          # traffic-phase requests in total
    rate: Optional[float] = None            # requests/s in total (open loop); None = closed loop
    connect_rate: Optional[float] = None    # connections/s in total; None = as fast as possible
    connect_timeout: float = 5.0            # connect() to first reply
    drain_timeout: float = 2.0              # after the traffic phase, wait this long for answers
    sources: tuple = ()                     # local addresses to bind, spread round-robin
                                            # (none given: flood may spread over 127.0.0.x)
    interval: Optional[float] = None        # seconds between worker snapshots (None: final only)
    embedded: bool = False                  # the target is flood's own server
    server_workers: int = 0                 # embedded server: processes (0 = choose)
    wire: Optional[WireSpec] = None         # raw/line/redis/http/plugin: the exchange asked for
    pipeline: int = 1                       # requests in flight per connection
    cluster: Optional[str] = None           # shards on Dask: "local:N" or a scheduler address
    stages: tuple = ()                      # load stages (a "10s:100,..." text, parsed here)
    churn: Optional[int] = None             # a new connection after every N requests (None: keep)
    udp: bool = False                       # datagrams over connected UDP sockets (flood/udp.py)
    reply_timeout: float = 1.0              # --udp: a datagram unanswered this long is lost
    tls: Optional[TlsConfig] = None         # --tls and its options (None or not enabled: plaintext)
    tls_resume: bool = False                # --tls-resume: offer the worker's last TLS session

    def __post_init__(self) -> None:
        # OptionError names the field, which is also the CLI option (the CLI says which one).
        if self.stages or isinstance(self.stages, str):   # ("": a bad --stages, not none)
            self._take_stages()
        if self.mode not in MODES:
            raise OptionError("mode", f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.conns < 1:
            raise OptionError("conns", "conns must be >= 1")
        if self.workers < 0:
            raise OptionError("workers", "workers must be >= 1 (or 0: choose)")
        if self.size < 1:
            raise OptionError("size", "size must be >= 1 byte")
        if self.duration is None and self.requests is None:
            raise OptionError("duration", "give a duration or a number of requests (or both)")
        if self.duration is not None and self.duration <= 0:
            raise OptionError("duration", "duration must be > 0")
        if self.duration is not None and self.duration > MAX_DURATION:
            raise OptionError("duration", "duration must be at most 24h")
        if self.requests is not None and self.requests < 0:
            raise OptionError("requests", "requests must be >= 0")
        if self.rate is not None and self.rate <= 0:
            raise OptionError("rate", "rate must be > 0")
        if self.rate is not None and self.mode == "connect":
            raise OptionError("rate", "--rate paces requests; connect mode paces connections: use --connect-rate")
        if self.connect_rate is not None and self.connect_rate <= 0:
            raise OptionError("connect_rate", "connect rate must be > 0")
        if self.connect_timeout <= 0:
            raise OptionError("connect_timeout", "connect timeout must be > 0")
        if self.interval is not None and self.interval <= 0:
            raise OptionError("interval", "interval must be > 0")
        if self.server_workers and not self.embedded:
            raise OptionError("server_workers", "server workers are only for flood's own server (given no --port)")
        if not 1 <= self.pipeline <= MAX_PIPELINE:
            raise OptionError("pipeline", f"pipeline must be 1 to {MAX_PIPELINE}")
        if self.pipeline > 1 and self.mode == "connect":
            raise OptionError("pipeline", "connect mode sends one request per connection: no --pipeline")
        if self.churn is not None:
            if self.churn < 1:
                raise OptionError("churn", "churn must be >= 1 (requests per connection)")
            if self.mode == "connect":
                raise OptionError("churn", "connect mode is churn already (one echo per connection): "
                                           "give --mode echo --churn N for N per connection")
            if self.pipeline > self.churn:
                raise OptionError("pipeline", f"--pipeline {self.pipeline} is more than a connection carries "
                                              f"with --churn {self.churn}")
        if self.wire is not None and self.wire.name != self.exchange_mode:
            raise OptionError("mode", f"the exchange options are for {self.wire.name}, the mode is {self.mode}")
        if self.embedded and self.mode not in ("echo", "framed", "connect"):
            raise OptionError("port", f"--mode {self.mode} loads your server: give its --port")
        if self.udp:
            self._check_udp()
        # (--udp raw/line: the requests are built as a write-only stream's; a datagram is its
        # own reply, needing no framing)
        proto = build(self.udp_request_spec if self.udp and self.wire is not None else self.wire_spec)
        if self.pipeline > 1 and proto.until_close:
            raise OptionError("pipeline", "with --reply-until-close a connection carries one request: "
                                          "no --pipeline")
        if not proto.replies and self.rate is None and not self.udp:
            raise WireOptionError("--no-reply", "a write-only stream needs --rate (requests/s)")
        if not proto.replies and self.churn:
            raise OptionError("churn", "a write-only stream has no answers to count: no --churn with --no-reply")
        if self.tls_resume and not self.tls_on:
            raise OptionError("tls_resume", "resumes TLS sessions: give --tls too")
        if self.tls_on and self.embedded:
            raise OptionError("tls", "flood's own server speaks plaintext: give the --port of a TLS "
                                     "server (or start `socktools serve --tls` and give its port)")
        if self.cluster is not None:
            try:
                kind, _ = parse_cluster(self.cluster)
            except ValueError as exc:
                raise OptionError("cluster", str(exc)) from None
            if kind == "address" and self.embedded:
                raise OptionError("cluster", "--cluster with a scheduler address needs --port (and "
                                  "--host) of a server every load host can reach: flood's own "
                                  "server would listen on this machine's loopback only")

    def _check_udp(self) -> None:
        """What a datagram flood can do: echo datagrams that carry flood's header, one in flight
        per socket (or paced with --rate), against a UDP server given by its --port or its own
        (``socktools serve --udp --mode echo``)."""
        from socktools.wire.datagram import HEADER_SIZE, MAX_DATAGRAM
        if self.mode not in ("echo", "raw", "line"):
            raise OptionError("mode", f"--udp sends echo datagrams (flood's header, padded to --size), or "
                                      f"your own bytes (--mode raw, line): not --mode {self.mode}")
        if self.mode != "echo":
            self._check_udp_bytes()
        elif not HEADER_SIZE <= self.size <= MAX_DATAGRAM:
            raise OptionError("size", f"a datagram is {HEADER_SIZE} (flood's header) to {MAX_DATAGRAM} bytes "
                                      f"(the largest UDP payload over IPv4), not {self.size}")
        if not 0 < self.reply_timeout <= MAX_DURATION:
            raise OptionError("reply_timeout", "the reply timeout must be above 0 (a datagram with no reply "
                                               "by then is lost)")
        if self.pipeline != 1:
            raise OptionError("pipeline", "--udp keeps one datagram in flight per socket: use --rate for more")
        if self.family not in (socket.AF_INET, socket.AF_INET6):
            raise OptionError("unix", "--udp is UDP over IP: not with --unix")
        for name in ("stages", "cluster", "churn"):
            if getattr(self, name):
                raise OptionError(name, f"not with --udp (yet): --{name} drives TCP connections")
        if self.tls is not None and self.tls.enabled:
            raise OptionError("tls", "not with --udp: TLS runs over a stream (datagrams would need DTLS, "
                                     "which socktools does not speak)")

    def _check_udp_bytes(self) -> None:
        """--udp with your own bytes (raw, line): one datagram each way, nothing of ours in them."""
        from socktools.wire.datagram import MAX_DATAGRAM
        spec = self.wire
        if spec is None:
            raise OptionError("mode", f"--mode {self.mode} --udp: give the datagram to send (--send)")
        for flag, given in (("--reply-until", spec.reply_until), ("--reply-bytes", spec.reply_bytes),
                            ("--reply-prefix", spec.reply_prefix),
                            ("--reply-until-close", spec.reply_until_close), ("--no-reply", spec.no_reply),
                            ("--greeting", spec.greeting or spec.greeting_match), ("--setup", spec.setups)):
            if given:
                raise WireOptionError(flag, "not with --udp: a datagram is one whole reply (--reply-match "
                                            "checks it), and each stands alone (no opening conversation)")
        if self.rate is not None:
            raise OptionError("rate", f"--mode {self.mode} --udp: your datagrams carry no header of ours, so a "
                                      f"reply is matched to its request only while one is in flight: closed "
                                      f"loop only (--mode echo carries the header and takes --rate)")
        request = build(self.udp_request_spec).request(0, 0)
        if len(request) > MAX_DATAGRAM:
            raise WireOptionError("--send-file" if spec.send_file is not None else "--send",
                                  f"a {len(request):,}-byte request: a UDP datagram holds at most "
                                  f"{MAX_DATAGRAM:,} bytes")

    @property
    def udp_request_spec(self):
        """--udp raw/line: the exchange spec as a write-only stream's (what builds the requests:
        escapes, placeholders, --eol; a datagram needs no reply framing)."""
        import dataclasses
        # (raw insists on a reply framing unless it is write-only; line frames by its --eol)
        return dataclasses.replace(self.wire, reply_match=None, **({"no_reply": True} if self.mode == "raw" else {}))

    def _take_stages(self) -> None:
        """Parse the stages; they set the traffic's length (their sum), the pool of connection
        numbers (``conns``: the largest target) and, with rates, the open loop's peak ``rate``.
        Leave ``duration`` and ``conns`` (and ``rate``) None: a value given must be the one the
        stages set (so a copy made with ``dataclasses.replace`` validates again)."""
        try:
            parsed = stg.parse(self.stages) if isinstance(self.stages, str) else stg.check(self.stages)
        except ValueError as exc:
            raise OptionError("stages", str(exc)) from None
        derived = {"duration": stg.total(parsed), "conns": stg.peak_conns(parsed),
                   "rate": stg.peak_rate(parsed)}
        if derived["duration"] > MAX_DURATION:
            raise OptionError("stages", "the stages must last at most 24h in all")
        if self.mode == "connect":
            raise OptionError("stages", "connect mode keeps no connection open to ramp: no --stages")
        for name, value in derived.items():
            given = getattr(self, name)
            if given is not None and given != value:
                raise OptionError("stages", {
                    "duration": "--stages sets the traffic's length (the sum of the stages): no --duration",
                    "conns": "--stages sets the connections (the largest target): no --conns",
                    "rate": ("--stages sets the rate (each stage's third field): no --rate" if value is not None
                             else "the stages set no rate: give every stage one (DURATION:CONNS:RATE), "
                                  "not --rate")}[name])
            object.__setattr__(self, name, value)
        object.__setattr__(self, "stages", parsed)

    @property
    def staged_rate(self) -> bool:
        """The stages ramp the request rate too (open loop)."""
        return bool(self.stages) and self.stages[0].rate is not None

    @property
    def tls_on(self) -> bool:
        """Connections speak TLS (--tls)."""
        return self.tls is not None and self.tls.enabled

    @property
    def workers_chosen(self) -> bool:
        """The user chose how many workers (0: flood picks them to fit, and says so)."""
        return self.workers > 0

    @property
    def sources_chosen(self) -> bool:
        """The user chose the source addresses (none: flood may spread over 127.0.0.x itself)."""
        return bool(self.sources)

    # ------------------------------------------------------------- per-worker shares
    def conns_of(self, worker: int) -> int:
        """Connections (slots, in connect mode) of ``worker``."""
        return len(range(worker, self.conns, self.workers))

    def requests_of(self, worker: int) -> Optional[int]:
        """Traffic-phase requests of ``worker`` (proportional to its connections)."""
        if self.requests is None:
            return None
        return _proportional(self.requests, self, worker)

    def rate_of(self, worker: int) -> Optional[float]:
        return None if self.rate is None else self.rate * self.conns_of(worker) / self.conns

    def share_of(self, worker: int) -> float:
        """``worker``'s part of the run's rate (and of each stage's): its part of the connections."""
        return self.conns_of(worker) / self.conns

    def connect_rate_of(self, worker: int) -> Optional[float]:
        if self.connect_rate is None:
            return None
        return self.connect_rate * self.conns_of(worker) / self.conns

    def source_of(self, index: int) -> Optional[str]:
        """Local address for connection ``index`` (global numbering), or None."""
        return self.sources[index % len(self.sources)] if self.sources else None

    @property
    def active_workers(self) -> int:
        """Workers that get at least one connection."""
        return min(self.workers, self.conns)

    @property
    def exchange_mode(self) -> str:
        """The wire protocol's name: connect mode confirms each connection with one echo."""
        return "echo" if self.mode == "connect" else self.mode

    @property
    def wire_spec(self) -> WireSpec:
        """The exchange as a spec: the one given, or echo/framed from size/action/value."""
        if self.wire is not None:
            return self.wire
        return WireSpec(mode=self.exchange_mode, size=self.size, action=self.action, value=self.value)

    @property
    def target(self) -> str:
        from socktools.addresses import format_addr
        return format_addr(self.address) if self.address else f"{self.host}:{self.port}"


def _proportional(total: int, config: FloodConfig, worker: int) -> int:
    """``total`` split over workers in proportion to their connections, exactly."""
    n = config.conns
    # Largest-remainder rounding over the cumulative shares: sums to ``total``.
    before = sum(config.conns_of(w) for w in range(worker))
    lo = total * before // n
    hi = total * (before + config.conns_of(worker)) // n
    return hi - lo

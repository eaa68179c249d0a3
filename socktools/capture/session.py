"""One capture run: a source (interface or file), an optional pcap writer, the tracker.

``Sniffer(config).open()`` then iterate :meth:`Sniffer.batches` (lists of
:class:`PacketRecord`, one list per wake-up, so a renderer can flush once per
batch instead of once per line) — or :meth:`Sniffer.rendered`, the same packets
as the encoded lines of a text view, most of them through the fast lane
(``fastlane.py``) — then :meth:`Sniffer.close` returns the
:class:`CaptureSummary`.  ``close`` may be called after a KeyboardInterrupt
stopped the iteration: the socket is still open, so the kernel's drop
counters are still there to read.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from socktools.capture import bpf
from socktools.capture.common import DEFAULT_SNAPLEN, FilterError, SniffError
from socktools.capture.datagrams import DatagramTracker, SocketSummary
from socktools.capture.dissect import (LINKTYPE_NAMES, Datagram, Segment, describe_other, dissect,
                                      format_ip)
from socktools.capture.events import preview_bytes
from socktools.capture.live import DEFAULT_BUFFER, LiveSource
from socktools.capture.pcap import open_capture, open_writer
from socktools.capture.reassembly import DECODE_HELP, DECODE_MODES, message_comment
from socktools.capture.tracker import ConnectionSummary, PacketRecord, Tracker

__all__ = ["SniffConfig", "Sniffer", "CaptureSummary", "SNIFF_DECODES", "SNIFF_DECODE_HELP"]

#: Live capture backends: ``ring`` a TPACKET_V3 ring on a Linux packet socket (the
#: default), ``socket`` the same socket read one recvmsg per packet, ``scapy``
#: scapy's capture sockets (libpcap/BPF/Npcap: macOS, the BSDs, Windows).  ``auto``
#: is ``ring`` where Linux packet sockets exist and ``scapy`` elsewhere.
BACKENDS = ("auto", "ring", "socket", "scapy")

#: ``--decode``'s choices: the stream decoders', and ``datagram`` -- flood's UDP datagrams
#: (``auto`` recognises them too); with it, TCP streams are previewed raw.
SNIFF_DECODES = DECODE_MODES + ("datagram",)
SNIFF_DECODE_HELP = DECODE_HELP + (" datagram = flood's UDP datagrams only (sktU header: socket, "
                                   "seq, the round trip of each reply; auto decodes them too).")

#: How long one wait for packets may last, so --timeout and Ctrl-C stay prompt.
_TICK = 0.2
_FILE_BATCH = 512


@dataclass(frozen=True)
class SniffConfig:
    """Everything one ``socktools sniff`` run needs (picklable, no I/O)."""

    iface: str = "lo"
    port: Optional[int] = None
    expression: Optional[str] = None     # --filter
    count: Optional[int] = None          # stop after this many packets
    timeout: Optional[float] = None      # stop after this many seconds
    write: Optional[str] = None          # -w FILE.pcap (nanosecond pcap) or FILE.pcapng
    read: Optional[str] = None           # -r FILE
    decode: str = "auto"
    buffer_size: int = DEFAULT_BUFFER
    snaplen: int = DEFAULT_SNAPLEN
    backend: str = "auto"                # auto | ring | socket | scapy (live capture)
    keylog: Optional[str] = None         # --keylog FILE: NSS key log, decrypts TLS
    udp: bool = False                    # --udp: the filter is "udp" or "udp port P"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        if self.decode not in SNIFF_DECODES:
            raise ValueError(f"decode must be one of {SNIFF_DECODES}")
        if self.udp and self.expression:
            raise ValueError("give --udp or --filter, not both (say udp in the expression)")
        if self.keylog is not None and self.decode in ("raw", "none", "datagram"):
            raise ValueError(f"--keylog decrypts for the decoders: not with --decode {self.decode}")
        if self.port is not None and self.expression:
            raise ValueError("give --port or --filter, not both")


@dataclass(frozen=True)
class CaptureSummary:
    """What a run saw, for the closing report and ``--json``.

    ``kernel_received``/``kernel_dropped`` come from PACKET_STATISTICS (None
    when reading a file): received counts every packet the filter accepted,
    dropped the ones lost because the socket buffer was full.
    """

    source: str                  # "lo" or the file read
    live: bool
    linktype: str
    filter: str
    captured: int                # packets shown (after the filter, each once)
    kernel_received: Optional[int]
    kernel_dropped: Optional[int]
    buffer_bytes: Optional[int]
    written: Optional[int]       # packets written with -w
    write_path: Optional[str]
    duration: float              # first to last packet
    elapsed: float               # wall time of the run
    stopped_by: str              # count | timeout | end-of-file | interrupt
    non_tcp: int
    connections: tuple[ConnectionSummary, ...]
    connections_forgotten: int = 0   # finished connections dropped to bound memory
    truncated: Optional[str] = None  # -r: why the file ended before a complete packet
    read_packets: Optional[int] = None   # -r: complete packets in the file (before the filter)
    backend: Optional[str] = None    # live: "ring" (TPACKET_V3), "socket" (recv) or "scapy"
    undrained: Optional[int] = None  # live: accepted by the kernel, still unread at the end
    datagrams: tuple[SocketSummary, ...] = ()   # flood's UDP datagrams, per socket
    datagrams_untracked: int = 0     # flood datagrams of sockets past datagrams.MAX_SOCKETS


class Sniffer:
    """Runs one capture described by a :class:`SniffConfig`."""

    def __init__(self, config: SniffConfig) -> None:
        self.config = config
        keylog = None
        if config.keylog is not None:
            from socktools.capture.tls_decrypt import KeyLog
            keylog = KeyLog(config.keylog)
        # --decode datagram is for UDP: TCP streams are previewed raw beside it
        self.tracker = Tracker("raw" if config.decode == "datagram" else config.decode, keylog=keylog)
        self.datagrams = DatagramTracker(config.decode)
        self.source = None
        self.file = None
        self.writer = None                     # PcapWriter or PcapngWriter
        self.linktype = 0
        self.filter_text = ""
        self._program: Optional[list] = None   # applied in user space (files only)
        self._programs: dict = {}              # link type -> program (pcapng mixes them)
        self._port: Optional[int] = None       # --port on a file with no built-in program
        self._matched = Datagram if config.udp else Segment   # ... matches this protocol
        self.captured = 0
        self.non_tcp = 0
        self.stopped_by = "interrupt"
        # per-packet state, shared with the fast lane (fastlane.py), which keeps it in step
        self.t0: Optional[int] = None          # time stamp of the first packet (ns)
        self.last_ts = 0
        self._started = 0.0

    def open(self) -> "Sniffer":
        """Open the file or interface (and the output file); raises SniffError subclasses."""
        cfg = self.config
        try:
            if cfg.read:
                self.file = open_capture(cfg.read)
                self.linktype = self.file.linktype
                try:
                    program, self.filter_text = bpf.build(
                        port=cfg.port, expression=cfg.expression, linktype=self.linktype,
                        snaplen=cfg.snaplen, udp=cfg.udp)
                    self._program = program if self.filter_text else None
                except FilterError:
                    if cfg.port is None:
                        raise
                    # no built-in program for this link type (BSD loopback): match in Python
                    self._port = cfg.port
                    self.filter_text = f"{'udp' if cfg.udp else 'tcp'} port {cfg.port}"
            else:
                program_for = (lambda lt: bpf.build(port=cfg.port, expression=cfg.expression,
                                                    linktype=lt, snaplen=cfg.snaplen, udp=cfg.udp))
                backend = cfg.backend
                if backend == "auto":
                    backend = "ring" if hasattr(socket, "AF_PACKET") else "scapy"
                if backend == "scapy":
                    from socktools.capture.scapy_source import ScapySource
                    self.source = ScapySource(cfg.iface, program_for, buffer_size=cfg.buffer_size,
                                              snaplen=cfg.snaplen)
                else:
                    self.source = LiveSource(cfg.iface, program_for, buffer_size=cfg.buffer_size,
                                             snaplen=cfg.snaplen, ring=backend == "ring")
                self.linktype = self.source.linktype
                self.filter_text = self.source.filter_text
            if cfg.write:
                protect = (self.file.stat.st_dev, self.file.stat.st_ino) if self.file else None
                self.writer = open_writer(cfg.write, self.linktype, cfg.snaplen, protect=protect)
        except BaseException:
            self._close_io()
            raise
        self._started = time.monotonic()
        return self

    @property
    def description(self) -> str:
        """``lo`` / ``file.pcap`` plus the filter, for the opening line."""
        where = f"'{self.config.read}'" if self.config.read else f"'{self.config.iface}'"
        return where + (f" (filter: {self.filter_text})" if self.filter_text else "")

    def batches(self) -> Iterator[list[PacketRecord]]:
        """Yield lists of records until --count, --timeout or the end of the file."""
        limit = self.config.count
        one = self.one
        for raw in self._raw():
            out = [one(ts, frame, wirelen, linktype) for ts, frame, wirelen, linktype in raw]
            if out:
                yield out
            if limit is not None and self.captured >= limit:
                self.stopped_by = "count"
                return

    def rendered(self, view, *, quiet: bool = False) -> Iterator[bytes]:
        """Like :meth:`batches`, rendered: the lines of each batch (a
        :class:`~socktools.capture.lines.TextView` says how), encoded as
        ``view.encoding`` says, ready to write.

        Packets go through the fast lane (``fastlane.py``): the common case is
        tracked and printed without building a record, the rest through
        :meth:`one` and ``view.render``.  ``quiet``: track, print nothing.
        """
        from socktools.capture.fastlane import FastLane
        lane = FastLane(self, view, quiet=quiet)
        limit = self.config.count
        for raw in self._raw():
            text = lane.run(raw)
            if text:
                yield text
            if limit is not None and self.captured >= limit:
                self.stopped_by = "count"
                return

    def _raw(self) -> Iterator[list]:
        """Lists of ``(ts_ns, frame, wirelen, linktype)`` until --timeout or the end of the
        file, each cut so the packets taken stay within --count."""
        cfg = self.config
        deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
        limit = cfg.count
        read = self._read_file() if self.file else None
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stopped_by = "timeout"
                    if self.source is not None:
                        # what the kernel captured before the deadline is part of the run:
                        # take it out of the ring before the summary, not drop it
                        for raw in self.source.drain():
                            yield self._within_count(raw)
                            if limit is not None and self.captured >= limit:
                                return
                    return
                wait = min(left, _TICK)
            else:
                wait = _TICK
            if read is not None:
                raw = next(read, None)
                if raw is None:
                    self.stopped_by = "end-of-file"
                    return
            else:
                raw = self.source.read(wait)
                if not raw:
                    if self.writer:
                        self.writer.flush()
                    continue
            yield self._within_count(raw)

    def _within_count(self, raw: list) -> list:
        """``raw`` cut so the packets taken stay within --count."""
        limit = self.config.count
        if limit is not None and len(raw) > limit - self.captured:
            return raw[:limit - self.captured]
        return raw

    def _read_file(self) -> Iterator[list]:
        first = self.linktype
        for records in self.file.batches(_FILE_BATCH):
            if self._program is None and self._port is None and \
                    all(rec[3] == first for rec in records):
                yield records             # no filter, one link type: nothing to look at
                continue
            batch = []
            for rec in records:
                linktype = rec[3]
                program = self._program if linktype == first else self._program_for(linktype)
                port = self._port if linktype == first else (
                    self.config.port if program is None else None)
                if program is not None and not bpf.run(program, rec[1]):
                    continue
                if port is not None:
                    seg = dissect(rec[1], linktype)
                    if type(seg) is not self._matched or port not in (seg.sport, seg.dport):
                        continue
                batch.append(rec)
            if batch:
                yield batch

    def _program_for(self, linktype: int) -> Optional[list]:
        """The filter compiled for another link type of a pcapng file (cached)."""
        """None: no filter, or --port on a link type without a built-in program (matched in Python)."""
        if linktype not in self._programs:
            cfg = self.config
            try:
                program, text = bpf.build(port=cfg.port, expression=cfg.expression,
                                          linktype=linktype, snaplen=cfg.snaplen, udp=cfg.udp)
            except FilterError:
                if cfg.port is None:
                    raise
                program, text = None, ""
            self._programs[linktype] = program if text else None
        return self._programs[linktype]

    def one(self, ts: int, frame: bytes, wirelen: int, linktype: int) -> PacketRecord:
        """One packet the general way: dissect, track, write; returns its record."""
        if self.t0 is None:
            self.t0 = ts
        self.last_ts = ts
        self.captured += 1
        number = self.captured
        pkt = dissect(frame, linktype)
        kind = type(pkt)
        if kind is Segment:
            rec = self.tracker.process(number, ts, self.t0, pkt, frame, linktype)
        elif kind is Datagram:
            self.non_tcp += 1
            rec = self._datagram(number, ts, pkt, frame, linktype)
        else:
            self.non_tcp += 1
            rec = PacketRecord(number, (ts - self.t0) / 1e9, ts, pkt.proto, pkt.src, None,
                               pkt.dst, None, (), None, None, None, 0, (), None,
                               info=describe_other(pkt), frame=frame, linktype=linktype)
        if self.writer:
            self.writer.write(ts, frame, wirelen, linktype,
                              message_comment(rec.events) if rec.events else None)
        return rec

    def _datagram(self, number: int, ts: int, pkt: Datagram, frame: bytes,
                  linktype: int) -> PacketRecord:
        """A UDP datagram's record: flood's header decoded (datagrams.py), or a preview."""
        events, preview = self.datagrams.datagram(number, ts, (pkt.src, pkt.sport),
                                                  (pkt.dst, pkt.dport), pkt.length, pkt.payload)
        return PacketRecord(number, (ts - self.t0) / 1e9, ts, "UDP", format_ip(pkt.src), pkt.sport,
                            format_ip(pkt.dst), pkt.dport, (), None, None, None, pkt.length, (),
                            None, events, preview_bytes(pkt.payload) if preview else None,
                            info=f"{pkt.sport} → {pkt.dport} Len={pkt.length}", frame=frame,
                            linktype=linktype)

    def close(self, *, interrupted: bool = False) -> CaptureSummary:
        """Stop, read the kernel's counters, close files; returns the summary."""
        if interrupted:
            self.stopped_by = "interrupt"
        received = dropped = buffer = backend = undrained = None
        if self.source is not None:
            received, dropped = self.source.stats()
            buffer = self.source.buffer_bytes
            backend = self.source.mode
            taken = self.source.taken
            if received is not None and taken is not None and self.stopped_by != "count":
                # what the kernel accepted for the filter and nobody read (after --count,
                # the packets past it are not owed)
                undrained = max(0, received - (dropped or 0) - taken)
        written = self.writer.count if self.writer else None
        truncated = self.file.truncated if self.file else None
        read_packets = self.file.count if self.file else None
        self._close_io()
        cfg = self.config
        return CaptureSummary(
            source=cfg.read or cfg.iface, live=cfg.read is None,
            linktype=LINKTYPE_NAMES.get(self.linktype, str(self.linktype)), filter=self.filter_text,
            captured=self.captured, kernel_received=received, kernel_dropped=dropped,
            buffer_bytes=buffer, written=written, write_path=cfg.write,
            duration=((self.last_ts - self.t0) / 1e9) if self.t0 is not None else 0.0,
            elapsed=time.monotonic() - self._started if self._started else 0.0,
            stopped_by=self.stopped_by, non_tcp=self.non_tcp,
            connections=tuple(self.tracker.summaries()),
            connections_forgotten=self.tracker.forgotten, truncated=truncated,
            read_packets=read_packets, backend=backend, undrained=undrained,
            datagrams=tuple(self.datagrams.summaries()), datagrams_untracked=self.datagrams.untracked)

    def _close_io(self) -> None:
        errors = []
        for thing in (self.source, self.file, self.writer):
            if thing is None:
                continue
            try:
                thing.close()
            except SniffError as exc:
                errors.append(exc)
        self.source = self.file = self.writer = None
        if errors:
            raise errors[0]

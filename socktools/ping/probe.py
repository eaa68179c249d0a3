"""TCP-connect ping (like tcping) and ICMP echo ping, as data.

A TCP probe times the three-way handshake: a nonblocking ``connect()``,
then wait until the socket is writable and read ``SO_ERROR``; the time
between is one round trip to the peer's kernel (SYN -> SYN-ACK), which needs
no privilege and goes wherever a TCP connection goes.  The connection is then
closed normally.  With TLS (``config.tls``) the probe then does a TLS
handshake, timed apart from the connect (the connect is the kernel's answer,
the handshake the server process's: its CPU, its certificate), and closes with
close_notify.  An ICMP probe sends an echo request on a raw ICMP socket
(root or CAP_NET_RAW) and names any ICMP error that comes back
("destination port unreachable (3/3)").

``probes()`` yields one ``Probe`` per attempt, pacing them by the interval
(:mod:`.results` holds the data and ``summarize()``, :mod:`.report` the
lines a person reads).  Nothing prints.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import replace
from typing import Callable, Iterator, Optional

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.core.stream import Stream
from socktools.icmpnames import ICMP_TYPES, ICMPV6_TYPES, icmp_name
from socktools.ping.config import PingConfig
from socktools.ping.results import PingStats, Probe, Target, summarize
from socktools.tlsconf import client_context, negotiated, server_name
from socktools.tlsinfo import peer_chain

__all__ = ["PingConfig", "Target", "Probe", "PingStats", "IcmpUnavailable", "resolve_target",
           "probes", "tcp_probe", "tls_probe", "IcmpPinger", "UdpPinger", "check_icmp", "summarize", "icmp_name",
           "ICMP_TYPES", "ICMPV6_TYPES"]


class IcmpUnavailable(RuntimeError):
    """ICMP ping cannot run here (no privilege for a raw socket); the message says why."""


# --------------------------------------------------------------------------- TCP probe
def resolve_target(config: PingConfig) -> Target:
    """Resolve ``config.host`` once (numeric addresses skip DNS; ``config.unix``: that path, no
    DNS); raises ``OSError``."""
    family, sockaddr = resolve(config.host, config.port, unix=config.unix)
    if config.icmp:
        display = sockaddr[0]
    else:
        display = format_addr(sockaddr)
    return Target(config.host, family, sockaddr if config.unix is not None else tuple(sockaddr), display)


def _failed(seq: int, peer: str, key: str, num: Optional[int], elapsed_ms: Optional[float],
            detail: Optional[str] = None) -> Probe:
    exp = errors.lookup(key)
    return Probe(seq, False, None, peer, error=key, errno=num,
                 detail=detail or (exp.meaning if exp else os.strerror(num) if num else key),
                 elapsed_ms=elapsed_ms)


def tcp_probe(target: Target, seq: int, timeout: float) -> Probe:
    """One TCP handshake to ``target``, timed from ``connect()`` to writable."""
    peer = target.display
    try:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
    except OSError as exc:        # EMFILE, ENOBUFS...: this side's limits, still a failed probe
        return _failed(seq, peer, errors.exception_key(exc), exc.errno, None)
    with sock:
        return _connect(sock, target, seq, timeout)


def tls_probe(target: Target, seq: int, timeout: float, context, name: str) -> Probe:
    """A TCP connect, then a TLS handshake sending and checking ``name`` (each given
    ``timeout``), timed apart.  A refused handshake is a failed probe named by its TLS key
    (``tls-unknown-ca``...), with the connect time it still had."""
    peer = target.display
    try:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
    except OSError as exc:
        return _failed(seq, peer, errors.exception_key(exc), exc.errno, None)
    with sock:
        connected = _connect(sock, target, seq, timeout)
        if not connected.ok:
            return replace(connected, phase=errors.CONNECT)
        sock.setblocking(True)
        stream = Stream(sock, time.monotonic() + timeout, f"no handshake within {timeout:g} s")
        start = time.perf_counter_ns()
        try:
            obj = stream.tls_handshake(context, name)
        except OSError as exc:       # ssl.SSLError, a reset, the timeout
            elapsed = (time.perf_counter_ns() - start) / 1e6
            key = errors.exception_key(exc)
            exp = errors.lookup(key)
            hint = errors.tls_hint(b"", key, tls=True)
            detail = (exp.meaning if exp else str(exc)) + (f"; {hint}" if hint else "")
            return Probe(seq, False, None, peer, error=key, errno=None, detail=detail, elapsed_ms=elapsed,
                         connect_ms=connected.time_ms, phase="handshake")
        handshake = (time.perf_counter_ns() - start) / 1e6
        settled = negotiated(obj)
        chain, _sent = peer_chain(obj)
        stream.close_notify()
        return replace(connected, connect_ms=connected.time_ms, handshake_ms=handshake,
                       tls_version=settled["version"], tls_cipher=settled["cipher"],
                       leaf=chain[0] if chain else None)


def _connect(sock: socket.socket, target: Target, seq: int, timeout: float) -> Probe:
    """The timed nonblocking connect of :func:`tcp_probe`, on ``sock``."""
    peer = target.display
    sock.setblocking(False)
    start = time.perf_counter_ns()
    err = sock.connect_ex(target.sockaddr)
    if err == errno.EAGAIN and target.family == socket.AF_UNIX:
        # a Unix socket's connect() does not go on in the background: EAGAIN is a full
        # listen backlog and nothing connected (man 7 unix), not TCP's "in progress"
        return _failed(seq, peer, "EAGAIN", err, (time.perf_counter_ns() - start) / 1e6,
                       "the socket's listen backlog is full: the server does not accept() fast enough")
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
        # poll() rather than select(): no FD_SETSIZE cap in a process with many descriptors.
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        if not poller.poll(max(0.0, timeout) * 1000):
            elapsed = (time.perf_counter_ns() - start) / 1e6
            return _failed(seq, peer, "ETIMEDOUT", errno.ETIMEDOUT, elapsed,
                           f"no answer within {timeout:g} s (the SYN got no SYN-ACK or RST)")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if err:
        return _failed(seq, peer, errors.errno_name(err), err, elapsed)
    return Probe(seq, True, elapsed, peer)


# --------------------------------------------------------------------------- ICMP probe
# A raw IPPROTO_ICMP(V6) socket, not scapy's sr1(): the kernel hands a raw ICMP
# socket only ICMP, while sr1's packet-socket listener sees every packet on the
# interface and, on a busy loopback, misses the replies.  Same privilege either way.
_SOL_RAW = 255
_ICMP_FILTER = 1            # linux/icmp.h: bitmask of ICMP types to *drop*
_V4_WANTED = (0, 3, 4, 5, 11, 12)   # echo reply and the errors that quote our request
_V6_ERRORS = (1, 2, 3, 4)


def _checksum(data: bytes) -> int:
    """RFC 1071 internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def check_icmp() -> None:
    """Raise ``IcmpUnavailable`` unless this process may open raw ICMP sockets."""
    from socktools.kernel.doctor import net_raw_privilege
    has, how = net_raw_privilege()
    if not has:
        raise IcmpUnavailable(
            f"ICMP echo needs a raw socket, which needs root or CAP_NET_RAW ({how}): "
            "run `sudo socktools ping --icmp ...`, or drop --icmp for a TCP ping, which needs no privilege")


class IcmpPinger:
    """One raw ICMP socket for a whole run; ``probe(seq)`` sends an echo and waits for its answer.

    Answers are matched by identifier and sequence number, also inside ICMP
    errors (which quote the start of the packet that caused them), so a late
    reply to an earlier probe is never taken for the current one.
    """

    def __init__(self, target: Target, timeout: float, ident: Optional[int] = None) -> None:
        self.target = target
        self.timeout = timeout
        self.ident = (os.getpid() if ident is None else ident) & 0xFFFF
        self.v6 = target.family == socket.AF_INET6
        try:
            if self.v6:
                self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            else:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                drop = ~sum(1 << t for t in _V4_WANTED) & 0xFFFFFFFF
                try:
                    self.sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", drop))
                except OSError:
                    pass      # not Linux: filter in Python only
        except PermissionError as exc:
            raise IcmpUnavailable(f"cannot open a raw ICMP socket ({exc.strerror}): "
                                  "run as root or with CAP_NET_RAW, or drop --icmp") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "IcmpPinger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, seq: int) -> bytes:
        payload = b"socktools ping " + seq.to_bytes(4, "big")
        kind = 128 if self.v6 else 8
        head = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq & 0xFFFF)
        if self.v6:
            return head + payload   # the kernel fills in ICMPv6 checksums (RFC 3542)
        csum = _checksum(head + payload)
        return struct.pack("!BBHHH", kind, 0, csum, self.ident, seq & 0xFFFF) + payload

    def _match(self, data: bytes, hoplimit: Optional[int], seq: int):
        """``(type, code, ttl)`` when ``data`` answers probe ``seq``, else None."""
        seq &= 0xFFFF
        if self.v6:
            icmp, ttl = data, hoplimit
            reply, errors_, quoted_at, echo_req = 129, _V6_ERRORS, 8 + 40, 128
            if len(icmp) >= 8 + 40 and icmp[0] in errors_ and icmp[8 + 6] != 58:
                return None   # the quoted packet was not ICMPv6 (or has extension headers)
        else:
            if len(data) < 20:
                return None
            ihl = (data[0] & 0x0F) * 4
            icmp, ttl = data[ihl:], data[8]
            reply, errors_, echo_req = 0, (3, 4, 5, 11, 12), 8
            quoted_at = None
            if len(icmp) >= 8 + 20 and icmp[0] in errors_:
                inner = icmp[8:]
                if inner[9] != socket.IPPROTO_ICMP:
                    return None
                quoted_at = 8 + (inner[0] & 0x0F) * 4
        if len(icmp) < 8:
            return None
        itype, code = icmp[0], icmp[1]
        if itype == reply:
            _id, _seq = struct.unpack_from("!HH", icmp, 4)
            return (itype, code, ttl) if (_id, _seq) == (self.ident, seq) else None
        if itype in errors_ and quoted_at is not None and len(icmp) >= quoted_at + 8:
            qtype, _c, _sum, _id, _seq = struct.unpack_from("!BBHHH", icmp, quoted_at)
            if (qtype, _id, _seq) == (echo_req, self.ident, seq):
                return (itype, code, ttl)
        return None

    def probe(self, seq: int) -> Probe:
        """Send echo request ``seq``; a reply, an ICMP error named in words, or a timeout."""
        t = self.target
        # Raw sockets take no port; keep IPv6 flowinfo/scope id.
        dest = (t.sockaddr[0], 0) + tuple(t.sockaddr[2:4])
        packet = self._request(seq)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        start = time.perf_counter_ns()
        try:
            self.sock.sendto(packet, dest)
        except OSError as exc:   # ENETUNREACH, EHOSTUNREACH, EPERM from a firewall...
            return _failed(seq, t.display, errors.exception_key(exc), exc.errno, None)
        deadline = start + int(self.timeout * 1e9)
        while True:
            remaining_ms = (deadline - time.perf_counter_ns()) / 1e6
            if remaining_ms <= 0 or not poller.poll(remaining_ms):
                return _failed(seq, t.display, "ETIMEDOUT", errno.ETIMEDOUT, self.timeout * 1000,
                               f"no echo reply within {self.timeout:g} s")
            data, ancdata, _flags, source = self.sock.recvmsg(65535, socket.CMSG_SPACE(4))
            now = time.perf_counter_ns()
            hoplimit = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                    hoplimit = struct.unpack("=i", value[:4])[0]
            found = self._match(data, hoplimit, seq)
            if found is None:
                continue          # someone else's ICMP, or a late answer to an earlier probe
            itype, code, ttl = found
            ms = (now - start) / 1e6
            if itype == (129 if self.v6 else 0):
                return Probe(seq, True, ms, source[0], ttl=ttl, icmp=(itype, code))
            return Probe(seq, False, None, source[0], error=f"icmp-{itype}/{code}",
                         detail=icmp_name(itype, code, v6=self.v6), ttl=ttl, icmp=(itype, code),
                         elapsed_ms=ms)


# --------------------------------------------------------------------------- UDP probe
class UdpPinger:
    """One connected UDP socket for a whole run; ``probe(seq)`` sends flood's datagram (its
    header: ping's socket number, the sequence number, the send time; :mod:`socktools.wire.datagram`)
    to an echo server and waits for the echo of *that* datagram.

    Every datagram read goes through one :class:`~socktools.wire.datagram.Ledger`, which
    matches it by its sequence number: a reply to an earlier probe whose timeout passed is
    ``late`` (that probe stays failed: its answer came too late), a second copy ``duplicated``,
    anything else ``foreign``.  They are reported with the probe during which they arrived.
    Connected, the socket takes only the target's datagrams, and an ICMP port unreachable for
    ours comes back as ECONNREFUSED: nobody listens there.
    """

    def __init__(self, target: Target, timeout: float, ident: Optional[int] = None,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        from socktools.wire.datagram import HEADER_SIZE, Ledger
        self.target = target
        self.timeout = timeout
        self.clock = clock
        self.size = HEADER_SIZE
        self.ledger = Ledger((os.getpid() if ident is None else ident) & 0xFFFFFFFF, self.size,
                             max(1, int(timeout * 1e9)))
        self.sock = socket.socket(target.family, socket.SOCK_DGRAM)
        self.refused: Optional[OSError] = None     # connect() failed (no route...): every probe fails so
        try:
            self.sock.connect(target.sockaddr)      # no packet: the peer, for the filter and ICMP
        except OSError as exc:
            self.refused = exc
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "UdpPinger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _failed(self, seq: int, exc: OSError, start: int, events: list) -> Probe:
        key = errors.exception_key(exc)
        num = exc.errno if isinstance(exc.errno, int) else None
        detail = errors.udp_words(key, self.target.sockaddr, self.timeout)
        probe = _failed(seq, self.target.display, key, num, (self.clock() - start) / 1e6, detail)
        return replace(probe, events=tuple(events), counts=self.ledger.counts())

    def probe(self, seq: int) -> Probe:
        """Send datagram ``seq`` (the ledger's seq - 1) and wait for its echo, or the timeout."""
        from socktools.wire.datagram import MAX_DATAGRAM, decode
        ledger = self.ledger
        events: list = []
        start = self.clock()
        if self.refused is not None:
            return self._failed(seq, self.refused, start, events)
        data = ledger.send(start)
        try:
            self.sock.send(data)
        except OSError as exc:                  # a pending ICMP error, ENOBUFS...: it never left
            ledger.refuse()
            return self._failed(seq, exc, start, events)
        mine = ledger.next_seq - 1
        deadline = start + ledger.timeout_ns
        while True:
            left = deadline - self.clock()
            if left <= 0 or not self.poller.poll(left / 1e6):
                if self.clock() >= deadline:
                    break
                continue
            try:
                # as flood reads them: an echo of ours is 24 bytes, anything longer is not one
                reply = self.sock.recv(MAX_DATAGRAM + 1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as exc:              # ECONNREFUSED: the ICMP port unreachable
                ledger.expire(start + ledger.timeout_ns + 1)
                return self._failed(seq, exc, start, events)
            now = self.clock()
            outcome = ledger.receive(reply, now)
            head = decode(reply)
            if outcome == "answered" and head.seq == mine:
                return Probe(seq, True, ledger.latency_ns / 1e6, self.target.display, size=len(reply),
                             events=tuple(events), counts=ledger.counts())
            events.append((outcome, head.seq + 1 if head is not None and outcome != "foreign" else None))
        ledger.expire(deadline + 1)
        return self._failed(seq, errors.DatagramTimeout(), start, events)


# --------------------------------------------------------------------------- the loop
def probes(config: PingConfig, target: Target, *, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> Iterator[Probe]:
    """Yield ``config.count`` probes (forever when 0), one every ``config.interval`` seconds.

    The interval runs from the start of one probe to the start of the next,
    as in ping, so a slow failure does not stretch the schedule.  Raises
    ``IcmpUnavailable`` before the first ICMP probe when it cannot run.
    """
    if config.icmp:
        check_icmp()
        with IcmpPinger(target, config.timeout) as pinger:
            yield from _paced(pinger.probe, config, sleep, clock)
    elif config.udp:
        with UdpPinger(target, config.timeout) as pinger:
            yield from _paced(pinger.probe, config, sleep, clock)
    elif config.tls is not None and config.tls.enabled:
        context = client_context(config.tls)       # once: every probe shakes hands the same way
        name = server_name(config.tls, config.host)      # as request: --sni, else the host (127.0.0.1)
        yield from _paced(lambda seq: tls_probe(target, seq, config.timeout, context, name), config, sleep, clock)
    else:
        yield from _paced(lambda seq: tcp_probe(target, seq, config.timeout), config, sleep, clock)


def _paced(attempt, config: PingConfig, sleep, clock) -> Iterator[Probe]:
    seq = 0
    next_at = clock()
    while config.count == 0 or seq < config.count:
        seq += 1
        yield attempt(seq)
        if config.count and seq >= config.count:
            break
        next_at += config.interval
        delay = next_at - clock()
        if delay > 0:
            sleep(delay)
        else:
            next_at = clock()    # fell behind (a probe took longer than the interval): don't burst

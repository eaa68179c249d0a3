"""``request --udp``: datagrams out, one reply each, on a connected UDP socket.

A datagram is one whole message: the reply needs no framing -- it is the datagram the kernel
hands over, whatever its size.  Each request is one ``send()``; each reply one
``recvmsg_into()`` with ``MSG_TRUNC``, which returns the datagram's real size even when it was
larger than the buffer, so a reply cut by the buffer is said to be truncated (UDP keeps no
remainder for a later read: the rest of that datagram is gone).

The socket is ``connect()``-ed: no packet leaves for that, but the kernel then takes only the
peer's datagrams, and an ICMP port unreachable coming back for ours surfaces as ECONNREFUSED on
the next call -- which is how request tells "nobody listens" from silence.  Silence (no reply
within the timeout) says nothing more, and the words say so.

Several requests go in order, each after the reply to the one before (or its timeout: the
conversation ends at the first failure, as over TCP).  A datagram already waiting when the next
request is about to leave (a duplicate, a late copy) is not taken as that request's reply: it is
read, counted ``ignored`` and shown.  Every failure leaves as :class:`UdpError`, naming the
phase and carrying what was exchanged so far.
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from socktools import errors
from socktools.addresses import format_addr, resolve
from socktools.wire.base import SAMPLE_BYTES, Failure, Reply
from socktools.wire.datagram import MAX_DATAGRAM

__all__ = ["REPLY_BUFFER", "MAX_IGNORED", "Datagram", "UdpResult", "UdpError", "datagrams"]

#: The buffer each reply is read into unless --reply-bytes chose one: more than any UDP payload
#: (65,527 bytes over IPv6 without jumbograms), so that only a buffer the user asked for cuts one.
REPLY_BUFFER = 65_536

#: Datagrams read and set aside before one request (already waiting: not its reply).  A peer
#: flooding us must not hold the request: past this many the request goes out anyway.
MAX_IGNORED = 1000


@dataclass
class Datagram:
    """One request datagram and its reply: the bytes each way, the reply's real size (above
    ``len(received)`` when the buffer cut it), who sent it, and the round trip."""

    label: str = ""
    sent: bytes = b""
    received: bytes = b""        # what was read: at most the buffer
    size: int = 0                # the reply datagram's size, as the kernel said (MSG_TRUNC)
    truncated: bool = False
    peer: Any = None             # the reply's source address
    time_s: float = 0.0          # send to reply
    reply: Optional[Reply] = None
    failures: list = field(default_factory=list)
    ignored: int = 0             # datagrams already waiting before this one was sent


@dataclass
class UdpResult:
    address: Any                 # the sockaddr the datagrams went to
    local: Any = None            # our socket's address (the kernel picked the port)
    steps: list = field(default_factory=list)
    total_s: float = 0.0

    @property
    def reply(self) -> Optional[Reply]:
        return self.steps[-1].reply if self.steps else None

    @property
    def failures(self) -> list:
        return [f for s in self.steps for f in s.failures]

    @property
    def bytes_sent(self) -> int:
        return sum(len(s.sent) for s in self.steps)

    @property
    def bytes_received(self) -> int:
        return sum(s.size for s in self.steps)


@dataclass
class UdpError(Exception):
    phase: str                   # "resolve", "connect", "send", "recv"
    exc: BaseException
    result: UdpResult
    timeout: float = 0.0

    @property
    def key(self) -> str:
        return errors.exception_key(self.exc)

    def __str__(self) -> str:
        r = self.result
        where = ""
        if len(r.steps) > 1:
            step = r.steps[-1]
            where = f"datagram {len(r.steps)}" + (f" ({step.label})" if step.label else "") + ": "
        words = errors.udp_words(self.key, r.address, self.timeout)
        if words is not None:
            return where + words
        what = {"resolve": "resolving", "connect": "connect (UDP) to", "send": "send to",
                "recv": "receive from"}.get(self.phase, self.phase)
        return where + errors.one_line(self.exc, f"{what} {format_addr(r.address)}", command="request")


def datagrams(host: str, port: int, payloads: Sequence[bytes], *, labels: Sequence[str] = (),
              timeout: float = 5.0, replies: bool = True, buffer: int = REPLY_BUFFER,
              match: Optional[bytes] = None, clock: Callable[[], float] = time.perf_counter) -> UdpResult:
    """Send each of ``payloads`` as one datagram to ``host:port`` and, with ``replies``, wait up
    to ``timeout`` for its reply (read into ``buffer`` bytes; ``match``: a bytes regex a reply
    must match, else a ``wrong-reply`` failure).  Raises :class:`UdpError`."""
    if not 0 < timeout:
        raise ValueError("a reply timeout must be above 0")
    for payload in payloads:
        if len(payload) > MAX_DATAGRAM:
            raise ValueError(f"a datagram holds at most {MAX_DATAGRAM:,} bytes, not {len(payload):,}")
    result = UdpResult(address=(host, port))
    started = clock()
    try:
        family, sockaddr = resolve(host, port)
    except OSError as exc:
        raise UdpError("resolve", exc, result) from None
    result.address = sockaddr
    pattern = re.compile(match, re.DOTALL) if match is not None else None
    buf = bytearray(buffer)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(sockaddr)      # no packet: the peer, for the kernel's filter and ICMP
            except OSError as exc:
                raise UdpError("connect", exc, result) from None
            result.local = sock.getsockname()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            for i, payload in enumerate(payloads):
                step = Datagram(label=labels[i] if i < len(labels) else "", sent=payload)
                result.steps.append(step)
                _exchange(sock, poller, step, buf, timeout, replies, pattern, clock, result)
    finally:
        result.total_s = clock() - started
    return result


def _exchange(sock, poller, step: Datagram, buf: bytearray, timeout: float, replies: bool,
              pattern, clock, result: UdpResult) -> None:
    view = memoryview(buf)
    try:
        while step.ignored < MAX_IGNORED:       # already here: not this request's reply
            sock.recvmsg_into([view], 0, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            step.ignored += 1
    except BlockingIOError:
        pass
    except OSError as exc:                      # an ICMP error for an earlier datagram
        raise UdpError("recv", exc, result, timeout) from None
    sent_at = clock()
    try:
        sock.send(step.sent)
    except OSError as exc:
        raise UdpError("send", exc, result, timeout) from None
    if not replies:
        return
    deadline = sent_at + timeout
    while True:
        left = deadline - clock()
        if left <= 0:
            raise UdpError("recv", errors.DatagramTimeout(f"no reply within {timeout:g}s"), result, timeout)
        if not poller.poll(left * 1000):
            continue
        try:
            size, _, flags, peer = sock.recvmsg_into([view], 0, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
        except BlockingIOError:
            continue
        except OSError as exc:                  # ECONNREFUSED: the ICMP port unreachable
            raise UdpError("recv", exc, result, timeout) from None
        break
    step.time_s = clock() - sent_at
    data = bytes(view[:min(size, len(buf))])
    step.received, step.size, step.peer = data, size, peer
    step.truncated = bool(flags & socket.MSG_TRUNC) or size > len(buf)
    summary = repr(data[:200]) + ("…" if len(data) > 200 else "")
    step.reply = Reply(size, summary, {"bytes": data})
    if step.truncated:
        step.failures.append(Failure(
            "truncated", f"a {size:,}-byte datagram read into a {len(buf):,}-byte buffer: the kernel "
                         f"cut it (MSG_TRUNC) and the other {size - len(buf):,} bytes are gone",
            data[:SAMPLE_BYTES]))
    if pattern is not None and pattern.search(data) is None:
        step.failures.append(Failure("wrong-reply", "did not match --reply-match", data[:SAMPLE_BYTES]))

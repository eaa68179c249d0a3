"""Reproduce the full-buffer stall on purpose and read the kernel's own numbers about it.

Strategy
--------
A nonblocking sender writes to a peer that does not read.  The peer's receive
queue fills, its advertised window drops to zero, our send queue fills behind
it, and ``send()`` raises ``BlockingIOError`` (EAGAIN).  :class:`Staller`
walks through that in explicit steps so tests can stop between them:

1. ``connect()`` - blocking connect with a timeout, then nonblocking.
   SO_SNDBUF is set *before* connect so the window scale is chosen for it.
2. ``fill()``    - send chunks until the first EAGAIN (or give up after
   ``timeout``: a peer that reads as fast as we write never blocks us).
3. ``settle()``  - data is still moving at the first EAGAIN (segments in
   flight, the receiver's queue being compacted, window updates after a zero
   window probe), so keep retrying until nothing has changed for ``settle``
   seconds: that is the steady state.
4. ``snapshot()``- the kernel's view of both ends: our socket by ioctl and
   TCP_INFO (:mod:`socktools.kernel.tcpinfo`), the receiver by its 4-tuple in the
   socket table (:mod:`socktools.kernel.socktable`, the same source as ``socktools
   sockets``), since it lives in another process.
5. ``drain()``   - tell the peer to read (a sink's SIGUSR1), and watch the
   queues empty and our socket turn writable (``EVENT_WRITE``).

What is sent is a :class:`~socktools.stall.payload.PayloadStream`: zeros, or a wire mode's
requests (made by the registry's builders, as flood and request make them).  After each
``send()`` one ``poll(0)`` asks whether the peer closed or reset; if it did, the run ends
there and :mod:`socktools.stall.answer` reads what it said: no buffer figures are taken.  The
connection may be TLS (a nonblocking ``ssl.SSLSocket``: ``SSLWantWriteError`` is its EAGAIN;
:mod:`socktools.stall.tlsview`) or a Unix-domain socket (:mod:`socktools.stall.unixview`).

The peer is injectable: anything with ``address`` and ``drain()``.  By default
:func:`run_stall` starts the real ``socktools serve --mode sink`` in a child
process (:class:`socktools.core.embedded.EmbeddedServer`).  Nothing here prints;
results are the frozen dataclasses of :mod:`socktools.stall.results`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import select
import selectors
import socket
import ssl
import time
from typing import Any, Callable, Optional, Protocol

from socktools.kernel import socktable, tcpinfo
from socktools.addresses import format_addr, resolve
from socktools.errors import errno_name
from socktools.stall.answer import GONE, PEER_GONE, gone, read_answer
from socktools.stall.payload import PayloadStream
from socktools.stall.tlsview import SYN_ACKED, ciphertext_written, records_of, tls_view
from socktools.stall.unixview import read_unix_queues, unix_snapshot
from socktools.stall.config import (DEFAULT_CHUNK, DEFAULT_SETTLE, DEFAULT_TIMEOUT,  # noqa: F401
                                    StallConfig)
from socktools.stall.results import (Arithmetic, DrainResult, DrainSample, FillResult, PeerInfo,
                                     PeerAnswer, PersistState, ReceiverView, SenderView, SettleResult,
                                     Snapshot, StallReport, TableRow, TlsView)

__all__ = ["StallConfig", "StallError", "Peer", "TargetPeer", "Staller", "run_stall",
           "StallReport", "DEFAULT_CHUNK", "DEFAULT_SETTLE", "DEFAULT_TIMEOUT"]

#: The two refusals that mean "the kernel's send buffer is full, not now": plaintext, and
#: the same EAGAIN seen through OpenSSL on a nonblocking SSLSocket.
_REFUSED = (BlockingIOError, ssl.SSLWantWriteError)


def make_payload(config: StallConfig) -> PayloadStream:
    """What to repeat: ``config.spec``'s requests (built by the wire modes), or zeros."""
    if config.spec is None:
        return PayloadStream.repeat(b"\0", config.chunk)
    from socktools.wire.spec import build
    proto = build(config.spec)
    label = proto.describe()
    summary = config.spec.summary()
    if config.spec.mode in ("raw", "line"):     # their describe() names the framing, not the bytes
        file_bytes = summary.get("send_file_bytes")
        label = f"{config.spec.mode}, " + (f"{file_bytes:,} bytes from a file" if file_bytes is not None
                                           else " | ".join(f"`{t}`" for t in summary.get("send", ())))
    return PayloadStream.requests(proto, config.chunk, label=label)


class StallError(Exception):
    """A step failed; ``what`` says which ("connect to 127.0.0.1:9"), ``cause`` is the OSError."""

    def __init__(self, what: str, cause: Optional[BaseException] = None, message: str = "") -> None:
        super().__init__(message or f"{what}: {cause}")
        self.what = what
        self.cause = cause


class Peer(Protocol):
    """The other end: where to connect, and how to make it start reading."""

    address: Any

    def drain(self) -> None: ...


class TargetPeer:
    """A server the user named: stall can connect to it but cannot make it read."""

    def __init__(self, address: Any) -> None:
        self.address = address

    def drain(self) -> None:
        raise StallError("drain", message="cannot make another program read: --drain needs the embedded sink")


def describe_peer(peer: Any, kind: str) -> PeerInfo:
    """What we know about the peer: its command, pid and effective SO_RCVBUF if it told us."""
    listening = next((e for e in getattr(peer, "events", ()) if e.get("event") == "listening"), {})
    return PeerInfo(kind=kind, address=format_addr(peer.address),
                    command=getattr(peer, "display_command", None) if kind == "embedded" else None,
                    pid=listening.get("pid"),
                    rcvbuf=listening.get("rcvbuf") or getattr(peer, "rcvbuf", None))


def _norm_host(host: str) -> str:
    """``::ffff:127.0.0.1`` -> ``127.0.0.1``, so both spellings of one address compare equal."""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return str(host)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


class Staller:
    """One stalled connection, step by step; use as a context manager (closes the socket).

    ``find_socket`` is the socket-table lookup (injectable for tests of the arithmetic).
    """

    def __init__(self, config: StallConfig, peer: Any, *, peer_info: Optional[PeerInfo] = None,
                 clock: Callable[[], float] = time.perf_counter,
                 find_socket: Callable[..., Any] = socktable.find_socket,
                 payload: Optional[PayloadStream] = None) -> None:
        self.config = config
        self.peer = peer
        self.peer_info = peer_info or describe_peer(peer, "injected")
        self.clock = clock
        self.find_socket = find_socket
        self.sock: Optional[socket.socket] = None
        self.connected_at = 0.0
        self.local: Any = None
        self.remote: Any = None
        self.accepted = 0           # bytes send() accepted, over all steps
        self.fill_result: Optional[FillResult] = None
        self.settle_result: Optional[SettleResult] = None
        self.snapshot_result: Optional[Snapshot] = None
        self.drain_result: Optional[DrainResult] = None
        self.stream = payload or PayloadStream.repeat(b"\0", config.chunk)
        self.answer: Optional[PeerAnswer] = None
        self.tls_view: Optional[TlsView] = None
        self.tls_info: Optional[dict] = None
        self._tls_base: Optional[int] = None   # ciphertext our kernel took by the handshake's end
        self._poll: Any = None
        self._step = "fill"
        self._records = 0                      # TLS records of what send() accepted

    # ------------------------------------------------------------------ steps
    @property
    def unix(self) -> bool:
        return self.sock is not None and self.sock.family == socket.AF_UNIX

    def connect(self) -> None:
        """Connect (blocking, bounded; with TLS, the handshake too), then switch to nonblocking."""
        if isinstance(self.peer.address, (str, bytes)):     # a Unix-domain socket's path
            family, sockaddr, host = socket.AF_UNIX, self.peer.address, "localhost"
        else:
            host, port = str(self.peer.address[0]), int(self.peer.address[1])
            try:
                family, sockaddr = resolve(host, port)
            except OSError as exc:
                raise StallError(f"resolve {host!r}", exc,
                                 f"cannot resolve {host!r}: {exc.strerror or exc}") from exc
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.config.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.sndbuf)
            sock.settimeout(self.config.connect_timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            raise StallError(f"connect to {format_addr(sockaddr)}", exc) from exc
        local, remote = sock.getsockname(), sock.getpeername()
        tls = self.config.tls
        if tls is not None and tls.enabled:
            sock = self._handshake(sock, tls, host, sockaddr)
        sock.setblocking(False)
        self.sock, self.local, self.remote = sock, local, remote
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | GONE)
        self.connected_at = self.clock()

    def _handshake(self, sock: socket.socket, tls: Any, host: str, sockaddr: Any) -> Any:
        """The TLS handshake, blocking under the connect timeout; the SSLSocket."""
        from socktools.tlsconf import client_context, negotiated, server_name
        name = server_name(tls, host)
        try:
            tsock = client_context(tls).wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            sock.close()
            raise StallError(f"TLS setup for {format_addr(sockaddr)}", exc) from exc
        try:
            tsock.do_handshake()
        except OSError as exc:
            tsock.close()
            raise StallError(f"TLS handshake with {format_addr(sockaddr)}", exc) from exc
        self.tls_info = {**negotiated(tsock), "server_name": name}
        self._tls_base = ciphertext_written(tsock)
        return tsock

    def _gone(self) -> bool:
        return gone(self._poll)

    def _peer_closed(self, exc: Optional[BaseException], accepted: int) -> None:
        """The peer closed or reset: read what it answered (bounded) and record it."""
        self.answer = read_answer(self.sock, self._poll, self.clock,
                                  mode=self.config.spec.mode if self.config.spec is not None else None,
                                  step=self._step, exc=exc, accepted=accepted)

    def _send_until_blocked(self, deadline: float) -> tuple[int, int, int, Optional[OSError]]:
        """send() chunks until EAGAIN or ``deadline``, or until the peer closes (then
        ``self.answer`` says what it answered): (bytes, sends, partial sends, the refusal)."""
        assert self.sock is not None
        total = sends = partial = 0
        while self.clock() < deadline and self.answer is None:
            view = self.stream.view()
            try:
                n = self.sock.send(view)
            except _REFUSED as exc:
                if self._gone():
                    self._peer_closed(None, self.accepted + total)
                return total, sends, partial, exc
            except PEER_GONE as exc:
                self._peer_closed(exc, self.accepted + total)
                break
            except OSError as exc:
                raise StallError(f"send to {format_addr(self.remote)}", exc) from exc
            self.stream.advance(n)
            if self.tls_info is not None:
                self._records += records_of(n)
            total += n
            sends += 1
            partial += n < len(view)
            if self._gone():
                self._peer_closed(None, self.accepted + total)
        return total, sends, partial, None

    def fill(self) -> FillResult:
        """Send until the first ``BlockingIOError``; record how much the kernels took and how fast."""
        start = self.clock()
        total, sends, partial, exc = self._send_until_blocked(start + self.config.timeout)
        self.accepted += total
        if isinstance(exc, ssl.SSLWantWriteError):
            # its errno is OpenSSL's SSL_ERROR_WANT_WRITE (3), not an errno: named as OpenSSL does
            num, name = None, "SSL_ERROR_WANT_WRITE"
        else:
            num = exc.errno if exc is not None else None
            name = errno_name(num) if num else None
        self.fill_result = FillResult(
            blocked=exc is not None, bytes=total, sends=sends, partial_sends=partial,
            seconds=self.clock() - start, errno=num, errno_name=name,
            exception=type(exc).__name__ if exc else None, message=str(exc) if exc else None)
        return self.fill_result

    def _queues(self) -> tcpinfo.Queues:
        """Our queues: TCP's three ioctls, or for AF_UNIX the two Linux has (SIOCINQ: bytes
        in our receive queue; SIOCOUTQ: memory our sent bytes still hold, see docs/stall.md)."""
        if not self.unix:
            return tcpinfo.read_queues(self.sock)
        return read_unix_queues(self.sock)

    def _fingerprint(self) -> tuple:
        q = self._queues()
        info, _ = tcpinfo.read_tcp_info(self.sock) if not self.unix else (None, "")
        return (q.send_q, q.notsent, info.get("snd_wnd") if info else None)

    def settle(self) -> SettleResult:
        """Retry until nothing changes for ``config.settle`` seconds (or ``timeout`` passes)."""
        assert self.sock is not None
        self._step = "settle"
        start = self.clock()
        deadline = start + self.config.timeout
        extra = extra_sends = 0
        last = self._fingerprint()
        quiet_since = start
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            while True:
                now = self.clock()
                if self.answer is not None:     # the peer closed: there is nothing to settle
                    steady = False
                    break
                if now - quiet_since >= self.config.settle:
                    steady = True
                    break
                if now >= deadline:
                    steady = False
                    break
                # Writable wakes us early; otherwise we still retry each interval, because a
                # send() can succeed before the socket counts as "writable" (Linux wants a
                # third of the buffer free for EVENT_WRITE, not one byte).
                sel.select(min(self.config.sample_interval, deadline - now))
                n, sends, _, _ = self._send_until_blocked(deadline)
                self.accepted += n      # now, so a peer that closes is told what it had been sent
                extra += n
                extra_sends += sends
                fp = self._fingerprint()
                if n or fp != last:
                    last, quiet_since = fp, self.clock()
        self.settle_result = SettleResult(steady=steady, seconds=self.clock() - start,
                                          extra_bytes=extra, extra_sends=extra_sends,
                                          total_accepted=self.accepted)
        return self.settle_result

    def _entries(self, *, sender: bool = True, processes: bool = False
                 ) -> tuple[Optional[socktable.SocketEntry], Optional[socktable.SocketEntry], str]:
        """(our entry, the receiver's entry, why the table could not be read) by 4-tuple."""
        try:
            ours = (self.find_socket(self.local, self.remote, processes=False, tcp_info=False)
                    if sender else None)
            theirs = self.find_socket(self.remote, self.local, processes=processes, tcp_info=False)
        except socktable.SocketTableUnavailable as exc:
            return None, None, str(exc)
        except OSError as exc:
            return None, None, f"cannot read the socket table: {exc}"
        return ours, theirs, ""

    def _listener(self) -> Optional[socktable.SocketEntry]:
        try:
            port = int(self.remote[1])
            rows = socktable.read_sockets(port=port, listening=True)
        except (socktable.SocketTableUnavailable, OSError):
            return None
        host = _norm_host(self.remote[0])
        exact = [e for e in rows if e.local[1] == port and _norm_host(e.local[0]) == host]
        wild = [e for e in rows if e.local[1] == port and e.local[0] in ("0.0.0.0", "::")]
        return (exact or wild or [None])[0]

    def snapshot(self) -> Snapshot:
        """The kernel's view of both ends now (call it once the queues have settled)."""
        assert self.sock is not None
        if self.tls_info is not None:
            now = ciphertext_written(self.sock)
            written = None if now is None or self._tls_base is None else now - self._tls_base
            handshake = None if self._tls_base is None else self._tls_base - SYN_ACKED
            self.tls_view = tls_view(self.tls_info, written, self.accepted, self._records,
                                     len(self.stream.view()), handshake)
        at = self.clock()
        if self.unix:
            self.snapshot_result = unix_snapshot(self.sock, self.local, self.remote, self.accepted,
                                                 self.config.sndbuf, at - self.connected_at)
            return self.snapshot_result
        q = tcpinfo.read_queues(self.sock)
        info, info_reason = tcpinfo.read_tcp_info(self.sock)
        bufs = tcpinfo.read_buffers(self.sock)
        snd_wnd = info.get("snd_wnd") if info else None
        persist = PersistState(
            zero_window=None if snd_wnd is None else snd_wnd == 0,
            probes=info.get("probes") if info else None, backoff=info.get("backoff") if info else None,
            probing=None if snd_wnd is None or q.notsent is None else (snd_wnd == 0 and q.notsent > 0),
            unavailable="" if snd_wnd is not None else (
                info.unavailable_reason("snd_wnd") if info else info_reason))
        sender = SenderView(
            local=format_addr(self.local), remote=format_addr(self.remote),
            sndbuf_requested=self.config.sndbuf, sndbuf=bufs.sndbuf, rcvbuf=bufs.rcvbuf,
            send_q=q.send_q, unacked_bytes=q.unacked, notsent_bytes=q.notsent, recv_q=q.recv_q,
            queues_unavailable=q.reason, tcp_info=info, tcp_info_unavailable=info_reason,
            persist=persist)
        s_entry, r_entry, reason = self._entries(processes=True)
        receiver = self._receiver_view(r_entry, reason)
        me = ((os.getpid(), "this process"),)
        table = [TableRow.from_entry(e, role, pids) for e, role, pids in
                 ((r_entry, "receiver", ()), (s_entry, "sender", me),
                  (self._listener(), "listener", ())) if e]
        recv_q = r_entry.recv_q if r_entry else None
        returning = (r_entry.send_q or 0) + (q.recv_q or 0) if r_entry else None
        written = self.tls_view.ciphertext_written if self.tls_view is not None else None
        if written is not None:     # the queues hold TLS records: count those
            arithmetic = Arithmetic.of(written, recv_q, q.send_q, returning, "TLS record bytes")
        else:
            arithmetic = Arithmetic.of(self.accepted, recv_q, q.send_q, returning)
        source = ""
        with contextlib.suppress(socktable.SocketTableUnavailable, OSError):
            source = socktable.resolve_source()
        self.snapshot_result = Snapshot(
            seconds=at - self.connected_at, sender=sender, receiver=receiver, table=table,
            table_source=source, arithmetic=arithmetic,
            table_sender_send_q=s_entry.send_q if s_entry else None)
        return self.snapshot_result

    def _receiver_view(self, entry: Optional[socktable.SocketEntry], reason: str) -> ReceiverView:
        info = self.peer_info
        rcvbuf_source = "" if not info.rcvbuf else (
            "the sink's listening socket (accepted sockets inherit it)" if info.kind == "embedded"
            else "the peer")
        if entry is None:
            why = reason or ("not in this machine's socket table: the peer is on another host, "
                             "in another network namespace, or already closed")
            return ReceiverView(found=False, reason=why, rcvbuf=info.rcvbuf,
                                rcvbuf_requested=self.config.rcvbuf, rcvbuf_source=rcvbuf_source)
        return ReceiverView(found=True, reason="", local=format_addr(entry.local),
                            remote=format_addr(entry.remote), state=entry.state,
                            recv_q=entry.recv_q, send_q=entry.send_q,
                            pids=tuple(entry.pids), rcvbuf=info.rcvbuf,
                            rcvbuf_requested=self.config.rcvbuf, rcvbuf_source=rcvbuf_source)

    def _sample(self, t: float, writable: bool) -> DrainSample:
        q = tcpinfo.read_queues(self.sock)
        info, _ = tcpinfo.read_tcp_info(self.sock)
        _, r_entry, _ = self._entries(sender=False)
        return DrainSample(t=t, sender_send_q=q.send_q, sender_notsent=q.notsent,
                           receiver_recv_q=r_entry.recv_q if r_entry else None, writable=writable,
                           snd_wnd=info.get("snd_wnd") if info else None)

    def drain(self) -> DrainResult:
        """Make the peer read; sample until our socket is writable and both queues are empty."""
        assert self.sock is not None
        samples = [self._sample(0.0, False)]
        start = self.clock()
        try:
            self.peer.drain()
        except OSError as exc:
            raise StallError("tell the peer to drain", exc) from exc
        deadline = start + self.config.timeout
        # Poll our own Send-Q often (one cheap ioctl) so the times are sharp; record a full
        # sample (which also reads the receiver from the socket table) every sample_interval
        # and at each event: became writable, Send-Q reached 0.
        tick = self.config.sample_interval / 10
        writable_at = sender_empty_at = receiver_empty_at = None
        next_sample = start + self.config.sample_interval
        completed = False
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            while self.clock() < deadline:
                if writable_at is None:
                    ready = sel.select(tick)
                else:
                    time.sleep(tick)        # stays writable now: polling it would spin
                    ready = []
                now = self.clock()
                event = False
                if ready:
                    writable_at, event = now - start, True
                    sel.unregister(self.sock)
                if sender_empty_at is None and tcpinfo.read_queues(self.sock).send_q == 0:
                    sender_empty_at, event = now - start, True
                if not (event or now >= next_sample):
                    continue
                sample = self._sample(now - start, writable_at is not None)
                samples.append(sample)
                next_sample = now + self.config.sample_interval
                if receiver_empty_at is None and sample.receiver_recv_q == 0:
                    receiver_empty_at = sample.t
                if (writable_at is not None and sample.sender_send_q == 0
                        and sample.receiver_recv_q in (0, None)):
                    completed = True
                    break
        self.drain_result = DrainResult(
            completed=completed, seconds=self.clock() - start, writable_after=writable_at,
            sender_empty_after=sender_empty_at, receiver_empty_after=receiver_empty_at,
            final_writable=self._writable_now(), samples=samples)
        return self.drain_result

    def _writable_now(self) -> bool:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            return bool(sel.select(0))

    # ------------------------------------------------------------------ result
    def report(self) -> StallReport:
        assert self.fill_result is not None
        family = {socket.AF_INET6: "IPv6", socket.AF_UNIX: "Unix"}.get(
            self.sock.family if self.sock else socket.AF_INET, "IPv4")
        transport = "unix" if family == "Unix" else ("tls" if self.tls_info is not None else "tcp")
        return StallReport(config=self.config, peer=self.peer_info,
                           local=format_addr(self.local) or "(unnamed)", remote=format_addr(self.remote),
                           family=family, fill=self.fill_result, settle=self.settle_result,
                           snapshot=self.snapshot_result, drain=self.drain_result,
                           transport=transport, payload=self.stream.label or "zeros",
                           whole_requests=self.stream.whole_requests, answer=self.answer,
                           tls=self.tls_view)

    def close(self) -> None:
        """Close; abortively (RST) if data is still queued, so no orphan keeps probing a full peer."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            if tcpinfo.read_queues(sock).send_q:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()

    def __enter__(self) -> "Staller":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_stall(config: StallConfig, *, peer: Any = None) -> StallReport:
    """Stall a connection and report.  ``peer=None``: the embedded sink, or the server at
    ``config.port`` / ``config.unix``.  A peer that answers and closes or resets ends the run
    early: the report's ``answer`` says what it said, and no buffer figures are taken.

    Raises :class:`StallError` (connect refused, a failed handshake...) and
    ``socktools.core.embedded.EmbeddedServerError`` if the embedded sink cannot start.
    """
    payload = make_payload(config)
    with contextlib.ExitStack() as stack:
        if peer is not None:
            info = describe_peer(peer, "injected")
        elif config.external:
            peer = TargetPeer(config.unix if config.unix is not None else (config.host, config.port))
            info = describe_peer(peer, "target")
        else:
            from socktools.core.embedded import EmbeddedServer
            try:  # the sink is given a numeric address: names can resolve differently per run
                host = resolve(config.host, 0, passive=True)[1][0]
            except OSError as exc:
                raise StallError(f"resolve {config.host!r}", exc,
                                 f"cannot resolve {config.host!r}: {exc.strerror or exc}") from exc
            args = ["--rcvbuf", str(config.rcvbuf)] if config.rcvbuf else []
            tls = config.tls is not None and config.tls.enabled
            if tls:     # the sink over TLS, with a throwaway certificate it makes and names
                args.append("--tls-self-signed")
            peer = stack.enter_context(EmbeddedServer(mode="sink", host=host, args=args))
            if tls and not (config.tls.cafile or config.tls.capath or config.tls.insecure):
                # trust exactly the sink's certificate, as its "listening" event names it
                cert = next(e["tls"]["cert"] for e in peer.events if e.get("event") == "listening")
                config = dataclasses.replace(config, tls=dataclasses.replace(config.tls, cafile=cert))
            info = describe_peer(peer, "embedded")
        staller = stack.enter_context(Staller(config, peer, peer_info=info, payload=payload))
        staller.connect()
        if staller.fill().blocked and staller.answer is None:
            staller.settle()
            if staller.answer is None:
                staller.snapshot()
                if config.drain:
                    staller.drain()
        elif staller.answer is None:
            staller.snapshot()
        return staller.report()

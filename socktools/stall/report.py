"""Render what ``socktools stall`` measured as the text a person reads.

A view only: it reads the frozen records of :mod:`socktools.stall.results`
(and the advice texts of :mod:`socktools.errors`); the JSON view is the
records' own ``to_dict()``.  The CLI prints what this returns.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_report", "render_fill", "render_table", "render_arithmetic", "render_drain",
           "render_explanation", "keeps_up", "KEEPS_UP_FACTOR", "render_answer", "answer_line",
           "tls_layers", "TLS_READ_AHEAD", "TLS_UNASKED"]

_SCALE = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))

#: A peer that, while the queues would not settle, took more than this many times what both
#: socket buffers hold was reading as fast as we wrote: the EAGAINs were moments between two
#: of its reads, not a full pipe.  (The fast reader of issue 21 took ~70 times its buffers in
#: 2 s; a slow one, 4 KiB every 5 ms, takes less than one.)
KEEPS_UP_FACTOR = 4


#: What a TLS peer's own layer may take from the kernel in the read that completes the
#: handshake, before its application stops reading: records read ahead into its buffer, not
#: read by the application.  socktools serve's TLS sink reads 64 KiB at a time, and was seen
#: to take 65,536 - 80 bytes (the client's last flight, then our first records) in that read.
TLS_READ_AHEAD = 1 << 16
#: What a TLS 1.3 server sends after the handshake without being asked, which this client
#: never reads and so sees waiting in its Recv-Q: NewSessionTicket messages (OpenSSL sends two,
#: about 255 bytes each).  Up to this much coming back is the TLS layer's, not an answer.
TLS_UNASKED = 4096


def tls_layers(transport: str, arithmetic: Any, steady: bool) -> tuple:
    """Bytes that are the TLS layers' own, not the applications': ``(read ahead by the peer's
    TLS layer, unasked post-handshake messages waiting for us)`` -- (0, 0) unless over TLS."""
    a = arithmetic
    if transport != "tls" or a is None or a.difference is None:
        return 0, 0
    ahead = -a.difference if steady and 0 < -a.difference <= TLS_READ_AHEAD else 0
    unasked = a.returning if a.returning and a.returning <= TLS_UNASKED else 0
    return ahead, unasked


def _read_by_peer(r):
    """Bytes the peer application took (accepted, and in neither queue), or None."""
    a = r.snapshot.arithmetic if r.snapshot is not None else None
    if a is None or a.difference is None or a.difference >= 0:
        return None
    return -a.difference


def keeps_up(r) -> bool:
    """True when the queues never settled because the peer reads all we write (KEEPS_UP_FACTOR)."""
    read = _read_by_peer(r)
    if r.settle is None or r.settle.steady or read is None:
        return False
    snap = r.snapshot
    held = (snap.sender.sndbuf or 0) + (snap.receiver.rcvbuf or snap.sender.rcvbuf or 0)
    return read > KEEPS_UP_FACTOR * max(held, 1)


def _n(value) -> str:
    """Bytes with thousands separators; ``?`` for unavailable."""
    return "?" if value is None else f"{value:,}"


def _ms(seconds) -> str:
    if seconds is None:
        return "?"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _calls(n: int) -> str:
    return f"{n} send() call" + ("" if n == 1 else "s")


def _human(value: int) -> str:
    for unit, size in _SCALE:
        if value >= size:
            return f"{value / size:.1f} {unit}" if value % size else f"{value // size} {unit}"
    return f"{value} bytes"


def _buffer_line(name: str, effective, requested, reported_by: str = "", unix: bool = False) -> str:
    if effective is None:
        return f"    {name:<13} unavailable"
    if reported_by:
        why = f"as {reported_by} reports it; Linux doubles what is set"
    elif requested:
        why = f"set {_n(requested)}: Linux doubles what you set, to cover its bookkeeping"
    elif unix:
        why = "not set: net.core.wmem_default, a Unix socket's default"
    elif name == "SO_SNDBUF":
        why = "not set: autotuned, up to net.ipv4.tcp_wmem's maximum"
    else:
        why = "not set: net.ipv4.tcp_rmem's default"
    return f"    {name:<13} {_n(effective):>11}  ({why})"


def render_fill(r) -> list[str]:
    f, s = r.fill, r.settle
    lines = ["", "1. Fill: send() until the kernel refuses"]
    if not f.blocked:
        why = "until the peer closed" if r.answer is not None else "- the peer is reading"
        lines.append(f"  send() never blocked: {_n(f.bytes)} bytes accepted in {_ms(f.seconds)} "
                     f"({f.sends} sends) {why}")
        return lines
    alias = " (EWOULDBLOCK is the same number)" if f.errno_name == "EAGAIN" else ""
    lines.append(f"  {f.exception}: {f.message}")
    if f.errno is None:     # SSLWantWriteError: OpenSSL's error code, not an errno
        lines.append(f"  = {f.errno_name}: the kernel's EAGAIN under OpenSSL (plaintext send() raises "
                     "BlockingIOError here)")
    else:
        lines.append(f"  = {f.errno_name}, errno {f.errno}{alias}")
    lines.append(f"  after {_n(f.bytes)} bytes ({_human(f.bytes)}) in {_calls(f.sends)} "
                 f"({f.partial_sends} partial), {_ms(f.seconds)} after the first one")
    if s is not None:
        more = (f"+{_n(s.extra_bytes)} bytes in {_calls(s.extra_sends)}"
                if s.extra_bytes else "no more bytes")
        if r.answer is not None:
            state = f"then the peer closed ({_ms(s.seconds)})"
        elif s.steady:
            state = f"steady after {_ms(s.seconds)}"
        elif keeps_up(r):
            rate = s.extra_bytes / s.seconds if s.seconds > 0 else 0
            state = (f"still moving when the timeout passed ({_ms(s.seconds)}): the peer reads "
                     f"everything, it keeps up ({_human(int(rate))}/s)")
        else:
            state = (f"still moving when the timeout passed ({_ms(s.seconds)}): the peer reads, "
                     f"more slowly than we write")
        lines.append(f"  retried until nothing moved for {r.config.settle:g} s: {more}; {state}")
        lines.append(f"  accepted in total: {_n(s.total_accepted)} bytes")
    return lines


def _sender_lines(snap, unix: bool = False) -> list[str]:
    sv = snap.sender
    out = [f"  sender (this process)  {sv.local}",
           _buffer_line("SO_SNDBUF", sv.sndbuf, sv.sndbuf_requested, unix=unix)]
    if sv.send_q is None:
        out.append(f"    Send-Q        {sv.queues_unavailable}")
    elif unix:
        out.append(f"    Send-Q        {_n(sv.send_q):>11}  (SIOCOUTQ on a Unix socket: memory, not bytes - what the "
                   "bytes we sent, bookkeeping included, still charge to our SO_SNDBUF while they wait "
                   "in the receiver's queue)")
        out.append(f"    Recv-Q        {_n(sv.recv_q):>11}  (SIOCINQ: bytes the peer sent us, unread)")
        out.append(f"    TCP_INFO      {sv.tcp_info_unavailable}")
        return out
    else:
        out.append(f"    Send-Q        {_n(sv.send_q):>11}  = sent, not yet acknowledged {_n(sv.unacked_bytes)}"
                   f" + not yet sent {_n(sv.notsent_bytes)}")
    p, info = sv.persist, sv.tcp_info
    if info is None:
        out.append(f"    TCP_INFO      {sv.tcp_info_unavailable}")
        return out
    if p.zero_window is None:
        out.append(f"    peer window   unavailable: {p.unavailable}")
    else:
        note = "the receiver has no room: zero window" if p.zero_window else "the receiver still has room"
        out.append(f"    peer window   {_n(info.get('snd_wnd')):>11}  ({note}; tcpi_snd_wnd)")
    if p.probing:
        out.append(f"    persist timer probing the zero window: backoff {p.backoff} (doublings so far), "
                   f"{p.probes} probe(s) unanswered")
    elif p.zero_window is not None:
        out.append(f"    persist timer not running (backoff {p.backoff}, probes {p.probes})")
    out.append(f"    TCP_INFO      state {info.state_name}, rtt {_n(info.get('rtt'))} us, "
               f"cwnd {_n(info.get('snd_cwnd'))} segments, unacked {_n(info.get('unacked'))} segments, "
               f"notsent {_n(info.get('notsent_bytes'))} bytes, mss {_n(info.get('snd_mss'))}")
    return out


def _receiver_lines(r, snap) -> list[str]:
    rv = snap.receiver
    who = "sink" if r.peer.kind == "embedded" else "peer"
    pid = f", pid {r.peer.pid}" if r.peer.pid else ""
    out = [f"  receiver ({who}{pid})  {rv.local or r.remote}"]
    if rv.rcvbuf is not None:
        out.append(_buffer_line("SO_RCVBUF", rv.rcvbuf, rv.rcvbuf_requested,
                                "" if r.peer.kind == "embedded" else "the peer"))
    else:
        out.append("    SO_RCVBUF     unavailable (another program's socket)")
    if rv.found:
        out.append(f"    Recv-Q        {_n(rv.recv_q):>11}  (arrived, not read by the application)")
    else:
        out.append(f"    Recv-Q        unavailable: {rv.reason}")
    return out


def render_table(snap) -> list[str]:
    head = ["Proto", "Recv-Q", "Send-Q", "Local Address", "Foreign Address", "State", ""]
    rows = []
    for row in snap.table:
        pids = ", ".join(f"pid {pid}, {name}" for pid, name in row.pids)
        label = row.role + (" (Send-Q: backlog)" if row.state == "LISTEN" else "")
        label += f" ({pids})" if pids else ""
        rows.append([row.proto, str(row.recv_q), "-" if row.send_q is None else str(row.send_q),
                     row.local, row.foreign, row.state, label])
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]

    def fmt(cells):
        return "  " + "  ".join(c.rjust(widths[i]) if i in (1, 2) else c.ljust(widths[i])
                                for i, c in enumerate(cells)).rstrip()
    out = [fmt(head), *(fmt(x) for x in rows)]
    src = {"netlink": "NETLINK_SOCK_DIAG, as ss reads it", "proc": "/proc/net/tcp, as netstat reads it"}
    agree = ""
    if snap.table_sender_send_q is not None and snap.sender.send_q is not None:
        agree = ("; the sender's Send-Q by ioctl agrees" if snap.table_sender_send_q == snap.sender.send_q
                 else f"; the sender's Send-Q by ioctl was {_n(snap.sender.send_q)} a moment earlier")
    out.append(f"  (from {src.get(snap.table_source, 'the socket table')}{agree})")
    return out


def render_arithmetic(a, unix: bool = False) -> list[str]:
    if unix and a.difference is not None:
        read = f" + {_n(-a.difference)} read by the peer" if a.difference < 0 else ""
        out = [f"  accepted {_n(a.accepted)} = receiver Recv-Q {_n(a.receiver_recv_q)}{read}   "
               f"(difference {a.difference:,})",
               "  a Unix socket has no send queue of its own: send() appends the bytes to the receiver's "
               "queue, so every byte the peer has not read is there"]
        if a.returning:
            out.append(f"  and {_n(a.returning)} bytes the peer sent wait unread in our receive queue")
        return out
    if a.difference is None:
        return [f"  accepted {_n(a.accepted)} bytes; the receiver's Recv-Q is unavailable, "
                "so the sum cannot be checked"]
    what = a.counted
    if a.difference < 0:    # said as the bytes the peer took: a negative "difference" reads as a loss
        out = [f"  {what} {_n(a.accepted)} = receiver Recv-Q {_n(a.receiver_recv_q)} + sender Send-Q "
               f"{_n(a.sender_send_q)} + {_n(-a.difference)} read by the peer (or in flight)"]
    else:
        out = [f"  {what} {_n(a.accepted)} = receiver Recv-Q {_n(a.receiver_recv_q)} + sender Send-Q "
               f"{_n(a.sender_send_q)}   (difference {a.difference:,})"]
    if a.difference == 0:
        out.append("  every byte send() accepted sits in one of the two queues: nothing lost, nothing in flight"
                   if what == "accepted" else
                   "  every TLS record byte our kernel took sits in one of the two queues: nothing lost, "
                   "nothing in flight")
    elif a.difference > 0:
        out.append(f"  {_n(a.difference)} bytes are counted twice: the receiver has them, but their ACK has not "
                   "reached the sender yet (delayed or in flight), so they are still in its Send-Q too")
    else:
        out.append(f"  {_n(-a.difference)} bytes are in neither queue: the peer application read them "
                   "(or they are still in flight)" + ("; over TLS, its TLS layer may have read records "
                                                      "ahead of its application" if a.counted != "accepted"
                                                      else ""))
        if a.returning:
            out.append(f"  and {_n(a.returning)} bytes are on their way back to us (its Send-Q + our Recv-Q): "
                       "it answers, and we never read the answers")
    return out


def render_drain(d) -> list[str]:
    out = ["", "3. Drain: the sink starts reading",
           "    t (ms)  sender Send-Q   not sent  receiver Recv-Q  peer window  writable"]
    for s in d.samples:
        out.append(f"  {s.t * 1000:8.1f}  {_n(s.sender_send_q):>13}  {_n(s.sender_notsent):>9}  "
                   f"{_n(s.receiver_recv_q):>15}  {_n(s.snd_wnd):>11}  {'yes' if s.writable else 'no'}")
    if d.completed:
        empty = max(d.sender_empty_after or 0, d.receiver_empty_after or 0)
        out.append(f"  writable again (EVENT_WRITE) {_ms(d.writable_after)} after the sink was told to read; "
                   f"both queues empty after {_ms(empty)}")
    else:
        out.append(f"  not finished after {_ms(d.seconds)}: writable {'yes' if d.final_writable else 'no'}, "
                   f"queues as in the last line")
    return out


def render_explanation(r) -> list[str]:
    from socktools.errors import lookup
    from socktools.stall.results import Arithmetic
    exp = lookup("EAGAIN")
    snap, f = r.snapshot, r.fill
    rv = snap.receiver if snap else None
    lines = ["", "What happened"]
    a = snap.arithmetic
    ahead, unasked = tls_layers(r.transport, a, r.settle is None or r.settle.steady)
    if ahead or unasked:    # the TLS layers' own bytes: judged without them
        a = Arithmetic.of(a.accepted - ahead, a.receiver_recv_q, a.sender_send_q,
                          (a.returning or 0) - unasked, a.counted)
    if r.transport == "unix" and (a.difference is None or a.difference >= 0):
        lines += _wrap(
            "The peer accepted the connection and never called recv().  On a Unix-domain socket "
            "send() puts the bytes straight into the peer's receive queue (there are no packets, no "
            "window and no ACKs); the kernel charges them to our SO_SNDBUF until the peer reads, and "
            f"once that charge reached it, send() raised {f.exception} ({f.errno_name}): {exp.meaning}.  "
            "Nothing is broken: the next read by the peer frees room at once.")
        return lines + _advice(exp, r)
    if a.difference is not None and a.difference < 0 and a.returning and r.settle is not None \
            and not r.settle.steady:
        lines += _wrap(
            f"The peer reads everything - it took {_n(-a.difference)} bytes - and answers, and this "
            "program never reads the answers.  They filled our receive queue and the peer's send queue, "
            "and still the peer did not stop reading: it keeps the answers it cannot send in its own "
            "memory (redis does: its client-output-buffer-limit for normal clients is none by default, "
            f"so its memory grows as long as this runs).  send() raised {f.exception} ({f.errno_name}) "
            "only for moments, and the queues never stood still.  That is no full buffer: read the "
            "answers, or give the peer a limit (redis: CONFIG SET client-output-buffer-limit "
            "\"normal 1mb 0 0\", after which it closes the connection, as stall then says).")
        return lines + _advice(exp, r)
    if a.difference is not None and a.difference < 0 and a.returning:
        lines += _wrap(
            f"The peer does read - it took {_n(-a.difference)} bytes - but it answers, and this program "
            "never reads the answers.  They filled our receive queue and the peer's send queue, the "
            "peer stopped reading because it could not write (back-pressure, as it should), and from "
            f"then on it was a peer that does not read: our Send-Q filled and send() raised "
            f"{f.exception} ({f.errno_name}): {exp.meaning}.  Two programs that each wait to write "
            "before reading deadlock exactly like this.")
        return lines + _advice(exp, r)
    if keeps_up(r):
        lines += _wrap(
            f"The peer reads everything - it took {_n(-a.difference)} bytes - as fast as this program "
            f"writes.  send() raised {f.exception} ({f.errno_name}) only for moments, when a burst "
            "of writes filled the send queue between two of the peer's reads; the queues never "
            "stood still because the peer kept emptying them.  That is no stall: a nonblocking "
            "sender meets EAGAIN whenever it outruns its reader for an instant, waits for "
            "EVENT_WRITE, and goes on.  To see a real stall, point stall at a peer that does not "
            "read (the default embedded sink).")
        return lines + _advice(exp, r)
    if a.difference is not None and a.difference < 0:
        lines += _wrap(
            f"The peer does read - it took {_n(-a.difference)} bytes - but more slowly than this program "
            "writes.  The queues absorbed the difference until they were full; then send() raised "
            f"{f.exception} ({f.errno_name}): {exp.meaning}.  That is "
            f"{'flow control' if r.transport == 'unix' else 'TCP flow control'} doing its job: "
            "EAGAIN means \"not now\", and any sender faster than its reader meets it sooner or later."
            + ("" if r.settle is None or r.settle.steady else
               "  The queues never stood still, which is what a slow reader looks like; a stuck one "
               "holds them constant."))
        return lines + _advice(exp, r)
    body = (
        "The peer accepted the connection and never called recv().  Each send() only copies bytes "
        "into our socket's send queue; the kernel moves them into the peer's receive queue as far as "
        "the peer's advertised window allows.  Nobody read, so the receive queue filled")
    if rv and rv.recv_q is not None and rv.rcvbuf:
        body += (f" (Recv-Q {_n(rv.recv_q)} of SO_RCVBUF {_n(rv.rcvbuf)}: part of the buffer pays for "
                 "the kernel's per-packet bookkeeping, not your data)")
    body += (", the peer advertised a zero window, and our bytes piled up in our send queue (Send-Q) "
             f"until SO_SNDBUF was used up.  Then send() raised {f.exception} ({f.errno_name}): "
             f"{exp.meaning}.")
    if r.settle and r.settle.extra_bytes:
        body += (f"  The first EAGAIN came while data was still moving: the kernels took "
                 f"{_n(r.settle.extra_bytes)} more bytes before the queues stood still.")
    if ahead:
        body += (f"  (The peer's TLS layer took {_n(ahead)} bytes of records from its receive queue with "
                 "the handshake's last flight, before its application stopped reading: they wait in its "
                 "TLS buffer instead.)")
    if unasked:
        body += (f"  (The {_n(unasked)} bytes waiting in our receive queue are the peer's TLS session "
                 "tickets, sent after the handshake unasked, which this program never reads.)")
    body += ("  Nothing is broken: the connection stays ESTABLISHED, the sender's persist timer probes "
             "the zero window, and everything resumes the moment the peer reads"
             + (" - as the drain above shows." if r.drain else " (try --drain)."))
    lines += _wrap(body)
    return lines + _advice(exp, r)


def _advice(exp, r) -> list[str]:
    return ["", "What a program should do"] + _wrap(
        f"Treat EAGAIN as \"not now\", not as an error - {exp.fix}.  Concretely: keep the bytes send() "
        "did not take (it may take only part of a chunk) in a per-connection out-buffer, register the "
        "socket for EVENT_WRITE, and send the rest when the selector reports it writable; unregister EVENT_WRITE "
        "once the buffer is empty.  Apply back-pressure: stop reading or producing while the out-buffer "
        "is above a high-water mark, so a slow peer cannot make you buffer without limit, and put a "
        "deadline on how long a peer may stay unwritable before you close the connection.")


def _wrap(text: str) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width=96, initial_indent="  ", subsequent_indent="  ")


def render_report(r, *, quiet: bool = False) -> str:
    """The human report: header, fill, the kernel's view, drain, and (unless quiet) the story."""
    command = r.peer.command or ""
    shown = f"`{command}`" if command.startswith("socktools") else command
    peer = (f"embedded sink {shown}" if r.peer.kind == "embedded"
            else f"{r.peer.address} ({'the server you named' if r.peer.kind == 'target' else 'injected'})")
    lines = [f"socktools stall: {r.family} {r.local} -> {r.remote}, nonblocking, "
             f"{_human(r.config.chunk)} per send()",
             f"  peer: {peer}" + (f", pid {r.peer.pid}" if r.peer.pid else "")]
    if r.payload != "zeros":
        whole = f"; {r.whole_requests:,} whole requests taken by send()" if r.whole_requests is not None else ""
        lines.append(f"  payload: {r.payload}{whole}")
    if r.tls is not None or r.transport == "tls":
        t = r.tls
        lines.append(f"  TLS: {t.version} {t.cipher}, server name {t.server_name}" if t else "  TLS")
    lines += render_fill(r)
    if r.answer is not None:
        return "\n".join(lines + render_answer(r, quiet=quiet))
    snap = r.snapshot
    if snap is not None and r.fill.blocked:
        settled = r.settle is None or r.settle.steady
        lines += ["", "2. The kernel's view at the steady state" if settled else
                  "2. The kernel's view when the timeout passed (the queues never stood still)"]
        lines += _sender_lines(snap, r.transport == "unix") + _receiver_lines(r, snap) + [""]
        lines += render_table(snap) + [""] + render_arithmetic(snap.arithmetic, r.transport == "unix")
        if r.tls is not None:
            lines += [""] + render_tls(r)
    if r.drain is not None:
        lines += render_drain(r.drain)
    if not quiet and r.fill.blocked and snap is not None:
        lines += render_explanation(r)
    return "\n".join(lines)


def render_tls(r) -> list[str]:
    """The TLS layer between send() and the kernel: what is counted, what is not visible."""
    t = r.tls
    out = [f"  TLS layer (ssl.SSLSocket, {t.version}, {t.cipher})",
           f"    plaintext send() accepted      {_n(t.plaintext_accepted):>13}"]
    if t.ciphertext_written is None:
        out.append("    TLS record bytes our kernel took: unavailable (needs TCP_INFO bytes_acked, Linux 4.1)")
    else:
        out.append(f"    TLS record bytes kernel took   {_n(t.ciphertext_written):>13}  "
                   f"({_n(t.beyond_plaintext)} more than the plaintext: record headers and tags, and "
                   "records of the refused send())")
    if t.held_by_openssl is not None:
        out.append(f"    of the refused send()          {_n(t.refused_in_kernel):>13}  record bytes already in the "
                   f"kernel (inferred: {t.records:,} records of {t.record_overhead} bytes overhead each)")
        out.append(f"    held by OpenSSL                {_n(t.held_by_openssl):>13}  the rest of that partly "
                   "written record (inferred the same way)")
    out += _wrap("Both kernels' queues above hold TLS records (ciphertext), not your plaintext.  "
                 "What OpenSSL itself holds is " + t.held_by_tls + ".")
    return out


def answer_line(r) -> str:
    """One line for stderr: the peer answered and closed, what it said, not a full buffer."""
    a = r.answer
    said = a.replies[0] if a.replies else (repr(a.first[:60]) if a.first else "nothing")
    how = "reset the connection" if a.how == "reset" else "closed the connection"
    return (f"the peer at {r.remote} answered ({said}) and {how} after {_n(a.accepted_before)} bytes: "
            "not a full buffer; send what it expects (--mode, --send)")


def render_answer(r, quiet: bool = False) -> list[str]:
    a = r.answer
    how = (("reset the connection (it closed with our bytes unread: ECONNRESET)" if r.transport == "unix"
            else "reset the connection (RST)") if a.how == "reset"
           else "closed the connection (its FIN" + (", or TLS close_notify)" if r.transport == "tls" else ")"))
    err = f"; our socket met {a.errno_name}" if a.errno_name else ""
    step = "while filling" if a.step == "fill" else "while we retried after the first EAGAIN"
    more = "" if a.counted_all else f" (counted up to {_n(a.bytes)}; more came)"
    lines = ["", "The peer answered and " + how,
             f"  {step}, after send() had accepted {_n(a.accepted_before)} bytes{err}",
             f"  it answered {_n(a.bytes)} bytes{more}" + (f", first: {a.first[:120]}" if a.first else "")]
    if a.replies:
        lines.append(f"  decoded as {a.decoder}:")
        runs: list = []         # consecutive equal replies once, with their count
        for reply in a.replies:
            if runs and runs[-1][0] == reply:
                runs[-1][1] += 1
            else:
                runs.append([reply, 1])
        lines += [f"    {reply[:160]}" + (f"  (x{n})" if n > 1 else "") for reply, n in runs]
    if not quiet:
        lines += ["", "What happened"] + _wrap(
            "This is not a full-buffer case: the peer read what we sent, answered, and ended the "
            "connection, so no queue filled and there is nothing to wait for.  Usually it did not "
            "understand the bytes (a protocol error, an HTTP 400) or a limit of its own ended the "
            "connection (redis' client-output-buffer-limit when replies are never read).  Its answer "
            "above says which; send what it expects (--mode and its options, or --send), or point "
            "stall at a peer that accepts and does not read.")
    return lines

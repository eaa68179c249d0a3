"""What a Unix-domain socket changes in stall's figures: the queues as Linux reports them.

An ``AF_UNIX`` stream socket has no send queue of its own: ``send()`` appends the bytes to
the receiver's receive queue.  ``SIOCINQ`` (and unix_diag's ``UNIX_DIAG_RQLEN``, which
``ss -x`` prints) is the bytes in a socket's receive queue; ``SIOCOUTQ`` (RQLEN's second
number) is ``sk_wmem_alloc``, the *memory* its sent bytes still charge to its SO_SNDBUF.
There is no TCP_INFO, no window and no persist timer; the receiver is found in unix_diag by
our socket's peer inode.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from socktools.addresses import format_addr
from socktools.kernel import socktable, tcpinfo
from socktools.stall.results import (Arithmetic, PersistState, ReceiverView, SenderView, Snapshot,
                                     TableRow)

__all__ = ["read_unix_queues", "unix_snapshot", "NO_TCP"]

#: Said for every TCP-only figure of a Unix socket.
NO_TCP = "TCP only: a Unix socket has no window, no ACKs and no persist timer"


def read_unix_queues(sock: socket.socket) -> tcpinfo.Queues:
    """An AF_UNIX stream socket's queues as Linux reports them: SIOCINQ is the bytes in its
    receive queue; SIOCOUTQ is sk_wmem_alloc, the memory (skb truesize, bookkeeping included)
    of the bytes it sent that still wait in the peer's receive queue -- a Unix socket has no
    send queue of its own.  SIOCOUTQNSD has no meaning here (no "not yet sent")."""
    if not tcpinfo.IS_LINUX:
        return tcpinfo.Queues(None, None, None, tcpinfo.UNAVAILABLE_PLATFORM)
    import array
    import fcntl
    out = []
    try:
        for request in (tcpinfo.SIOCINQ, tcpinfo.SIOCOUTQ):
            buf = array.array("i", [0])
            fcntl.ioctl(sock.fileno(), request, buf, True)
            out.append(buf[0])
    except OSError as exc:
        return tcpinfo.Queues(None, None, None, f"queue ioctl failed: {exc}")
    return tcpinfo.Queues(out[0], out[1], None)


def unix_snapshot(sock: socket.socket, local: Any, remote: Any, accepted: int, sndbuf_requested: Any,
                  seconds: float) -> Snapshot:
    """The kernel's view of an AF_UNIX connection: our ioctls, both ends from unix_diag."""
    q = read_unix_queues(sock)
    bufs = tcpinfo.read_buffers(sock)
    sender = SenderView(
        local=format_addr(local) or "(unnamed)", remote=format_addr(remote),
        sndbuf_requested=sndbuf_requested, sndbuf=bufs.sndbuf, rcvbuf=bufs.rcvbuf,
        send_q=q.send_q, unacked_bytes=None, notsent_bytes=None, recv_q=q.recv_q,
        queues_unavailable=q.reason, tcp_info=None, tcp_info_unavailable=NO_TCP,
        persist=PersistState(None, None, None, None, unavailable=NO_TCP))
    ours = theirs = listener = None
    reason, source = "", ""
    try:
        ino = os.fstat(sock.fileno()).st_ino
        rows = socktable.read_sockets(families=("unix",), processes=True)
        by_inode = {e.inode: e for e in rows if e.inode}
        ours = by_inode.get(ino)
        theirs = by_inode.get(ours.remote[1]) if ours is not None else None
        path = format_addr(remote)
        listener = next((e for e in rows if e.state == "LISTEN" and e.local[0] == path), None)
        source = socktable.resolve_source()
    except (socktable.SocketTableUnavailable, OSError) as exc:
        reason = f"cannot read the socket table: {exc}"
    if theirs is None:
        receiver = ReceiverView(found=False, reason=reason or (
            "its peer socket is not in this namespace's unix_diag table (already closed?)"))
    else:
        receiver = ReceiverView(found=True, reason="", local=theirs.local[0], remote="*",
                                state=theirs.state, recv_q=theirs.recv_q, send_q=theirs.send_q,
                                pids=tuple(theirs.pids))
    me = ((os.getpid(), "this process"),)
    table = [TableRow(role=role, proto=e.proto, recv_q=e.recv_q, send_q=e.send_q,
                      local=f"{e.local[0]} {e.local[1]}", foreign=f"* {e.remote[1]}", state=e.state,
                      pids=tuple(pids or e.pids))
             for e, role, pids in ((theirs, "receiver", ()), (ours, "sender", me),
                                   (listener, "listener", ())) if e is not None]
    # send() put the bytes straight into the receiver's queue, so its Recv-Q alone holds them;
    # what comes back waits in our receive queue
    arithmetic = Arithmetic.of(accepted, theirs.recv_q if theirs else None, 0,
                               q.recv_q if theirs else None)
    return Snapshot(seconds=seconds, sender=sender, receiver=receiver, table=table,
                    table_source=source, arithmetic=arithmetic,
                    table_sender_send_q=ours.send_q if ours else None)

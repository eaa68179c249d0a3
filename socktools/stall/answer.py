"""When the peer answers and closes or resets: notice it, and read what it said (bounded).

stall asks ``poll(0)`` after each ``send()`` whether the peer is gone (its FIN, or a reset);
then :func:`read_answer` reads what it answered from our receive queue -- the first
``ANSWER_KEPT`` bytes kept to show and decode, up to ``ANSWER_COUNTED`` counted, for at most
``ANSWER_WAIT`` seconds -- and says how it ended.  Decoding is :func:`decode_answer`'s
(sans-I/O, in :mod:`socktools.stall.payload`).
"""

from __future__ import annotations

import select
import ssl
from typing import Any, Callable, Optional

from socktools.errors import errno_name
from socktools.stall.payload import decode_answer
from socktools.stall.results import PeerAnswer

__all__ = ["read_answer", "gone", "pending_in", "ANSWER_KEPT", "ANSWER_COUNTED", "ANSWER_WAIT", "GONE",
           "PEER_GONE"]

#: Bytes of the peer's answer kept to show and decode: a status line and its headers, a redis
#: error, the first replies of a stream of them - what says why it closed.
ANSWER_KEPT = 4096
#: Bytes of the answer stall reads and counts after the peer closed: our receive queue holds
#: at most a few MiB on Linux; the bound keeps a peer that streams until it closes from
#: holding the command for long.
ANSWER_COUNTED = 64 << 20
#: How long stall keeps reading the answer once the peer closed (its last bytes and FIN or
#: RST are already in our queue; this only bounds a peer that half-closed and writes on).
ANSWER_WAIT = 1.0
#: The first bytes shown in the report (the rest of ANSWER_KEPT is for the decoder).
ANSWER_SHOWN = 256
#: poll() bits that say the peer is gone: it shut down its sending side (RDHUP: FIN or TLS
#: close under it), both sides (HUP), or the connection failed (ERR: a reset).
GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR
#: What send() raises when the peer closed (EPIPE) or reset (ECONNRESET) the connection, and
#: what an SSLSocket raises for a peer that closed without (or with) close_notify.
PEER_GONE = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


def gone(poller: Any) -> bool:
    """Has the peer closed, shut down its side or reset the connection?  (One poll(0).)"""
    return any(ev & GONE for _, ev in poller.poll(0))


def pending_in(sock: Any, poller: Any) -> bool:
    """Is there something to read: plaintext OpenSSL already decrypted, or bytes in the kernel?"""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    return any(ev & select.POLLIN for _, ev in poller.poll(0))


def read_answer(sock: Any, poller: Any, clock: Callable[[], float], *, mode: Optional[str], step: str,
                exc: Optional[BaseException], accepted: int) -> PeerAnswer:
    """Read what the peer answered before it closed (``exc``: what send() met, if anything)."""
    kept = bytearray()
    count, eof, reset = 0, False, isinstance(exc, ConnectionResetError)
    seen_err = exc
    deadline = clock() + ANSWER_WAIT
    while count < ANSWER_COUNTED and clock() < deadline:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            if gone(poller) and not pending_in(sock, poller):
                break           # nothing left, and nothing more will come
            select.select([sock], [], [], max(0.0, min(0.05, deadline - clock())))
            continue
        except ssl.SSLZeroReturnError:      # its close_notify: a clean TLS close
            eof = True
            break
        except (OSError, ssl.SSLError) as err:  # a reset, or TCP closed under TLS
            seen_err = err
            reset = reset or isinstance(err, ConnectionResetError)
            eof = not reset
            break
        if not data:
            eof = True
            break
        if len(kept) < ANSWER_KEPT:
            kept += data[:ANSWER_KEPT - len(kept)]
        count += len(data)
    decoded = decode_answer(bytes(kept), mode)
    num = getattr(seen_err, "errno", None)
    return PeerAnswer(
        how="reset" if reset else "closed", step=step,
        errno_name=errno_name(num) if isinstance(num, int) and num > 0 else (
            type(seen_err).__name__ if seen_err is not None else None),
        bytes=count, counted_all=eof or reset or count < ANSWER_COUNTED,
        first=repr(bytes(kept[:ANSWER_SHOWN]))[2:-1],
        decoder=decoded.decoder, replies=decoded.replies, accepted_before=accepted)

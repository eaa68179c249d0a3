"""``--decode``: each request and reply crossing the proxy, with two times.

The wire parsers (:func:`socktools.wire.spec.stream_parser`, the ones ``sniff
--decode`` and ``request`` use) frame the client's bytes as requests and the
server's as replies, as they are *read*; the link tells the :class:`Watch`
how many bytes of each direction have been *delivered* past the toxics.  With
four moments per exchange, two times come out:

* ``upstream_ms``: from the request's last byte handed to the server to the
  reply's last byte read from it -- the server's own response time, measured
  at the proxy, toxics excluded;
* ``client_ms``: from the request's last byte read from the client to the
  reply's last byte handed to the client -- what the client saw, toxics included.

Replies are matched to requests in order (redis, HTTP/1.1, line and framed protocols
answer in order, pipelined or not; a plug-in's stream decoder frames a request as what the
server answers -- PostgreSQL's Query, up to its ReadyForQuery).  No sockets here: the clock is injected,
and a protocol error stops decoding that connection only (its bytes still pass).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Union

from socktools.wire import modes
from socktools.wire.base import WireError
from socktools.wire.spec import stream_decoder

__all__ = ["Watch", "Exchange", "MAX_UNANSWERED", "DECODERS"]

#: What --decode takes by name: every wire mode with a stream decoder (sniff's and framed);
#: beside them, any plug-in MODULE:CLASS whose stream_parser(role) gives one.
DECODERS = modes.stream_decoders()

#: Requests decoded but not yet answered on one connection: a client that pipelines more
#: than this (or a server that never answers) stops being decoded rather than growing a queue.
#: redis-benchmark's deepest common pipeline is 1000.
MAX_UNANSWERED = 10_000


class Exchange:
    __slots__ = ("request", "request_end", "read_at", "sent_at", "reply", "reply_end", "reply_read_at")

    def __init__(self, request: str, request_end: int, read_at: float) -> None:
        self.request = request
        self.request_end = request_end      # offset of its last byte in the client's stream
        self.read_at = read_at
        self.sent_at: Optional[float] = None
        self.reply: Optional[str] = None
        self.reply_end = 0                  # offset of the reply's last byte in the server's stream
        self.reply_read_at = 0.0


class Watch:
    """One proxied connection's decoder: ``read(stream, data)``, ``delivered(stream, total)``;
    ``on_exchange(exchange, client_done_at)`` for each request answered and delivered,
    ``on_stop(why)`` once if the bytes stop making sense (decoding ends there)."""

    def __init__(self, decoder: Union[str, Callable[[str], Any]], on_exchange: Callable[[Exchange, float], None],
                 clock: Callable[[], float], on_stop: Callable[[str], None] = lambda why: None) -> None:
        # decoder: --decode's value, or what spec.stream_decoder made of it (a run makes it once)
        make = stream_decoder(decoder) if isinstance(decoder, str) else decoder
        self.ends = {"upstream": 0, "downstream": 0}
        self.on_exchange = on_exchange
        self.on_stop = on_stop
        self.clock = clock
        self.to_send: collections.deque = collections.deque()     # not yet handed to the server
        self.unanswered: collections.deque = collections.deque()  # no reply read yet
        self.answered: collections.deque = collections.deque()    # reply read, not yet handed on
        self.broken: Optional[str] = None
        try:
            self.parsers = {"upstream": make("request"), "downstream": make("response")}
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug costs this connection's decoding
            self.parsers = {}
            self._stop(f"the decoder failed: {type(exc).__name__}: {exc}")

    def read(self, stream: str, data: bytes) -> None:
        if self.broken:
            return
        parser = self.parsers[stream]
        try:
            parser.feed(data)
        except WireError as exc:
            self._stop(f"{'request' if stream == 'upstream' else 'reply'}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug costs its decoding, not the link
            self._stop(f"{'request' if stream == 'upstream' else 'reply'}: the decoder failed: "
                       f"{type(exc).__name__}: {exc}")
            return
        if not parser.keep:
            return
        now = self.clock()
        messages, parser.keep[:] = list(parser.keep), []
        for msg in messages:
            self.ends[stream] += msg.size
            end = self.ends[stream]
            if stream == "upstream":
                ex = Exchange(msg.summary, end, now)
                self.to_send.append(ex)
                self.unanswered.append(ex)
                if len(self.unanswered) > MAX_UNANSWERED:
                    self._stop(f"more than {MAX_UNANSWERED} requests without a reply")
                    return
            elif self.unanswered:
                ex = self.unanswered.popleft()
                ex.reply, ex.reply_end, ex.reply_read_at = msg.summary, end, now
                self.answered.append(ex)
            # (a reply nobody asked for -- a server's greeting or push -- is not an exchange)

    def delivered(self, stream: str, total: int) -> None:
        if self.broken:
            return
        queue = self.to_send if stream == "upstream" else self.answered
        if not queue:
            return
        now = self.clock()
        if stream == "upstream":
            while queue and queue[0].request_end <= total:
                queue.popleft().sent_at = now
        else:
            while queue and queue[0].reply_end <= total:
                self.on_exchange(queue.popleft(), now)

    def _stop(self, why: str) -> None:
        self.broken = why
        self.on_stop(why)
        self.to_send.clear()
        self.unanswered.clear()
        self.answered.clear()

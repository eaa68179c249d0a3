"""The request maker of one flood worker: request ``seq`` of connection ``conn``, as bytes.

``seq`` counts the requests of one connection (0, 1, 2...), so that rotating templates
alternate on each connection -- ``set key:{conn}`` then ``get key:{conn}`` reads what it
wrote -- and ``{conn}:{seq}`` is unique over the run.  A connection's next ``seq`` is its
slot's ``count``; the maker is the one place that moves it (on, and back over requests a
close cut off, so that the replacement sends the very same requests again).
"""

from __future__ import annotations

from typing import Any, Optional

from socktools.wire.base import WireProtocol

__all__ = ["RequestMaker", "REQUEST_MEMO_BYTES"]

#: Bytes of rendered requests a worker keeps for reuse (``shared_requests``: request
#: ``seq`` is the same on every connection, so it is rendered once, not once per
#: connection -- formatting a number costs more than a round trip's other Python work).
#: 8 MiB is about a third of a flood worker's own resident size with 10,000 connections;
#: at 40-byte requests it holds the first ~100,000 of every connection.  Past it,
#: requests are rendered each time, as for templates with ``{conn}``.
REQUEST_MEMO_BYTES = 8 << 20
#: Requests rendered at a time as the memo grows: one call per block, not per request.
_MEMO_BLOCK = 256


class RequestMaker:
    def __init__(self, proto: WireProtocol) -> None:
        self.proto = proto
        fixed = proto.fixed_request
        self.fixed: Optional[bytes] = fixed      # every request the same bytes (or None)
        # Request seq's bytes, shared by every connection (see REQUEST_MEMO_BYTES).
        self.memo: Optional[list] = [] if fixed is None and proto.shared_requests else None
        self.memo_bytes = 0

    def request(self, slot: Any) -> bytes:
        """The next request's bytes for ``slot``'s connection."""
        fixed = self.fixed
        if fixed is not None:
            return fixed
        seq = slot.count
        slot.count = seq + 1
        memo = self.memo
        if memo is not None:
            try:
                return memo[seq]
            except IndexError:
                return self._remember(seq, slot.index)
        return self.proto.request(seq, slot.index)

    def requests(self, slot: Any, k: int) -> bytes:
        """The next ``k`` requests for ``slot``'s connection, as one write."""
        if k == 1:
            return self.request(slot)
        request = self.request
        return b"".join([request(slot) for _ in range(k)])

    def step_back(self, slot: Any, n: int) -> None:
        """The last ``n`` requests made for ``slot`` will be made again (a close cut them off)."""
        if self.fixed is None:
            slot.count -= n

    def carry_over(self, old: Any, new: Any) -> None:
        """A replacement connection goes on from where ``old`` stopped: the same next ``seq``."""
        new.count = old.count

    def _remember(self, seq: int, conn: int) -> bytes:
        """Request ``seq`` past the memo's end: render the next block into it (a
        connection asks for seq 0, 1, 2... in turn, so ``seq`` is the memo's length)."""
        memo = self.memo
        make = self.proto.request
        first = make(seq, conn)
        if seq != len(memo):
            return first
        used = self.memo_bytes + len(first)
        if used > REQUEST_MEMO_BYTES:     # (a --send-file request may be large)
            return first
        block = [first]
        for i in range(seq + 1, seq + _MEMO_BLOCK):
            request = make(i, conn)
            if used + len(request) > REQUEST_MEMO_BYTES:
                break
            block.append(request)
            used += len(request)
        memo += block
        self.memo_bytes = used
        return first

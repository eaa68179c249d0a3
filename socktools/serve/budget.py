"""What one server worker lets hostile peers cost it: bytes held for incomplete requests, and time.

Sans-I/O: no sockets, no clock of its own (``now`` is passed in), no logging.
The worker tells a :class:`RequestBudget` how many bytes each connection's
decoder holds after every read; the budget answers which connections must go.

Two limits, both per worker process (a worker is one CPU's worth of Python, so
this is what one process can be made to hold):

* **bytes buffered for incomplete requests** (``config.DEFAULT_MAX_BUFFERED``).
  A peer that declares 1 MiB of content and sends 1 MiB - 1 holds 1 MiB of our
  memory for as long as it likes; 300 of them held 316 MB (issue 12).  Over the
  budget, the *newest* holders are refused first: a connection that has been
  waiting for its request longest is the one most likely to finish, and a
  flood of new partial requests cannot push established clients out.
* **a deadline from a request's first byte to its last**
  (``config.DEFAULT_REQUEST_TIMEOUT``).  ``--idle-timeout`` counts silence, so a
  slowloris peer sending one byte every few seconds never trips it; this
  deadline counts from the first byte of a request however busy the peer is.

Holders are kept in one ordered dict, oldest first request byte first: expiry
walks it from the front and stops at the first connection still in time, and
eviction pops from the back, so both cost O(connections affected), never a scan.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Optional

from socktools.serve.config import DEFAULT_MAX_BUFFERED, DEFAULT_REQUEST_TIMEOUT

__all__ = ["RequestBudget"]

# The limits themselves (named, with why those numbers) live in serve/config.py with
# the other limits every worker holds to: DEFAULT_MAX_BUFFERED, DEFAULT_REQUEST_TIMEOUT.

class RequestBudget:
    """Account of the bytes each connection holds for its incomplete request, and since when.

    ``update(key, held, now)`` after every read returns the keys to refuse
    because the total went over ``max_buffered`` (newest holders first);
    ``expired(now)`` returns the keys whose request has been arriving for
    longer than ``timeout`` seconds.  ``forget(key)`` when a connection closes.
    """

    __slots__ = ("max_buffered", "timeout", "total", "peak", "_held")

    def __init__(self, max_buffered: int = DEFAULT_MAX_BUFFERED,
                 timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be >= 1 byte")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 (or None: no deadline)")
        self.max_buffered = max_buffered
        self.timeout = timeout
        self.total = 0        # bytes held now, all connections
        self.peak = 0         # the most ever held after enforcement
        self._held: "OrderedDict[Hashable, list]" = OrderedDict()  # key -> [bytes, first byte at]

    def __len__(self) -> int:
        return len(self._held)

    def held(self, key: Hashable) -> int:
        entry = self._held.get(key)
        return entry[0] if entry else 0

    def started(self, key: Hashable) -> Optional[float]:
        entry = self._held.get(key)
        return entry[1] if entry else None

    def update(self, key: Hashable, held: int, now: float, *, new_request: bool = False) -> list:
        """``key``'s decoder now holds ``held`` bytes; return the keys to refuse (newest first).

        ``new_request`` says the bytes held belong to a request that began in
        this read (an earlier one completed): its clock starts again at ``now``.
        """
        entry = self._held.get(key)
        if held <= 0:
            if entry is not None:
                self.total -= entry[0]
                del self._held[key]
            return []
        if entry is None or new_request:
            if entry is not None:
                self.total -= entry[0]
                del self._held[key]
            entry = self._held[key] = [0, now]  # the newest holder goes last
        self.total += held - entry[0]
        entry[0] = held
        refused = []
        while self.total > self.max_buffered and self._held:
            victim, (nbytes, _) = self._held.popitem(last=True)
            self.total -= nbytes
            refused.append(victim)
        self.peak = max(self.peak, self.total)
        return refused

    def expired(self, now: float) -> list:
        """Keys whose request began more than ``timeout`` seconds before ``now`` (oldest first);
        they are forgotten here."""
        if self.timeout is None:
            return []
        limit = now - self.timeout
        out = []
        held = self._held
        while held:
            key, (nbytes, since) = next(iter(held.items()))
            if since > limit:
                break
            del held[key]
            self.total -= nbytes
            out.append(key)
        return out

    def next_deadline(self) -> Optional[float]:
        """When the oldest request in progress runs out of time (None: nothing in progress)."""
        if self.timeout is None or not self._held:
            return None
        return next(iter(self._held.values()))[1] + self.timeout

    def forget(self, key: Any) -> None:
        entry = self._held.pop(key, None)
        if entry is not None:
            self.total -= entry[0]

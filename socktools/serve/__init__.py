"""serve: the echo, framed and sink servers and their supervised workers.

* :mod:`.config` -- :class:`ServeConfig` (frozen, picklable), the modes and the limits;
* :mod:`.stats` -- :class:`ServerStats`, counters that add up across workers;
* :mod:`.protocols` -- what is said on a connection: echo, framed (docs/protocol.md), sink;
* :mod:`.worker` -- :class:`Worker`, one process's loop: accept, drain, periodic stats;
* :mod:`.supervisor` -- :func:`serve`: bind, then one worker in-process or N supervised.
"""

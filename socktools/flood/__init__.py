"""``socktools flood``: a multi-process TCP load generator.

* :mod:`.config` -- :class:`FloodConfig`, the frozen, picklable description of a run;
* :mod:`.worker` -- :func:`run_worker`, one process's connections driven by the I/O core;
* :mod:`.exchange` -- what is said on a connection and how answers are checked (protocols);
* :mod:`.stats` -- histograms, counters and the errno-by-phase tally, merged exactly;
* :mod:`.limits` -- the pre-flight check of fd and port limits;
* :mod:`.runner` -- :func:`run_flood`: spawns the workers, collects their statistics;
* :mod:`.result` -- :class:`FloodResult`, what a run produced, and figures derived from it;
* :mod:`.report` -- the table, the live line and the JSON views of a result.

Nothing here prints or imports click; the CLI (``socktools.cli.flood``) renders.
"""

from socktools.flood.config import MODES, FloodConfig

__all__ = ["FloodConfig", "MODES"]

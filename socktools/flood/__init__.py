"""``socktools flood``: a multi-process TCP load generator.

* :mod:`.config` -- :class:`FloodConfig`, the frozen, picklable description of a run;
* :mod:`.worker` -- :func:`run_worker`, one process's connections driven by the I/O core;
* :mod:`.session` -- the phase machine of a worker: the narrow interface the loops call;
* :mod:`.exchange` -- the loops that move any wire protocol's bytes (:mod:`socktools.wire`):
  confirm, the fixed-size hot path, closed loop with pipelining; :mod:`.paced` -- open loop
  (``--rate``) and write-only streams;
* :mod:`.stats` -- histograms, counters and the errno-by-phase tally, merged exactly;
* :mod:`.limits` -- the pre-flight check of fd and port limits;
* :mod:`.runner` -- :func:`run_flood`: spawns the workers, collects their statistics;
* :mod:`.intervals` -- the workers' ticks merged into one interval record per tick;
* :mod:`.cluster`, :mod:`.cluster_run` -- ``--cluster``: the shards as tasks on Dask, supervised;
* :mod:`.shard` -- what runs on a Dask worker: one shard, in-process, over Dask's queue and events;
* :mod:`.result` -- :class:`FloodResult`, what a run produced, and figures derived from it;
* :mod:`.report` -- the table, the live line and the JSON views of a result.

Nothing here prints or imports click; the CLI (``socktools.cli.flood``) renders.
"""

from socktools.flood.config import MODES, FloodConfig

__all__ = ["FloodConfig", "MODES"]

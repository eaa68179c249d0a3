"""Worker processes, supervised: the one place in socktools that starts them.

``serve --workers N`` and ``flood`` both run their work in child processes
that a parent watches.  :class:`Supervisor` is that parent, as one mechanism:

* **spawn** -- ``fork`` on Linux (cheap, and the children inherit listening
  sockets and monkeypatched test doubles), ``spawn`` elsewhere; one duplex
  pipe per child, the parent's end watched by the parent's loop.
* **die with the parent** -- the child asks the kernel for a parent-death
  signal (``PR_SET_PDEATHSIG``, :func:`set_parent_death_signal`), checks that
  the parent did not die before that took effect, and closes its copies of the
  pipes of the children forked before it, so that its own pipe reaches EOF the
  moment the parent dies (the portable fallback; :func:`orphaned` is the
  parent-pid check for loops that want one).
* **one wait** -- the parent's :class:`~socktools.core.loop.Loop` waits on the
  pipes, the process sentinels and the signal wakeup fd together: no polling.
* **crash report** -- a child whose target raised sends ``("crash", "Type:
  message at file.py:line")`` and exits with :data:`EXIT_CRASHED`; its exit
  is reported with its exit code or the signal that killed it.
* **stop** -- the first SIGINT/SIGTERM *drains* (each child is asked to
  finish and report), the second *forces*; a child still alive after the grace
  period gets SIGKILL.

Policies sit on top as a subclass overriding the hooks below: serve and proxy restart a
crashed worker (with a crash-loop limit, :class:`CrashLoop`), flood broadcasts "go" and "stop" and
merges ticks.  The hooks are called from the loop, never from a signal handler.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Optional

from socktools.core.loop import Loop
from socktools.core.signals import SignalQueue

__all__ = ["Supervisor", "Child", "CrashLoop", "EXIT_CRASHED", "FORCE_GRACE", "set_parent_death_signal",
           "orphaned", "describe_exit", "describe_exception"]

log = logging.getLogger("socktools.core.procs")

#: Exit code of a child whose target raised: EX_SOFTWARE from sysexits.h,
#: "an internal software error" -- not 1, which the target may use itself.
EXIT_CRASHED = 70

#: After a forced stop (or an overdue drain), how long children get before SIGKILL.
FORCE_GRACE = 2.0

#: The stop signals: a terminal's Ctrl-C, and what kill, systemd and docker send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Messages read from one child per wakeup of the loop.  The pipe is level-
#: triggered, so the rest are read on the next pass, after the other ready fds:
#: a chatty child cannot starve the signal queue or its siblings.
MESSAGES_PER_WAKEUP = 16

#: A child dying sooner than this after its start counts toward a crash loop; this many such
#: deaths within CRASH_LOOP_MEMORY seconds is one (a restart policy then stops instead: a
#: worker that cannot start would otherwise be restarted as fast as it dies).
CRASH_LOOP_WINDOW = 1.0
CRASH_LOOP_LIMIT = 5
CRASH_LOOP_MEMORY = 30.0

_PR_SET_PDEATHSIG = 1
_parent_pid: Optional[int] = None   # set in a supervised child: who its supervisor is


def _start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux") or not signum:
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return False


def orphaned() -> bool:
    """In a supervised child: has its supervisor died?  (False anywhere else.)"""
    return _parent_pid is not None and os.getppid() != _parent_pid


def describe_exception(exc: BaseException) -> str:
    """One line for a crash report: ``RuntimeError: boom at worker.py:12``."""
    last = traceback.extract_tb(exc.__traceback__)[-1:]
    where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def describe_exit(code: Optional[int]) -> str:
    """``"killed by signal 9"`` or ``"exit code 70"`` from a ``Process.exitcode``."""
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _child_main(target: Callable[..., Any], conn: Any, args: tuple, parent: int, pdeathsig: int,
                ignore: tuple, after_fork: Optional[Callable[[], None]], blocked: tuple = ()) -> None:
    """Body of every supervised child, before and around its target."""
    global _parent_pid
    if after_fork is not None:
        after_fork()  # the parent's signal queue and sibling pipes: not ours
    for sig in ignore:
        signal.signal(sig, signal.SIG_IGN)
    if blocked:   # blocked across the fork (Supervisor.spawn): now the parent's queue is forgotten
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    set_parent_death_signal(pdeathsig)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(0)
    _parent_pid = parent
    try:
        target(conn, *args)
    except SystemExit:
        raise
    except BaseException as exc:  # a bug: one line to the parent, the traceback at debug level
        log.debug("%s crashed", multiprocessing.current_process().name, exc_info=True)
        try:
            conn.send(("crash", describe_exception(exc)))
        except (OSError, ValueError):
            pass
        os._exit(EXIT_CRASHED)
    finally:
        try:
            conn.close()
        except OSError:
            pass


class Child:
    """One supervised process as its parent sees it."""

    def __init__(self, index: int, process: Any, conn: Any) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.fd: int = conn.fileno()
        self.pid: int = process.pid
        self.started = time.monotonic()
        self.crash: Optional[str] = None    # the one line a crashed target sent
        self.exitcode: Optional[int] = None
        self.ended = False

    @property
    def how(self) -> str:
        return describe_exit(self.exitcode)

    def send(self, msg: Any) -> bool:
        """Send ``msg`` down the child's pipe; False if the child is gone."""
        try:
            self.conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def signal(self, signum: int) -> None:
        if not self.ended:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def __repr__(self) -> str:
        return f"<Child {self.index} pid {self.pid}{' ended' if self.ended else ''}>"


class CrashLoop:
    """For a policy that restarts children: are they dying right after their start?"""

    def __init__(self) -> None:
        self.deaths: list[float] = []      # when children died right after their start

    def died(self, child: Child) -> bool:
        """Note ``child``'s end; True if that makes a crash loop (stop restarting)."""
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < CRASH_LOOP_MEMORY]
        if now - child.started < CRASH_LOOP_WINDOW:
            self.deaths.append(now)
        return len(self.deaths) >= CRASH_LOOP_LIMIT


class Supervisor:
    """Run child processes and watch them; override the hooks for a policy.

    ``name`` prefixes the process names (``socktools-serve-0``).  Children get
    ``pdeathsig`` when the parent dies and ignore the signals in
    ``child_ignores`` (SIGINT always: the terminal's Ctrl-C reaches the whole
    process group, and only the supervisor decides what it means).
    ``drain_grace`` is how long a drain may take before SIGKILL.  ``signals``
    is a queue the caller installed already (and closes; it must hold the stop
    signals and :attr:`extra_signals`); without one the supervisor queues them
    for the length of :meth:`run`.
    """

    #: Signals the supervisor queues besides the stop signals (serve: SIGUSR1).
    extra_signals: tuple = ()

    def __init__(self, name: str, *, drain_grace: float, force_grace: float = FORCE_GRACE,
                 pdeathsig: int = signal.SIGTERM, child_ignores: tuple = (signal.SIGINT,),
                 signals: Optional[SignalQueue] = None) -> None:
        self.name = name
        self.drain_grace = drain_grace
        self.force_grace = force_grace
        self.pdeathsig = pdeathsig
        self.child_ignores = child_ignores
        self.ctx = multiprocessing.get_context(_start_method())
        self.loop = Loop()
        self.children: dict[int, Child] = {}   # index -> live child
        self.stopping = 0                      # 0 running, 1 draining, 2+ forcing
        self.stop_signal: Optional[int] = None  # the first stop signal received, if any
        self.crash_loop = CrashLoop()           # for restart()
        self.restarts = 0                      # children restart() replaced
        self._own_signals = signals is None
        self._signals = signals or SignalQueue(STOP_SIGNALS + tuple(self.extra_signals))
        self._kill_timer = None

    # ------------------------------------------------------------ hooks (the policy)
    def on_message(self, child: Child, msg: Any) -> None:
        """A message from ``child`` (anything but its crash report)."""

    def on_exit(self, child: Child) -> None:
        """``child`` has ended (``child.exitcode``, ``child.crash``); its messages are all read."""

    def stop_child(self, child: Child, force: bool) -> None:
        """Ask ``child`` to stop: drain (``force`` False) or at once.  Default: SIGTERM."""
        child.signal(signal.SIGTERM)

    def on_overdue(self, children: list) -> None:
        """The grace period ended with ``children`` still alive; they get SIGKILL next."""
        for child in children:
            log.warning("%s-%d (pid %d) did not stop in time: SIGKILL", self.name, child.index, child.pid)

    def on_signal(self, signum: int) -> None:
        """One of :attr:`extra_signals` arrived."""

    def finished(self) -> bool:
        """True ends :meth:`run`.  Default: every child has ended."""
        return not self.children

    # ------------------------------------------------------------ the mechanism
    def spawn(self, index: int, target: Callable[..., Any], *args: Any) -> Child:
        """Start ``target(conn, *args)`` in a child; ``conn`` is its end of a duplex pipe."""
        mine, theirs = self.ctx.Pipe(duplex=True)
        after_fork = None
        blocked: tuple = ()
        if self.ctx.get_start_method() == "fork":
            after_fork = functools.partial(self._after_fork, mine)
            # A forked child inherits our handlers and wakeup fd: a signal reaching it before
            # it forgets our queue (a SIGTERM to the whole process group, say) would be queued
            # here, as if sent to us -- a second stop.  Blocked across the fork, it waits in
            # the child until the child has let go of our queue.
            blocked = tuple(self._signals.signals)
        proc = self.ctx.Process(target=_child_main, name=f"{self.name}-{index}", daemon=True,
                                args=(target, theirs, args, os.getpid(), self.pdeathsig,
                                      self.child_ignores, after_fork, blocked))
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if blocked else None
        try:
            proc.start()
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        child = Child(index, proc, mine)
        self.children[index] = child
        self.loop.add_reader(child.fd, lambda: self._read(child))
        self.loop.add_reader(proc.sentinel, lambda: self._ended(child))
        return child

    def run(self, start: Optional[Callable[[], None]] = None) -> None:
        """Queue the stop signals, call ``start()`` (spawn there), wait until :meth:`finished`.

        Whatever is still alive at the end is given :attr:`force_grace` to
        exit, then SIGKILL: no child outlives this call.
        """
        if self._own_signals:
            self._signals.install()
        try:
            self._signals.attach(self.loop, self._on_signal)
            if start is not None:
                start()
            self.loop.run(until=self.finished)
        finally:
            if self._own_signals:
                self._signals.close()
            self._reap()
            self.loop.close()

    def broadcast(self, msg: Any) -> None:
        for child in list(self.children.values()):
            child.send(msg)

    def restart(self, child: Child, start: Callable[[int], Any], say: Callable[[dict], None],
                replacing: str, **facts: Any) -> bool:
        """The restart policy (serve's and proxy's workers): ``child`` ended; unless stopping,
        ``start(child.index)`` a replacement -- or, in a crash loop, stop everything.  ``say``
        gets the ``worker-exit`` event (``facts`` added); ``replacing`` ends its message."""
        if self.stopping:
            return False
        how = child.how
        if self.crash_loop.died(child):
            say({"event": "worker-exit", "worker": child.index, "pid": child.pid, "how": how,
                 "restarting": False, **facts,
                 "message": f"worker {child.index} keeps dying right after start; stopping"})
            self.request_stop()
            return False
        self.restarts += 1
        say({"event": "worker-exit", "worker": child.index, "pid": child.pid, "how": how,
             "restarting": True, **facts,
             "message": f"worker {child.index} (pid {child.pid}) died ({how}); {replacing}"})
        start(child.index)
        return True

    def request_stop(self) -> None:
        """What a stop signal does: the first call drains, later ones force."""
        self.stopping += 1
        force = self.stopping > 1
        for child in list(self.children.values()):
            self.stop_child(child, force)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._kill_timer = self.loop.call_later(self.force_grace if force else self.drain_grace,
                                                self._overdue)

    # ------------------------------------------------------------ internals
    def _after_fork(self, parent_end: Any) -> None:
        """In a forked child: close its copies of what is the parent's.

        The parent's end of our own pipe and of every sibling's: while a copy
        is open, that pipe never reaches EOF, and a child would not notice
        its parent's death.  And the parent's signal queue.
        """
        self._signals.forget_in_child()
        for conn in [parent_end] + [c.conn for c in self.children.values()]:
            try:
                conn.close()
            except OSError:
                pass

    def _on_signal(self, signum: int) -> None:
        if signum in STOP_SIGNALS:
            if self.stop_signal is None:
                self.stop_signal = signum
            self.request_stop()
        else:
            self.on_signal(signum)

    def _read(self, child: Child, limit: Optional[int] = MESSAGES_PER_WAKEUP) -> None:
        if child.ended:
            return
        try:
            n = 0
            while (limit is None or n < limit) and child.conn.poll():
                n += 1
                msg = child.conn.recv()
                if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "crash":
                    child.crash = msg[1]
                else:
                    self.on_message(child, msg)
        except (EOFError, OSError):
            self.loop.remove_reader(child.fd)  # the child closed its end: the sentinel follows

    def _ended(self, child: Child) -> None:
        if child.ended:
            return
        # A stop signal that came with this end (a SIGTERM to the whole process group ends a
        # child still starting up) is acted on first: the policy must not take a child that
        # was stopped for one that died, and restart it.
        for signum in self._signals.read():
            self._on_signal(signum)
        self._read(child, limit=None)  # all it sent before exiting comes first
        child.ended = True
        self.loop.remove_reader(child.process.sentinel)
        self.loop.remove_reader(child.fd)
        child.process.join()
        child.exitcode = child.process.exitcode
        child.conn.close()
        if self.children.get(child.index) is child:
            del self.children[child.index]
        self.on_exit(child)

    def _overdue(self) -> None:
        self._kill_timer = None
        late = [c for c in self.children.values() if not c.ended]
        if late:
            self.on_overdue(late)
            for child in late:
                child.signal(signal.SIGKILL)

    def _reap(self) -> None:
        live = [c for c in self.children.values() if not c.ended]
        deadline = time.monotonic() + self.force_grace
        waiting = {c.process.sentinel for c in live}
        while waiting and time.monotonic() < deadline:
            for ready in multiprocessing.connection.wait(list(waiting), deadline - time.monotonic()):
                waiting.discard(ready)
        for child in live:
            if child.process.is_alive():
                child.process.kill()
            child.process.join()
            child.exitcode = child.process.exitcode
            child.ended = True
            child.conn.close()
        self.children.clear()

"""core/signals.py: the signal queue and the stdin-EOF watch, on a real loop and real fds."""

from __future__ import annotations

import os
import select
import signal
import threading

from socktools.core.loop import Loop
from socktools.core.signals import SignalQueue, signal_name, watch_stdin_eof


def test_handlers_only_queue_and_the_loop_reads_the_signals_in_order():
    loop = Loop()
    got = []
    before = signal.getsignal(signal.SIGUSR2)
    with SignalQueue((signal.SIGUSR1, signal.SIGUSR2)) as queue:
        queue.attach(loop, got.append)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        loop.run(until=lambda: len(got) == 3, timeout=5)
        assert got == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
        assert queue.read() == []  # nothing left; a spurious wakeup reads nothing (EAGAIN)
    loop.close()
    assert signal.getsignal(signal.SIGUSR2) is before
    assert signal.set_wakeup_fd(-1) == -1


def test_ignored_signals_are_ignored_only_while_installed():
    before = signal.getsignal(signal.SIGUSR1)
    queue = SignalQueue((signal.SIGUSR2,), ignore=(signal.SIGUSR1,)).install()
    try:
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR1)  # would kill us if not ignored
        assert queue.read() == []             # and is not queued
    finally:
        queue.close()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_outside_the_main_thread_the_queue_is_inert():
    out = {}

    def body():
        q = SignalQueue((signal.SIGTERM,)).install()
        out["fd"], out["read"] = q.fileno(), q.read()
        q.close()

    t = threading.Thread(target=body)
    t.start()
    t.join(5)
    assert out == {"fd": None, "read": []}


def test_stdin_eof_is_seen_once_after_the_data_before_it():
    r, w = os.pipe()
    os.set_blocking(r, False)
    loop = Loop()
    eofs = []
    try:
        assert watch_stdin_eof(loop, lambda: eofs.append(1), fd=r)
        os.write(w, b"ignored bytes\n")
        loop.run(timeout=0.05)
        assert eofs == []
        os.close(w)
        loop.run(until=lambda: eofs, timeout=5)
        loop.run(timeout=0.05)  # no second call: the reader is gone
        assert eofs == [1]
    finally:
        loop.close()
        os.close(r)


def test_stdin_that_cannot_be_watched_says_so():
    loop = Loop()
    try:
        if hasattr(select, "epoll"):
            with open(os.devnull) as devnull:  # epoll refuses /dev/null and regular files (EPERM)
                assert watch_stdin_eof(loop, lambda: None, fd=devnull.fileno()) is False
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        assert watch_stdin_eof(loop, lambda: None, fd=r) is False  # closed fd: EBADF
    finally:
        loop.close()


def test_signal_names():
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(200) == "200"

"""SIGTERM/SIGINT during a LAMMPS run, handled within seconds.

While LAMMPS runs, the main thread is inside a ctypes call, where Python signal handlers
cannot run. The signals are blocked in every thread instead and one watcher thread waits for
them; it asks LAMMPS to stop the current run (``force_timeout``), and the runner writes a
restart. Kept free of heavy imports: ``block_stop_signals`` must run before numpy, torch or
MPI start their threads.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def block_stop_signals() -> None:
    """Block SIGTERM/SIGINT in this thread and every thread started after it (torch's and
    MPI's helpers included), so that only ``StopSignal``'s watcher receives them. Call it
    first thing in a process that will run LAMMPS."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class StopSignal:
    """SIGTERM/SIGINT while LAMMPS runs: the main thread is inside LAMMPS (ctypes releases the
    GIL), so a watcher thread takes the signal and asks LAMMPS to stop the current run.

    The watcher keeps taking signals until ``close``: a second SIGTERM (schedulers repeat
    theirs, users press Ctrl-C twice) while the restart is written is counted, not fatal, so
    the checkpoint completes and the run ends as interrupted. ``received`` also lets the
    runner notice a signal that came between two LAMMPS runs (LAMMPS resets its timeout at
    the start of each run, so ``force_timeout`` alone would be forgotten)."""

    POLL_S = 0.2  # how often the watcher looks whether it should stop

    def __init__(self):
        self.received: int | None = None
        self.count = 0
        self.lmp = None
        self.signals = STOP_SIGNALS
        self.active = threading.current_thread() is threading.main_thread()
        self._closed = threading.Event()
        if self.active:
            # restored by close(): the CLI blocks these first thing, so they stay blocked while
            # it exits (a late SIGTERM is then harmless); an in-process caller gets its mask back
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            block_stop_signals()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def _watch(self):
        while not self._closed.is_set():
            info = signal.sigtimedwait(self.signals, self.POLL_S)
            # None on timeout; a stop/continue of the process (SIGSTOP, SIGCONT) can wake the
            # wait with an empty record: only a stop signal counts
            if info is None or info.si_signo not in self.signals:
                continue
            self.received = self.received or info.si_signo
            self.count += 1
            if self.lmp is not None:
                self.lmp.force_timeout()

    def close(self):
        if self.active:
            self._closed.set()
            self._thread.join()
            while signal.sigtimedwait(self.signals, 0) is not None:  # taken here, not fatal at unblocking
                self.count += 1
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)

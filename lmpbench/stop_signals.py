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
    GIL), so a watcher thread takes the signal and asks LAMMPS to stop the current run."""

    def __init__(self):
        self.received: int | None = None
        self.lmp = None
        self.signals = STOP_SIGNALS
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            block_stop_signals()
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        self.received = signal.sigwait(self.signals)
        if self.lmp is not None:
            self.lmp.force_timeout()

    def close(self):
        if self.active:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

"""Stopping a run cleanly: the signals the training loop catches and the exit status a run's
summary calls for."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

EXIT_DIVERGED, EXIT_INTERRUPTED = 3, 143


class StopSignals:
    """Inside the training loop, SIGINT (Ctrl-C), SIGTERM (`kill`, cluster preemption) and
    SIGUSR2 (Slurm's pre-timeout / preemption warning) set `signal` instead of killing the
    process: the loop finishes its step, checkpoints and stops. A second Ctrl-C stops at once.

    With several processes, `agreed()` is the first signal any of them received (a collective
    call: every process must make it at the same steps), so all stop at the same step and
    write the checkpoint together. After the loop, `forward()` hands a SIGUSR2 on to the
    handler installed before (submitit's, which requeues the job), now that the checkpoint
    is written.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signal: int | None = None
        self._old: dict = {}
        self._usr2_before = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.HANDLED}
            self._usr2_before = self._old[signal.SIGUSR2]
        return self

    def _handle(self, signum, frame):  # no I/O here: the main thread may be mid-write
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signum

    def agreed(self) -> int | None:
        if jax.process_count() == 1:
            return self.signal
        from jax.experimental import multihost_utils  # multi-process runs only: not paid by the rest

        received = multihost_utils.process_allgather(np.int32(self.signal or 0))
        first = next((int(s) for s in np.ravel(received) if s), 0)
        if first:
            self.signal = first  # the same on every process
        return first or None

    def _restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()

    def forward(self) -> None:
        """Re-raise a SIGUSR2 caught in the loop if someone else (submitit) was handling it."""
        if self.signal == signal.SIGUSR2 and callable(self._usr2_before):
            signal.raise_signal(signal.SIGUSR2)


def exit_code(summary: dict) -> int:
    """The process exit status a run's summary calls for: 0 completed, 3 diverged, 128 + the
    signal number when a signal stopped it (130 Ctrl-C, 143 SIGTERM, 140 SIGUSR2)."""
    status = summary.get("status")
    if status == "completed":
        return 0
    if status == "diverged":
        return EXIT_DIVERGED
    if status == "interrupted":
        name = summary.get("stop_signal") or "SIGTERM"
        return 128 + int(getattr(signal, name, signal.SIGTERM))
    return 1

"""Stopping a run cleanly: the signals the training loop catches and the exit status a run's
summary calls for."""

from __future__ import annotations

import os
import signal
import threading

import jax
import numpy as np

EXIT_DIVERGED, EXIT_INTERRUPTED = 3, 143


class StopSignals:
    """Inside the training loop, SIGINT (Ctrl-C), SIGTERM (`kill`, cluster preemption) and
    SIGUSR2 (Slurm's pre-timeout / preemption warning) set `signal` instead of killing the
    process: the loop finishes its step, checkpoints and stops.

    Stopping is never torn by an impatient second signal. The handlers stay in place until the
    final checkpoint is written and the summary recorded, so a second SIGINT or SIGTERM (a
    second Ctrl-C; a sweep runner's SIGTERM after the terminal's SIGINT) only prints one line
    saying the checkpoint is being saved, and the save finishes. A third quits at once
    (`os._exit`, status 128 + the signal): the checkpoint being written is left as orbax's
    temporary directory, which is never taken for a checkpoint, and the run resumes from its
    last finished one. No KeyboardInterrupt is ever raised into JAX or orbax code (one raised
    there is swallowed by a callback, or printed as a traceback from orbax's save threads).

    With several processes, `agreed()` is the first signal any of them received (a collective
    call: every process must make it at the same steps), so all stop at the same step and
    write the checkpoint together. After the loop, `forward()` hands a SIGUSR2 on to the
    handler installed before (submitit's, which requeues the job), now that the checkpoint
    is written.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    FORCE_AFTER = 3  # the signal (SIGINT or SIGTERM) that quits without waiting for the checkpoint

    def __init__(self):
        self.signal: int | None = None
        self.step: int | None = None  # the step being finished and checkpointed (set by the loop)
        self.presses = 0  # SIGINT and SIGTERM received so far
        self._old: dict = {}
        self._usr2_before = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.HANDLED}
            self._usr2_before = self._old[signal.SIGUSR2]
        return self

    def _handle(self, signum, frame):  # no buffered I/O here: the main thread may be mid-write
        if self.signal is None:
            self.signal = signum
        if signum == signal.SIGUSR2:
            return  # a repeated warning from Slurm: the first one is being acted on
        self.presses += 1
        if self.presses < 2:
            return
        name = signal.Signals(signum).name
        at = f" at step {self.step}" if self.step is not None else ""
        if self.presses < self.FORCE_AFTER:
            _say(f"scaling: {name} again: saving the checkpoint{at} and stopping, please wait "
                 f"({'press Ctrl-C once more' if signum == signal.SIGINT else 'one more signal'} to quit without it; "
                 "the run then resumes from its previous checkpoint)")
            return
        _say(f"scaling: {name}, the third signal: quitting without the checkpoint{at}; the run resumes from its last "
             "finished checkpoint")
        os._exit(128 + int(signum))  # now: no unwinding through orbax's save threads, which would print tracebacks

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


def _say(line: str) -> None:
    """One line on stderr from a signal handler: an unbuffered write, which cannot meet the
    main thread's half-written buffer; a closed stderr is no reason to fail."""
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


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

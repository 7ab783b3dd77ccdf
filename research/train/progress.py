"""A one-line progress display: step, loss, tokens/s, ETA. Plain lines when not a terminal."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int, start: int, enabled: bool = True, stream=None, every_s: float = 10.0):
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.every_s = every_s
        self._last_print = 0.0

    def update(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        text = (f"step {step}/{self.total} | loss {row['loss']:.4f}"
                + (f" | eval {row['eval_loss']:.4f}" if "eval_loss" in row else "")
                + (f" | {row['tokens_per_s'] / 1e3:.1f}k tok/s" if row.get("tokens_per_s") else "")
                + f" | ETA {_clock(eta) if eta == eta else '?'}")
        if self.tty:
            self.stream.write("\r" + text.ljust(90))
            self.stream.flush()
        elif time.perf_counter() - self._last_print >= self.every_s or step == self.total or "eval_loss" in row:
            self._last_print = time.perf_counter()
            print(text, file=self.stream, flush=True)

    log_row = update  # a metrics sink, like the trackers

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

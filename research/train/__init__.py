"""Training: optimiser and schedule, the jitted step, checkpoints, the run directory, the loop."""

from research.train.loop import train

__all__ = ["train"]

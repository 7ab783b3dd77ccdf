"""Training: optimiser and schedule, the jitted step, checkpoints, the run directory, the loop (loop.py),
its metrics rows and summary (metrics.py) and the signals that stop it cleanly (signals.py).

`from research.train import train` imports jax lazily, so the CLI's --help stays fast.
"""


def __getattr__(name):
    if name == "train":
        from research.train.loop import train  # lazy: jax

        return train
    raise AttributeError(name)


__all__ = ["train"]

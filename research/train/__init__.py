"""Training: optimiser and schedule, the jitted step, checkpoints, the run directory, the loop.

`from research.train import train` imports jax lazily, so the CLI's --help stays fast.
"""


def __getattr__(name):
    if name == "train":
        from research.train.loop import train  # lazy: jax

        return train
    raise AttributeError(name)


__all__ = ["train"]

"""Checkpoints with orbax `CheckpointManager`: keep the last few, save asynchronously,
restore the newest one that reads back, and set aside any that does not."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int):
        self.directory = Path(directory).absolute()  # orbax wants absolute paths
        self.keep = keep
        self._open()

    def _open(self) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, meta: dict) -> None:
        """Start an asynchronous save; the previous one is finished first."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state) -> tuple[int, object, dict] | None:
        """(step, state, meta) of the newest readable checkpoint, or None if there is none.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` (with shardings) to restore into.
        A checkpoint that fails to restore is moved to `<dir>.corrupt/<step>` (kept, not
        deleted) and the next older one is tried.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return step, restored["state"], dict(restored["meta"])
            except Exception as err:  # any failure to read back means this step is unusable
                print(f"warning: checkpoint at step {step} could not be restored "
                      f"({type(err).__name__}: {str(err)[:200]}); trying an older one", file=sys.stderr)
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        self.manager.close()
        aside = self.directory.with_name(self.directory.name + ".corrupt")
        aside.mkdir(exist_ok=True)
        target = aside / str(step)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(self.directory / str(step)), target)
        self._open()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree):
    """ShapeDtypeStructs carrying each array's sharding, for restoring in place."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)

"""Checkpoints with orbax `CheckpointManager`: keep the last few, save asynchronously, and
on resume restore the newest one, telling apart two ways a restore can fail:

    corrupt       the checkpoint's own files are unreadable or missing (a torn write, a
                  disk error, bad JSON metadata). Proven by the read itself failing; the
                  step is moved to `<dir>.corrupt/<step>` (kept, never deleted) by process 0
                  only, and the next older step is tried.
    incompatible  the files read fine but do not fit this run: a changed parameter tree,
                  shapes or dtypes (a code edit), a sharding the devices cannot take, or
                  out of memory. Nothing is moved; the restore stops with one clear line
                  (`CheckpointIncompatible`, a `UserError`), since going on would throw the
                  run's history away.

A failure that is neither shown corrupt nor recognised is treated as incompatible: only
proof of corruption ever moves a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from research.errors import UserError

# tensorstore/absl status codes that mean "the bytes on disk are bad or gone".
_CORRUPT_CODES = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS")
# ... and those that mean "this machine cannot take it now".
_RESOURCE_CODES = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


class CheckpointIncompatible(UserError):
    """A checkpoint that reads back but cannot be resumed by this code, config or machine."""


class CheckpointCorrupt(Exception):
    """A checkpoint whose files cannot be read (internal: the caller sets it aside)."""


class Checkpoints:
    """`read_only=True`: restore only (a cooldown branch reading its trunk's branch points while
    the trunk, another process, may still be adding to them): nothing is created or moved."""

    def __init__(self, directory: str | Path, keep: int | None, read_only: bool = False):
        self.directory = Path(directory).absolute()  # orbax wants absolute paths
        self.keep = keep
        self.read_only = read_only
        self._open()

    def _open(self) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=not self.read_only,
                                               read_only=self.read_only,
                                               enable_async_checkpointing=not self.read_only)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})

    @property
    def aside_dir(self) -> Path:
        return self.directory.with_name(self.directory.name + ".corrupt")

    def save(self, step: int, state, meta: dict) -> None:
        """Start an asynchronous save; the previous one is finished first."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore_latest(self, abstract_state) -> tuple[int, object, dict] | None:
        """(step, state, meta) of the newest restorable checkpoint, or None if there is none.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` (with shardings) to restore into.
        Corrupt checkpoints are set aside and older ones tried; an incompatible one raises
        `CheckpointIncompatible` with every checkpoint left where it was.
        """
        set_aside = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self._restore(step, abstract_state)
            except CheckpointCorrupt as err:
                print(f"warning: checkpoint at step {step} is corrupt ({err}); "
                      + ("setting it aside in " + str(self.aside_dir) if jax.process_index() == 0 else "skipping it")
                      + " and trying an older one", file=sys.stderr)
                set_aside.append(step)
                continue
            self._set_aside(set_aside)
            return restored
        self._set_aside(set_aside)
        return None

    def restore_step(self, step: int, abstract_state) -> tuple[int, object, dict]:
        """(step, state, meta) of the checkpoint at exactly `step`; a missing or corrupt one is a
        UserError naming it (nothing is moved: this is how a branch reads its trunk)."""
        if step not in self.manager.all_steps():
            raise UserError(f"no checkpoint at step {step} in {self.directory}")
        try:
            return self._restore(step, abstract_state)
        except CheckpointCorrupt as err:
            raise UserError(f"the checkpoint at step {step} in {self.directory} is corrupt ({err}); nothing was "
                            f"moved: delete the run that wrote it ({self.directory.parent}) to train it again") from None

    def _restore(self, step: int, abstract_state) -> tuple[int, object, dict]:
        where = self.directory / str(step)
        try:
            stored = self.manager.item_metadata(step)["state"]
        except Exception as err:  # classified below: only proof of bad bytes is "corrupt"
            raise _classify(err, step, where, "reading its metadata") from err
        mismatch = tree_mismatch(getattr(stored, "tree", stored), abstract_state)
        if mismatch:
            raise CheckpointIncompatible(
                f"the checkpoint at step {step} in {self.directory} does not fit this run ({mismatch}); the model "
                "or optimiser code changed since it was saved. Nothing was moved: restore the code that wrote "
                f"it, or move {self.directory} away to start over")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as err:  # classified below
            raise _classify(err, step, where, "restoring it") from err
        if not isinstance(restored["meta"], dict):
            raise CheckpointCorrupt(f"its meta item is {type(restored['meta']).__name__}, not a JSON object")
        return step, restored["state"], dict(restored["meta"])

    def _set_aside(self, steps: list[int]) -> None:
        """Move corrupt steps aside (process 0 only); every process then sees the same steps.
        Every process makes the same orbax calls in the same order (they are collective)."""
        if not steps:
            return
        self.manager.close()
        if jax.process_index() == 0:
            self.aside_dir.mkdir(exist_ok=True)
            for step in steps:
                target = self.aside_dir / str(step)
                if target.exists():
                    shutil.rmtree(target)
                shutil.move(str(self.directory / str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("research.checkpoint.set_aside")
        self._open()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def keep_copy(self, step: int, target_dir: Path) -> bool:
        """Keep the finished checkpoint at `step` for good as `target_dir/<step>` (a cooldown branch
        point), out of reach of this manager's rotation. Files are hard links where the filesystem
        allows (a finalised checkpoint's files are never rewritten), else copies; the directory
        appears whole or not at all (staged beside it, then renamed). Process 0 only. False when
        the checkpoint is no longer here."""
        self.manager.wait_until_finished()
        target = Path(target_dir) / str(step)
        source = self.directory / str(step)
        if target.exists() or jax.process_index() != 0:
            return target.exists()
        if not source.is_dir():
            return False
        staging = Path(target_dir).with_name(Path(target_dir).name + ".incoming") / str(step)
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, staging, copy_function=_link_or_copy)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        return True


def _link_or_copy(src: str, dst: str) -> None:
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _classify(err: BaseException, step: int, where: Path, doing: str) -> Exception:
    """CheckpointCorrupt when the error proves the files are bad, else CheckpointIncompatible."""
    text = str(err)
    first = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    if isinstance(err, MemoryError) or any(code in text for code in _RESOURCE_CODES):
        return CheckpointIncompatible(
            f"out of memory restoring the checkpoint at step {step} in {where.parent} ({first}); nothing was "
            "moved: resume on a machine with more memory or with more devices")
    if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError, IsADirectoryError)) \
            or any(text.startswith(code) or f" {code}:" in text for code in _CORRUPT_CODES):
        return CheckpointCorrupt(f"{doing}: {type(err).__name__}: {first}")
    return CheckpointIncompatible(
        f"the checkpoint at step {step} in {where.parent} cannot be restored on this run ({type(err).__name__} "
        f"while {doing}: {first}); nothing was moved: fix the cause (a changed mesh or device count needs "
        f"the same sharding), or move {where.parent} away to start over")


def _path_str(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def tree_mismatch(stored, abstract_state) -> str:
    """'' if `stored` (orbax array metadata) has the paths, shapes and dtypes of
    `abstract_state`, else a short description of the first differences."""
    have = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]}
    want = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    problems = [f"{k} missing from the checkpoint" for k in sorted(set(want) - set(have))]
    problems += [f"{k} only in the checkpoint" for k in sorted(set(have) - set(want))]
    for k in sorted(set(have) & set(want)):
        h, w = have[k], want[k]
        h_shape, h_dtype = tuple(getattr(h, "shape", ()) or ()), getattr(h, "dtype", None)
        if h_shape != tuple(w.shape):
            problems.append(f"{k} has shape {h_shape} in the checkpoint, {tuple(w.shape)} now")
        elif h_dtype is not None and jax.numpy.dtype(h_dtype) != jax.numpy.dtype(w.dtype):
            problems.append(f"{k} is {jax.numpy.dtype(h_dtype)} in the checkpoint, {jax.numpy.dtype(w.dtype)} now")
    if not problems:
        return ""
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def abstract_like(tree):
    """ShapeDtypeStructs carrying each array's sharding, for restoring in place."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)

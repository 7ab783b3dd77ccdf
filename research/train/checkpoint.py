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

Corruption is read from the whole cause chain of the error (orbax wraps tensorstore's
OUT_OF_RANGE or "ZSTD_decompressStream() failed" in a generic exception), and where the
chain proves nothing the step is checked directly: its arrays are restored into a scratch
tree on one host device, without the run's sharding. If even that read fails, the files
are bad (corrupt); if it succeeds, what failed is the fit to this run's mesh (incompatible).
Only proof of corruption ever moves a checkpoint, and a moved one is kept, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from research.errors import UserError

# tensorstore/absl status codes that mean "the bytes on disk are bad or gone".
_CORRUPT_CODES = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS")
# ... and codes that mean it only when tensorstore says it was reading or decoding the files.
_READ_CODES = ("FAILED_PRECONDITION", "INVALID_ARGUMENT", "UNKNOWN", "INTERNAL")
_READ_WORDS = ("Error reading", "decompress", "Error decoding", "checksum", "Unexpected end", "corrupt")
# ... and those that mean "this machine cannot take it now".
_RESOURCE_CODES = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


class CheckpointIncompatible(UserError):
    """A checkpoint that reads back but cannot be resumed by this code, config or machine.
    `proven`: the cause is known (a tree difference, out of memory), so no read check can change it."""

    def __init__(self, message: str, proven: bool = False):
        super().__init__(message)
        self.proven = proven


class CheckpointCorrupt(Exception):
    """A checkpoint whose files cannot be read (internal: the caller sets it aside)."""


class Checkpoints:
    """`read_only=True`: restore only (a cooldown branch reading its trunk's branch points while
    the trunk, another process, may still be adding to them): nothing is created or moved."""

    def __init__(self, directory: str | Path, keep: int | None, read_only: bool = False):
        _quiet_closed_event_loops()
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
        """Start an asynchronous save; the previous one is finished first. A save the disk
        refused (full, quota, read-only) is raised here or at `wait`/`close` as one OSError."""
        with _storage_errors(self.directory):
            if step in self.manager.all_steps():
                return
            _probe_writable(self.directory)
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        with _storage_errors(self.directory):
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
            raise self._verdict(err, step, abstract_state, "reading its metadata") from err
        mismatch = tree_mismatch(getattr(stored, "tree", stored), abstract_state)
        if mismatch:
            raise CheckpointIncompatible(
                f"the checkpoint at step {step} in {self.directory} does not fit this run ({mismatch}); the model "
                "or optimiser code changed since it was saved. Nothing was moved: run the code that wrote it, "
                "or train this config into a new --out directory", proven=True)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as err:  # classified below
            raise self._verdict(err, step, abstract_state, "restoring it") from err
        if not isinstance(restored["meta"], dict):
            raise CheckpointCorrupt(f"its meta item is {type(restored['meta']).__name__}, not a JSON object")
        return step, restored["state"], dict(restored["meta"])

    def _verdict(self, err: BaseException, step: int, abstract_state, doing: str) -> Exception:
        """Corrupt or incompatible: from the error's cause chain, else by reading the step's arrays
        into a scratch tree on one host device (no mesh), which only bad files can fail."""
        verdict = _classify(err, step, self.directory / str(step), doing)
        if not isinstance(verdict, CheckpointIncompatible) or verdict.proven:
            return verdict
        host = jax.local_devices(backend="cpu")[0]
        scratch = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(host)),
            abstract_state)
        try:
            self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(scratch), meta=ocp.args.JsonRestore()))
        except Exception as scratch_err:  # the files themselves cannot be read back: classified here
            again = _classify(scratch_err, step, self.directory / str(step), "reading it back on one device")
            if isinstance(again, CheckpointIncompatible) and again.proven:
                return again  # out of memory even for the check: prove nothing, move nothing
            return CheckpointCorrupt(f"{doing}: {_first_line(err)}; and reading it back on one host device "
                                     f"failed too: {_first_line(scratch_err)}")
        return verdict

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
        with _storage_errors(self.directory):
            try:
                self.manager.wait_until_finished()
            finally:
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


# Tensorstore's words for a write the storage refused, and the errno each one means.
_WRITE_FAILURES = (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT), ("Read-only file system", errno.EROFS),
                   ("Permission denied", errno.EACCES), ("RESOURCE_EXHAUSTED: Error writing", errno.ENOSPC))


def _probe_writable(directory: Path) -> None:
    """Create and remove one small file in `directory`, so that a directory the process may not write is
    refused here, in the caller's thread, as the OSError it is. Left to orbax, the refusal happens in its
    background threads, the run goes on, and the wait for the failed save can hang until its timeouts."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-probe-{jax.process_index()}-{os.getpid()}"
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    probe.unlink(missing_ok=True)


@contextlib.contextmanager
def _storage_errors(directory: Path):
    """A save that failed on the storage (orbax raises it as a ValueError from its background
    thread) re-raised as the OSError it is, naming the checkpoint directory: one line at the CLI."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:  # re-raised unchanged unless its chain shows a refused write
        for e in _chain(err):
            if isinstance(e, OSError) and e.errno is not None:
                raise OSError(e.errno, e.strerror or str(e), str(e.filename or directory)) from err
            for words, code in _WRITE_FAILURES:
                if words in str(e):
                    raise OSError(code, os.strerror(code) + " (saving a checkpoint)", str(directory)) from err
        raise


class _NoTracebacks(logging.Filter):
    """orbax logs each failure of its background save threads at ERROR with a traceback, several
    times over; the failure itself reaches the caller and is reported there in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.levelno >= logging.ERROR)


def _quiet_closed_event_loops() -> None:
    """After a failed read, tensorstore still calls back into the event loop orbax has closed;
    Python reports each as an 'unraisable' RuntimeError traceback. Those (and only those) are
    dropped: the failure itself is already classified and reported in one line."""
    previous = sys.unraisablehook
    if getattr(previous, "_research_quiet", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        if isinstance(unraisable.exc_value, ImportError) and "likely shutting down" in str(unraisable.exc_value):
            return  # an orbax write coroutine abandoned at exit after a failed save
        previous(unraisable)

    hook._research_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("absl").addFilter(_NoTracebacks())


def _link_or_copy(src: str, dst: str) -> None:
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _chain(err: BaseException):
    """`err` and every exception it was raised from or while handling, outermost first."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _first_line(err: BaseException) -> str:
    """The most telling line of an error chain: the first storage status line if there is one."""
    for e in _chain(err):
        text = str(e).strip()
        if any(text.startswith(code) for code in _CORRUPT_CODES + _READ_CODES):
            return f"{type(e).__name__}: {text.splitlines()[0][:300]}"
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _proves_bad_files(e: BaseException) -> bool:
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError, IsADirectoryError,
                      NotADirectoryError, EOFError)):
        return True
    text = str(e)
    if any(text.startswith(code) or f" {code}:" in text for code in _CORRUPT_CODES):
        return True
    return any(text.startswith(code) or f" {code}:" in text for code in _READ_CODES) \
        and any(word in text for word in _READ_WORDS)


def _classify(err: BaseException, step: int, where: Path, doing: str) -> Exception:
    """CheckpointCorrupt when some error in the cause chain proves the files are bad, else
    CheckpointIncompatible (`proven` for out of memory; otherwise worth a read check)."""
    chain = list(_chain(err))
    if any(isinstance(e, MemoryError) or any(code in str(e) for code in _RESOURCE_CODES) for e in chain):
        return CheckpointIncompatible(
            f"out of memory restoring the checkpoint at step {step} in {where.parent} ({_first_line(err)}); "
            "nothing was moved: resume on a machine with more memory or with more devices", proven=True)
    if any(_proves_bad_files(e) for e in chain):
        return CheckpointCorrupt(f"{doing}: {_first_line(err)}")
    return CheckpointIncompatible(
        f"the checkpoint at step {step} in {where.parent} reads back but cannot be placed on this run's devices "
        f"({_first_line(err)} while {doing}); nothing was moved: resume with the device count and mesh "
        "that wrote it")


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

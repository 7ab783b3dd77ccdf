"""Small filesystem helpers shared by training and sweeps: atomic writes and process locks."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
import tempfile
import time
from pathlib import Path

from research.errors import UserError, with_path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode a plain `open(path, "w")` would leave: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file. The file gets the
    mode an ordinary write would give it (the umask's, or the replaced file's), not mkstemp's 0600,
    so collaborators on a shared file system can read results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # named by the file asked for, not by a temporary name the user never chose
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise with_path(err, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# Bounds on what any parser of ours takes: a config, law or record file is small and shallow.
MAX_FILE_BYTES = 64 << 20
MAX_NESTING = 64


def read_regular_text(path: str | Path, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most `limit` bytes: a device
    (/dev/zero), pipe or directory is never read as data. UserError (one line) otherwise;
    FileNotFoundError passes through for callers that treat a missing file specially."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except (ValueError, TypeError) as err:  # a NUL byte in the path
        raise UserError(f"{what} {str(path)[:200]!r} is not a usable path ({err})") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a file") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        raise UserError(f"{what} {path} is {kind}, not a regular file; pass a file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{what} {path} is larger than {limit >> 20} MiB; this is not a file the harness wrote")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{what} {path} is not UTF-8 text, so not valid JSON or TOML ({err.reason} at byte "
                        f"{err.start})") from None


def nesting_depth(obj, limit: int = MAX_NESTING) -> int:
    """Depth of nested lists/dicts (0 for a scalar), counting no further than `limit` + 1."""
    depth, level = 0, [obj]
    while level and depth <= limit:
        level = [v for x in level if isinstance(x, (dict, list))
                 for v in (x.values() if isinstance(x, dict) else x)]
        depth += 1
    return depth - (0 if level else 1) if depth else 0


def loads_json(text: str, what: str, limit: int = MAX_NESTING):
    """json.loads that refuses nesting deeper than `limit` in one line (never a RecursionError)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserError(f"{what} is nested too deeply to be a file the harness wrote (over {limit} levels)") from None
    if nesting_depth(data, limit) > limit:
        raise UserError(f"{what} is nested more than {limit} levels deep; not a file the harness wrote")
    return data


def read_json(path: str | Path) -> dict | None:
    """A JSON file the harness wrote, or None when it is missing or unreadable as one: a device,
    pipe or directory in its place is never read (it may never end), nor one over MAX_FILE_BYTES
    or nested past MAX_NESTING. Callers that must tell the user why use read_regular_text."""
    try:
        return loads_json(read_regular_text(path, "file"), str(path))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UserError):
        return None


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a killed writer) is skipped."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


# Open-file-description locks (Linux >= 3.15): owned by the open file, like flock, so the
# kernel drops one when its holder dies and closing another handle on the file does not;
# unlike flock they can be *tested* (F_OFD_GETLK) without being taken, and they work on NFS.
_OFD = hasattr(fcntl, "F_OFD_SETLK") and hasattr(fcntl, "F_OFD_GETLK")
_FLOCK_STRUCT = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding)


def _whole_file(lock_type: int) -> bytes:
    return struct.pack(_FLOCK_STRUCT, lock_type, os.SEEK_SET, 0, 0, 0)


class ProcessLock:
    """An exclusive lock on a file that the kernel drops when its holder dies, so a lock
    left by a killed process is reclaimed by the next taker without any cleanup.

    `is_held` only tests the lock, never takes it: probing (status views, waiting runners)
    cannot make a process that is starting a trial fail to acquire. Where open-file-description
    locks are missing (not Linux), `flock` is used and `acquire` retries through a probe's
    brief hold instead.
    """

    _RETRY_S = 0.05  # flock fallback only: how long acquire keeps trying through probes

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not (_take_ofd(fd) if _OFD else _take_flock(fd, self._RETRY_S)):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def is_held(self) -> bool:
        """True if some process (this one included, through another handle) holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if _OFD:
                got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
                return struct.unpack(_FLOCK_STRUCT, got)[0] != fcntl.F_UNLCK
            try:  # flock has no test: take and drop it at once (acquire retries through this)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            except BlockingIOError:
                return True
        finally:
            os.close(fd)

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except FileNotFoundError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only handle drops either kind of lock
            self._fd = None

    def __enter__(self):
        if not self.acquire():
            raise BlockingIOError(f"{self.path} is held by pid {self.holder()}")
        return self

    def __exit__(self, *exc):
        self.release()


def _take_ofd(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
        return True
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _take_flock(fd: int, retry_s: float) -> bool:
    deadline = time.monotonic() + retry_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

"""The one exception type for bad user input.

Raise `UserError("what is wrong; how to fix it")` anywhere; the CLI prints it
as a single line (no traceback) and exits with status 2.
"""

import difflib
import errno
import traceback


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI."""


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


# Errors of the machine met while work is under way: the CLI exits 1 for these (after the
# command saved what it could); every other OSError is a bad path or permission: exit 2.
MID_RUN_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS)

# What the innermost frame of an OSError's traceback was doing, in words.
_OPERATIONS = {
    "mkdir": "creating the directory", "makedirs": "creating the directory", "open": "opening",
    "read_text": "reading", "read_bytes": "reading", "write_text": "writing", "write_bytes": "writing",
    "replace": "renaming to", "rename": "renaming", "unlink": "removing", "rmtree": "removing",
    "copytree": "copying", "copy2": "copying", "copyfile": "copying", "move": "moving", "symlink_to": "linking",
    "mkstemp": "creating a temporary file in", "_mkstemp_inner": "creating a temporary file in",
    "touch": "creating", "iterdir": "listing", "scandir": "listing", "stat": "inspecting",
    "flush": "writing", "fsync": "writing", "write": "writing", "savefig": "writing", "to_csv": "writing",
    "atomic_write_text": "writing",
}


def os_error_line(err: OSError) -> str:
    """One line for any OSError: what failed (path and operation) and what to do about it."""
    names = [frame.name for frame in traceback.extract_tb(err.__traceback__)] if err.__traceback__ else []
    operation = next((_OPERATIONS[n] for n in reversed(names) if n in _OPERATIONS), "accessing")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        operation = "writing"
    path = err.filename if err.filename is not None else getattr(err, "research_path", None)
    where = f" {path}" if path is not None else ""
    if getattr(err, "filename2", None):
        where += f" -> {err.filename2}"
    reason = err.strerror or type(err).__name__
    advice = {
        errno.ENOSPC: "free some space (or point the output elsewhere) and re-run: finished work is kept",
        errno.EDQUOT: "free some quota and re-run: finished work is kept",
        errno.EACCES: "check the permissions, or choose another path",
        errno.EPERM: "check the permissions, or choose another path",
        errno.EROFS: "choose a writable path",
        errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
        errno.EISDIR: "it is a directory where a file is expected: choose another path",
        errno.ENOENT: "check the path",
        errno.ELOOP: "the path is a loop of symbolic links",
    }.get(err.errno, "check the path and the device")
    return f"{reason} while {operation}{where}; {advice}"


def with_path(err: OSError, path) -> OSError:
    """`err` carrying `path` for the message when the OS did not name one (a failed write() on an open file)."""
    if err.filename is None:
        err.research_path = str(path)
    return err

"""The one exception type for bad user input.

Raise `UserError("what is wrong; how to fix it")` anywhere; the CLI prints it
as a single line (no traceback) and exits with status 2.
"""

import difflib


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI."""


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""

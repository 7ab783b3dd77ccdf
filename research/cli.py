"""`scaling` command line: one subcommand per stage of the data flow.

Each entry maps a subcommand to the module that defines it. That module has
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Modules import heavy libraries (jax, pandas) inside their handlers so that
`--help` stays fast. A command module that fails to import is an error of the
package, raised with its traceback: never skipped as "not built yet".
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from research import __version__
from research.guards import check_args, check_jax_start
from research.errors import MID_RUN_ERRNOS, UserError, os_error_line, with_path

COMMANDS = {
    "size": "research.model.cli",
    "data": "research.data.cli",
    "train": "research.train.cli",
    "sweep": "research.sweep.cli",
    "fit": "research.fit.cli",
    "optimal": "research.fit.cli",
    "predict": "research.fit.predict_cli",
    "lr-rule": "research.fit.lr_rule_cli",
    "curves": "research.curves.cli",
    "plot": "research.plots.cli",
    "compare": "research.plots.compare",
    "bench": "research.bench.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="Train decoder transformers at many (N, D), fit scaling laws, plot them.",
    )
    parser.add_argument("--version", action="version", version=f"scaling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for module_name in COMMANDS.values():
        if module_name in seen:
            continue
        seen.add(module_name)
        importlib.import_module(module_name).register(sub)  # a broken command module fails here, loudly
    _negative_numbers_are_values(parser)
    return parser


# argparse takes "-1e9" for an option (its pattern knows "-5" and "-.5" only), so `--n-params -1e9`
# said "expected one argument"; as a value it reaches the check that says what is wrong with it.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _negative_numbers_are_values(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _negative_numbers_are_values(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    real_stdout, sys.stdout = sys.stdout, _NamedStream(sys.stdout, "<standard output>")
    try:
        check_args(args)
        check_jax_start()
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # output to a full device fails here at the latest, inside the handlers below
        return code
    except UserError as err:
        one_line = " ".join(str(err).splitlines())  # a value or path with a line break still gives one line
        print(f"scaling {args.command}: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output cut short by `| head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # the one path for the operating system's refusals: one line, no traceback
        _drop_unwritten_stdout()
        print(f"scaling {args.command}: error: {' '.join(os_error_line(err).splitlines())}", file=sys.stderr)
        return 1 if err.errno in MID_RUN_ERRNOS else 2
    finally:
        if isinstance(sys.stdout, _NamedStream):
            sys.stdout = real_stdout


class _NamedStream:
    """A stream whose failed writes name it: a print to a full device says `<standard output>`."""

    def __init__(self, stream, name: str):
        self._stream, self._name = stream, name

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as err:
            raise with_path(err, self._name)

    def flush(self):
        try:
            return self._stream.flush()
        except OSError as err:
            raise with_path(err, self._name)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _drop_unwritten_stdout() -> None:
    """When stdout itself fails (a full device), the interpreter's exit flush goes nowhere."""
    import os

    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())

"""The `scaling` entry point: every command registers, and a broken command module fails loudly."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from research import cli


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_in_the_map_is_registered():
    assert _commands(cli.build_parser()) == set(cli.COMMANDS)


def test_a_missing_command_module_is_an_error_not_a_skipped_stage(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "ghost", "research.no_such_stage.cli")
    with pytest.raises(ModuleNotFoundError, match="research.no_such_stage"):
        cli.build_parser()


def test_a_command_module_that_fails_to_import_fails_loudly(tmp_path):
    (tmp_path / "broken_stage_cli.py").write_text("import a_library_that_is_not_installed\n\n"
                                                   "def register(sub):\n    pass\n")
    code = ("import sys; from research import cli; cli.COMMANDS['broken'] = 'broken_stage_cli'; "
            "sys.exit(cli.main(['--help']))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "ModuleNotFoundError: No module named 'a_library_that_is_not_installed'" in proc.stderr
    assert "broken_stage_cli.py" in proc.stderr  # the traceback names the broken module

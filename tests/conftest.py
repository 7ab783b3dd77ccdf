"""Shared test setup.

Prepared datasets go to one cache per test session (never the user's ~/.cache), set
through SCALING_DATA_DIR so subprocesses (`scaling ...`) see it too.
"""

import os
import sys
from pathlib import Path

import pytest

# `slurm_cluster`: one real one-node Slurm cluster per session, for the tests that ask for it.
pytest_plugins = ["tests.slurm_cluster"]

REPO = Path(__file__).resolve().parents[1]
SCALING = [sys.executable, "-m", "research"]


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("data-cache")
    old = os.environ.get("SCALING_DATA_DIR")
    os.environ["SCALING_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SCALING_DATA_DIR", None)
    else:
        os.environ["SCALING_DATA_DIR"] = old

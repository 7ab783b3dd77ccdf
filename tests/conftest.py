"""Shared test setup.

Prepared datasets go to one cache per test run (never the user's ~/.cache), shared by the
xdist workers (preparing takes a lock, so a dataset is built once), set through
SCALING_DATA_DIR so subprocesses (`scaling ...`) see it too.

The suite runs in parallel (pytest-xdist; `addopts` in pyproject.toml). Two rules keep it
correct there, applied below at collection:
- a test that uses a module-scoped fixture runs on the worker that made it (the module's
  tests form one xdist group), so the fixture is built once and module-level tallies are whole;
- every `slurm` test runs on one worker (group "slurm"), so one cluster serves them all.
A module's expensive training (tests/test_sharding.py's meshes, tests/test_train_faults.py's
straight run) is a module fixture, so the first rule makes it once per run.

JAX's persistent compilation cache is on for the whole run, one directory for all workers
and every process they start: the suite trains the same tiny shapes in dozens of tests and
subprocesses, and a program compiled once is loaded (bit for bit the same executable) by
the rest. A sweep's trials use it too (SCALING_COMPILATION_CACHE names it, in place of each
sweep's own <sweep>/jax_cache: the suite's dozens of sweeps train the same few shapes); the test
of the sweep's own cache drops that variable. A test that needs JAX to really compile asks for
the `no_compilation_cache` fixture.
"""

import json
import os
import sys
from pathlib import Path

# Set before JAX starts: XLA's CPU backend without its LLVM optimisation passes, for every test process
# and each process they start. The suite's tiny programs compile in about half the time (a train step's
# first call 1.6 s -> 0.9 s) and run slower, which tests of this size never notice. Results are IEEE
# arithmetic all the same; two runs a test compares both get these flags (subprocesses inherit them).
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()

# submitit configures logging when first imported (logging.config.dictConfig), which closes every handler
# that exists then, absl's included; absl's handler writes to the stream pytest captured when absl was
# imported, so a sweep test importing submitit after a JAX test collected absl closed pytest's own capture
# ("I/O operation on closed file", then "lost sys.stderr", under -n 0). Imported first, it closes nothing.
import submitit  # noqa: E402,F401

import jax  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
from xdist.scheduler import LoadScopeScheduling  # noqa: E402

from research.guards import check_jax_start  # noqa: E402

# `slurm_cluster`: one real one-node Slurm cluster per session, for the tests that ask for it.
pytest_plugins = ["tests.slurm_cluster"]

REPO = Path(__file__).resolve().parents[1]
SCALING = [sys.executable, "-m", "research"]
SWEEP_CACHE_ENV = "SCALING_COMPILATION_CACHE"  # research.sweep.trial.CACHE_ENV


def _xdist_group(item: pytest.Item) -> str | None:
    if item.get_closest_marker("slurm"):
        return "slurm"
    defs = item._fixtureinfo.name2fixturedefs.values()
    if any(d and d[-1].scope == "module" for d in defs):
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    groups = {}
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            groups[item.nodeid] = group
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # for GroupScheduling in the controller, which collects nothing itself
        path = config._tmp_path_factory.getbasetemp().parent / f"xdist-groups-{worker}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.rename(path)


DURATIONS = Path(__file__).with_name("durations.json")  # {node id: seconds}, written by benchmarks/test_suite_times.py
DEFAULT_DURATION_S = 0.5  # a test the file does not list (most tests take well under a second)


def work_unit(item: pytest.Item) -> str:
    """What the scheduler hands out as one piece: the test's xdist group (as GroupScheduling names it),
    else the test itself."""
    marker = item.get_closest_marker("xdist_group")
    return f"group:{marker.args[0]}" if marker else item.nodeid


def expected_durations(items) -> dict[str, float]:
    """Each work unit's expected seconds (a group's is the sum of its tests'). A stale or missing
    file only costs balance."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    units: dict[str, float] = {}
    for item in items:
        unit = work_unit(item)
        units[unit] = units.get(unit, 0.0) + float(known.get(item.nodeid, DEFAULT_DURATION_S))
    return units


@pytest.hookimpl(specname="pytest_collection_modifyitems", trylast=True)
def pytest_collection_modifyitems_longest_first(config, items):
    """On an xdist worker: order the work units longest first (each group kept together), so the
    scheduler hands them out longest-processing-time first and no long test starts last while the
    other workers sit idle. Every worker sorts the same way, so their collections agree."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    seconds = expected_durations(items)
    first = {}
    for index, item in enumerate(items):
        first.setdefault(work_unit(item), index)
    items.sort(key=lambda item: (-seconds[work_unit(item)], first[work_unit(item)]))


class GroupScheduling(LoadScopeScheduling):
    """`--dist loadgroup` as documented: tests with the same xdist_group mark go to one worker,
    the rest one by one to whichever worker is free. (xdist 3.8 marks a group by rewriting
    the test's node id, which pytest 9.2's structured node ids silently ignore, pytest-xdist
    issue #1386; here the workers write their groups to a file the controller reads.)"""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        self._groups: dict[str, str] | None = None
        config.option.loadscopereorder = False  # keep the workers' longest-first order (pytest_collection_modifyitems_longest_first)

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            self._groups = {}
            for path in self.config._tmp_path_factory.getbasetemp().glob("xdist-groups-*.json"):
                self._groups.update(json.loads(path.read_text()))
        group = self._groups.get(nodeid)
        return f"group:{group}" if group else nodeid


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per usable core, plus one. The Slurm group (about 150 s) spends
    nearly all its time waiting for the cluster's jobs, and a few tests wait on sleeping
    subprocesses; the extra worker keeps the cores busy meanwhile."""
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup":
        return GroupScheduling(config, log)
    return None


def run_root(tmp_path_factory) -> Path:
    """The directory every xdist worker of this test run shares (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture
def default_compile_env() -> dict:
    """The environment for a subprocess that must compile as users' runs do (FAST_COMPILE removed): for
    a test whose premise rests on a numerical path (a solver's resample that overflows), not a result."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace(FAST_COMPILE, "").strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="session", autouse=True)
def jax_start_checked():
    """`scaling` probes JAX in a child process when XLA_FLAGS is set (research/guards.py); probed once
    here, the result is in the environment every command and subprocess of the run inherits."""
    check_jax_start()


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    path = run_root(tmp_path_factory) / "data-cache"
    path.mkdir(exist_ok=True)
    old = os.environ.get("SCALING_DATA_DIR")
    os.environ["SCALING_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SCALING_DATA_DIR", None)
    else:
        os.environ["SCALING_DATA_DIR"] = old


def _cache_settings(path: Path | None) -> dict:
    """JAX options (their JAX_* environment variables are the upper-cased names)."""
    if path is None:
        return {"jax_compilation_cache_dir": None}
    return {
        "jax_compilation_cache_dir": str(path),
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # the tiny programs compile in under a second
        "jax_persistent_cache_min_entry_size_bytes": 0,
        # a size limit turns on JAX's file lock around every read and write: workers share the cache
        "jax_compilation_cache_max_size": 4 << 30,
    }


def _use_cache(path: Path | None) -> None:
    """Point this process's compilation cache at `path` (None: off)."""
    for name, value in _cache_settings(path).items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()  # the next compile opens the cache as now configured


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    path = run_root(tmp_path_factory) / "jax-cache"
    path.mkdir(exist_ok=True)
    env = {name.upper(): str(value) for name, value in _cache_settings(path).items()}
    env[SWEEP_CACHE_ENV] = str(path.absolute())  # sweeps' trials too (research/sweep/trial.py)
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # for subprocesses
    _use_cache(path)  # and for this process
    yield path
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _use_cache(None)


@pytest.fixture
def no_compilation_cache(jax_compilation_cache):
    """This process compiles for itself (for tests that time compilation); a subprocess does
    too when the caller drops JAX_COMPILATION_CACHE_DIR from its environment."""
    _use_cache(None)
    yield
    _use_cache(jax_compilation_cache)

"""Process locks: probing a lock never takes it, so a process starting a trial while
status views and runners probe constantly always gets its lock (issue 10, fault 2)."""

import os
import subprocess
import sys
import time

from research.errors import UserError
from research.fsutil import ProcessLock
from research.train.run_dir import RunDir
from tests.conftest import REPO

# What `sweep status`, the live view and waiting runners do per trial (trial_status probes
# the trial's .lock and .claim), as fast as it can until the stop file appears.
_HAMMER = """
import sys, pathlib
from research.train.sweep_dir import trial_status
trial, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
pathlib.Path(sys.argv[3]).touch()
n = 0
while not stop.exists():
    for _ in range(100):
        trial_status(trial)
    n += 100
print(n)
"""


def _start_hammers(tmp_path, trial_dir, count):
    stop = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = []
    for i in range(count):
        ready = tmp_path / f"ready{i}"
        procs.append((subprocess.Popen([sys.executable, "-c", _HAMMER, str(trial_dir), str(stop), str(ready)],
                                       stdout=subprocess.PIPE, text=True, env=env), ready))
    deadline = time.time() + 60
    while not all(ready.exists() for _, ready in procs) and time.time() < deadline:
        time.sleep(0.01)
    return stop, [p for p, _ in procs]


def test_trial_start_never_fails_while_status_probes(tmp_path):
    """A trial starting (its run directory taking .lock) while status probes hammer it."""
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    stop, hammers = _start_hammers(tmp_path, trial_dir, 2)
    failures, attempts = [], 0
    try:
        deadline = time.time() + 3
        while time.time() < deadline:
            run = RunDir(trial_dir)
            attempts += 1
            try:
                run.acquire()
                run.release()
            except UserError as err:
                failures.append(str(err))
    finally:
        stop.touch()
        probes = [int(p.communicate(timeout=60)[0]) for p in hammers]
    assert min(probes) > 1000, f"the probing processes barely ran ({probes})"
    assert not failures, f"{len(failures)} of {attempts} starts failed while {sum(probes)} probes ran: {failures[0]}"


def test_probe_sees_holder_in_other_process_and_this_one(tmp_path):
    lock_path = tmp_path / ".lock"
    probe = ProcessLock(lock_path)
    assert not probe.is_held()  # no file yet
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom research.fsutil import ProcessLock\n"
                               f"l = ProcessLock({str(lock_path)!r}); assert l.acquire(); print('held', flush=True)\n"
                               "time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "held"
        assert probe.is_held() and probe.holder() == str(holder.pid)
        assert not ProcessLock(lock_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: free again, and takeable
    assert not probe.is_held()
    mine = ProcessLock(lock_path)
    assert mine.acquire()
    assert probe.is_held(), "a lock held by this process through another handle must read as held"
    probe.is_held()  # probing through (and closing) another handle must not drop our lock
    assert not ProcessLock(lock_path).acquire()
    mine.release()
    assert not probe.is_held()

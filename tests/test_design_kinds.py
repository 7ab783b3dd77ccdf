"""[design] kinds: every committed sweep file plans the same trials as before, and old sweep records stay readable.

tests/data/sweep_plans_golden.json was recorded from the code at commit b114bc3 (one flat
DesignConfig for every kind), before the design kinds got a typed config each: for every
sweeps/*.toml that is a sweep file, the [design] record its sweep.json held (`design`), and, where it
plans, its trial ids and their trunks in plan order, its trunk ids and the counts of rejected and dropped
points. A trial id is the hash of the trial's resolved config, so equal ids mean a sweep already run
resumes without retraining anything.
"""

import json
from pathlib import Path

import pytest

from research.sweep.plan import load_sweep, plan

REPO = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((REPO / "tests" / "data" / "sweep_plans_golden.json").read_text())
PLANNED = sorted(name for name, entry in GOLDEN.items() if "trials" in entry)


def test_the_golden_record_covers_every_committed_sweep_file():
    sweep_files = {p.stem for p in (REPO / "sweeps").glob("*.toml") if "[design]" in p.read_text()}
    assert sweep_files == set(GOLDEN), "a sweep file was added or removed: record its plan in the golden file"
    kinds = {GOLDEN[name]["design"]["kind"] for name in PLANNED}
    assert {"isoflop", "branches", "lr"} <= kinds


@pytest.mark.parametrize("name", PLANNED)
def test_committed_sweep_plans_the_same_trial_ids(name):
    expected = GOLDEN[name]
    p = plan(load_sweep(REPO / "sweeps" / f"{name}.toml"))
    assert [[t.trial_id, t.trunk_id] for t in p.trials] == expected["trials"]
    assert [t.trial_id for t in p.trunks] == expected["trunks"]
    assert (len(p.rejected), len(p.dropped)) == (expected["rejected"], expected["dropped"])

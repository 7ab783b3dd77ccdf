"""Issue 23, data causes: a corpus is identified by its content (a touched unchanged file reuses
the prepared dataset), directories are walked without following links into loops or reading a
file twice, and a shard with out-of-vocabulary ids is refused before step 1."""

import os
import random
from pathlib import Path

import pytest

from research.data.prepare import prepare_dataset
from research.errors import UserError


def _corpus(root: Path, n: int = 40) -> Path:
    rng = random.Random(1)
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"a{i:02d}.txt").write_text(" ".join(rng.choice(["the", "cat", "sat", "on", "a", "mat"])
                                                     for _ in range(300)))
    return root


def test_touched_unchanged_corpus_reuses_its_dataset_and_a_changed_one_does_not(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    kw = dict(val_fraction=0.3, data_dir=tmp_path / "cache")
    first, reused = prepare_dataset(str(corpus), "bytes", **kw)
    assert not reused
    later = os.stat(corpus / "a03.txt").st_mtime_ns + 10**9
    os.utime(corpus / "a03.txt", ns=(later, later))  # touch, `git checkout`, rsync without -t
    again, reused = prepare_dataset(str(corpus), "bytes", **kw)
    assert reused and again == first, "a touched but unchanged corpus was prepared a second time"
    with open(corpus / "a03.txt", "a") as f:
        f.write(" changed")
    changed, reused = prepare_dataset(str(corpus), "bytes", **kw)
    assert not reused and changed != first

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


def test_links_into_loops_and_globs_read_each_file_once(tmp_path):
    from research.data.formats import find_files

    corpus = _corpus(tmp_path / "corpus", n=5)
    (corpus / "again").symlink_to(".")  # `ln -s . again`
    (corpus / "sub").mkdir()
    (corpus / "sub" / "up").symlink_to("..")
    (corpus / "twin.txt").symlink_to(corpus / "a00.txt")
    want = sorted((corpus / f"a{i:02d}.txt").resolve() for i in range(5))
    for spec in (str(corpus), str(corpus) + "/**", str(corpus) + "/**/*.txt"):
        got = find_files(spec)
        assert sorted(got) == want and len(got) == len(set(got)), (spec, got)


def test_a_loop_of_links_as_the_corpus_path_is_named(tmp_path):
    from research.data.formats import find_files

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UserError, match="symbolic link"):
        find_files(str(tmp_path / "a"))


def test_out_of_vocabulary_shard_is_refused_before_step_one(tmp_path):
    import numpy as np

    from research.data import get_dataset
    from research.train import train
    from tests.test_train import tiny

    config = tiny(train={"steps": 2})
    ds = get_dataset(config.data.corpus, config.data.tokenizer, data_dir=tmp_path / "cache")
    ds.tokens("train")  # opened once intact: the check is stamped, and must not hide a later overwrite
    record = ds.manifest["splits"]["train"]
    shard = ds.path / record["file"]
    size = shard.stat().st_size
    ids = np.memmap(shard, dtype=ds.manifest["dtype"], mode="r+")
    ids[len(ids) // 2] = ds.vocab_size + 7  # same size, one id past the vocabulary
    ids.flush()
    del ids
    assert shard.stat().st_size == size
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=f"token id {ds.vocab_size + 7}.*outside the vocabulary"):
        train(_on(config, ds.path), run_dir, progress=False)
    assert not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text().strip()


def _on(config, path):
    import dataclasses

    return dataclasses.replace(config, data=dataclasses.replace(config.data, corpus=str(path)))

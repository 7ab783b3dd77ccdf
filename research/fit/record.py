"""fit.json: serialised once (numpy scalars and arrays to JSON, NaN/inf to null) and written atomically."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

from research.errors import UserError
from research.fit.agreement import agreement, comparison_warnings
from research.fsutil import atomic_write_text, loads_json, read_regular_text
from research.records import METHOD_KEYS, METHOD_RECORDS, FitResult, Record, read_fit_result
from research.train.sweep_dir import SweepDir


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o):
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)) and not math.isfinite(float(o)):
        return None
    return o


def dumps(obj, **kw) -> str:
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_json_default))), **kw)


def output_path(out: str | None, no_write: bool, sweep_dir: Path | None) -> Path | None:
    """Where `scaling fit` writes: `out`, else DIR/fit.json for a sweep directory, else nowhere
    (a plain table, or `no_write`); the folder is created."""
    if no_write:
        return None
    path = Path(out) if out else (SweepDir(sweep_dir).fit_path if sweep_dir is not None else None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_fit(path, result: FitResult | dict, merge=True) -> Path:
    """Write a FitResult (or the blocks of a dict: an update such as {"validate": ...}) atomically, merging
    into an existing file (methods not re-run are kept)."""
    path = Path(path)
    if isinstance(result, Record):
        result = result.to_json()
    data = {}
    if merge and path.exists():
        # a device or directory at the path is refused, never read (/dev/zero never ends)
        text = read_regular_text(path, "fit file")
        try:
            data = loads_json(text, f"fit file {path}")
        except json.JSONDecodeError as err:
            data = _set_aside(path, text, f"is not valid JSON ({err.msg}, line {err.lineno})")
        if not isinstance(data, dict):
            data = _set_aside(path, text, f"holds a JSON {type(data).__name__}, not a fit record")
    data.update(result)
    if merge and "agreement" in result:  # compare every approach the merged file holds, not only this run's
        # the approaches only: a stale block of another kind in the old file does not stop the write, nor
        # does a damaged approach this run did not refit (kept as it was, left out of the comparison)
        approaches = {k: v for k, v in data.items()
                      if (k in METHOD_KEYS or k in METHOD_RECORDS) and _readable(k, v, k in result, path)}
        merged = read_fit_result(approaches, str(path))
        merged.agreement = agreement(merged)
        data["agreement"] = merged.agreement.to_json()
        if isinstance(result.get("warnings"), list):  # this run's comparisons judged only what it refitted
            ran = read_fit_result({k: v for k, v in result.items() if k in approaches}, str(path))
            ran.agreement = agreement(ran)
            stale = set(comparison_warnings(ran))
            data["warnings"] = ([w for w in result["warnings"] if w not in stale] + comparison_warnings(merged)
                                + kept_sensitivity_warnings(data, result))
    atomic_write_text(path, dumps(data, indent=1))
    return path


def kept_sensitivity_warnings(data: dict, result: dict) -> list[str]:
    """The warnings of a sensitivity block this run did not redo (a partial refit keeps the block, so its
    warnings stay in the file's list too)."""
    if "sensitivity" in result or not isinstance(data.get("sensitivity"), dict):
        return []
    kept = data["sensitivity"].get("warnings")
    return [w for w in kept if isinstance(w, str) and w not in result["warnings"]] if isinstance(kept, list) else []


def _set_aside(path: Path, text: str, why: str) -> dict:
    """Keep a fit file this write would replace but cannot merge with: copied beside it, under the first
    free name fit.json.unreadable[.N] (never over another file), then an empty record to write into."""
    for n in itertools.count():
        spare = path.with_name(f"{path.name}.unreadable" + (f".{n}" if n else ""))
        try:
            with open(spare, "x", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            break
        except FileExistsError:
            continue
    print(f"warning: {path} {why}: kept as {spare.name}; writing a new one", file=sys.stderr)
    return {}


def _readable(key: str, block, refitted: bool, path: Path) -> bool:
    """Whether fit.json's block `key` reads as its record; a damaged block kept from an earlier fit gets a
    warning (with the command that rewrites it) instead of stopping this fit's write."""
    if refitted:
        return True
    try:
        read_fit_result({key: block}, str(path))
    except UserError as err:
        print(f"warning: {str(err).split('; re-run')[0]}: kept as it was and left out of 'agreement'; rewrite it with "
              f"`scaling fit DIR --method {key}`", file=sys.stderr)
        return False
    return True

"""Reading results tables (CSV/parquet or a sweep directory) into clean (N, D, L, C) rows.

Canonical columns of `Table.df`:
  N       parameters (total by default; `n_params_nonembedding` selectable)
  D       training tokens
  L       loss (nats/token)
  F       the run's real training FLOPs (flops_<convention> column, else 6·N·D)
  C       the run's FLOP budget: --flops-col, else the sweep's design `budget`
          column, else F
  trial   trial id when the table has one (used for metrics.jsonl curves)
  family  the model family (the sweep's `family` column, else named from `layers`) when the table says
  N_nonemb  non-embedding parameters, when the table has them (beside N, for the sensitivity report)
  predicted True where the table's `source` column says a curve law predicted the row's loss
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.errors import UserError, closest
from research.model.family import depth_family
from research.train.sweep_dir import SweepDir

DEFAULT_N = "n_params"
NONEMBEDDING_N = "n_params_nonembedding"
DEFAULT_D = "tokens"
LOSS_CANDIDATES = ("final_eval_loss", "final_train_loss", "loss")


@dataclass
class Table:
    df: object  # pandas.DataFrame with canonical columns
    source: Path
    sweep_dir: Path | None
    convention: str
    columns: dict
    budget_source: str
    n_rows_read: int
    dropped: dict = field(default_factory=dict)

    def drop_message(self) -> str:
        if not self.dropped:
            return f"using {len(self.df)} of {self.n_rows_read} rows"
        parts = ", ".join(f"{v} {k}" for k, v in self.dropped.items())
        return f"using {len(self.df)} of {self.n_rows_read} rows; dropped {sum(self.dropped.values())}: {parts}"

    def source_name(self) -> str:
        """The table as recorded in fit.json: relative to its sweep directory, else as given,
        so a committed fit.json names no machine's temporary or home directory."""
        if self.sweep_dir is not None and self.source.is_relative_to(self.sweep_dir):
            return self.source.relative_to(self.sweep_dir).as_posix()
        return str(self.source)

    def meta(self) -> dict:
        return {"source": self.source_name(), "n_rows_read": self.n_rows_read, "n_points": int(len(self.df)),
                "dropped": dict(self.dropped), "columns": dict(self.columns),
                "budget_source": self.budget_source, "flops_convention": self.convention}


def resolve(path) -> tuple[Path, Path | None]:
    """(table file, sweep dir or None) for a CSV/parquet path or a sweep directory."""
    p = Path(path)
    if p.is_dir():
        for table in (SweepDir(p).results_path, SweepDir(p).results_path.with_suffix(".parquet")):
            if table.exists():
                return table, p
        raise UserError(f"{p} is a directory without results.csv; pass a sweep directory or a CSV/parquet table")
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a results table (CSV/parquet) or a sweep directory")
    sweep = p.parent if p.name.startswith("results.") and SweepDir(p.parent).looks_like_sweep() else None
    return p, sweep


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def read_frame(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    if not path.is_file():  # a device (/dev/zero never ends), FIFO or directory is never read as a table
        raise UserError(f"results table {path} is not a regular file; pass a CSV or parquet file")
    try:
        if suffix in (".parquet", ".pq"):
            try:
                return pd.read_parquet(path)
            except ImportError as err:
                raise UserError(f"reading {path.name} needs a parquet engine ({_first_line(err)}); "
                                "`pip install pyarrow` or convert the table to CSV") from None
            except ValueError as err:  # pyarrow's ArrowInvalid: not a parquet file, torn footer
                raise UserError(f"cannot read {path} as parquet ({_first_line(err)}); "
                                "pass a CSV or parquet file") from None
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t")
        return pd.read_csv(path)
    except UserError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"cannot parse {path} as a table ({_first_line(err)}); "
                        "pass a CSV or parquet file") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def sweep_convention(sweep_dir: Path | None) -> str:
    return "6n" if sweep_dir is None else SweepDir(sweep_dir).flops_convention()


def _need(df, col: str, flag: str, path: Path) -> str:
    if col not in df.columns:
        cols = ", ".join(map(str, df.columns[:20]))
        raise UserError(f"column {col!r} not in {path.name}{closest(col, map(str, df.columns))}; "
                        f"pass {flag} (columns: {cols})")
    return col


def load_table(path, n_col: str | None = None, d_col: str | None = None, loss_col: str | None = None,
               flops_col: str | None = None, n_kind: str = "total", quiet: bool = False, frame=None) -> Table:
    """The table at `path` (a file or a sweep directory); `frame`: rows to use in place of the
    file's (e.g. its losses corrected), read with the same columns and the sweep's conventions."""
    import pandas as pd

    file, sweep_dir = resolve(path)
    raw = read_frame(file) if frame is None else frame
    conv = sweep_convention(sweep_dir)
    if n_col is None:
        n_col = NONEMBEDDING_N if n_kind == "nonembedding" else DEFAULT_N
    _need(raw, n_col, "--n-col", file)
    d_col = _need(raw, d_col or DEFAULT_D, "--d-col", file)
    if loss_col is None:
        for cand in LOSS_CANDIDATES:
            if cand in raw.columns and pd.to_numeric(raw[cand], errors="coerce").notna().any():
                loss_col = cand
                break
        else:
            present = [c for c in LOSS_CANDIDATES if c in raw.columns]
            if present:
                raise UserError(f"no usable rows in {file.name}: 0 of {len(raw)} rows have a numeric loss in "
                                f"{', '.join(present)}")
            raise UserError(f"no loss column in {file.name} (looked for {', '.join(LOSS_CANDIDATES)}); "
                            "pass --loss-col")
    _need(raw, loss_col, "--loss-col", file)

    num = lambda c: pd.to_numeric(raw[c], errors="coerce").astype(float)  # noqa: E731
    df = pd.DataFrame({"N": num(n_col), "D": num(d_col), "L": num(loss_col)})
    real_col = f"flops_{conv}"
    if real_col in raw.columns:
        df["F"] = num(real_col)
        f_source = real_col
    else:
        df["F"] = 6.0 * df["N"] * df["D"]
        f_source = "6*N*D"
    if flops_col is not None:
        _need(raw, flops_col, "--flops-col", file)
        df["C"] = num(flops_col)
        budget_source = flops_col
    elif "budget" in raw.columns and pd.to_numeric(raw["budget"], errors="coerce").notna().any():
        df["C"] = num("budget")
        budget_source = "budget"
    else:
        df["C"] = df["F"]
        budget_source = f_source
    if "trial" in raw.columns:
        df["trial"] = raw["trial"].astype(str)
    if "seed" in raw.columns:  # replicate runs (same N, D; other seed) give the run-to-run noise
        df["seed"] = raw["seed"].astype(str)
    if "kind" in raw.columns:  # "run" (from scratch) or "branch" (a cooldown branch off a shared trunk)
        df["kind"] = raw["kind"].astype(str).str.strip()
    if "source" in raw.columns:  # `scaling curves trunks-only`: rows a curve law predicted, beside measured ones
        df["predicted"] = raw["source"].astype(str).str.strip().eq("predicted").to_numpy()
    family = model_families(raw)
    if family is not None:
        df["family"] = family
    if NONEMBEDDING_N in raw.columns and n_col != NONEMBEDDING_N:
        df["N_nonemb"] = num(NONEMBEDDING_N)
    dropped: dict[str, int] = {}
    keep = np.ones(len(df), dtype=bool)
    if "status" in raw.columns:
        st = raw["status"].astype(str).str.strip().str.lower()
        bad = (st != "completed").to_numpy()
        for s, cnt in st[bad].value_counts().items():
            dropped[f"status={s}"] = int(cnt)
        keep &= ~bad
    for col, name in (("N", n_col), ("D", d_col), ("L", loss_col), ("F", f_source), ("C", budget_source)):
        v = df[col].to_numpy()
        bad = keep & ~(np.isfinite(v) & (v > 0))
        if bad.any():
            dropped[f"missing/non-finite/non-positive {name}"] = int(bad.sum())
        keep &= ~bad
    clean = df[keep].reset_index(drop=True)
    table = Table(clean, file, sweep_dir, conv,
                  {"n": n_col, "d": d_col, "loss": loss_col, "flops": f_source, "budget": budget_source},
                  budget_source, len(raw), dropped)
    if not quiet:
        print(f"{file}: {table.drop_message()}", file=sys.stderr)
    return table


def model_families(raw):
    """Each row's model family: the `family` column where filled, else its depth's name from `layers`;
    None when the table has neither (one family is assumed)."""
    import pandas as pd

    named = raw["family"].fillna("").astype(str).str.strip() if "family" in raw.columns else None
    if "layers" in raw.columns:
        layers = pd.to_numeric(raw["layers"], errors="coerce")
        by_depth = pd.Series([depth_family(v) if np.isfinite(v) and v >= 1 else "" for v in layers], index=raw.index)
        named = by_depth if named is None else named.where(named != "", by_depth)
    if named is None or not (named != "").any():
        return None
    return named.where(named != "", "unknown")


def group_budgets(c: np.ndarray, rel_tol: float = 0.1) -> np.ndarray:
    """Integer labels grouping budgets within `rel_tol` of each other (exact design budgets
    form their own groups; continuous per-run FLOPs are clustered in log space)."""
    order = np.argsort(c)
    labels = np.empty(len(c), dtype=int)
    lab, start = 0, None
    tol = math.log1p(rel_tol)
    for idx in order:
        lc = math.log(c[idx])
        if start is None:
            start = lc
        elif lc - start > tol:
            lab += 1
            start = lc
        labels[idx] = lab
    return labels

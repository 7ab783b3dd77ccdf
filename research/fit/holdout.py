"""Held-out check of a fitted law: fit on the rows outside a spec, predict the rows inside it.

SPEC is one of
  largest-budget   the runs of the largest FLOP budget (budgets grouped within 10%, as Approach 2)
  largest-n        the runs of the largest model size (N within 1%)
  largest-tokens   the runs with the most training tokens (D within 1%)
or a pandas-style condition on the columns
  n_params  tokens  flops (the run's training FLOPs)  budget (its FLOP budget)  loss  tokens_per_param
e.g. ``n_params>=5e8`` or ``tokens/n_params>100`` (`DataFrame.eval` syntax; `and`/`or`/`&`/`|`).

Only laws that predict L(N, D) can be checked this way (Approach 3; Kaplan's joint
law). Each held-out run gets the predicted loss, the measured one, the signed
relative error (predicted/measured − 1: positive = the law predicts too high a loss)
and whether the measured loss lies inside the prediction interval
(`research.fit.predict`: bootstrap laws plus run-to-run noise).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from research.errors import UserError, closest
from research.fit.core import fit_records
from research.fit.method import FitOptions
from research.fit.methods import METHODS, loss_methods
from research.fit.data import group_budgets
from research.fit.diagnostics import decades_outside
from research.fit.isoflop import BudgetRejected, fit_approach2, isoflop_points, parabola_min
from research.fit.powerlaw import percentile_interval
from research.fit.noise import noise_sigma, replicate_sigma, same_value_keys
from research.fit.predict import predict, predictor_from_fit
from research.records import FitResult, Skipped

NAMED_SPECS = ("largest-budget", "largest-n", "largest-tokens")
QUERY_COLUMNS = ("n_params", "tokens", "flops", "budget", "loss", "tokens_per_param")
DEFAULT_BOOTSTRAP = 200
BASELINE_LAST_D = 3  # the per-size baseline extends ln L(ln D) through a size's 3 largest token counts


def query_frame(df):
    """The table under the names a user knows (n_params, tokens, flops, budget, loss)."""
    import pandas as pd

    return pd.DataFrame({"n_params": df["N"].to_numpy(float), "tokens": df["D"].to_numpy(float),
                         "flops": df["F"].to_numpy(float), "budget": df["C"].to_numpy(float),
                         "loss": df["L"].to_numpy(float),
                         "tokens_per_param": (df["D"] / df["N"]).to_numpy(float)})


def _largest(values: np.ndarray, rel_tol: float) -> np.ndarray:
    labels = group_budgets(values, rel_tol=rel_tol)
    return labels == labels.max()


def holdout_mask(df, spec: str) -> np.ndarray:
    """Boolean mask of the held-out rows of the clean table `df` (columns N, D, L, F, C)."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError(f"--holdout is empty; use {', '.join(NAMED_SPECS)} or a condition like n_params>=5e8")
    if spec == "largest-budget":
        return _largest(df["C"].to_numpy(float), 0.1)
    if spec == "largest-n":
        return _largest(df["N"].to_numpy(float), 0.01)
    if spec == "largest-tokens":
        return _largest(df["D"].to_numpy(float), 0.01)
    if spec.startswith("largest") or spec.startswith("smallest"):
        raise UserError(f"--holdout {spec!r} is not a known spec{closest(spec, NAMED_SPECS)}; "
                        f"use {', '.join(NAMED_SPECS)} "
                        "or a condition like n_params>=5e8")
    return _query_mask(df, spec)


def _query_mask(df, spec: str) -> np.ndarray:
    import pandas as pd

    frame = query_frame(df)
    try:
        res = frame.eval(spec)
    except pd.errors.UndefinedVariableError as err:
        name = str(err).split("'")[1] if "'" in str(err) else str(err)
        raise UserError(f"--holdout {spec!r}: unknown column {name!r}{closest(name, QUERY_COLUMNS)}; "
                        f"use {', '.join(QUERY_COLUMNS)}") from None
    except (SyntaxError, ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"--holdout {spec!r} does not parse as a condition ({msg}); write e.g. "
                        "n_params>=5e8 or tokens/n_params>100") from None
    if isinstance(res, pd.DataFrame) or not hasattr(res, "dtype") or res.dtype != bool:
        hint = " (use == to compare, = assigns)" if "=" in spec and "==" not in spec and "<=" not in spec \
            and ">=" not in spec and "!=" not in spec else ""
        raise UserError(f"--holdout {spec!r} is not a true/false condition on each run{hint}; write e.g. "
                        "n_params>=5e8")
    return np.asarray(res, dtype=bool)


def check_split(df, mask: np.ndarray, spec: str, methods) -> None:
    """One UserError line when the held-out set is empty or leaves too few rows to fit."""
    n_out = int(mask.sum())
    if n_out == 0:
        raise UserError(f"--holdout {spec!r} matches none of the {len(df)} runs (N {df['N'].min():.3g}.."
                        f"{df['N'].max():.3g}, D {df['D'].min():.3g}..{df['D'].max():.3g}, budgets "
                        f"{df['C'].min():.3g}..{df['C'].max():.3g}); nothing to check")
    train = df[~mask]
    need = max(METHODS[m].min_train for m in methods)
    n_sizes, n_tokens = train["N"].nunique(), train["D"].nunique()
    if len(train) < need or n_sizes < 3 or n_tokens < 3:
        raise UserError(f"--holdout {spec!r} holds out {n_out} of {len(df)} runs and leaves {len(train)} runs with "
                        f"{n_sizes} sizes and {n_tokens} token counts; fitting {', '.join(methods)} needs >= {need} "
                        "runs spanning >= 3 sizes and >= 3 token counts: hold out fewer runs")


def _summary(points: list[dict], level: float, sigma: float | None) -> dict:
    """The summary fields every predictor of the held-out runs reports (laws and baselines alike):
    mean |error|, the signed mean (the bias), the errors' own spread across the held-out runs (std,
    ddof 1) and the bias in units of that spread, rms and max, and coverage where there are intervals."""
    rel = np.array([p["rel_error"] for p in points])
    inside = [p["inside"] for p in points if p.get("inside") is not None]
    log_err = np.array([math.log(p["predicted"] / p["measured"]) for p in points])
    spread = float(np.std(rel, ddof=1)) if len(rel) > 1 else None
    return {"n": len(points), "level": level,
            "mean_abs_rel_error": float(np.mean(np.abs(rel))), "mean_rel_error": float(np.mean(rel)),
            "bias": float(np.mean(rel)), "std_rel_error": spread,
            "bias_over_spread": float(np.mean(rel)) / spread if spread else None,
            "max_abs_rel_error": float(np.max(np.abs(rel))),
            "rms_log_error": float(np.sqrt(np.mean(log_err ** 2))), "mean_log_error": float(np.mean(log_err)),
            "noise_sigma_log": sigma,
            "rms_error_over_noise": float(np.sqrt(np.mean(log_err ** 2)) / sigma) if sigma else None,
            "coverage": float(np.mean(inside)) if inside else None, "n_inside": int(sum(inside)),
            "definition": "rel_error = predicted/measured - 1 (positive: the law predicts too high a loss)"}


def holdout_warnings(summary: dict) -> list[str]:
    """Coverage below what an honest interval reaches 97.5% of the time; a mean error beyond 2 standard
    errors (`mean_error_se`)."""
    from scipy.stats import binom

    out = []
    n, level = summary["n"], summary["level"]
    if summary["coverage"] is not None:
        floor = binom.ppf(0.025, n, level) / n  # 97.5% of honest checks reach this coverage
        if summary["coverage"] < floor:
            out.append(f"only {summary['n_inside']} of {n} held-out runs lie inside their {level:.0%} prediction "
                       f"intervals (coverage {summary['coverage']:.0%}, below {floor:.0%}): the law does not "
                       "extrapolate to them as claimed")
    se = summary.get("mean_log_error_se")
    if n >= 3 and se and abs(summary["mean_log_error"]) > 2 * se:
        way = "over" if summary["mean_log_error"] > 0 else "under"
        out.append(f"held-out losses are systematically {way}-predicted ({summary['mean_rel_error']:+.2%} on "
                   f"average over {n} runs, more than twice its standard error {se:.2%} from noise and the "
                   "law's parameter uncertainty): a bias of the law, not noise")
    return out


def mean_error_se(pred, held, sigma) -> float | None:
    """Standard error of the mean ln(predicted/measured) over the held-out runs under an honest law:
    independent noise (mean sigma_i^2 / n, each run's sigma at its own D/N) plus the parameter
    uncertainty, which is shared by every held-out run and so does not average away (variance over
    bootstrap laws of their mean ln L)."""
    n = len(held)
    var = float(np.mean(np.square(sigma))) / n if sigma is not None else 0.0
    samples = pred.loss_samples(held["N"].to_numpy(float), held["D"].to_numpy(float))
    if samples is not None:
        var += float(np.nanvar(np.mean(np.log(samples), axis=1), ddof=1))
    return math.sqrt(var) if var > 0 else None


def _distance(train, held) -> dict:
    out = {}
    for key, col in (("n_params", "N"), ("tokens", "D"), ("budget", "C")):
        lo, hi = float(train[col].min()), float(train[col].max())
        out[key] = float(np.max(decades_outside(held[col].to_numpy(float), lo, hi)))
    return out


def check_law(fit: FitResult, method: str, train, held, level: float, seed: int = 0) -> dict:
    """Predictions of one fitted law at the held-out (and, for the figure, the training) runs."""
    pred = predictor_from_fit(fit, method)
    out_rows = predict(pred, held["N"], held["D"], level=level, seed=seed)
    in_rows = predict(pred, train["N"], train["D"], level=level, seed=seed)["rows"]
    points = []
    for row, (_, r) in zip(out_rows["rows"], held.iterrows()):
        lo, hi = row["loss_low"], row["loss_high"]
        points.append({"n_params": row["n_params"], "tokens": row["tokens"], "flops": float(r["F"]),
                       "budget": float(r["C"]), "measured": float(r["L"]), "predicted": row["loss"],
                       "loss_low": lo, "loss_high": hi, "rel_error": row["loss"] / float(r["L"]) - 1.0,
                       "inside": None if lo is None else bool(lo <= r["L"] <= hi)})
    sigma = out_rows["interval"]["sigma_log"]
    summary = _summary(points, level, sigma)
    summary["mean_log_error_se"] = mean_error_se(pred, held, noise_sigma(pred.noise, held["N"], held["D"]))
    warns = holdout_warnings(summary)
    return {"law": pred.form, "params": pred.params, "n_kind": pred.n_kind,
            "interval": out_rows["interval"], "summary": summary, "points": points,
            "train_points": [{"n_params": r["n_params"], "tokens": r["tokens"], "flops": float(f),
                              "measured": float(m), "predicted": r["loss"]}
                             for r, f, m in zip(in_rows, train["F"], train["L"])],
            "warnings": warns}


def per_size_baseline(train, held, level: float, sigma: float | None) -> dict:
    """A baseline with no law: each held-out run's loss from its own size's training runs, extended as a
    straight line of ln L against ln D through the size's BASELINE_LAST_D largest token counts (least
    squares, every seed: the local slope, since ln L bends in ln D). Runs whose size has fewer than 2
    training token counts are left out (counted in n_unpredicted)."""
    size_train, size_held = same_value_keys(train["N"]), same_value_keys(held["N"])
    points, missing = [], 0
    for i, (_, r) in enumerate(held.iterrows()):
        rows = train[size_train == size_held[i]]
        rows = rows[rows["D"].isin(np.sort(rows["D"].unique())[-BASELINE_LAST_D:])]
        if rows["D"].nunique() < 2:
            missing += 1
            continue
        slope, intercept = np.polyfit(np.log(rows["D"].to_numpy(float)), np.log(rows["L"].to_numpy(float)), 1)
        predicted = float(math.exp(intercept + slope * math.log(float(r["D"]))))
        points.append({"row": i, "n_params": float(r["N"]), "tokens": float(r["D"]), "measured": float(r["L"]),
                       "predicted": predicted, "rel_error": predicted / float(r["L"]) - 1.0, "inside": None})
    if not points:
        return Skipped(reason="no held-out run's size has >= 2 training token counts to extend").to_json()
    return {"what": f"per size: ln L linear in ln D through the size's {BASELINE_LAST_D} largest training token "
                    "counts, extended to the held-out D",
            "summary": _summary(points, level, sigma), "n_unpredicted": missing, "points": points}


def law_on_baseline_runs(out: dict) -> None:
    """Where a baseline could predict only some held-out runs (`row` in its points), Approach 3's summary
    over those same runs (`law_on_same_runs`), so the two are compared like with like; in place."""
    law = out.get("approach3") or {}
    if not law.get("points"):
        return
    for block in (out.get("baselines") or {}).values():
        rows = [p["row"] for p in (block.get("points") or []) if "row" in p] if isinstance(block, dict) else []
        if rows and len(rows) < len(law["points"]):
            block["law_on_same_runs"] = _summary([law["points"][i] for i in rows], law["summary"]["level"],
                                                 law["summary"]["noise_sigma_log"])


def baseline_warnings(out: dict) -> list[str]:
    """The law does worse than a simple baseline on the same held-out runs (all of them, or those the
    baseline could predict)."""
    warns = []
    for name, block in (out.get("baselines") or {}).items():
        base = block.get("summary") if isinstance(block, dict) else None
        law = block.get("law_on_same_runs") if isinstance(block, dict) else None
        law = law or (out.get("approach3") or {}).get("summary")
        if not law:
            continue
        if base and base["mean_abs_rel_error"] < law["mean_abs_rel_error"]:
            runs = f"the {base['n']} held-out runs it reaches" if block.get("law_on_same_runs") else "the held-out runs"
            warns.append(f"Approach 3 predicts {runs} worse (mean |error| {law['mean_abs_rel_error']:.2%}, "
                         f"bias {law['bias']:+.2%}) than the baseline {name} ({base['mean_abs_rel_error']:.2%}, "
                         f"bias {base['bias']:+.2%}): the law adds nothing to extrapolation here")
    return warns


def _overlap(a, b) -> bool:
    return a[0] is not None and b[0] is not None and a[0] <= b[1] and b[0] <= a[1]


def _measured_nopt_interval(rows, n_resamples: int, seed: int, level: float) -> list:
    """Percentile interval of one budget's IsoFLOP minimum, resampling its runs with replacement."""

    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(rows), len(rows))
        try:
            vals.append(parabola_min(rows["N"].to_numpy()[idx], rows["L"].to_numpy()[idx])[0])
        except (BudgetRejected, np.linalg.LinAlgError):
            continue
    return percentile_interval(vals, level)


def check_allocation(train, held, level: float, seed: int = 0, n_resamples: int = DEFAULT_BOOTSTRAP) -> dict:
    """Approach 2 predicts no loss, but it can be judged out of sample on what it does predict: N_opt at a
    held-out budget (k_N·C^a from the other budgets) against that budget's own IsoFLOP minimum.
    `consistent`: the predicted interval (bootstrap of the fit) overlaps the measured one (bootstrap of
    the held-out budget's runs)."""
    good, rejected = isoflop_points(held)
    if not good:
        why = "; ".join(f"C={r['flops']:.3g}: {r['reason']}" for r in rejected) or "no budgets"
        return Skipped(reason=f"no held-out budget has an interior IsoFLOP minimum to compare with ({why})").to_json()
    try:
        a2 = fit_approach2(train, bootstrap=n_resamples, seed=seed, level=level, budgets=[g["flops"] for g in good])
    except UserError as err:
        return Skipped(reason=str(err)).to_json()
    opt = {round(math.log(o["flops"]), 6): o for o in a2.get("bootstrap", {}).get("optimal", [])}
    budgets = []
    for g in good:
        c = g["flops"]
        rows = held[np.abs(np.log(held["C"].to_numpy(float) / c)) < math.log(1.1)]
        pred_n = a2["k_N"] * c ** a2["a"]
        pred_iv = opt.get(round(math.log(c), 6), {}).get("n_opt", [None, None])
        meas_iv = _measured_nopt_interval(rows, n_resamples, seed, level)
        budgets.append({"flops": c, "n_opt_measured": g["n_opt"], "n_opt_measured_interval": meas_iv,
                        "n_opt_predicted": pred_n, "n_opt_predicted_interval": pred_iv,
                        "d_opt_measured": g["d_opt"], "d_opt_predicted": a2["k_D"] * c ** a2["b"],
                        "ratio": pred_n / g["n_opt"], "consistent": _overlap(pred_iv, meas_iv)})
    warns = [f"held-out budget C={b['flops']:.3g}: Approach 2 predicts N_opt={b['n_opt_predicted']:.3g} "
             f"{interval_text(b['n_opt_predicted_interval'])}, its runs' IsoFLOP minimum is {b['n_opt_measured']:.3g} "
             f"{interval_text(b['n_opt_measured_interval'])}: the allocation law does not extrapolate to it"
             for b in budgets if not b["consistent"]]
    return {"what": "compute-optimal N at held-out budgets (Approach 2 gives no loss for arbitrary N, D)",
            "a": a2["a"], "b": a2["b"], "k_N": a2["k_N"], "k_D": a2["k_D"], "budgets": budgets,
            "rejected_budgets": rejected, "fit_warnings": list(a2.get("warnings", [])), "warnings": warns}


def interval_text(iv) -> str:
    return "[n/a]" if iv[0] is None else f"[{iv[0]:.3g}, {iv[1]:.3g}]"


def run_holdout(table, spec: str, methods=None, options: FitOptions | None = None, *, log=None,
                allocation: bool = False, **settings) -> dict:
    """Fit `methods` on the rows outside `spec` (with `bootstrap` resamples) and check the rows inside;
    with `allocation`, also judge Approach 2's N_opt at held-out budgets (`check_allocation`).

    `options` (default: DEFAULT_BOOTSTRAP resamples), or FitOptions fields as keywords, are those of
    the refit (`research.fit.core.run_fits`; grid, reduction, backend, tol, seed, level). Raises UserError."""
    options = dataclasses.replace(options or FitOptions(bootstrap=DEFAULT_BOOTSTRAP), **settings)
    bootstrap, seed, level = options.bootstrap, options.seed, options.level
    methods = list(methods or loss_methods())
    bad = [m for m in methods if m not in loss_methods()]
    if bad:
        raise UserError(f"--holdout checks predicted losses, which {', '.join(bad)} cannot give (Approaches 1 and 2 "
                        "give only the compute-optimal allocation); use --method approach3, kaplan or all")
    df = table.df
    mask = holdout_mask(df, spec)
    check_split(df, mask, spec, methods)
    train, held = df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)
    train_table = dataclasses.replace(table, df=train, sweep_dir=None)
    fit = fit_records(train_table, methods, dataclasses.replace(
        options, strict=True, budgets=(float(held["C"].max()),), kaplan_n=f"column {table.columns.get('n', 'N')}",
        sensitivity=False), log=log)
    out = {"holdout": spec, "n_train": int(len(train)), "n_heldout": int(len(held)), "level": level,
           "bootstrap": int(bootstrap), "seed": seed, "extrapolation_decades": _distance(train, held),
           "train_range": {"n_params": [float(train["N"].min()), float(train["N"].max())],
                           "tokens": [float(train["D"].min()), float(train["D"].max())],
                           "budget": [float(train["C"].min()), float(train["C"].max())]},
           "warnings": []}
    for m in methods:
        out[m] = check_law(fit, m, train, held, level, seed)
        out[m]["fit_warnings"] = list(fit.method(m).warnings)
        out["warnings"] += [f"{m}: {w}" for w in out[m]["warnings"]]
    sigma = (out.get("approach3") or {}).get("interval", {}).get("sigma_log")
    out["baselines"] = {"per_size_lnL_lnD": per_size_baseline(train, held, level, sigma)}
    if "kaplan" in out:  # Kaplan's joint form, on the same runs, as a baseline beside the law
        out["baselines"]["kaplan"] = {"what": out["kaplan"]["law"], "summary": out["kaplan"]["summary"]}
    out["heldout_noise"] = replicate_sigma(held)  # the held-out runs' own seed spread (sigma of ln L)
    law_on_baseline_runs(out)
    out["warnings"] += baseline_warnings(out)
    if allocation:
        out["approach2"] = check_allocation(train, held, level, seed, max(bootstrap, 20))
        out["warnings"] += [f"approach2: {w}" for w in out["approach2"].get("warnings", [])]
    return out


def holdout_or_skip(table, spec: str, **kw) -> dict:
    """run_holdout, with a UserError recorded as Skipped (written {"holdout": spec, "skipped": reason}; for the sweep)."""
    try:
        return run_holdout(table, spec, **kw)
    except UserError as err:
        return Skipped.of(extra={"holdout": spec}, reason=str(err)).to_json()

"""Comparing two sweeps: the effective-compute multiplier of recipe B over recipe A, with intervals.

Both sweeps are fitted with Approach 3, L(N, D) = E + A/N^α + B/D^β (research/fit/approach3.py,
the same start grid, Huber loss and stopping rules), separately or jointly with some parameters
shared (`shared`, e.g. ("E",) or ("alpha", "beta")). Each law's *loss frontier* is
L*(C) = L(N_opt(C), D_opt(C)), its compute-optimal allocation (research/fit/allocation.py).

    multiplier(C) = C_A / C,  where L*_A(C_A) = L*_B(C)

is how much compute A needs to reach the loss B reaches with C: 2 means B is worth twice the
compute at C; below 1, B is worse. A crossover is a budget in the search window where the two
frontiers are equal (the multiplier passes 1). Two frontiers of this form can cross more than once
(e.g. once inside the budgets and once far below them); every crossing in the window is listed, and
the one reported (and bootstrapped) is the crossing nearest the sweeps' budgets (in log C).

Intervals come from the fits' own bootstrap: each sweep is resampled as `scaling fit` resamples it
(research.fit.approach3.bootstrap_weights: (N, D) points with replacement, then their seed
replicates, one draw per size: research.fit.noise.seed_draw), the two sweeps independently, and
every resample pair gives a multiplier and a crossover.

The sweeps must differ in the recipe only: the same FLOP convention always, and the same corpus,
tokenizer and eval set unless the losses are bits per byte (`bpb`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.errors import UserError, closest
from research.fit import approach3 as a3
from research.fit.allocation import FlopsPerToken
from research.fit.data import Table, group_budgets, load_table, read_frame
from research.fit.laws import ChinchillaLaw
from research.fit.method import flops_per_token
from research.fit.method_approach3 import run_approach3
from research.records import Approach3Result

SHAREABLE = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}  # law parameter -> index in a3.THETA
BPB_COLUMN = "eval_bits_per_byte"
CROSSOVER_DECADES = 3.0  # the crossover is looked for this many decades beyond the sweeps' budgets
LOG_C_RANGE = (0.0, math.log(1e60))  # where compute_to_reach looks for a budget (FLOPs)
# what a sweep's loss depends on besides its recipe: (section, key) of the trials' run config
DATA_KEYS = (("data", "corpus"), ("data", "tokenizer"), ("data", "val_fraction"), ("data", "seed"),
             ("train", "eval_tokens"))


@dataclass(frozen=True)
class CompareOptions:
    shared: tuple[str, ...] = ()  # law parameters fitted once for both sweeps (SHAREABLE)
    bootstrap: int = 200  # resamples of each sweep
    seed: int = 0
    level: float = 0.95
    grid: object = "full"  # Approach 3 start grid: "full", "small" or a dict of start values (a3.grid_starts)
    bpb: bool = False  # fit bits per byte (eval_bits_per_byte) instead of nats/token
    at: tuple[float, ...] = ()  # budgets to report besides the sweeps' own
    bootstrap_starts: int = 4  # distinct local optima each resample is refitted from


@dataclass
class SweepFit:
    """One sweep's table, FLOPs per token and Approach-3 parameters: theta (5,) and thetas (R, 5)
    in a3.THETA order (a, b, e, alpha, beta)."""

    label: str
    table: Table
    per_token: FlopsPerToken
    theta: np.ndarray
    thetas: np.ndarray
    resampling: str = ""

    @np.errstate(over="ignore")  # an unidentified resample's A or B reaches e^800: inf, as in its own fit
    def law(self, which: str = "fit") -> ChinchillaLaw:
        """The fitted law ("fit") or every bootstrap law at once ("samples": parameters of shape (R, 1))."""
        t = self.theta[None, :] if which == "fit" else self.thetas
        return ChinchillaLaw(np.exp(t[:, 2:3]), np.exp(t[:, 0:1]), np.exp(t[:, 1:2]), t[:, 3:4], t[:, 4:5],
                             name=self.label, per_token=self.per_token)

    def budget_range(self) -> tuple[float, float]:
        c = self.table.df["C"].to_numpy(float)
        return float(c.min()), float(c.max())


# ----------------------------------------------------------------------------- inputs

def parse_shared(text: str | None) -> tuple[str, ...]:
    """'E' or 'alpha,beta' -> a tuple of law parameter names; one line for anything else."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    for name in names:
        if name not in SHAREABLE:
            raise UserError(f"--shared {name!r} is not a parameter of L(N, D) = E + A/N^alpha + B/D^beta"
                            f"{closest(name, SHAREABLE)}; share any of {', '.join(SHAREABLE)} (e.g. --shared E)")
    if len(names) == len(SHAREABLE):
        raise UserError("--shared names every parameter: the two sweeps would get one law and a multiplier of 1 by "
                        "construction; share fewer (e.g. --shared E or --shared alpha,beta)")
    return names


def load_pair(path_a, path_b, bpb: bool = False, quiet: bool = True) -> tuple[Table, Table]:
    """Both tables, read as `scaling fit` reads them (loss column eval_bits_per_byte with `bpb`)."""
    loss_col = BPB_COLUMN if bpb else None
    tables = []
    for label, path in (("A", path_a), ("B", path_b)):
        try:
            table = load_table(path, loss_col=loss_col, quiet=quiet)
        except UserError as err:
            raise UserError(f"sweep {label}: {err}") from None
        if len(table.df) == 0:
            raise UserError(f"sweep {label} ({path}): no usable rows ({table.drop_message()}); every row needs positive, "
                            "finite N, D, loss and FLOPs (and status 'completed')")
        tables.append(table)
    return tables[0], tables[1]


def provenance(table: Table) -> dict:
    """What the sweep's loss was measured on, as far as its files say: the trials' data and eval settings
    (a sweep directory), the vocabulary size (a table's vocab_size column) and the FLOP convention."""
    out: dict = {"flops_convention": table.convention, "source": str(table.source)}
    if table.sweep_dir is not None:
        record = _json_object(table.sweep_dir / "sweep.json")
        if record.get("data_fingerprint"):
            out["data_fingerprint"] = record["data_fingerprint"]
        for trial in sorted((table.sweep_dir / "trials").glob("*/trial.json"))[:1]:
            config = _json_object(trial).get("config")
            if isinstance(config, dict):
                for section, key in DATA_KEYS:
                    value = (config.get(section) or {}).get(key)
                    if value is not None:
                        out[f"{section}.{key}"] = value

    raw = read_frame(table.source)
    if "vocab_size" in raw.columns:
        vocab = sorted({int(v) for v in raw["vocab_size"].dropna().unique()})
        if vocab:
            out["vocab_size"] = vocab
    return out


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def check_comparable(prov_a: dict, prov_b: dict, bpb: bool) -> list[str]:
    """Refuse (one line) a pair that differs in more than the recipe; return notes on what could not be checked."""
    if prov_a["flops_convention"] != prov_b["flops_convention"]:
        raise UserError(f"the sweeps count FLOPs differently (A: {prov_a['flops_convention']}, B: "
                        f"{prov_b['flops_convention']}); a multiplier across conventions is meaningless: rerun one "
                        "sweep with the other's [design] flops_convention")
    differ = [k for k in sorted(set(prov_a) | set(prov_b)) if k not in ("source", "flops_convention")
              and k in prov_a and k in prov_b and prov_a[k] != prov_b[k]]
    notes = []
    if differ:
        what = ", ".join(f"{k} {prov_a[k]!r} vs {prov_b[k]!r}" for k in differ)
        if not bpb:
            raise UserError(f"the sweeps' losses are measured on different data or tokens ({what}); nats per token "
                            "on different text or tokenizers are not comparable: pass --bpb to compare bits per "
                            "byte (eval_bits_per_byte), or compare sweeps that differ only in the recipe")
        notes.append(f"the sweeps differ in {what}: compared in bits per byte, which removes the tokenizer but not a "
                     "difference in the eval text itself")
    unknown = [label for label, p in (("A", prov_a), ("B", prov_b)) if "data_fingerprint" not in p
               and "data.corpus" not in p]
    if unknown:
        which = "sweeps A and B are plain tables" if len(unknown) == 2 else f"sweep {unknown[0]} is a plain table"
        notes.append(f"{which} without run configs: that both sweeps used the same corpus, tokenizer and eval set "
                     "is assumed, not checked")
    return notes


# ----------------------------------------------------------------------------- fits

def fit_each(table: Table, label: str, opts: CompareOptions, seed: int) -> SweepFit:
    """Approach 3 on one sweep with its bootstrap (resampling as `scaling fit` does)."""

    per_token = flops_per_token(table)
    try:
        res = Approach3Result.from_json(
            run_approach3(table.df, bootstrap=opts.bootstrap, seed=seed, grid=opts.grid, level=opts.level,
                          budgets=(), bootstrap_starts=opts.bootstrap_starts, per_token=per_token),
            f"sweep {label}'s Approach 3 fit")
    except UserError as err:
        raise UserError(f"sweep {label}: {err}") from None
    theta = np.array([res.log_params[k] for k in a3.THETA])
    thetas = np.empty((0, 5))
    if opts.bootstrap:
        s = res.bootstrap.samples
        with np.errstate(divide="ignore"):
            thetas = np.column_stack([np.log(s["A"]), np.log(s["B"]), np.log(s["E"]), s["alpha"], s["beta"]])
    return SweepFit(label, table, per_token, theta, thetas,
                    resampling=(res.bootstrap.resampling or "") if res.bootstrap is not None else "")


def _joint_layout(shared: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices of A's and B's 5 parameters in the joint vector (A's first; B adds its unshared ones)."""
    shared_idx = {SHAREABLE[s] for s in shared}
    idx_b, k = [], 5
    for j in range(5):
        if j in shared_idx:
            idx_b.append(j)
        else:
            idx_b.append(k)
            k += 1
    return np.arange(5), np.array(idx_b), k


@functools.lru_cache(maxsize=None)
def _joint_solver(idx_a: tuple, idx_b: tuple, lanes: int):
    """The jitted batched L-BFGS (research.fit.lbfgs, a3's tight stopping rules) on the two sweeps'
    Approach-3 objectives summed (a3.objective_terms each; gradient by the chain rule through the layout)."""
    import jax
    import jax.numpy as jnp

    from research.fit import lbfgs  # lazy: jax (2-5 s); only a shared-parameter fit needs it

    ftol, gtol = a3.TOLERANCES["tight"]
    cfg = lbfgs.Config(lanes=lanes, memory=a3.MEMORY, maxiter=a3.MAXITER, maxfun=a3.MAXFUN, maxls=a3.MAXLS,
                       gtol=gtol, ftol=ftol)
    ia, ib = np.array(idx_a), np.array(idx_b)

    def value_and_grad(z_BP, row_B, data):
        (lnN_a, lnD_a, lnL_a, W_a), (lnN_b, lnD_b, lnL_b, W_b) = data
        f_a, g_a = a3.objective_terms(jnp, z_BP[:, ia], lnN_a, lnD_a, lnL_a, W_a[row_B])
        f_b, g_b = a3.objective_terms(jnp, z_BP[:, ib], lnN_b, lnD_b, lnL_b, W_b[row_B])
        return f_a + f_b, jnp.zeros_like(z_BP).at[:, ia].add(g_a).at[:, ib].add(g_b)

    return jax.jit(functools.partial(lbfgs.solve_pool, value_and_grad, cfg))


def _padded(fit: SweepFit, W) -> tuple:
    """(lnN, lnD, lnL, W) padded to a power of two of runs (padding carries weight 0)."""
    n = len(fit.table.df)
    n_p = a3._bucket(n, 64)
    cols = []
    for c in ("N", "D", "L"):
        v = np.zeros(n_p)
        v[:n] = np.log(fit.table.df[c].to_numpy(float))
        cols.append(v)
    Wp = np.zeros((len(W), n_p))
    Wp[:, :n] = W
    return tuple(cols) + (Wp,)


def _solve_joint(starts, rows, fa: SweepFit, fb: SweepFit, W_a, W_b, layout) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the joint objective from each start (row i uses weight rows rows[i] of W_a and W_b);
    returns (z S×P, objective S), inf where a start failed."""
    import jax

    idx_a, idx_b, k = layout
    starts = np.atleast_2d(np.asarray(starts, float))
    S = len(starts)
    Sp = a3._bucket(S)
    x0 = np.zeros((Sp, k))
    x0[:S] = starts
    r = np.zeros(Sp, dtype=np.int32)
    r[:S] = rows
    run = _joint_solver(tuple(int(i) for i in idx_a), tuple(int(i) for i in idx_b), int(min(a3.LANES, Sp)))
    with jax.enable_x64(True):
        xs, fs, *_ = (np.asarray(v) for v in run(x0, r, np.int32(S), (_padded(fa, W_a), _padded(fb, W_b))))
    return np.array(xs[:S]), np.where(np.isfinite(fs[:S]), fs[:S], np.inf)


def fit_joint(fa: SweepFit, fb: SweepFit, opts: CompareOptions) -> tuple[SweepFit, SweepFit]:
    """Refit both sweeps with `opts.shared` parameters in common, from their separate fits, and redo every
    bootstrap resample pair (the same resampled runs as their own fits: research.fit.approach3.bootstrap_weights)."""
    layout = _joint_layout(opts.shared)
    idx_a, idx_b, k = layout
    starts = []
    for take_b in (False, True):  # the shared parameters from A's fit, then from B's
        z = np.zeros(k)
        z[idx_b] = fb.theta
        z[idx_a] = fa.theta
        if take_b:
            for name in opts.shared:
                z[SHAREABLE[name]] = fb.theta[SHAREABLE[name]]
        starts.append(z)
    ones_a, ones_b = np.ones((1, len(fa.table.df))), np.ones((1, len(fb.table.df)))
    xs, fs = _solve_joint(starts, [0, 0], fa, fb, ones_a, ones_b, layout)
    if not np.isfinite(fs).any():
        raise UserError(f"the joint fit with {', '.join(opts.shared)} shared did not converge; compare without --shared")
    z = xs[int(np.argmin(fs))]
    thetas_a, thetas_b = np.empty((0, 5)), np.empty((0, 5))
    if opts.bootstrap:
        W_a, _ = a3.bootstrap_weights(fa.table.df, opts.bootstrap, opts.seed)
        W_b, _ = a3.bootstrap_weights(fb.table.df, opts.bootstrap, opts.seed + 1)
        zs, f_r = _solve_joint(np.tile(z, (opts.bootstrap, 1)), np.arange(opts.bootstrap), fa, fb, W_a, W_b, layout)
        zs[~np.isfinite(f_r)] = np.nan
        thetas_a, thetas_b = zs[:, idx_a], zs[:, idx_b]
    return (SweepFit(fa.label, fa.table, fa.per_token, z[idx_a], thetas_a, resampling=fa.resampling),
            SweepFit(fb.label, fb.table, fb.per_token, z[idx_b], thetas_b, resampling=fb.resampling))


# ----------------------------------------------------------------------------- frontiers

def compute_to_reach(law: ChinchillaLaw, loss, iters: int = 64):
    """The budget C at which the law's frontier L*(C) equals `loss` (broadcast against the law's parameters):
    bisection in log C on `law.loss_opt`, which falls with C. inf where the loss is at or below E (never
    reached), nan where it lies above the frontier at C = 1 FLOP."""
    loss = np.asarray(loss, float)
    shape = np.broadcast_shapes(np.shape(law.E), loss.shape)
    lo, hi = np.full(shape, LOG_C_RANGE[0]), np.full(shape, LOG_C_RANGE[1])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = law.loss_opt(np.exp(mid)) > loss  # not reached yet: more compute
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        c = np.exp(0.5 * (lo + hi))
        c = np.where(hi >= LOG_C_RANGE[1] - 1e-9, np.inf, c)
        c = np.where(lo <= LOG_C_RANGE[0] + 1e-9, np.nan, c)
    return c


def multiplier(law_a: ChinchillaLaw, law_b: ChinchillaLaw, flops):
    """C_A / C: the compute A needs to reach B's frontier loss at C, over C (broadcast)."""
    flops = np.asarray(flops, float)
    return compute_to_reach(law_a, law_b.loss_opt(flops)) / flops


def crossover(law_a: ChinchillaLaw, law_b: ChinchillaLaw, window: tuple[float, float], points: int = 241,
              iters: int = 50, near: float | None = None):
    """A budget in `window` where the frontiers are equal (nan where they do not cross there), for every
    law pair (parameters broadcast; result shape of the parameters less the budget axis): the crossing
    nearest `near` in log C, or the smallest one without `near`."""
    grid = np.geomspace(window[0], window[1], points)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.log(law_a.loss_opt(grid)) - np.log(law_b.loss_opt(grid))  # (..., points)
    sign = np.sign(diff)
    change = (sign[..., :-1] * sign[..., 1:] < 0) | (sign[..., :-1] == 0)
    has = change.any(axis=-1)
    if near is None:
        first = np.argmax(change, axis=-1)
    else:
        mid_log = 0.5 * (np.log(grid[:-1]) + np.log(grid[1:]))
        distance = np.where(change, np.abs(mid_log - math.log(near)), np.inf)
        first = np.argmin(distance, axis=-1)
    lo, hi = np.log(grid[first]), np.log(grid[np.minimum(first + 1, points - 1)])
    lo, hi = lo[..., None], hi[..., None]
    s_lo = np.take_along_axis(sign, first[..., None], axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            c = np.exp(mid)
            s_mid = np.sign(np.log(law_a.loss_opt(c)) - np.log(law_b.loss_opt(c)))
            same = s_mid == s_lo
            lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return np.where(has, np.exp(0.5 * (lo + hi))[..., 0], np.nan)


def all_crossovers(law_a: ChinchillaLaw, law_b: ChinchillaLaw, window: tuple[float, float],
                   points: int = 241) -> list[float]:
    """Every budget in `window` where the two (point-estimate) frontiers are equal, ascending."""
    grid = np.geomspace(window[0], window[1], points)
    with np.errstate(invalid="ignore", over="ignore"):
        sign = np.sign(np.log(law_a.loss_opt(grid)) - np.log(law_b.loss_opt(grid))).reshape(-1, points)[0]
    where = np.flatnonzero((sign[:-1] * sign[1:] < 0) | (sign[:-1] == 0))
    return [float(np.ravel(crossover(law_a, law_b, (grid[i], grid[i + 1]), points=2))[0]) for i in where]


def _interval(samples, level: float) -> list:
    """Percentile interval of bootstrap values (inf allowed: a loss never reached), NaN dropped; [None, None]
    without values."""
    x = np.asarray(samples, float)
    x = x[~np.isnan(x)]
    if not len(x):
        return [None, None]
    q = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], method="nearest")
    return [float(v) for v in q]


def union_budgets(fits, at=()) -> list[float]:
    """The design budgets of both sweeps (within 10% counted once) and the `at` budgets, sorted."""
    c = np.concatenate([f.table.df["C"].to_numpy(float) for f in fits])
    labels = group_budgets(c)
    own = [float(np.exp(np.mean(np.log(c[labels == g])))) for g in np.unique(labels)]
    return sorted(set(own) | {float(x) for x in at})


def _inside(c, rng) -> bool:
    return rng[0] * (1 - 1e-9) <= c <= rng[1] * (1 + 1e-9)


def fit_pair(path_a, path_b, opts: CompareOptions = CompareOptions(), quiet: bool = True):
    """Load, check and fit both sweeps: (fit A, fit B, provenance {"A", "B"}, notes)."""
    if opts.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if not 0 < opts.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {opts.level}")
    table_a, table_b = load_pair(path_a, path_b, opts.bpb, quiet=quiet)
    prov = {"A": provenance(table_a), "B": provenance(table_b)}
    notes = check_comparable(prov["A"], prov["B"], opts.bpb)
    fa = fit_each(table_a, "A", opts, opts.seed)
    fb = fit_each(table_b, "B", opts, opts.seed + 1)
    if opts.shared:
        fa, fb = fit_joint(fa, fb, opts)
    return fa, fb, prov, notes


def compare(path_a, path_b, opts: CompareOptions = CompareOptions(), quiet: bool = True) -> dict:
    """The comparison record (what `scaling compare --json` prints)."""
    return summarize(*fit_pair(path_a, path_b, opts, quiet), opts=opts)


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # unidentified resamples give inf/nan, handled
def summarize(fa: SweepFit, fb: SweepFit, prov: dict | None = None, notes: list | None = None, *,
              opts: CompareOptions) -> dict:
    units = "bits/byte" if opts.bpb else "nats/token"
    law_a, law_b = fa.law(), fb.law()
    boot = opts.bootstrap > 0 and len(fa.thetas) and len(fb.thetas)
    if boot:
        r = min(len(fa.thetas), len(fb.thetas))
        fa.thetas, fb.thetas = fa.thetas[:r], fb.thetas[:r]
        sa, sb = fa.law("samples"), fb.law("samples")
    range_a, range_b = fa.budget_range(), fb.budget_range()
    budgets = union_budgets((fa, fb), opts.at)
    rows = []
    for c in budgets:
        m = float(multiplier(law_a, law_b, c)[0, 0])
        row = {"flops": c, "loss_a": {"value": float(law_a.loss_opt(c)[0, 0])},
               "loss_b": {"value": float(law_b.loss_opt(c)[0, 0])}, "multiplier": {"value": m}}
        if boot:
            row["loss_a"]["low"], row["loss_a"]["high"] = _interval(sa.loss_opt(c)[:, 0], opts.level)
            row["loss_b"]["low"], row["loss_b"]["high"] = _interval(sb.loss_opt(c)[:, 0], opts.level)
            row["multiplier"]["low"], row["multiplier"]["high"] = _interval(multiplier(sa, sb, c)[:, 0], opts.level)
        reasons = []
        for label, rng in (("A", range_a), ("B", range_b)):
            if not _inside(c, rng):
                reasons.append(f"C outside {label}'s budgets [{rng[0]:.3g}, {rng[1]:.3g}]")
        if math.isfinite(m) and not _inside(m * c, range_a):
            reasons.append(f"A's matching compute {m * c:.3g} outside A's budgets")
        row["extrapolated"] = bool(reasons)
        row["extrapolation"] = "; ".join(reasons)
        low, high = row["multiplier"].get("low"), row["multiplier"].get("high")
        row["detectable"] = None if low is None else bool(not (low <= 1.0 <= high))
        rows.append(row)
    lo_all, hi_all = min(range_a[0], range_b[0]), max(range_a[1], range_b[1])
    window = (lo_all / 10 ** CROSSOVER_DECADES, hi_all * 10 ** CROSSOVER_DECADES)
    centre = math.sqrt(lo_all * hi_all)  # the crossing reported is the one nearest the budgets
    cross = {"window": list(window), "flops": _finite(crossover(law_a, law_b, window, near=centre)[0]),
             "all": all_crossovers(law_a, law_b, window)}
    if cross["flops"] is not None:
        cross["extrapolated"] = not (_inside(cross["flops"], range_a) and _inside(cross["flops"], range_b))
    if boot:
        xs = crossover(sa, sb, window, near=centre)
        ok = np.all(np.isfinite(fa.thetas), axis=1) & np.all(np.isfinite(fb.thetas), axis=1)
        crossed = np.isfinite(xs[ok])
        cross["fraction_of_resamples"] = float(np.mean(crossed)) if ok.any() else None
        # a resample whose frontiers do not cross in the window counts as "beyond it" (high = null: none found)
        cross["low"], cross["high"] = _interval(np.where(crossed, xs[ok], np.inf), opts.level)
    out = {
        "version": 1, "method": "approach3", "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "definition": "multiplier(C) = C_A / C with L*_A(C_A) = L*_B(C): the compute A needs to reach B's "
                      "compute-optimal loss at C, over C (> 1: B is better); L*(C) = L(N_opt(C), D_opt(C))",
        "loss_units": units, "flops_convention": fa.table.convention, "shared": list(opts.shared),
        "level": opts.level,
        "bootstrap": {"n_resamples": int(len(fa.thetas)) if boot else 0, "seed": opts.seed,
                      "resampling": {f.label: f"on its own, as its fit does: {f.resampling or 'none'}"
                                     for f in (fa, fb)}},
        "sweeps": {f.label: _sweep_block(f, opts.level, (prov or {}).get(f.label)) for f in (fa, fb)},
        "rows": rows, "crossover": cross, "notes": list(notes or []),
    }
    out["warnings"] = compare_warnings(out)
    return out


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@np.errstate(over="ignore")
def _sweep_block(f: SweepFit, level: float, prov: dict | None) -> dict:
    names = ("A", "B", "E", "alpha", "beta")
    params = {k: float(v) for k, v in zip(names, (math.exp(f.theta[0]), math.exp(f.theta[1]),
                                                     math.exp(f.theta[2]), f.theta[3], f.theta[4]))}
    block = {"source": str(f.table.source), "name": sweep_name(f.table), "n_points": int(len(f.table.df)),
             "budgets": list(f.budget_range()),
             "params": params, "provenance": prov or {}}
    if len(f.thetas):
        cols = {"A": np.exp(f.thetas[:, 0]), "B": np.exp(f.thetas[:, 1]), "E": np.exp(f.thetas[:, 2]),
                "alpha": f.thetas[:, 3], "beta": f.thetas[:, 4]}
        block["intervals"] = {k: _interval(v, level) for k, v in cols.items()}
    return block


def sweep_name(table: Table) -> str:
    """A short name for a sweep: its directory's name, else the table file's stem."""
    return table.sweep_dir.name if table.sweep_dir is not None else table.source.stem


def compare_warnings(out: dict) -> list[str]:
    """Plain statements a reader must not miss: no detectable difference, extrapolation, unstable crossovers."""
    warns = []
    rows = out["rows"]
    undetected = [r for r in rows if r["detectable"] is False]
    if rows and len(undetected) == len(rows):
        warns.append("the multiplier's interval includes 1 at every budget: no detectable difference between the "
                     "sweeps at this scale")
    elif undetected:
        warns.append("the multiplier's interval includes 1 at " + ", ".join(f"{r['flops']:.3g}" for r in undetected)
                     + " FLOPs: no detectable difference there")
    if any(r["detectable"] is None for r in rows):
        warns.append("no bootstrap (--bootstrap 0): the multiplier has no interval, so no difference can be called "
                     "detectable")
    extrapolated = [r for r in rows if r["extrapolated"]]
    if extrapolated:
        warns.append("extrapolated beyond a sweep's budgets at " + ", ".join(f"{r['flops']:.3g}" for r in extrapolated)
                     + " FLOPs: those multipliers rest on the laws' form, not on runs")
    frac = out["crossover"].get("fraction_of_resamples")
    if frac is not None and 0.05 < frac < 0.95:
        warns.append(f"only {frac:.0%} of the resamples cross within the window: the crossover is not established")
    return warns

"""Kaplan et al. 2020 ("Scaling Laws for Neural Language Models") functional forms.

* L(N) = (N_c/N)^α_N       published: α_N 0.076, N_c 8.8e13 (non-embedding N)
* L(D) = (D_c/D)^α_D       published: α_D 0.095, D_c 5.4e13
* L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D
                            published: α_N 0.076, α_D 0.103, N_c 6.4e13, D_c 1.8e13

Kaplan count non-embedding parameters; this module fits whatever N it is given
(the CLI's --kaplan-n picks `n_params_nonembedding` or total `n_params`).
L(N) is fitted to the best loss reached by each size (the large-D limit), L(D)
to the best loss at each token count, L(N, D) to every run, all by least
squares on log L.
"""

from __future__ import annotations

import numpy as np

from research.errors import UserError
from research.fit.data import group_budgets
from research.records import Skipped

PUBLISHED = {
    "L_N": {"N_c": 8.8e13, "alpha_N": 0.076},
    "L_D": {"D_c": 5.4e13, "alpha_D": 0.095},
    "L_ND": {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103},
}


def _single(x, L, tol):
    labels = group_budgets(np.asarray(x, float), rel_tol=tol)
    xs, ls = [], []
    for lab in np.unique(labels):
        m = labels == lab
        i = np.argmin(np.where(m, L, np.inf))
        xs.append(x[i])
        ls.append(L[i])
    xs, ls = np.array(xs), np.array(ls)
    if len(xs) < 3:
        return None, len(xs)
    slope, icpt = np.polyfit(np.log(xs), np.log(ls), 1)
    alpha = -slope
    return (float(np.exp(icpt / alpha)) if alpha > 0 else float("nan"), float(alpha)), len(xs)


def _joint_logL(p, lnN, lnD):
    an, ad, lnc, ldc = p
    return ad * np.logaddexp((an / ad) * (lnc - lnN), ldc - lnD)


def fit_kaplan(N, D, L, n_kind="nonembedding") -> dict:
    from scipy.optimize import least_squares

    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    if len(N) < 5:
        raise UserError(f"Kaplan fits need >= 5 runs, got {len(N)}")
    res = {"method": "kaplan", "n_kind": n_kind, "n_points": int(len(N)), "published": PUBLISHED,
           "warnings": []}
    ln, k = _single(N, L, 0.01)
    res["L_N"] = {"N_c": ln[0], "alpha_N": ln[1], "n_sizes": k} if ln else Skipped(reason=f"{k} distinct sizes (need >= 3)").to_json()
    ld, k = _single(D, L, 0.05)
    res["L_D"] = {"D_c": ld[0], "alpha_D": ld[1], "n_token_counts": k} if ld else Skipped(reason=f"{k} distinct token counts (need >= 3)").to_json()
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    best = None
    starts = [(0.076, 0.103, np.log(6.4e13), np.log(1.8e13))]
    starts += [(an, ad, lc, ldc) for an in (0.05, 0.2, 0.5) for ad in (0.05, 0.2, 0.5)
               for lc in (15.0, 30.0) for ldc in (15.0, 30.0)]
    for s in starts:
        try:
            r = least_squares(lambda p: _joint_logL(p, lnN, lnD) - lnL, s,
                              bounds=([1e-4, 1e-4, -50, -50], [5, 5, 150, 150]))
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    an, ad, lnc, ldc = best.x
    res["L_ND"] = {"N_c": float(np.exp(lnc)), "D_c": float(np.exp(ldc)), "alpha_N": float(an),
                   "alpha_D": float(ad), "rms_log_residual": float(np.sqrt(2 * best.cost / len(N)))}
    res["form"] = {"L_N": "(N_c/N)^alpha_N", "L_D": "(D_c/D)^alpha_D",
                   "L_ND": "[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"}
    return res


def kaplan_joint(p: dict, N, D):
    return np.exp(_joint_logL((p["alpha_N"], p["alpha_D"], np.log(p["N_c"]), np.log(p["D_c"])),
                              np.log(N), np.log(D)))

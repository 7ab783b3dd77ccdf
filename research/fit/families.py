"""The two law families that give the loss of any (N, D), evaluated through one function each.

    chinchilla   L(N, D) = E + A/N^alpha + B/D^beta                 (research.fit.laws.ChinchillaLaw)
    kaplan       L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D   (research.fit.kaplan.kaplan_joint)

Below both `predict` (prediction intervals) and `diagnostics` (noise of a fitted law), which
each need a law's loss.
"""

from __future__ import annotations

from typing import Literal

from research.fit.kaplan import kaplan_joint
from research.fit.laws import ChinchillaLaw

Family = Literal["chinchilla", "kaplan"]
CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
KAPLAN_KEYS = ("N_c", "D_c", "alpha_N", "alpha_D")
FAMILY_KEYS = {"chinchilla": CHINCHILLA_KEYS, "kaplan": KAPLAN_KEYS}
FAMILY_FORMS = {"chinchilla": "L(N, D) = E + A/N^alpha + B/D^beta",
                "kaplan": "L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"}


def family_loss(family: Family, p: dict, N, D):
    """L(N, D) of one law family, through the one function for each formula."""
    if family == "chinchilla":
        return ChinchillaLaw(p["E"], p["A"], p["B"], p["alpha"], p["beta"]).loss(N, D)
    return kaplan_joint(p, N, D)

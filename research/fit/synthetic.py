"""Synthetic results tables and sweep directories generated from a known law plus noise.

Used by the tests, the benchmark and the notebooks' self-check: the fitters must
recover the law that generated the data. The default truth is the Epoch AI 2024
refit of Chinchilla (see `research.fit.laws`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from research.fit.laws import ChinchillaLaw, published
from research.train.sweep_dir import SweepDir

CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # Chinchilla §3.2 range
DEMO_BUDGETS = (1e13, 3e13, 1e14, 3e14, 1e15)  # CPU-sized sweep


def default_truth() -> ChinchillaLaw:
    return published("epoch-2024")


def demo_truth() -> ChinchillaLaw:
    """A law with realistic losses (~2-4 nats/token) for CPU-sized models on a 256-symbol vocabulary."""
    return ChinchillaLaw(1.2, 40.0, 80.0, 0.32, 0.34, name="demo-truth", source="synthetic")


def isoflop_design(budgets, per_budget=9, span=10.0, law: ChinchillaLaw | None = None):
    """(C, N, D) rows: per budget, `per_budget` sizes log-spaced over [N*/span, N*·span] around the
    law's optimum; D = C / (6N)."""
    law = law or default_truth()
    rows = []
    for c in budgets:
        center = law.n_opt(c)
        for n in np.geomspace(center / span, center * span, per_budget):
            rows.append((float(c), float(n), float(c / (6.0 * n))))
    return rows


def synthetic_table(law=None, budgets=CHINCHILLA_BUDGETS, per_budget=9, span=10.0, noise=0.01, seed=0):
    """DataFrame with columns N, D, C, loss: loss = L(N, D)·exp(ε), ε ~ Normal(0, noise)."""
    import pandas as pd

    law = law or default_truth()
    rng = np.random.default_rng(seed)
    rows = isoflop_design(budgets, per_budget, span, law)
    c, n, d = (np.array(v) for v in zip(*rows))
    loss = law.loss(n, d) * np.exp(rng.normal(0.0, noise, len(n)))
    return pd.DataFrame({"N": n, "D": d, "C": c, "loss": loss})


def _shape(n: float, vocab: int):
    layers = int(min(24, max(2, round(math.log2(n) - 13))))
    d_model = max(32, int(round(math.sqrt(n / (12 * layers)) / 16) * 16))
    return layers, d_model, max(1, d_model // 64)


def write_sweep_dir(path, law=None, budgets=DEMO_BUDGETS, per_budget=7, span=6.0, noise=0.01, seed=0,
                    curve_points=60, convention="6n", n_failed=2, batch_tokens=None) -> Path:
    """A sweep directory as the sweep stage writes it: results.csv, sweep.json and
    trials/<trial>/{metrics.jsonl, summary.json}. Sizes are shared across budgets (one log-spaced
    ladder) so each size is trained at several horizons, as Approach 1 needs."""
    import pandas as pd

    law = law or demo_truth()
    rng = np.random.default_rng(seed)
    path = Path(path)
    layout = SweepDir(path)
    layout.trials_dir.mkdir(parents=True, exist_ok=True)
    centers = [law.n_opt(c) for c in budgets]
    ladder = np.geomspace(min(centers) / span, max(centers) * span,
                          int(round(math.log(max(centers) / min(centers) * span * span) / math.log(span ** (2 / (per_budget - 1))))) + 1)
    vocab, seq = 256, 128
    rows = []
    trial_id = 0
    for c, center in zip(budgets, centers):
        sizes = ladder[np.argsort(np.abs(np.log(ladder / center)))[:per_budget]]
        for n in np.sort(sizes):
            n = float(n)
            d = c / (6.0 * n)
            layers, d_model, heads = _shape(n, vocab)
            name = f"t{trial_id:04d}"
            trial_id += 1
            tdir = layout.trial_dir(name)
            tdir.mkdir(exist_ok=True)
            bt = batch_tokens or max(seq, int(d / 400))
            steps = max(2, int(d // bt))
            log_steps = np.unique(np.geomspace(1, steps, curve_points).astype(int))
            eps_curve = rng.normal(0.0, noise, len(log_steps))
            recs = []
            for s, eps in zip(log_steps, eps_curve):
                tok = float(s * bt)
                rec = {"step": int(s), "tokens": tok, "flops_6n": 6.0 * n * tok,
                       "flops_chinchilla": 6.0 * n * tok * 1.04,
                       "loss": float(law.loss(n, tok) * math.exp(eps)),
                       "lr": 3e-3, "grad_norm": 1.0, "tokens_per_s": 1e5}
                if s % 10 == 0 or s == log_steps[-1]:
                    rec["eval_loss"] = float(law.loss(n, tok) * math.exp(rng.normal(0.0, noise / 2)))
                recs.append(rec)
            tokens = float(steps * bt)
            final_eval = float(law.loss(n, tokens) * math.exp(rng.normal(0.0, noise)))
            row = {"trial": name, "status": "completed", "budget": c, "requested_n": n,
                   "requested_tokens_per_param": tokens / n, "layers": layers, "d_model": d_model, "heads": heads,
                   "seq_len": seq, "vocab_size": vocab, "n_params": n,
                   "n_params_nonembedding": n - vocab * d_model, "tokens": tokens,
                   "flops_6n": 6.0 * n * tokens, "flops_chinchilla": 6.0 * n * tokens * 1.04,
                   "final_train_loss": recs[-1]["loss"], "final_eval_loss": final_eval,
                   "eval_bits_per_byte": final_eval / math.log(2), "wall_time_s": tokens / 1e5}
            rows.append(row)
            (tdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            (tdir / "summary.json").write_text(json.dumps(row))
    for i in range(n_failed):
        bad = dict(rows[i % len(rows)])
        bad.update(trial=f"t{trial_id:04d}", status="diverged" if i % 2 else "failed",
                   final_train_loss=float("nan"), final_eval_loss=float("nan"))
        trial_id += 1
        rows.append(bad)
    pd.DataFrame(rows).to_csv(layout.results_path, index=False)
    layout.record_path.write_text(json.dumps({"design": "isoflop", "budgets": list(budgets),
                                                 "flops_convention": convention}))
    return path


def compute_shifted(law: ChinchillaLaw, factor: float, name: str = "shifted") -> ChinchillaLaw:
    """A law whose compute-optimal loss at C equals `law`'s at factor·C (6n convention): L'(N, D) =
    L(s·N, s·D) with s² = factor, i.e. A' = A·s^-α, B' = B·s^-β. Recipe B = compute_shifted(A, m) is
    worth exactly m times the compute at every budget (the known answer for `scaling compare`)."""
    s = math.sqrt(factor)
    return ChinchillaLaw(law.E, law.A * s ** -law.alpha, law.B * s ** -law.beta, law.alpha, law.beta,
                         name=name, source=f"{law.name} with compute x{factor:g}")

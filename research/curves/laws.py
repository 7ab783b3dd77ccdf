"""Two loss-curve laws that read the learning-rate schedule, evaluated with numpy in float64.

Both take the per-step learning rates eta_1..eta_T of a run (warmup included) and give the
loss after any step t.

Multi-Power Law (Luo et al. 2025, arXiv 2503.12811):

    L(t)  = L0 + A * (S1(t) + S_W)^(-alpha) - LD(t)
    LD(t) = B * sum_{k=1..t} (eta_{k-1} - eta_k) * G(eta_k^(-gamma) * S_k(t))
    S_k(t) = sum_{tau=k..t} eta_tau,   G(x) = 1 - (C*x + 1)^(-beta)

  S1 + S_W is the area under the whole schedule, warmup included (as the reference code does);
  the reductions start after the warmup's peak (the paper's eta_0 is the peak: rising LRs of the
  warmup are not "decay").

LR-annealing law (Tissue et al. 2024, arXiv 2408.11029):

    L(t) = L0 + A * S1(t)^(-alpha) - C * S2(t)
    S2(t) = sum_{i<=t} m_i,   m_i = lam * m_{i-1} + (eta_{i-1} - eta_i)   (lam about 0.999)

  with S1 again the whole area and the annealing momentum counted from the peak on.

LD(t) is a double sum over decay events k <= t. `CurveSums` evaluates it at any query steps in
O(Q * m * log T): the m-ish most recent events one by one, older ones in aligned blocks of 2, 4,
8, ... steps, each block summed at the |delta|-weighted mean of its areas S1(k-1) and of its
log eta_k. A block of width w is at least m*w/2 steps behind t, so the argument of G varies by at
most 2/m across it and the block sum errs only at second order (`loss_drop_exact` is the plain
double sum the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MULTIPOWER, ANNEALING = "multipower", "annealing"
LAWS = (MULTIPOWER, ANNEALING)
PARAMS = {MULTIPOWER: ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
          ANNEALING: ("L0", "A", "alpha", "C", "lam")}
NEAR_BLOCKS = 16  # m: a block of width w is used only once it lies at least m*w/2 steps back
QUERY_CHUNK = 2048  # query steps per vectorised chunk (bounds memory at any T)
ANNEALING_LAMBDA = 0.999  # Tissue et al.'s momentum decay
LR_FLOOR = 1e-9  # learning rates below this share of the peak count as this (a schedule that ends at 0)


def peak_step(lr_T: np.ndarray) -> int:
    """The 1-based step at which the schedule first reaches its largest LR (the end of warmup)."""
    return int(np.argmax(lr_T)) + 1


def decay_deltas(lr_T: np.ndarray) -> np.ndarray:
    """delta_k = eta_{k-1} - eta_k for k = 1..T (0-based array), zero up to the peak."""
    lr = np.asarray(lr_T, np.float64)
    delta = np.zeros_like(lr)
    delta[1:] = lr[:-1] - lr[1:]
    delta[:peak_step(lr)] = 0.0
    return delta


@dataclass
class CurveSums:
    """The schedule-dependent sums of one run, precomputed once for any parameters."""

    lr_T: np.ndarray  # eta_1..eta_T (floored at LR_FLOOR of the peak)
    s1_T: np.ndarray  # S1(t), t = 1..T (warmup included)
    delta_T: np.ndarray  # eta_{k-1} - eta_k, zero up to the peak
    levels: list  # per level l (blocks of 2^l events): (sum delta, sum |delta|, mean S1(k-1), mean log eta)

    @classmethod
    def of(cls, lr_T) -> "CurveSums":
        lr = np.asarray(lr_T, np.float64)
        if lr.ndim != 1 or lr.size == 0 or not np.all(np.isfinite(lr)) or lr.max() <= 0:
            raise ValueError("lr_T must be a non-empty 1-D array of finite learning rates, some positive")
        lr = np.maximum(lr, lr.max() * LR_FLOOR)  # eta^-gamma stays finite where a schedule reaches 0
        s1 = np.cumsum(lr)
        delta = decay_deltas(lr)
        s_prev = np.concatenate([[0.0], s1[:-1]])
        d, w, ws, wl = delta, np.abs(delta), np.abs(delta) * s_prev, np.abs(delta) * np.log(lr)
        levels = []
        while True:
            safe = np.where(w > 0, w, 1.0)
            levels.append((d, w, ws / safe, wl / safe))
            if d.size <= 1:
                break
            if d.size % 2:
                d, w, ws, wl = (np.append(a, 0.0) for a in (d, w, ws, wl))
            d, w, ws, wl = (a.reshape(-1, 2).sum(axis=1) for a in (d, w, ws, wl))
        return cls(lr, s1, delta, levels)

    @property
    def steps(self) -> int:
        return self.lr_T.size

    def area(self, t_Q: np.ndarray) -> np.ndarray:
        """S1(t) (warmup included) at 1-based steps t."""
        return self.s1_T[np.asarray(t_Q) - 1]

    def loss_drop(self, t_Q: np.ndarray, C: float, beta: float, gamma: float) -> np.ndarray:
        """sum_k delta_k * G(eta_k^-gamma * S_k(t)) at each 1-based step t (LD(t) / B)."""
        return self.loss_drop_terms(t_Q, C, beta, gamma, derivatives=False)[0]

    def loss_drop_terms(self, t_Q, C: float, beta: float, gamma: float, derivatives: bool = True) -> np.ndarray:
        """[LD/B, d(LD/B)/d ln C, d(LD/B)/d beta, d(LD/B)/d gamma] at each step (rows; 1 row without derivatives)."""
        t_Q = np.asarray(t_Q, np.int64)
        out = np.zeros((4 if derivatives else 1, t_Q.size))
        if not np.any(self.delta_T):
            return out
        for lo in range(0, t_Q.size, QUERY_CHUNK):
            out[:, lo:lo + QUERY_CHUNK] = self._loss_drop_chunk(t_Q[lo:lo + QUERY_CHUNK], C, beta, gamma, derivatives)
        return out

    def _loss_drop_chunk(self, t_Q, C, beta, gamma, derivatives):
        """Events (lower, upper] at each level, `lower` aligned to the next level's blocks."""
        m = NEAR_BLOCKS
        s_t = self.s1_T[t_Q - 1]
        total = np.zeros((4 if derivatives else 1, t_Q.size))
        upper = t_Q.copy()  # events 1..upper (1-based) remain to be summed
        offsets = np.arange(m + 2)
        for level, (d, _, s_mean, log_lr_mean) in enumerate(self.levels):
            w = 1 << level
            last = level == len(self.levels) - 1
            lower = np.zeros_like(upper) if last else np.maximum((upper - m * w) // (2 * w) * (2 * w), 0)
            j = (lower // w)[:, None] + offsets[None, :]  # 0-based blocks of width w: events j*w+1 .. (j+1)*w
            valid = j < (upper // w)[:, None]
            jj = np.where(valid, j, 0)
            dv = np.where(valid, d[jj], 0.0)
            cx = C * np.maximum(np.exp(-gamma * log_lr_mean[jj]) * (s_t[:, None] - s_mean[jj]), 0.0)
            log1p = np.log1p(cx)
            p = np.exp(-beta * log1p)  # (C x + 1)^-beta
            total[0] += (dv * (1.0 - p)).sum(axis=1)
            if derivatives:
                dg_dlnc = beta * p / (1.0 + cx) * cx  # dG/d ln C; dG/d gamma = -log eta * that
                total[1] += (dv * dg_dlnc).sum(axis=1)
                total[2] += (dv * p * log1p).sum(axis=1)
                total[3] -= (dv * dg_dlnc * log_lr_mean[jj]).sum(axis=1)
            upper = lower
            if not upper.any():
                break
        return total

    def loss_drop_exact(self, t_Q, C, beta, gamma) -> np.ndarray:
        """The double sum written out, O(Q * T): the reference the block sum is tested against."""
        out = []
        k = np.arange(1, self.steps + 1)
        s_prev = np.concatenate([[0.0], self.s1_T[:-1]])
        for t in np.asarray(t_Q):
            sel = k <= t
            x = self.lr_T[sel] ** -gamma * (self.s1_T[t - 1] - s_prev[sel])
            out.append(float(np.sum(self.delta_T[sel] * (1.0 - (C * x + 1.0) ** -beta))))
        return np.array(out)

    def annealing_area(self, lam: float) -> np.ndarray:
        """S2(t) for t = 1..T: the cumulative sum of the momentum m_i = lam*m_{i-1} + delta_i."""
        from scipy.signal import lfilter

        return np.cumsum(lfilter([1.0], [1.0, -lam], self.delta_T))


def constant_lr_part(s1_Q, L0, A, alpha) -> np.ndarray:
    """Both laws' constant-LR part L0 + A * S1^-alpha at areas S1 (the warmup included)."""
    return L0 + A * np.power(s1_Q, -alpha)


def multipower_loss(sums: CurveSums, t_Q, L0, A, alpha, B, C, beta, gamma) -> np.ndarray:
    t_Q = np.asarray(t_Q, np.int64)
    return constant_lr_part(sums.area(t_Q), L0, A, alpha) - B * sums.loss_drop(t_Q, C, beta, gamma)


def annealing_loss(sums: CurveSums, t_Q, L0, A, alpha, C, lam) -> np.ndarray:
    t_Q = np.asarray(t_Q, np.int64)
    return constant_lr_part(sums.area(t_Q), L0, A, alpha) - C * sums.annealing_area(lam)[t_Q - 1]


def law_loss(law: str, sums: CurveSums, t_Q, params: dict) -> np.ndarray:
    """The loss `law` (MULTIPOWER or ANNEALING) predicts at 1-based steps t_Q, from named parameters."""
    values = [float(params[name]) for name in PARAMS[law]]
    return (multipower_loss if law == MULTIPOWER else annealing_loss)(sums, t_Q, *values)

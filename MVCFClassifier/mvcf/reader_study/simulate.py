"""Simulation for planning: readers drawn from the Roe–Metz model, and the power of a readers x cases design.

Roe & Metz (1997, Acad Radiol 4:298–303) model the latent rating of reader j, modality i, case k with truth t
as a sum of independent normal effects, drawn separately for the two truth classes:

    X_ijk = μ_it + R_j + (τR)_ij + C_k + (τC)_ik + (RC)_jk + E_ijk      (μ_i0 = 0, μ_i1 = μ_i)

with variances σ²_R, σ²_τR (readers), σ²_C, σ²_τC, σ²_RC, σ²_E (cases, usually summing to 1). For one
reader the ROC curve is binormal; averaged over readers the AUC of modality i is
Φ(μ_i / √(2·(σ²_C+σ²_τC+σ²_RC+σ²_E) + 2·(σ²_R+σ²_τR))), which `mu_for_auc` inverts so that a design is stated
as the AUCs one expects unaided and aided. Hillis (2012, Stat Med 31:1353–1362) relates these variance
components to the Obuchowski–Rockette parameters (Var, Cov1–Cov3, σ²_R, σ²_τR) that the analysis estimates;
power here is the Monte-Carlo rejection rate of the very ORH test the report runs (random readers and random
cases, Hillis 2008 df; mvcf.stats), as in Hillis, Obuchowski & Berbaum (2011, Acad Radiol 18:129–142).

The default variance components are a mid-range structure of the kind Roe & Metz tabulate (case components
summing to 1, reader components ~1% of that); estimate your own from a pilot study when you have one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats as _st

from mvcf.errors import MVCFError


@dataclass(frozen=True)
class RoeMetz:
    var_r: float = 0.011
    var_tr: float = 0.011
    var_c: float = 0.3
    var_tc: float = 0.3
    var_rc: float = 0.2
    var_e: float = 0.2

    def __post_init__(self) -> None:
        bad = {k: v for k, v in asdict(self).items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise MVCFError(f"Roe-Metz variance components must be >= 0: {bad}")
        if self.case_variance <= 0:
            raise MVCFError("Roe-Metz case variance components must not all be zero")

    @property
    def case_variance(self) -> float:
        return self.var_c + self.var_tc + self.var_rc + self.var_e

    def mu_for_auc(self, auc: float) -> float:
        """Separation μ that gives a reader-averaged AUC of `auc`."""
        if not 0.5 <= auc < 1.0:
            raise MVCFError(f"AUC {auc} must be in [0.5, 1)")
        return float(np.sqrt(2 * self.case_variance + 2 * (self.var_r + self.var_tr)) * _st.norm.ppf(auc))

    def ratings(self, truth: np.ndarray, n_readers: int, mus: Sequence[float],
                rng: np.random.Generator) -> np.ndarray:
        """Latent ratings (modalities, readers, cases) for `truth` (bool per case), one μ per modality."""
        truth = np.asarray(truth, bool)
        t, c = len(mus), truth.size
        out = np.empty((t, n_readers, c))
        for cls in (False, True):
            idx = np.flatnonzero(truth == cls)
            n = idx.size
            sd = {k: np.sqrt(v) for k, v in asdict(self).items()}
            x = (rng.normal(0, sd["var_r"], (1, n_readers, 1)) + rng.normal(0, sd["var_tr"], (t, n_readers, 1))
                 + rng.normal(0, sd["var_c"], (1, 1, n)) + rng.normal(0, sd["var_tc"], (t, 1, n))
                 + rng.normal(0, sd["var_rc"], (1, n_readers, n)) + rng.normal(0, sd["var_e"], (t, n_readers, n)))
            if cls:
                x = x + np.asarray(mus, float)[:, None, None]
            out[:, :, idx] = x
        return out


def to_confidence(latent: np.ndarray, truth: np.ndarray, levels: int = 5) -> np.ndarray:
    """Latent ratings -> whole-number confidence 1..levels, with cut-points at equal steps between the
    negative and positive class means of each reader (as a reader's own use of a 5-point scale)."""
    truth = np.asarray(truth, bool)
    low = latent[..., ~truth].mean(axis=-1, keepdims=True)
    high = latent[..., truth].mean(axis=-1, keepdims=True)
    steps = (np.arange(1, levels) / levels)
    cuts = low[..., None] + (high - low)[..., None] * (steps * 1.6 - 0.3)
    return 1 + (latent[..., None] > cuts).sum(axis=-1)


def power(readers: Sequence[int], cases: Sequence[int], auc_unaided: float, auc_aided: float,
          prevalence: float = 0.4, model: RoeMetz = RoeMetz(), n_sim: int = 500, alpha: float = 0.05,
          seed: int = 0, on_progress: Optional[Callable[[int, int, str], None]] = None) -> dict:
    """Monte-Carlo power of the ORH RRRC test (aided vs unaided) for every readers x cases pair."""
    from mvcf.stats.mrmc import mrmc_arrays

    if not 0 < prevalence < 1:
        raise MVCFError(f"prevalence {prevalence} must be between 0 and 1")
    if n_sim < 10:
        raise MVCFError("use at least 10 simulated studies")
    mus = [model.mu_for_auc(auc_unaided), model.mu_for_auc(auc_aided)]
    rng = np.random.default_rng(seed)
    grid = [(int(r), int(c)) for r in readers for c in cases]
    for r, c in grid:
        if r < 2:
            raise MVCFError("a reader study needs at least 2 readers")
        if round(c * prevalence) < 2 or c - round(c * prevalence) < 2:
            raise MVCFError(f"{c} cases at prevalence {prevalence}: need at least 2 of each class")
    rows = []
    for index, (r, c) in enumerate(grid):
        n_pos = int(round(c * prevalence))
        truth = np.zeros(c, bool)
        truth[:n_pos] = True
        hits, untestable, diffs, aucs = 0, 0, [], []
        for _ in range(n_sim):
            result = mrmc_arrays(model.ratings(truth, r, mus, rng), truth, alpha=alpha)
            sec = result["rrrc"]
            diff = -sec["diff"]  # modality 0 (unaided) minus 1 (aided) -> aided minus unaided
            wanted = np.sign(auc_aided - auc_unaided)  # under the null (equal AUCs) any rejection counts
            # a study whose test has no variance (every reader perfect in both rounds) rejects nothing
            untestable += sec["p"] is None
            hits += bool(sec["p"] is not None and sec["p"] < alpha and (wanted == 0 or np.sign(diff) == wanted))
            diffs.append(diff)
            aucs.append([result["mean_auc"]["0"], result["mean_auc"]["1"]])
        p = hits / n_sim
        rows.append({"readers": r, "cases": c, "n_pos": n_pos, "power": p, "mc_se": float(np.sqrt(p * (1 - p) / n_sim)),
                     "no_test": untestable,
                     "mean_auc_unaided": float(np.mean([a[0] for a in aucs])),
                     "mean_auc_aided": float(np.mean([a[1] for a in aucs])), "mean_diff": float(np.mean(diffs))})
        if on_progress is not None:
            on_progress(index + 1, len(grid), f"{r} readers x {c} cases: power {p:.2f}")
    return {"model": "Roe-Metz (1997)", "variance_components": asdict(model), "mu": mus,
            "auc_unaided": auc_unaided, "auc_aided": auc_aided, "prevalence": prevalence, "n_sim": n_sim,
            "alpha": alpha, "seed": seed, "test": "ORH random readers, random cases (Hillis df)", "grid": rows}

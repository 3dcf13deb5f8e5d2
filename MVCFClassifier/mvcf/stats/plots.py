"""PNG figures (matplotlib, Agg backend) for ROC curves, calibration and decision curves.

Each function writes its file atomically (a reader never sees a half-written PNG) and returns the path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from mvcf.errors import MVCFError
from mvcf.fileio import atomic_path
from mvcf.outputs_guard import png_metadata

PathLike = Union[str, os.PathLike]


def _figure(width: float = 5.5, height: float = 5.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120)


def _save(fig: Any, path: PathLike, tight: bool = True) -> Path:
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise MVCFError(f"plot path must end in .png: {target}")
    if tight:
        fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", metadata=png_metadata())
    return target


def _as_curves(y_true: Any, scores: Any) -> dict:
    if isinstance(scores, Mapping):
        return dict(scores)
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        return {"score": scores}
    if isinstance(scores, (list, tuple)) and scores and np.ndim(scores[0]) == 0:
        return {"score": np.asarray(scores)}
    return {f"score {i + 1}": s for i, s in enumerate(scores)}


def plot_roc(path: PathLike, y_true: Any, scores: Any, band: bool = True, n_resamples: int = 500,
             seed: int = 0, alpha: float = 0.05,
             operating_points: Optional[Mapping[str, float]] = None, title: str = "ROC") -> Path:
    """ROC curve(s) with AUC and DeLong CI in the legend (Newcombe's where DeLong collapses to a point), a
    stratified-bootstrap sensitivity band, and operating points {label: threshold} marked on the first curve
    ("positive when score >= threshold")."""
    from mvcf.stats.roc import delong_ci, point_interval_fallback, roc_curve_band

    curves = _as_curves(y_true, scores)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    truth = np.asarray(y_true)
    for index, (name, score) in enumerate(curves.items()):
        ci = delong_ci(truth, score, alpha=alpha)
        data = roc_curve_band(truth, score, n_resamples=n_resamples if band else 1, seed=seed, alpha=alpha)
        fallback = point_interval_fallback(ci["auc"], ci["ci"], ci["n_pos"], ci["n_neg"], alpha=alpha)
        (low, high), source = (fallback[0], ", Newcombe") if fallback is not None else (ci["ci"], "")
        label = f"{name}: AUC {ci['auc']:.3f} ({low:.3f}–{high:.3f}{source})"
        (line,) = ax.plot(data["fpr"], data["tpr"], label=label)
        if band:
            ax.fill_between(data["grid_fpr"], data["tpr_low"], data["tpr_high"], color=line.get_color(),
                            alpha=0.15, linewidth=0)
        if index == 0 and operating_points:
            values = np.asarray(score, dtype=float)
            positive = truth.astype(bool) if truth.dtype == bool else truth.astype(float) == 1
            for op_label, threshold in operating_points.items():
                called = values >= threshold
                sens = called[positive].mean()
                fpr = called[~positive].mean()
                ax.plot([fpr], [sens], "o", color=line.get_color(), markeredgecolor="black")
                ax.annotate(f"{op_label} ({threshold:.3g})", (fpr, sens), textcoords="offset points",
                            xytext=(6, -12), fontsize=8)
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity")
    ax.set_title(title + (f" (band: {int(100 * (1 - alpha))}% bootstrap)" if band else ""))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_calibration(path: PathLike, y_true: Any, prob: Any, n_bins: int = 10, title: str = "Calibration") -> Path:
    """Reliability diagram: observed fraction positive (Wilson CI) against mean predicted probability per
    bin, the diagonal, a histogram of predictions, and Brier/slope/intercept in the title."""
    from mvcf.stats.calibration import calibration

    cal = calibration(y_true, prob, n_bins=n_bins)
    fig = _figure(5.5, 6.0)
    ax = fig.add_axes([0.14, 0.32, 0.8, 0.6])
    hist = fig.add_axes([0.14, 0.08, 0.8, 0.15], sharex=ax)
    x = [b["mean_predicted"] for b in cal["bins"]]
    y = [b["observed"] for b in cal["bins"]]
    err = np.array([[b["observed"] - b["observed_ci"][0], b["observed_ci"][1] - b["observed"]] for b in cal["bins"]]).T
    err = np.clip(err, 0.0, None)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed fraction positive")
    ax.set_title(f"{title}\nBrier {cal['brier']:.3f}, slope {cal['slope']:.2f}, intercept {cal['intercept']:.2f}",
                 fontsize=10)
    hist.hist(np.asarray(prob, dtype=float), bins=np.linspace(0, 1, n_bins + 1), color="grey")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("cases")
    return _save(fig, path, tight=False)


def plot_decision_curve(path: PathLike, y_true: Any, probs: Any, thresholds: Optional[Sequence[float]] = None,
                        title: str = "Decision curve") -> Path:
    """Net benefit against threshold probability for one or more models, with treat-all and treat-none."""
    from mvcf.stats.calibration import decision_curve

    curves = _as_curves(y_true, probs)
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    first = None
    for name, prob in curves.items():
        dc = decision_curve(y_true, prob, thresholds)
        first = first or dc
        ax.plot(dc["thresholds"], dc["net_benefit"], label=name)
    ax.plot(first["thresholds"], first["treat_all"], "--", color="grey", label="treat all")
    ax.plot(first["thresholds"], first["treat_none"], "-", color="black", linewidth=0.8, label="treat none")
    ax.set_ylim(min(-0.05, -0.1 * first["prevalence"]), max(first["prevalence"] * 1.1, 0.05))
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)

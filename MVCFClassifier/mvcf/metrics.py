"""One metrics summary for a set of predictions, shared by train, evaluate and study.

AUC with its DeLong and bootstrap CIs (Newcombe's score interval, with a note, where those collapse to a
point: perfect separation or a class of one), and the operating point at a frozen threshold (sensitivity,
specificity, PPV, NPV, accuracy, F1 with Wilson CIs), all from mvcf.stats. A set with a single class gets
no AUC (None) and a note instead of an exception, since a small external site may hold only one class.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def summarize(y_true: Sequence[int], prob: Sequence[float], threshold: float, n_bootstrap: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    from mvcf.stats import bootstrap_auc_ci, delong_ci, metrics_at_threshold, newcombe_auc_ci, point_interval_fallback

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    out: dict[str, Any] = {"n": int(y.size), "n_mvcf": int(y.sum()), "n_ovcf": int((1 - y).sum()),
                           "threshold": float(threshold)}
    if y.size == 0:
        out["note"] = "no cases"
        return out
    if 0 < y.sum() < y.size and min(y.sum(), y.size - y.sum()) < 2:
        from mvcf.stats import auc

        out["auc"] = float(auc(y, p))
        out["auc_ci_newcombe"] = list(newcombe_auc_ci(out["auc"], int(y.sum()), int((1 - y).sum())))
        out["note"] = ("a class of one: no DeLong or bootstrap AUC interval (they need two cases of each "
                       "class); Newcombe's score interval given instead")
    elif 0 < y.sum() < y.size:
        d = delong_ci(y, p)
        out["auc"] = d["auc"]
        out["auc_ci_delong"] = list(d["ci"])
        if n_bootstrap > 0:
            out["auc_ci_bootstrap"] = list(bootstrap_auc_ci(y, p, n_resamples=n_bootstrap, seed=seed)["ci"])
        fallback = point_interval_fallback(d["auc"], d["ci"], int(y.sum()), int((1 - y).sum()))
        if fallback is not None:
            out["auc_ci_newcombe"] = list(fallback[0])
            out["note"] = (f"{fallback[1]}: the DeLong and bootstrap intervals collapse to a point; Newcombe's "
                           "score interval given instead")
    else:
        out["auc"] = None
        out["note"] = "one class only: AUC undefined"
    m = metrics_at_threshold(y, p, threshold)
    for key in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"):
        out[key] = {"value": _finite(m[key]["value"]), "ci": [_finite(v) for v in m[key]["ci"]]}
    out.update({k: m[k] for k in ("tp", "fp", "tn", "fn")})
    return out


def _finite(value: float) -> Optional[float]:
    value = float(value)
    return value if np.isfinite(value) else None


def auc_interval(summary: dict[str, Any]) -> tuple[Optional[list[float]], str]:
    """The AUC interval a display shows and its method: Newcombe's where DeLong's is degenerate or missing (a
    perfect separation, a class of one: DeLong's "1.000-1.000" is no interval), else DeLong's; (None, "")
    when there is neither."""
    if summary.get("auc_ci_newcombe"):
        return list(summary["auc_ci_newcombe"]), "Newcombe"
    if summary.get("auc_ci_delong"):
        return list(summary["auc_ci_delong"]), "DeLong"
    return None, ""


def format_auc(summary: dict[str, Any], reason: bool = False) -> str:
    """'0.912 (0.861–0.963)' (DeLong), '1.000 (0.935–1.000, Newcombe)' where DeLong is degenerate, or 'n/a'
    (with `reason`, followed by why: 'n/a (one class only: AUC undefined)', for a line with no notes below)."""
    if not summary or summary.get("auc") is None:
        why = (summary or {}).get("note") or ("no cases" if reason and not summary else None)
        return f"n/a ({why})" if reason and why else "n/a"
    ci, method = auc_interval(summary)
    if ci is None:
        return f"{summary['auc']:.3f}"
    return f"{summary['auc']:.3f} ({ci[0]:.3f}–{ci[1]:.3f}{', Newcombe' if method == 'Newcombe' else ''})"

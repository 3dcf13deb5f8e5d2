"""Benchmark: DeLong AUCs + covariance for 100,000 cases x 5 models (target: under 1 s).

Ours: `mvcf.stats.delong_cov` (Sun & Xu 2014 placement values from one vectorised sort of all models).
Baseline: the straightforward structural-components computation done model by model: placement values
from sorted opposite-class scores with `np.searchsorted` (counting ties half), then the sample covariances
(also O(n log n); the textbook O(n_pos x n_neg) double loop would take minutes at this size). A second
reference times scikit-learn's `roc_auc_score` in a loop, which gives the AUCs only (no variance).
The two DeLong computations must agree (max abs difference reported). Prints (and with --out writes)
one JSON object with the timings (best of --repeats) and the ratios.

    python benchmarks/bench_delong.py [--out bench_delong.json] [--cases 100000] [--models 5] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

from report import emit, median_time


def baseline_delong(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positives_all, negatives_all = scores[:, truth], scores[:, ~truth]
    m, n = positives_all.shape[1], negatives_all.shape[1]
    v10, v01, aucs = [], [], []
    for pos, neg in zip(positives_all, negatives_all):
        neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
        below = np.searchsorted(neg_sorted, pos, side="left")
        ties = np.searchsorted(neg_sorted, pos, side="right") - below
        v10.append((below + 0.5 * ties) / n)
        above = pos.size - np.searchsorted(pos_sorted, neg, side="right")
        ties = np.searchsorted(pos_sorted, neg, side="right") - np.searchsorted(pos_sorted, neg, side="left")
        v01.append((above + 0.5 * ties) / m)
        aucs.append(v10[-1].mean())
    cov = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    return np.array(aucs), cov


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    from mvcf.stats import delong_cov

    rng = np.random.default_rng(args.seed)
    truth = rng.random(args.cases) < 0.4
    latent = rng.normal(size=args.cases) + truth
    scores = latent[None, :] + rng.normal(scale=np.linspace(0.3, 2.0, args.models)[:, None], size=(args.models, args.cases))
    scores[-1] = np.round(scores[-1], 1)  # one model with many ties

    def best_of(fn):
        timing = median_time(fn, args.repeats)
        return timing.min_s, timing.result

    ours_s, ours = best_of(lambda: delong_cov(truth, scores))
    base_s, (base_aucs, base_cov) = best_of(lambda: baseline_delong(truth, scores))
    sk_s, sk_aucs = best_of(lambda: [roc_auc_score(truth, s) for s in scores])
    result = {
        "benchmark": "delong", "cases": args.cases, "models": args.models, "n_pos": int(truth.sum()),
        "repeats": args.repeats, "ours_s": ours_s, "baseline_searchsorted_s": base_s, "sklearn_auc_loop_s": sk_s,
        "ratio_baseline_over_ours": base_s / ours_s, "ratio_sklearn_over_ours": sk_s / ours_s,
        "target_s": 1.0, "meets_target": ours_s < 1.0,
        "max_abs_diff_cov": float(np.max(np.abs(ours["cov"] - base_cov))),
        "max_abs_diff_auc": float(max(np.max(np.abs(ours["aucs"] - base_aucs)), np.max(np.abs(ours["aucs"] - sk_aucs)))),
        "python": sys.version.split()[0], "numpy": np.__version__, "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

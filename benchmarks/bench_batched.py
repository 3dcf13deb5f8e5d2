"""Benchmark: 17 vertebrae of one CT in one batched forward pass (mvcf.predict.predict_many) against the
same 17 classified one by one (mvcf.predict.predict_ct in a loop), on ONNX Runtime and on torch.

In one process, the CT read and the bundle loaded once, so the figures are the per-CT work a warm worker
does: locating, views, forward passes. Also the forward passes alone (17 views: one batch vs 17 calls).
The 17 vertebrae are the 8 labelled ones of the shipped CT's mask, cycled. Probabilities of both ways
must agree to 1e-5. Ratio = one by one / batched (> 1: batching is faster).

    python benchmarks/bench_batched.py [--repeats 5] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

from procs import REPO, machine
from report import emit, median_time

sys.path[:0] = [str(REPO / "MVCFClassifier")]
LABELS = [31, 30, 29, 28, 27, 26, 32, 33]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import numpy as np

    from mvcf.locations_file import VertebraQuery
    from mvcf.inference import forward
    from mvcf.inference import load_model
    from mvcf.predict import predict_many
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import sample_ct_paths
    from mvcf.locate import from_mask
    from mvcf.views import ViewSpec, build_views

    paths = sample_ct_paths()
    ct, mask = read_ct(paths["ct"]), read_mask(paths["mask"])
    labels = [LABELS[i % len(LABELS)] for i in range(17)]
    queries = [VertebraQuery(name=f"v{i + 1}", mask=paths["mask"], label=label) for i, label in enumerate(labels)]
    locations = [from_mask(ct, mask, label) for label in labels]
    results = {}
    for backend in ("onnxruntime", "torch"):
        bundle = load_model(None, "cpu", backend)
        if backend == "torch":
            import torch

            torch.set_num_threads(args.threads)
        timed = median_time(lambda: predict_many(ct, queries, bundle, "cpu"), args.repeats, warmup=1)
        batched_s, batched = timed.median_s, timed.result
        timed = median_time(lambda: [r for q in queries for r in predict_many(ct, [q], bundle, "cpu")],
                            args.repeats, warmup=1)
        single_s, single = timed.median_s, timed.result
        views = np.stack([build_views(ct, loc, ViewSpec.from_dict(bundle.view_spec)).array for loc in locations])
        fwd_batch_s = median_time(lambda: forward(bundle, views), args.repeats, warmup=1).median_s
        fwd_single_s = median_time(lambda: [forward(bundle, v[None]) for v in views], args.repeats, warmup=1).median_s
        diff = max(abs(a["probability_malignant"] - b["probability_malignant"]) for a, b in zip(batched, single))
        results[backend] = {"batched_s": round(batched_s, 4), "one_by_one_s": round(single_s, 4),
                            "ratio_one_by_one_over_batched": round(single_s / batched_s, 2),
                            "forward_batch_ms": round(1000 * fwd_batch_s, 2),
                            "forward_one_by_one_ms": round(1000 * fwd_single_s, 2),
                            "ratio_forward": round(fwd_single_s / fwd_batch_s, 2), "max_abs_diff": diff}
    payload = {"benchmark": "17 vertebrae of one CT: one batched forward pass vs one by one (in process)",
               "vertebrae": 17, "backends": results, "threads": args.threads, "repeats": args.repeats, **machine()}
    emit(payload, args.out)
    return 0 if all(r["max_abs_diff"] <= 1e-5 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: N vertebrae of one CT as N single-vertebra `mvcf predict` child processes (what the Slicer
module did before) vs one multi-vertebra child (`--mask ... --label A --label B ...`, what it does now).

Both classify the same vertebrae of the shipped real CT with the same bundle (default: the embedded demo
bundle) in fresh `python -m mvcf` processes, so start-up, torch/monai import, CT reading and model loading
are counted the way a user waits for them. The probabilities of both must agree (max abs difference
reported). Prints (and with --out writes) one JSON object: median wall seconds of each way and the ratio
single / multi (> 1 means one multi run is faster).

    python benchmarks/bench_predict_multi.py [--vertebrae L1,L2,L3,L4,L5] [--repeats 2] [--threads 1] [--out F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from report import emit


def _mvcf(args: list[str], env: dict) -> tuple[float, dict]:
    """Wall seconds and the JSON result of one `python -m mvcf predict` child."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "predict", *args, "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"mvcf predict {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return wall, json.loads(proc.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertebrae", default="L1,L2,L3,L4,L5", help="names from the sample CT's mask")
    parser.add_argument("--model", help="bundle folder (default: the embedded demo bundle)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each child")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)

    from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths

    paths = sample_ct_paths()
    names = [v.strip() for v in args.vertebrae.split(",") if v.strip()]
    labels = [SAMPLE_VERTEBRA_LABELS[v] for v in names]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    common = ["--ct", str(paths["ct"]), "--device", "cpu"] + (["--model", args.model] if args.model else [])

    single_s, multi_s, single_p, multi_p = [], [], {}, {}
    for _ in range(args.repeats):
        total = 0.0
        for label in labels:
            wall, result = _mvcf(common + ["--mask", str(paths["mask"]), "--label", str(label)], env)
            total += wall
            single_p[label] = result["probability_malignant"]
        single_s.append(total)
        wall, result = _mvcf(common + ["--mask", str(paths["mask"])]
                             + [a for label in labels for a in ("--label", str(label))], env)
        multi_s.append(wall)
        multi_p = {label: r["probability_malignant"] for label, r in zip(labels, result["results"])}
        model = result["results"][0]["model"]
    single, multi = statistics.median(single_s), statistics.median(multi_s)
    payload = {"benchmark": "predict_multi", "vertebrae": names, "labels": labels, "model": model,
               "threads": args.threads, "repeats": args.repeats,
               "single_children_s": round(single, 3), "one_multi_child_s": round(multi, 3),
               "ratio_single_over_multi": round(single / multi, 3),
               "per_vertebra_s": {"single": round(single / len(labels), 3), "multi": round(multi / len(labels), 3)},
               "runs_s": {"single": [round(s, 3) for s in single_s], "multi": [round(s, 3) for s in multi_s]},
               "max_abs_diff_probability": max(abs(single_p[k] - multi_p[k]) for k in labels),
               "machine": {"python": platform.python_version(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

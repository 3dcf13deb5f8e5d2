"""Benchmark: a cold `mvcf predict` of one vertebra (L1 of the shipped CT, the embedded bundle) as a whole
process, against `python -c "import torch, monai"` measured in the same run, and against the same predict
on the torch backend.

Every figure is a fresh interpreter timed from outside (wall clock, and the child's own peak RSS from
os.wait4); the three commands are interleaved run by run, so a busy moment hits all of them alike, and
the medians are reported. Target: predict <= 0.5 x the import. The probabilities of both backends must
agree to 1e-5.

    python benchmarks/bench_cold_predict.py [--repeats 7] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys

from procs import REPO, child_env, machine, medians, run_measured
from report import emit

SAMPLE = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    args = parser.parse_args(argv)

    env = child_env(args.threads)
    predict = [sys.executable, "-m", "mvcf", "--progress", "none", "predict", "--ct", str(SAMPLE / "example_ct.nii.gz"),
               "--mask", str(SAMPLE / "totalseg.nii.gz"), "--label", "31", "--json"]
    commands = {"import_torch_monai": [sys.executable, "-c", "import torch, monai"],
                "predict_onnxruntime": predict,
                "predict_torch": predict + ["--backend", "torch"],
                "python_startup": [sys.executable, "-c", "pass"]}
    runs: dict[str, list] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            result = run_measured(command, env)
            if result["returncode"] != 0:
                print(f"error: {name} exited with {result['returncode']}", file=sys.stderr)
                return 1
            runs[name].append(result)
    probabilities = {name: json.loads(runs[name][-1]["stdout"])["probability_malignant"]
                     for name in ("predict_onnxruntime", "predict_torch")}
    summary = {name: medians(r) for name, r in runs.items()}
    base = summary["import_torch_monai"]["median_s"]
    ours = summary["predict_onnxruntime"]["median_s"]
    payload = {
        "benchmark": "cold mvcf predict, one vertebra, whole process, vs python -c 'import torch, monai'",
        "processes": summary,
        "ratio_predict_over_import": round(ours / base, 3),
        "target_ratio_predict_over_import": 0.5,
        "meets_target": ours / base <= 0.5,
        "ratio_torch_backend_over_onnxruntime": round(summary["predict_torch"]["median_s"] / ours, 2),
        "probabilities": probabilities,
        "max_abs_diff_backends": abs(probabilities["predict_onnxruntime"] - probabilities["predict_torch"]),
        "repeats": args.repeats, "child_threads": args.threads, **machine(),
    }
    emit(payload, args.out)
    return 0 if payload["max_abs_diff_backends"] <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())

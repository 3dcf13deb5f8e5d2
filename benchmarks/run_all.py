"""Run every benchmark in this folder; each writes its JSON to benchmarks/results/<name>.json, then
benchmarks/summary.py writes the markdown table (results/summary.md) that the README quotes.

    python benchmarks/run_all.py [name ...]     # e.g. bench_views; default: all bench_*.py
    python benchmarks/run_all.py --models demo_out/study bench_heatmap   # also the study models' rows

`--models DIR` (one `<mode>/model` bundle per view mode, as `mvcf demo` writes) goes to the benchmarks that
take it (bench_heatmap); without it they time the embedded bundle only, and say so.

The benchmarks import this checkout's `mvcf` (PYTHONPATH is set for them).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


#: the benchmarks that time one bundle per view mode when given `--models DIR`
TAKES_MODELS = ("bench_heatmap",)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all bench_*.py)")
    parser.add_argument("--models", type=Path, help="folder of <mode>/model bundles for " + ", ".join(TAKES_MODELS))
    args = parser.parse_args(argv)
    if args.models is not None and not args.models.is_dir():
        print(f"error: --models is not a folder: {args.models}", file=sys.stderr)
        return 2
    names = args.names
    scripts = sorted(HERE.glob("bench_*.py"))
    unknown = sorted(set(names) - {s.stem for s in scripts})
    if unknown:   # a typo must not run nothing and still rewrite the summary
        print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(s.stem for s in scripts)}",
              file=sys.stderr)
        return 2
    if names:
        scripts = [s for s in scripts if s.stem in names]
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    failed = []
    repo = HERE.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "MVCFClassifier"), str(repo / "MVCFTraining"),
                                                        os.environ.get("PYTHONPATH", "")])}
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        extra = []
        if script.stem in TAKES_MODELS:
            if args.models is not None:
                extra = ["--models", str(args.models.resolve())]
            else:
                print(f"{script.stem}: the embedded bundle only (give --models DIR for one bundle per view mode)")
        proc = subprocess.run([sys.executable, str(script), "--out", str(results / f"{script.stem}.json"), *extra],
                              env=env)
        if proc.returncode != 0:
            failed.append(script.stem)
    subprocess.run([sys.executable, str(HERE / "summary.py")], env=env)
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

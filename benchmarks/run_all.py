"""Run every benchmark in this folder; each writes its JSON to benchmarks/results/<name>.json, then
benchmarks/summary.py writes the markdown table (results/summary.md) that the README quotes.

    python benchmarks/run_all.py [name ...]     # e.g. bench_views; default: all bench_*.py

The benchmarks import this checkout's `mvcf` (PYTHONPATH is set for them).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
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
        proc = subprocess.run([sys.executable, str(script), "--out", str(results / f"{script.stem}.json")], env=env)
        if proc.returncode != 0:
            failed.append(script.stem)
    subprocess.run([sys.executable, str(HERE / "summary.py")], env=env)
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

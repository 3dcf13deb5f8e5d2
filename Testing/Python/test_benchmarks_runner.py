"""benchmarks/run_all.py refuses what it cannot honour before it runs or rewrites anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"
RESULTS = RUN_ALL.parent / "results"


def _state() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in RESULTS.glob("*")} if RESULTS.is_dir() else {}


@pytest.mark.parametrize("argv, message", [
    (["bench_nope"], "error: unknown benchmark(s) bench_nope; choose from "),
    (["bench_views", "bench_typo"], "error: unknown benchmark(s) bench_typo;"),
    (["--models", "/nonexistent/models", "bench_heatmap"], "error: --models is not a folder: /nonexistent/models"),
])
def test_run_all_refuses_without_running_or_rewriting_the_summary(argv, message):
    before = _state()
    proc = subprocess.run([sys.executable, str(RUN_ALL), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1
    assert "== bench_" not in proc.stdout   # nothing ran
    assert _state() == before               # no result and no summary.md rewritten

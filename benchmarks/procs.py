"""Whole-process measurements for the benchmarks: wall time and peak resident memory of one child
(os.wait4's rusage of that child alone), medians over repeats, and the machine's load for the record."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def child_env(threads: Optional[int] = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "MVCFClassifier"), str(REPO / "MVCFTraining"),
                                                        os.environ.get("PYTHONPATH", "")])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_measured(argv: Sequence[str], env: Optional[dict] = None) -> dict:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB, the child's own, from os.wait4; POSIX) and
    exit code of one child; its stdout is kept."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_{os.getpid()}_{time.monotonic_ns()}.out"
    with open(out_path, "w+") as out, open(os.devnull, "w") as null:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=null, stdin=subprocess.DEVNULL,
                                env=env or child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    out_path.unlink(missing_ok=True)
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return {"wall_s": wall, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(rss_kib / 1024, 1),
            "returncode": proc.returncode, "stdout": text}


def medians(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    summary = {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
               "max_s": round(max(walls), 3), "runs_s": [round(w, 3) for w in walls]}
    if all("peak_rss_mib" in r for r in runs):
        summary["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    return summary


def machine() -> dict:
    """What the figures were measured on, and how busy it was (other processes share the cores)."""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}

"""What every benchmark shares: timing a call over repeats (`median_time`) and printing the JSON result
(and, with --out, writing it atomically)."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Timing:
    """Wall seconds of each timed run, and what the last run returned."""

    runs_s: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def min_s(self) -> float:
        return min(self.runs_s)

    def summary(self, digits: int = 3) -> dict[str, Any]:
        return {"median_s": round(self.median_s, digits), "min_s": round(self.min_s, digits),
                "runs_s": [round(t, digits) for t in self.runs_s]}


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 0,
                sync: Optional[Callable[[], None]] = None) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; `sync` (e.g. waiting for the GPU) runs
    inside each timed run, after `fn`."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    timing = Timing()
    for _ in range(repeats):
        started = time.perf_counter()
        timing.result = fn()
        if sync:
            sync()
        timing.runs_s.append(time.perf_counter() - started)
    return timing


def emit(payload: dict[str, Any], out: Optional[str]) -> None:
    from mvcf.fileio import write_text

    text = json.dumps(payload, indent=2)
    print(text)
    if out:
        write_text(out, text + "\n")

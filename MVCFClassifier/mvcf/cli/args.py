"""Typed argparse validators: every numeric or list option of every command is checked at parse time.

`--cases 1e9`, `--n-resamples 1e9` or 5,000 `--windows` ran for minutes with growing memory; `--patience -5`
trained 0 epochs and wrote an untrained bundle with exit 0; `--lr nan` failed with a traceback after files
were written. With these as `type=`, argparse refuses such a value before anything runs, as one `error:`
line with exit code 2 (mvcf.cli.main.OneLineErrorParser). The bounds are in RANGES so the docs and the
commands cannot drift apart.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional, Sequence

#: Name -> (lowest, highest) accepted; docs/reliability.md shows this table.
RANGES: dict[str, tuple[float, float]] = {
    "cases": (1, 100_000),
    "workers": (1, 64),
    "seed": (0, 2 ** 32 - 1),
    "epochs": (1, 10_000),
    "batch_size": (2, 4096),   # batch normalisation needs two samples
    "patience": (1, 10_000),
    "folds": (1, 20),
    "size": (8, 1024),
    "size_3d": (8, 256),
    "n_slices": (1, 512),
    "n_resamples": (10, 100_000),
    "label": (1, 2 ** 31 - 1),
}
#: At most this many HU windows (input channels).
MAX_WINDOWS = 16


def _integer(text: str) -> int:
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
        value = int(value)
    return value


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in [lo, hi] (1e3 is accepted as 1000; 1.5, nan and inf are not)."""
    def parse(text: str) -> int:
        value = _integer(text.strip())
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a whole number in [{lo:,}, {hi:,}], got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def ranged(name: str) -> Callable[[str], int]:
    lo, hi = RANGES[name]
    return int_in(int(lo), int(hi))


def float_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval (open ends where asked); nan and inf are refused."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) \
            and (value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{lo:g}, {hi:g}{right}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def text_list(max_items: int, item: Optional[Callable[[str], object]] = None) -> Callable[[str], str]:
    """A comma-separated list of at most `max_items` non-empty entries (kept as text for the command to
    interpret, each passed through `item` to check it)."""
    def parse(text: str) -> str:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("needs at least one entry")
        if len(items) > max_items:
            raise argparse.ArgumentTypeError(f"takes at most {max_items} entries, got {len(items)}")
        for entry in items:
            if item is not None:
                item(entry)
        return text
    parse.__name__ = "list"
    return parse


def window(text: str) -> str:
    """A window name or CENTER:WIDTH with a finite centre and a positive finite width (in HU)."""
    if ":" in text:
        center, _, width = text.partition(":")
        float_in(-1e5, 1e5)(center)
        float_in(0, 1e5, lo_open=True)(width)
    return text


WINDOWS = text_list(MAX_WINDOWS, window)
LEARNING_RATE = float_in(0, 1, lo_open=True)
SPACING_MM = float_in(0.05, 20)
SLICE_GAP_MM = float_in(0.05, 50)
FRACTION = float_in(0, 1, hi_open=True)
PREVALENCE = float_in(0, 1, lo_open=True, hi_open=True)
ALPHA = float_in(0, 0.5, lo_open=True)


def not_utf8(argv: Sequence[str]) -> Optional[str]:
    """The first argument that is not UTF-8 text, shown with its odd bytes escaped (a file name from another
    encoding reaches Python with surrogate escapes, and ITK aborts the whole process on such a path, leaving
    its temporary file); None when all are."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None

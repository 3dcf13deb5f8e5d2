"""Input checks shared by the statistics functions: every problem a user can fix becomes one MVCFError line."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError


def read_table(path: Any, what: str = "CSV file") -> Any:
    """A statistics or reader-study CSV as a pandas DataFrame: size-checked (MAX_TABLE_BYTES) before reading,
    its header checked for a column named twice, rows with more filled cells than the header refused, and
    every read error one line naming the file. Only an empty cell is missing (a reader's initials `NA` are
    text); a trailing comma on every row (as spreadsheets write) is no extra column."""
    import csv
    import warnings
    from pathlib import Path

    import pandas as pd

    from mvcf.cohort_checks import check_header
    from mvcf.limits import check_file_size

    file = Path(path)
    if not file.exists():
        raise MVCFError(f"{what} not found: {file}")
    if not file.is_file():
        raise MVCFError(f"{what} {file} is not a regular file (a folder, a device or a pipe)")
    check_file_size(file, "MAX_TABLE_BYTES", what)
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            _check_rows(csv.reader(handle), f"{what} {file}", check_header)
        with warnings.catch_warnings():   # ParserWarning: the empty cells after a trailing comma, dropped
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            return pd.read_csv(file, index_col=False, keep_default_na=False, na_values=[""], low_memory=False,
                               encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise MVCFError(f"cannot read {what} {file}: {str(exc).splitlines()[0]}") from None


def _check_rows(rows: Any, where: str, check_header: Any) -> None:
    """The header pandas will use (the first line that is not blank) named once per column, and no row with
    a filled cell beyond it: with one more cell on every row pandas took the first column as the row index and
    shifted every column by one, in silence."""
    header: Optional[list] = None
    for row in rows:
        if header is None:
            if any(cell.strip() for cell in row):
                header = row
                check_header(header, where)
            continue
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
            raise MVCFError(f"{where}: line {rows.line_num} has {len(row)} cells under a header of {len(header)} "
                            "columns (quote a cell that holds a comma)")


def column_missing(names: Sequence[str], columns: Sequence[Any], what: str = "column") -> Optional[str]:
    """Why the table lacks columns it needs, listing the ones it has ('y', ' s' quoted where blanks or
    another letter case would hide the near miss); None when every one is there."""
    present = [str(c) for c in columns]
    missing = [n for n in names if n not in present]
    if not missing:
        return None
    near = {n: c for n in missing for c in present if c.strip().casefold() == n.strip().casefold()}
    shown = ", ".join(repr(c) if c != c.strip() or c in near.values() else c for c in present)
    hint = "".join(f"; {c!r} differs from {n!r} only by blanks or letter case" for n, c in near.items())
    plural = "s" if len(missing) > 1 else ""
    return f"{what}{plural} {', '.join(map(repr, missing))} not in the CSV (columns: {shown}){hint}"


def as_scores(values: Any, name: str = "score") -> np.ndarray:
    """A 1-D float array with no NaN or infinity."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise MVCFError(f"{name} must be numeric") from None
    if array.ndim != 1:
        raise MVCFError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise MVCFError(f"{name} contains NaN or infinite values ({int(np.sum(~np.isfinite(array)))} of {array.size})")
    return array


def numeric_column(frame: Any, column: str, what: str) -> np.ndarray:
    """A CSV column (pandas) as finite floats; a blank cell, a word or an infinity is one line naming the
    first offending row (a data row number, header = row 1) and what is there."""
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    array = values.to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raw = frame[column].iloc[int(bad[0])]
        found = "an empty or NA cell" if pd.isna(raw) else f"{str(raw)[:40]!r}"
        raise MVCFError(f"{what} '{column}' must be finite numbers: {bad.size} row(s) are not, the first is "
                        f"row {int(bad[0]) + 2} with {found}")
    return array


def is_positive(values: Any, positive: Any) -> np.ndarray:
    """Which cells of a truth column (pandas) are the value `positive`: compared as numbers when the column and
    `positive` are all numbers (1 matches 1.0), else as text without surrounding blanks."""
    import pandas as pd

    numeric = pd.to_numeric(values, errors="coerce")
    try:
        wanted: Optional[float] = float(positive)
    except (TypeError, ValueError):
        wanted = None
    if wanted is not None and not numeric.isna().any():
        keys, hit = numeric, (numeric == wanted).to_numpy()
    else:
        keys = values.astype(str).str.strip()
        hit = (keys == str(positive).strip()).to_numpy()
    negatives = pd.unique(keys[~hit])
    if hit.any() and len(negatives) > 1:   # a typo, another case or a third code counted as negative in silence
        first = [int(np.flatnonzero(~hit & (keys == v).to_numpy())[0]) + 2 for v in negatives[:2]]
        raise MVCFError(f"the truth column holds more than two values: besides the positive {str(positive)!r}, "
                        f"{_value(negatives[0])} (row {first[0]}) and {_value(negatives[1])} (row {first[1]}); "
                        "write one value for the negative cases")
    return hit


def _value(value: Any) -> str:
    return repr(f"{value:g}" if isinstance(value, float) else str(value))


def as_truth(values: Any, name: str = "truth", need_both: bool = True) -> np.ndarray:
    """A boolean array (True = positive) from 0/1, booleans, or ±1... only 0/1-like values are accepted."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise MVCFError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype == bool:
        truth = array
    else:
        try:
            numeric = array.astype(float)
        except (TypeError, ValueError):
            raise MVCFError(f"{name} must be 0/1 (or give the positive label), "
                            f"got values like {array[:3].tolist()}") from None
        if np.any(np.isnan(numeric)):
            raise MVCFError(f"{name} contains missing values")
        bad = ~np.isin(numeric, (0.0, 1.0))
        if np.any(bad):
            raise MVCFError(f"{name} must be 0/1, found {numeric[bad][0]:g}")
        truth = numeric == 1.0
    if need_both:
        n_pos = int(truth.sum())
        if n_pos == 0 or n_pos == truth.size:
            raise MVCFError(f"{name} has only one class ({n_pos} positive of {truth.size}); AUC needs both")
    return truth


def score_names(scores: Any) -> Optional[list]:
    """Model names carried by the container: a mapping's keys or a DataFrame's columns."""
    if isinstance(scores, Mapping):
        return list(scores.keys())
    if hasattr(scores, "columns") and hasattr(scores, "to_numpy"):
        return list(scores.columns)
    return None


def score_matrix(scores: Any, n_cases: int) -> np.ndarray:
    """k score arrays as a (k, n) float array. Accepts a list of arrays, a mapping name -> array, a
    DataFrame with one column per model, or a 2-D array of shape (k, n) or (n, k)."""
    if isinstance(scores, Mapping):
        scores = list(scores.values())
    elif hasattr(scores, "columns") and hasattr(scores, "to_numpy"):
        scores = [scores[c].to_numpy() for c in scores.columns]
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        matrix = scores
        if matrix.shape[1] != n_cases and matrix.shape[0] == n_cases:
            matrix = matrix.T
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        matrix = scores[None, :]
    else:
        matrix = [as_scores(s, f"score {i + 1}") for i, s in enumerate(scores)]
    try:
        matrix = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        raise MVCFError("scores must be numeric arrays of equal length") from None
    if matrix.ndim != 2 or matrix.shape[1] != n_cases:
        raise MVCFError(f"each score array must have one value per case ({n_cases}), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise MVCFError("scores contain NaN or infinite values")
    return matrix


def check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise MVCFError(f"alpha must be between 0 and 1, got {alpha}")
    return float(alpha)


def same_length(*arrays: Sequence, names: Sequence[str]) -> None:
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise MVCFError(" and ".join(names) + f" differ in length ({', '.join(str(len(a)) for a in arrays)})")

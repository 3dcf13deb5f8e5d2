"""The cohort manifest: one CSV row per fractured vertebra, read and validated before any training.

Columns (header names are case-insensitive; extra columns are kept in `CaseRecord.extra`):

- `case_id`     unique per row.
- `patient_id`  a patient may have several rows (several fractured levels), all in one institution.
- `institution` the acquiring site; the external test set is chosen by this value.
- `label`       `MVCF` / `malignant` / `1` (positive) or `OVCF` / `osteoporotic` / `0` (negative).
- `ct`          path of the CT (NIfTI, NRRD, MHA or a DICOM series folder).
- where the vertebra is, at least one of:
    * `mask` + `vertebra_label`: a label map and the label value of the fractured vertebra
      (e.g. TotalSegmentator 31 = L1); its centroid is the centre.
    * `center_lps`: `"x,y,z"` in LPS millimetres (ITK/DICOM convention).
    * `point_ras`: `"x,y,z"` in RAS millimetres (Slicer's convention); converted to LPS on reading.
  A row with a mask label and a centre is located by the label; its centre must then lie within 25 mm of the
  label's centroid (else the row is refused: the two name different places), and `center_lps` and
  `point_ras` given together must name the same point.

Relative paths are relative to the manifest's folder. Row numbers in messages are the CSV's line numbers
(the header is row 1, the first case row 2), as a spreadsheet shows them.
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

from mvcf.ctimage import ras_to_lps
from mvcf.errors import MVCFError, spelling
from mvcf.cohort_checks import check_cells, check_header, csv_read_errors, summarise_rows, surplus_cells
from mvcf.fileio import atomic_open
from mvcf.limits import check_file_size
from mvcf.locate import parse_point

REQUIRED_COLUMNS = ("case_id", "patient_id", "institution", "label", "ct")
LOCATION_COLUMNS = ("mask", "vertebra_label", "center_lps", "point_ras")
CLASS_NAMES = {1: "MVCF", 0: "OVCF"}
_LABEL_WORDS = {
    "mvcf": 1, "malignant": 1, "1": 1,
    "ovcf": 0, "osteoporotic": 0, "0": 0,
}


@dataclass
class CaseRecord:
    """One validated manifest row. Paths are absolute; `label` is 1 for MVCF, 0 for OVCF."""

    case_id: str
    patient_id: str
    institution: str
    label: int
    ct: Path
    mask: Optional[Path] = None
    vertebra_label: Optional[int] = None
    center_lps: Optional[np.ndarray] = None
    row: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]


def parse_label(value: str) -> int:
    """1 for MVCF/malignant/1, 0 for OVCF/osteoporotic/0 (case-insensitive); MVCFError otherwise."""
    key = str(value).strip().lower()
    if key.endswith(".0"):
        key = key[:-2]
    if key not in _LABEL_WORDS:
        raise MVCFError(f"unknown label {value!r} (use MVCF/OVCF, malignant/osteoporotic or 1/0)")
    return _LABEL_WORDS[key]


def format_point(point: Sequence[float]) -> str:
    return ",".join(f"{float(v):.3f}" for v in point)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value.strip())
    return path if path.is_absolute() else (base / path)


def _parse_row(row: dict[str, str], number: int, base: Path, allow_outside_root: bool = False) -> CaseRecord:
    """One row -> CaseRecord; raises MVCFError naming the first problem of this row."""
    check_cells({k: v for k, v in row.items() if isinstance(v, str)}, base, allow_outside_root)
    values = {key: (row.get(key) or "").strip() for key in REQUIRED_COLUMNS + LOCATION_COLUMNS}
    for key in ("case_id", "patient_id", "institution", "label", "ct"):
        if not values[key]:
            raise MVCFError(f"empty {key}")
    label = parse_label(values["label"])
    ct = _resolve(base, values["ct"])
    if not ct.exists():
        raise MVCFError(f"ct not found: {values['ct']}")
    record = CaseRecord(case_id=values["case_id"], patient_id=values["patient_id"],
                        institution=values["institution"], label=label, ct=ct, row=number)
    if values["mask"] or values["vertebra_label"]:
        if not (values["mask"] and values["vertebra_label"]):
            raise MVCFError("mask and vertebra_label must be given together")
        mask = _resolve(base, values["mask"])
        if not mask.exists():
            raise MVCFError(f"mask not found: {values['mask']}")
        try:   # "31" and "31.0" (a spreadsheet's number) are 31; "28.7" is no label (int() cut it to 28)
            label = float(values["vertebra_label"])
            if not label.is_integer():
                raise ValueError
            record.vertebra_label = int(label)
        except (ValueError, OverflowError):
            raise MVCFError(f"vertebra_label {values['vertebra_label']!r} is not an integer") from None
        record.mask = mask
    if values["center_lps"]:
        record.center_lps = parse_point(values["center_lps"], "center_lps")
    if values["point_ras"]:
        ras = ras_to_lps(parse_point(values["point_ras"], "point_ras"))
        if record.center_lps is not None and not np.allclose(ras, record.center_lps, atol=0.01):
            raise MVCFError(f"center_lps and point_ras name points {np.linalg.norm(ras - record.center_lps):.1f} "
                            "mm apart (point_ras is RAS: its x and y have the other sign); give one of them")
        record.center_lps = ras
    if record.mask is None and record.center_lps is None:
        raise MVCFError("no location: give mask + vertebra_label, center_lps or point_ras")
    record.extra = {k: v for k, v in row.items() if k and k not in REQUIRED_COLUMNS + LOCATION_COLUMNS}
    return record


def read_manifest(path: Union[str, os.PathLike], allow_outside_root: bool = False) -> list[CaseRecord]:
    """Read and validate a manifest; one MVCFError (one line) names every bad row and why. Paths outside the
    manifest's folder are refused unless `allow_outside_root`; the files themselves are opened by
    mvcf.cohort_checks.check_cohort_files."""
    path = Path(path)
    if not path.is_file():
        raise MVCFError(f"manifest not found: {path}")
    check_file_size(path, "MAX_TABLE_BYTES", "manifest")
    base = path.resolve().parent
    with csv_read_errors(path.name), open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise MVCFError(f"manifest {path.name} is empty")
        check_header(reader.fieldnames, f"manifest {path.name}")
        header = [(name or "").strip().lower() for name in reader.fieldnames]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise MVCFError(f"manifest {path.name} lacks column(s) {', '.join(missing)} "
                            f"(has: {', '.join(h for h in header if h)})")
        if not any(c in header for c in ("mask", "center_lps", "point_ras")):
            raise MVCFError(f"manifest {path.name} has no location column: add mask + vertebra_label, "
                            "center_lps or point_ras")
        rows = []
        problems: dict[int, list[str]] = defaultdict(list)
        for raw in reader:
            surplus = surplus_cells(raw)
            if surplus:
                problems[reader.line_num].append(surplus)
                continue
            rows.append((reader.line_num, {(k or "").strip().lower(): v for k, v in raw.items()}))

    records: list[CaseRecord] = []
    for number, row in rows:
        if all(not (v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            records.append(_parse_row(row, number, base, allow_outside_root))
        except MVCFError as exc:
            problems[number].append(str(exc))
    check_consistency(records, problems)
    check_one_patient_per_scan(records, problems)
    check_one_case_per_vertebra(records, problems)
    if problems:
        raise MVCFError(summarise_rows(path, problems))
    if not records:
        raise MVCFError(f"manifest {path.name} has no case rows")
    return records


def check_consistency(records: Iterable[CaseRecord], problems: dict[int, list[str]]) -> None:
    """Duplicate case ids, one institution or one patient id spelled two ways (letter case, blanks) and
    patients seen in more than one institution (a leakage risk)."""
    by_case: dict[str, list[CaseRecord]] = defaultdict(list)
    by_patient: dict[str, list[CaseRecord]] = defaultdict(list)
    records_list = list(records)
    for record in records_list:
        by_case[record.case_id].append(record)
        by_patient[record.patient_id].append(record)
    for case_id, group in by_case.items():
        if len(group) > 1:
            first = group[0].row
            for record in group[1:]:
                problems[record.row].append(f"duplicate case_id {case_id!r} (first in row {first})")
    _one_spelling(records_list, "institution", "one site needs one spelling (they would count as two)", problems)
    _one_spelling(records_list, "patient_id", "one patient needs one id (split by patient, the two would fall on "
                  "both sides)", problems)
    for patient, group in by_patient.items():
        sites = sorted({r.institution for r in group})
        if len(sites) > 1:
            for record in group:
                problems[record.row].append(f"patient {patient!r} is in several institutions "
                                            f"({', '.join(sites)})")


def _one_spelling(records: Sequence[CaseRecord], field: str, why: str, problems: dict[int, list[str]]) -> None:
    """Refuse a value written two ways (letter case, blanks): to a reader one name, to a program two."""
    spelled: dict[str, CaseRecord] = {}
    for record in records:
        value = getattr(record, field)
        first = spelled.setdefault(spelling(value), record)
        if getattr(first, field) != value:
            problems[record.row].append(f"{field} {value!r} is written {getattr(first, field)!r} in row {first.row}: "
                                        f"{why}")


def scan_identity(record: CaseRecord) -> object:
    """What makes two rows' CTs one scan: the same file or folder, also through a link."""
    from mvcf.outputs_guard import file_identity_key

    return file_identity_key(record.ct) or os.path.realpath(record.ct)


def check_one_patient_per_scan(records: Iterable[CaseRecord], problems: dict[int, list[str]],
                               scan_of: Callable[[CaseRecord], object] = scan_identity) -> None:
    """Refuse a CT given to two patients: its vertebrae would be split into different folds, so a model would
    be tested on the scan it was trained on. `scan_of`: a row's scan (the Training module: its volume node)."""
    first: dict[object, CaseRecord] = {}
    for record in records:
        earlier = first.setdefault(scan_of(record), record)
        if earlier.patient_id != record.patient_id:
            problems[record.row].append(f"ct is row {earlier.row}'s scan, of patient {earlier.patient_id!r}, not "
                                        f"{record.patient_id!r} (one scan is one patient's; split by patient, its "
                                        "cases would fall on both sides)")


def check_one_case_per_vertebra(records: Iterable[CaseRecord], problems: dict[int, list[str]],
                                scan_of: Callable[[CaseRecord], object] = scan_identity) -> None:
    """Refuse two rows naming one vertebra (the same scan and mask label, or the same centre): it was counted
    twice, in every metric and its confidence interval, and could fall on both sides of a split."""
    from mvcf.outputs_guard import file_identity_key

    first: dict[object, CaseRecord] = {}
    for record in records:
        if record.mask is not None:
            where = ("label", file_identity_key(record.mask) or os.path.realpath(record.mask), record.vertebra_label)
        elif record.center_lps is not None:
            where = ("centre", tuple(np.round(np.asarray(record.center_lps, float), 1)))
        else:
            continue
        earlier = first.setdefault((scan_of(record), where), record)
        if earlier is not record:
            problems[record.row].append(f"names the vertebra of row {earlier.row} (case {earlier.case_id!r}: the "
                                        "same scan and location); one vertebra is one case")


def _relative(path: Optional[Path], base: Path) -> str:
    """Relative to the manifest's folder when inside it, else absolute (a relative path may not leave it)."""
    if path is None:
        return ""
    resolved = Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        return str(resolved)
    return Path(os.path.relpath(resolved, base)).as_posix()


def write_manifest(path: Union[str, os.PathLike], records: Sequence[CaseRecord]) -> Path:
    """Write records atomically; paths become relative to the manifest's folder, the label `MVCF`/`OVCF`."""
    path = Path(path)
    base = path.resolve().parent
    extra_keys: list[str] = []
    for record in records:
        extra_keys.extend(k for k in record.extra if k not in extra_keys)
    columns = list(REQUIRED_COLUMNS) + ["mask", "vertebra_label", "center_lps"] + extra_keys
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in records:
            row = {"case_id": record.case_id, "patient_id": record.patient_id,
                   "institution": record.institution, "label": record.label_name,
                   "ct": _relative(record.ct, base), "mask": _relative(record.mask, base),
                   "vertebra_label": "" if record.vertebra_label is None else str(record.vertebra_label),
                   "center_lps": "" if record.center_lps is None else format_point(record.center_lps)}
            row.update({k: record.extra.get(k, "") for k in extra_keys})
            writer.writerow(row)
    return path


def write_predictions(path: Union[str, os.PathLike], records: Sequence[CaseRecord],
                      scores: dict[str, dict[str, float]], sets: Optional[dict[str, str]] = None,
                      threshold: Optional[float] = None) -> None:
    """The one predictions.csv writer (train, evaluate, study), atomically: a row per record (in the given
    order; only those in `sets` when it is given) with case_id, patient_id, institution, [set,] label and
    the scores. With `threshold` the one score column is `probability_malignant` followed by its
    `prediction`; without, one column per name in `scores` (empty where a model did not score the case).
    Scores are written in full (the shortest text that reads back as the same float), so the file's own
    numbers give its calls and its ranks."""
    if threshold is not None and len(scores) != 1:
        raise ValueError("a thresholded predictions file holds one model's scores")
    header = ["case_id", "patient_id", "institution"] + (["set"] if sets is not None else []) + ["label"]
    header += ["probability_malignant", "prediction"] if threshold is not None else list(scores)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for r in records:
            if sets is not None and r.case_id not in sets:
                continue
            row = [r.case_id, r.patient_id, r.institution] + ([sets[r.case_id]] if sets is not None else [])
            row.append(CLASS_NAMES[int(r.label)])
            values = [column.get(r.case_id) for column in scores.values()]
            row += ["" if p is None else repr(float(p)) for p in values]
            if threshold is not None:
                row.append(CLASS_NAMES[int(values[0] >= threshold)])
            writer.writerow(row)

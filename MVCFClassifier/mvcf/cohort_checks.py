"""Every manifest row checked before a command creates anything, and a resume key that covers the inputs' content.

Two levels, both before train / evaluate / study write a file:
- per cell, while the manifest is read (`check_cells`, by every command that reads a manifest: train, evaluate,
  study, screen, reader-study plan): no NUL byte, and no path outside the manifest's folder (`../..`, a
  symlink out, an absolute path elsewhere) unless the user allows it (`--allow-outside-root`);
- per file (`check_cohort_files`): the CT's header is readable and within the size limits (a DICOM folder
  holds a series), the mask is a label mask holding the row's label, the centre lies inside the CT.
All bad rows are named in one line. `cohort_key` identifies the cohort by its rows and by the size and
modification time of every file (each file of a DICOM folder), so `study --resume` refuses a cohort whose
CTs or masks were swapped under the same case ids.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError

PATH_COLUMNS = ("ct", "mask")
#: Bad rows whose reasons one error line shows in full (all are numbered).
MAX_REASONS_SHOWN = 12


def summarise_rows(path: Path, problems: dict[int, list[str]]) -> str:
    """One line naming every bad row of a manifest (row numbers as a spreadsheet shows them) and why."""
    rows = sorted(problems)
    shown = "; ".join(f"row {r}: {', '.join(problems[r])}" for r in rows[:MAX_REASONS_SHOWN])
    more = f"; ... and {len(rows) - MAX_REASONS_SHOWN} more" if len(rows) > MAX_REASONS_SHOWN else ""
    numbers = ", ".join(str(r) for r in rows)
    plural = "s" if len(rows) != 1 else ""
    return f"manifest {Path(path).name}: {len(rows)} bad row{plural} ({numbers}): {shown}{more}"


@contextlib.contextmanager
def csv_read_errors(shown: str) -> Iterator[None]:
    """A manifest read inside the block that is not UTF-8 text, or not a CSV the csv module takes (a cell
    over its 131072-character limit), is one line naming `shown`."""
    try:
        yield
    except UnicodeDecodeError:
        raise MVCFError(f"manifest {shown} is not a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise MVCFError(f"manifest {shown} is not a valid CSV file: {exc}") from None


def check_header(names: Sequence[Optional[str]], shown: str) -> None:
    """Refuse a CSV header that names a column twice (case and surrounding blanks aside): the csv module keeps
    the last such cell, pandas renames the second to `name.1`, so either way one column is dropped in silence."""
    seen: set[str] = set()
    for name in names:
        key = (name or "").strip().lower()
        if key and key in seen:
            raise MVCFError(f"{shown}: its header names the column '{key}' twice; which one is meant is not clear")
        seen.add(key)


def surplus_cells(row: dict) -> Optional[str]:
    """Why a csv.DictReader row is refused when it holds more cells than its header (the reader files them
    under None, where they would be dropped in silence: most often an unquoted comma in a path or point);
    None for a row that fits."""
    if None not in row:
        return None
    named = len(row) - 1
    return (f"{named + len(row[None])} cells under a header of {named} columns "
            "(quote a cell that holds a comma: \"X,Y,Z\")")


def holds_control_character(text: str) -> bool:
    """A tab, newline, NUL or DEL in a name: it splits the one-line errors that name it, and files and fonts
    take it badly (a screen case id, a locations file's vertebra name)."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def check_cells(values: dict[str, str], base: Path, allow_outside_root: bool,
                path_columns: Sequence[str] = PATH_COLUMNS) -> None:
    """Refuse a NUL byte in any cell and a path outside `base` (the manifest's folder), relative (`../`, a
    symlink out) or absolute, unless allowed."""
    for key, value in values.items():
        if "\x00" in (value or ""):
            raise MVCFError(f"{key} holds a NUL byte")
    if allow_outside_root:
        return
    root = base.resolve()
    for key in path_columns:
        value = (values.get(key) or "").strip()
        if not value:
            continue
        try:
            target = (base / value).resolve()  # an absolute value replaces base
        except (OSError, RuntimeError) as exc:   # RuntimeError: a symlink loop
            raise MVCFError(f"{key} {value}: cannot resolve the path ({exc})") from None
        if target != root and root not in target.parents:
            kind = "an absolute" if Path(value).is_absolute() else "a relative"
            raise MVCFError(f"{key} {value} leads outside the manifest's folder ({kind} path; paths must stay "
                            "inside it unless you allow it with --allow-outside-root)")


def file_identity(path: Optional[Path]) -> str:
    """Path, size and modification time (ns) of a file; for a folder, of every file in it."""
    if path is None:
        return ""
    path = Path(path)
    st = path.stat()
    if not path.is_dir():
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(str(path.resolve()).encode())
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        try:
            if entry.is_file():
                s = entry.stat()
                digest.update(f"|{entry.name}|{s.st_size}|{s.st_mtime_ns}".encode())
        except OSError:
            continue
    return digest.hexdigest()


def record_key(record: Any) -> str:
    """One case's identity: its row and the identity of its files."""
    center = getattr(record, "center_lps", None)
    return "|".join([str(record.case_id), str(record.patient_id), str(record.institution), str(int(record.label)),
                     file_identity(record.ct), file_identity(getattr(record, "mask", None)),
                     str(getattr(record, "vertebra_label", "")),
                     "" if center is None else ",".join(f"{v:.4f}" for v in center)])


def cohort_key(records: Sequence[Any]) -> str:
    return hashlib.sha256("\n".join(sorted(record_key(r) for r in records)).encode()).hexdigest()


def resume_record(path: Path, records: Sequence[Any], resume: bool, what: str,
                  extra: Optional[dict] = None) -> Optional[dict]:
    """The record a run folder keeps of what it was run on: `{"cohort_sha256": cohort_key(records), **extra}`.

    A new run writes it and gets None; a resumed one reads it back (a corrupt file is one line), refuses
    another cohort, and gets the saved record for its own comparisons (e.g. of settings)."""
    from mvcf.fileio import write_text

    current = {"cohort_sha256": cohort_key(records), **(extra or {})}
    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or not isinstance(saved.get("cohort_sha256"), str):
                raise TypeError
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            raise MVCFError(f"cannot resume the {what} in {path.parent}: {path.name} is corrupt; start again in "
                            "another --out") from None
        if saved["cohort_sha256"] != current["cohort_sha256"]:
            raise MVCFError(f"cannot resume the {what} in {path.parent}: it was run on another cohort (other "
                            "cases, or CT/mask files changed since)")
        return saved
    write_text(path, json.dumps(current, indent=2) + "\n")
    return None


def _header_geometry(path: Path):
    """(size, spacing, origin, direction) from a CT's header (or a DICOM series' first file x its files)."""
    import SimpleITK as sitk

    from mvcf.limits import check_count, check_image_header

    if path.is_dir():
        from mvcf.ct_plausibility import dicom_folder_view

        with dicom_folder_view(path) as folder:
            from mvcf.dicom.series import gdcm_series_ids

            ids = gdcm_series_ids(folder)
            if not ids:
                raise MVCFError("no DICOM series in the ct folder")
            files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i) for i in ids), key=len)
            check_count("the DICOM series' number of files", len(files), "MAX_DICOM_FILES")
            check_image_header(files[0], slices=len(files))
        return None
    check_image_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetDimension() != 3:
        raise MVCFError(f"ct is a {reader.GetDimension()}D image, not a 3D volume")
    return (np.array(reader.GetSize(), float), np.array(reader.GetSpacing(), float),
            np.array(reader.GetOrigin(), float), np.array(reader.GetDirection(), float).reshape(3, 3))


def _check_record(record: Any, masks: dict) -> None:
    from mvcf.read_ct import read_mask

    try:
        geometry = _header_geometry(Path(record.ct))
    except RuntimeError:
        raise MVCFError(f"ct {Path(record.ct).name} is not a readable image (corrupt or unsupported)") from None
    if record.mask is not None:
        key = str(Path(record.mask).resolve())
        if key not in masks:
            try:
                masks[key] = set(np.unique(read_mask(record.mask).voxels).tolist())
            except MVCFError as exc:
                masks[key] = exc
        labels = masks[key]
        if isinstance(labels, MVCFError):
            raise MVCFError(f"mask: {labels}")
        if record.vertebra_label not in labels:
            shown = ", ".join(str(v) for v in sorted(labels - {0})[:12])
            raise MVCFError(f"vertebra_label {record.vertebra_label} is absent from the mask (labels present: "
                            f"{shown or 'none'})")
    center = getattr(record, "center_lps", None)
    if center is not None and geometry is not None:
        size, spacing, origin, direction = geometry
        ijk = np.linalg.solve(direction @ np.diag(spacing), np.asarray(center, float) - origin)
        if np.any(ijk < -0.5) or np.any(ijk > size - 0.5):
            raise MVCFError(f"the centre {tuple(round(float(v), 1) for v in center)} (LPS mm) lies outside the CT")


#: Bytes of a file hashed first (from its middle) to tell copies apart before reading them whole.
SAMPLE_BYTES = 1 << 20


def _sample_digest(path: Path) -> str:
    """SHA-256 of a file's size and a SAMPLE_BYTES piece from its middle."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size // 2 - SAMPLE_BYTES // 2))
        return hashlib.sha256(str(size).encode() + handle.read(SAMPLE_BYTES)).hexdigest()


def check_copied_scans(records: Sequence[Any], problems: dict[int, list[str]]) -> None:
    """Refuse CT files with the same bytes under different patients: a scan copied under another name leaks
    across patient-level folds as one file given to two patients does (manifest.check_one_patient_per_scan).
    Only files of one size are compared, by a 1 MiB sample first, read whole only when the samples agree;
    each file is read once for each, however many of its vertebrae are rows."""
    from mvcf.limits import sha256_stream

    digests: dict[tuple[str, bool], str] = {}

    def digest(record: Any, whole: bool) -> str:
        key = (os.path.realpath(record.ct), whole)
        if key not in digests:
            digests[key] = (sha256_stream(record.ct, "MAX_IMAGE_BYTES", "CT file") if whole
                            else _sample_digest(Path(record.ct)))
        return digests[key]

    by_size: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        path = Path(record.ct)
        if path.is_file():
            by_size[path.stat().st_size].append(record)
    for group in by_size.values():
        if len({r.patient_id for r in group}) < 2:
            continue
        by_sample: dict[str, list[Any]] = defaultdict(list)
        for record in group:
            by_sample[digest(record, whole=False)].append(record)
        for alike in by_sample.values():
            if len({r.patient_id for r in alike}) < 2:
                continue
            first: dict[str, Any] = {}
            for record in alike:
                earlier = first.setdefault(digest(record, whole=True), record)
                if earlier.patient_id != record.patient_id:
                    problems[record.row].append(
                        f"ct {Path(record.ct).name} has the same bytes as row {earlier.row}'s "
                        f"({Path(earlier.ct).name}, patient {earlier.patient_id!r}): one scan is one patient's")


def check_cohort_files(records: Sequence[Any], manifest: Optional[Path] = None,
                       on_progress: Optional[Callable[[int, int, str], None]] = None) -> None:
    """Open every row's files far enough to know the run will not fail on them; one MVCFError names every
    bad row. Masks are read (each file once) to see that the row's label is in it; CT files of equal size
    under different patients are compared for copies (check_copied_scans)."""
    problems: dict[int, list[str]] = defaultdict(list)
    masks: dict = {}
    for done, record in enumerate(records):
        if on_progress is not None:
            on_progress(done, len(records), f"checking {record.case_id}")
        try:
            _check_record(record, masks)
        except MVCFError as exc:
            problems[record.row].append(str(exc))
    try:
        check_copied_scans(records, problems)
    except OSError as exc:
        raise MVCFError(f"cannot read a CT of the manifest: {exc.strerror or exc}") from None
    if problems:
        raise MVCFError(summarise_rows(Path(manifest or "manifest.csv"), problems))

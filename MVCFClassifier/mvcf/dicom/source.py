"""The DICOM series a CT was read from: its identity (UIDs, description) and its headers, which the DICOM
outputs copy their patient and study attributes from and reference instance by instance.

A source is usable for output only when every instance has its Study, Series and SOP Instance UIDs and SOP
Class UID: a PACS files by them, and blanked ones (a common anonymisation) are refused with one clear error.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from mvcf.dicom.series import SeriesChoice, choose_series
from mvcf.errors import MVCFError

EXTRA_HINT = "pip install 'mvcf[dicom]'"

#: Attributes that identify the patient: in a report only with --include-identifiers.
IDENTIFIERS = {"PatientName": "patient name", "PatientID": "patient ID", "PatientBirthDate": "birth date",
               "PatientSex": "sex", "AccessionNumber": "accession number", "StudyDate": "study date",
               "StudyID": "study ID"}
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                "StudyDate", "StudyTime", "ReferringPhysicianName")
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def need(module: str, what: str = "DICOM output"):
    """Import an optional dependency, or a one-line MVCFError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MVCFError(f"{what} needs the Python package {module.split('.')[0]}: {EXTRA_HINT}") from None


@dataclass
class DicomSource:
    folder: Path
    choice: SeriesChoice
    datasets: list[Any]   # pydicom Datasets (headers only, no pixel data), in slice order

    @property
    def first(self):
        return self.datasets[0]

    @property
    def study_uid(self) -> str:
        return str(self.first.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> Optional[str]:
        return str(getattr(self.first, "FrameOfReferenceUID", "") or "") or None

    def evidence(self) -> list[Any]:
        """The series as SR evidence: the first header whole (patient and study are copied from it), the
        others reduced to the references they contribute."""
        from pydicom.dataset import Dataset

        slim = []
        for ds in self.datasets[1:]:
            item = Dataset()
            for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                setattr(item, key, getattr(ds, key))
            slim.append(item)
        return [self.first, *slim]

    def identity(self, include_identifiers: bool = False) -> dict[str, Any]:
        """What a report may show of the source: UIDs and the series description always; the patient's
        identifiers only when asked."""
        first = self.first
        out = {"folder": str(self.folder), "study_instance_uid": self.study_uid,
               "series_instance_uid": self.series_uid, "modality": str(getattr(first, "Modality", "")),
               "series_description": str(getattr(first, "SeriesDescription", "")).strip(),
               "manufacturer": str(getattr(first, "Manufacturer", "")).strip(), "instances": len(self.datasets),
               "identifiers_included": bool(include_identifiers)}
        if include_identifiers:
            out["identifiers"] = {label: str(getattr(first, key, "") or "") for key, label in IDENTIFIERS.items()}
        return out

    def covers(self, lps, margin_mm: Optional[float] = None) -> bool:
        """Whether the LPS point (mm) lies within the series' slab of slices (one slice thickness of margin)."""
        positions, normal = [], None
        for ds in self.datasets:
            if getattr(ds, "ImagePositionPatient", None) is None or getattr(ds, "ImageOrientationPatient", None) is None:
                continue
            o = np.asarray(ds.ImageOrientationPatient, float)
            normal = np.cross(o[:3], o[3:])
            positions.append(float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
        if not positions:
            return True  # no geometry to check against
        margin = margin_mm if margin_mm is not None else float(getattr(self.first, "SliceThickness", 0) or 0) + 1.0
        at = float(np.dot(np.asarray(lps, float), normal))
        return min(positions) - margin <= at <= max(positions) + margin

    def nearest_instance(self, lps) -> Any:
        """The instance whose slice lies closest to the LPS point (mm), for per-finding references."""
        lps = np.asarray(lps, dtype=float)
        best, best_distance = self.first, np.inf
        for ds in self.datasets:
            position = getattr(ds, "ImagePositionPatient", None)
            orientation = getattr(ds, "ImageOrientationPatient", None)
            if position is None or orientation is None:
                continue
            normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
            distance = abs(float(np.dot(lps - np.asarray(position, float), normal)))
            if distance < best_distance:
                best, best_distance = ds, distance
        return best


def load_source(ct_path: Union[str, Path], series_uid: Optional[str] = None, require_uids: bool = True) -> DicomSource:
    """The headers of the series read_ct reads from `ct_path` (same choice rule), checked for usable UIDs
    (unless `require_uids` is False: a report may describe a series a PACS would refuse)."""
    folder = Path(ct_path)
    if not folder.is_dir():
        raise MVCFError(f"DICOM output needs a DICOM source: {folder} is not a DICOM series folder "
                        f"(a NIfTI/NRRD/MHA CT has no study to add results to)")
    pydicom = need("pydicom")
    choice = choose_series(folder, series_uid)
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in choice.files]
    blank = sorted({key for ds in datasets for key in REQUIRED_UIDS if not str(getattr(ds, key, "") or "")})
    if blank and require_uids:
        raise MVCFError(f"DICOM output needs the source series' UIDs, but {folder} has blank {', '.join(blank)} "
                        f"(anonymised by blanking them?): a PACS cannot file results without them; use the "
                        f"series with its original or newly assigned UIDs")
    if require_uids and not all(str(getattr(ds, "FrameOfReferenceUID", "") or "") for ds in datasets):
        raise MVCFError(f"DICOM output needs the source series' FrameOfReferenceUID, which {folder} lacks: without "
                        "it no viewer can place the heatmaps and measurements on the CT")
    for ds in datasets:
        ds.decode()   # every text in Unicode, so the outputs write it as UTF-8 (ISO 2022 escapes included)
        ds.SpecificCharacterSet = "ISO_IR 192"
        for key in (*TYPE2_COPIED, "SliceThickness"):  # Type 2: absent ones become empty, never invented
            if key not in ds:
                setattr(ds, key, "")
    return DicomSource(folder=folder, choice=choice, datasets=datasets)

"""Pick the series to read from a DICOM folder: the one named by SeriesInstanceUID, else the one CT series.

One rule shared by read_ct (voxels) and mvcf.dicom.source (headers for DICOM output), so both always use
the same files. Only SimpleITK/GDCM is needed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from mvcf.errors import MVCFError


@dataclass(frozen=True)
class SeriesChoice:
    series_uid: str          # as GDCM reports it ('' for a series whose UID was blanked)
    files: tuple[str, ...]
    modality: str
    description: str
    note: str                # one line saying which series was taken and why ('' when the folder has one)


def _header(path: str) -> dict[str, str]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {key: reader.GetMetaData(key).strip() for key in ("0008|0060", "0008|103e")
            if reader.HasMetaDataKey(key)}


def _describe(uid: str, files, header: dict[str, str]) -> str:
    what = header.get("0008|103e") or "no description"
    shown = uid or '(blank UID: --series-uid "")'
    return f"{shown} ({header.get('0008|0060', '?')}, {what}, {len(files)} files)"


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK's own multi-line WARNINGs ('No Series were found', 'Non uniform sampling or missing slices') kept
    off stderr: the caller checks the same thing and says it in its one error line."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def gdcm_series_ids(folder: Path) -> tuple[str, ...]:
    """The series UIDs SimpleITK finds in `folder`."""
    import SimpleITK as sitk

    with itk_warnings_off():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def choose_series(folder: Path, series_uid: Optional[str] = None) -> SeriesChoice:
    """The series of `folder` to read: `series_uid` when given, else the only series, else the only CT one.
    Several CT series and no `series_uid` is an MVCFError that lists them."""
    import SimpleITK as sitk

    series_ids = gdcm_series_ids(folder)
    if not series_ids:
        raise MVCFError(f"no DICOM series found in folder {folder}")
    files = {sid: tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in series_ids}
    headers = {sid: _header(files[sid][0]) for sid in series_ids}
    listing = "; ".join(_describe(sid, files[sid], headers[sid]) for sid in series_ids)
    if series_uid is not None:
        if series_uid not in files:
            raise MVCFError(f"{folder} has no series {series_uid}; it holds: {listing}")
        chosen, why = series_uid, "as asked"
    elif len(series_ids) == 1:
        chosen, why = series_ids[0], ""
    else:
        # a one-file series (a localiser, a dose sheet saved as CT) is no volume to read
        ct = [sid for sid in series_ids if headers[sid].get("0008|0060") == "CT" and len(files[sid]) > 1]
        if len(ct) != 1:
            raise MVCFError(f"{folder} holds {len(series_ids)} DICOM series, {len(ct)} of them CT; pick one "
                            f"with --series-uid: {listing}")
        chosen, why = ct[0], f"the only CT series of {len(series_ids)}"
    note = f"DICOM series {_describe(chosen, files[chosen], headers[chosen])}: {why}" if why else ""
    return SeriesChoice(series_uid=chosen, files=files[chosen], modality=headers[chosen].get("0008|0060", ""),
                        description=headers[chosen].get("0008|103e", ""), note=note)

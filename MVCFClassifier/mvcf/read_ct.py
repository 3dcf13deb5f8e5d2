"""Read a CT (NIfTI, NRRD, MHA, DICOM series folder) or a label mask into a validated CTImage.

SimpleITK does the reading, so the full physical geometry (origin, spacing, direction; LPS) is kept whatever
the file's orientation. Validation rejects what the later steps cannot use (not 3D, not finite, absurd
spacing, not CT-like values) with a one-line MVCFError; soft doubts come back as warnings.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from mvcf import ct_plausibility as plausibility
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError, shown_numbers
from mvcf.limits import check_image_header

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Spacing outside this range (mm) is not a CT a vertebra can be seen on.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
#: Values outside this range are not Hounsfield units (air is -1000, dense metal a few 10^4 at most).
MIN_HU = -4000.0
MAX_HU = 40000.0


def _read_sitk(path: Path, notes: Optional[list[str]] = None, series_uid: Optional[str] = None):
    import SimpleITK as sitk

    if not path.exists():
        raise MVCFError(f"file not found: {path}")
    if not path.is_dir() and not path.is_file():   # opening a FIFO waits for a writer, unkillable by Ctrl-C
        raise MVCFError(f"cannot read {path}: not a regular file (a FIFO, socket or device)")
    if not os.access(path, os.R_OK):
        raise MVCFError(f"cannot read {path}: Permission denied")
    try:
        if path.is_dir():
            with plausibility.dicom_folder_view(path, notes) as folder:
                try:
                    return _read_dicom_series(folder, series_uid, notes)
                except MVCFError as exc:
                    raise MVCFError(str(exc).replace(str(folder), str(path))) from None
        from mvcf.dicom.series import itk_warnings_off
        from mvcf.fileio import c_stderr_held

        said: list[str] = []
        try:   # the libraries' own lines ("pixdim[1,2,3] should be non-zero") broke the one error line
            with itk_warnings_off(), c_stderr_held() as said:
                check_image_header(path)
                plausibility.check_header_numbers(path)
                if path.name.lower().endswith((".nii", ".nii.gz")):
                    _check_nifti(path)
                return sitk.ReadImage(str(path))
        finally:
            if said:
                log.debug("the image libraries said: %s", "".join(said).strip()[:2000])
    except RuntimeError as exc:
        reason = str(exc).split("ITK ERROR:")[-1].split("):", 1)[-1].strip().splitlines()
        reason = reason[0] if reason and "Exception thrown" not in reason[0] else ""
        raise MVCFError(f"cannot read {path}: corrupt or unsupported image file"
                        + (f" ({reason[:120]})" if reason else "")) from None


def _gzip_data_size(path: Path) -> int:
    """Uncompressed size (mod 2**32) from the gzip trailer; a truncated file has garbage there."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def _check_nifti(path: Path) -> None:
    """What ITK's NIfTI reader hides: it reads zero pixdim as 1 mm, NaN as 0 and a truncated file as zeros.

    Uses nibabel's header reader (data are read only for floating-point files, to look for NaN)."""
    try:
        import nibabel
    except ImportError:
        log.debug("nibabel not installed: NIfTI header checks skipped for %s", path)
        return
    from nibabel.imageglobals import LoggingOutputSuppressor
    from nibabel.openers import ImageOpener

    try:
        with LoggingOutputSuppressor():
            image = nibabel.load(str(path))
        with ImageOpener(str(path)) as handle:  # the header as stored: nibabel.load "fixes" zero pixdim
            header = type(image.header).from_fileobj(handle, check=False)
    except Exception as exc:  # nibabel raises many types for a bad header
        raise MVCFError(f"cannot read {path}: corrupt or unsupported NIfTI file ({exc})".splitlines()[0]) \
            from None
    shape = tuple(int(v) for v in header.get_data_shape())
    zooms = np.asarray(header["pixdim"][1:4], dtype=float)
    if len(shape) >= 3 and (np.any(zooms == 0) or not np.all(np.isfinite(zooms))):
        raise MVCFError(f"{path} has voxel spacing {tuple(zooms.tolist())} mm in its header; zero or "
                        f"undefined spacing is not a usable CT")
    if len(shape) >= 3 and np.any(zooms < 0):   # ITK then turns the axis around against the file's sform
        raise MVCFError(f"{path} has a negative voxel spacing {shown_numbers(zooms)} mm in its header, which "
                        "NIfTI does not allow and readers place differently: resave it with a tool that writes "
                        "a standard header (Slicer, nibabel, SimpleITK)")
    offset = max(int(header.get_data_offset()), int(header["sizeof_hdr"]) + 4)
    needed = offset + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if path.name.lower().endswith(".gz"):
        complete = _gzip_data_size(path) == needed % 2 ** 32
    else:
        complete = path.stat().st_size >= needed
    if not complete:
        raise MVCFError(f"cannot read {path}: the file is truncated or corrupt (expected {needed} bytes of "
                        f"header and voxels)")
    if np.issubdtype(header.get_data_dtype(), np.floating):
        try:
            data = np.asanyarray(image.dataobj)
        except Exception as exc:
            raise MVCFError(f"cannot read {path}: corrupt NIfTI data ({exc})".splitlines()[0]) from None
        if not np.all(np.isfinite(data)):
            raise MVCFError(f"{path} contains NaN or infinite values")


def _read_dicom_series(folder: Path, series_uid: Optional[str] = None, notes: Optional[list[str]] = None):
    """One DICOM series of `folder` (mvcf.dicom.series.choose_series: `series_uid`, else the only CT series),
    slices ordered and spaced by ImagePositionPatient. Which series was taken goes to `notes`."""
    import SimpleITK as sitk

    from mvcf.dicom.series import choose_series, itk_warnings_off

    choice = choose_series(folder, series_uid)
    check_series_size(list(choice.files))
    if choice.note and notes is not None:
        notes.append(choice.note)
    elif choice.note:
        log.warning(choice.note)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(choice.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    with itk_warnings_off():   # uneven slices: _check_slice_positions says it in one line
        image = reader.Execute()
    _check_slice_positions(reader, image, folder)
    return image


def check_series_size(files) -> None:
    """A DICOM series' voxels from its first file's header times its number of files, before reading it."""
    from mvcf.limits import check_count

    check_count("the DICOM series' number of files", len(files), "MAX_DICOM_FILES")
    check_image_header(files[0], slices=len(files))


def _check_slice_positions(reader, image, folder: Path) -> None:
    """Refuse what one spacing and one direction cannot describe: missing slices, uneven steps, gantry tilt
    (ITK then only prints a warning and averages)."""
    n = image.GetSize()[2]
    if n < 2:
        return
    lacking = [i for i in range(n) if not reader.HasMetaDataKey(i, "0020|0032")]
    if lacking:
        raise MVCFError(f"DICOM series in {folder}: {len(lacking)} of its {n} slices "
                        f"{'has' if len(lacking) == 1 else 'have'} no ImagePositionPatient, "
                        "so where they lie is unknown")
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                              for i in range(n)])
    except ValueError:
        raise MVCFError(f"DICOM series in {folder} has an unreadable ImagePositionPatient") from None
    uids = [uid for uid in (reader.GetMetaData(i, "0008|0018").strip(" \0") for i in range(n)
                            if reader.HasMetaDataKey(i, "0008|0018")) if uid]   # anonymised files may lack it
    copies = len(uids) - len(set(uids))
    if copies:
        raise MVCFError(f"DICOM series in {folder}: {copies} of its {n} files repeat a slice another file holds (the "
                        "same SOP Instance UID under two file names); remove the copies")
    repeated = n - len(np.unique(np.round(positions, 2), axis=0))
    if repeated:
        raise MVCFError(f"DICOM series in {folder}: {repeated} of its {n} slices lie where another one does, so it "
                        "holds two stacks (two acquisitions or reconstructions under one series UID?); put them in "
                        "separate folders")
    step = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2] * image.GetSpacing()[2]
    grid = np.asarray(image.GetOrigin(), dtype=float) + np.arange(n)[:, None] * step
    worst = float(np.linalg.norm(positions - grid, axis=1).max())   # where ITK puts each slice vs its header
    if worst > max(0.1 * abs(image.GetSpacing()[2]), 0.05):
        raise MVCFError(f"DICOM series in {folder} has missing or unevenly spaced slices, or a gantry tilt "
                        f"(slice positions deviate up to {worst:.2f} mm from a regular grid)")


def _check_geometry(image, path: Path, what: str) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MVCFError(f"{path} is not a scalar {what} (it has {image.GetNumberOfComponentsPerPixel()} "
                        f"components per voxel, e.g. an RGB picture)")
    dim = image.GetDimension()
    if dim != 3:
        raise MVCFError(f"{path} is a {dim}D image; a {what} must be a 3D volume")
    size = image.GetSize()
    if min(size) < 2:
        raise MVCFError(f"{path} has size {size}: a single slice is not a 3D {what} "
                        f"(for DICOM, give the folder of the whole series)")
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise MVCFError(f"{path} has voxel spacing {shown_numbers(spacing)} mm; "
                        f"each must lie in [{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise MVCFError(f"{path} has a degenerate orientation matrix")
    plausibility.check_orthonormal(direction, str(path))
    if not np.all(np.isfinite(image.GetOrigin())):
        raise MVCFError(f"{path} has a non-finite origin")


def _voxel_range(ct: CTImage) -> tuple[float, float]:
    if np.issubdtype(ct.voxels.dtype, np.floating) and not np.all(np.isfinite(ct.voxels)):
        raise MVCFError(f"{ct.source or 'the CT'} contains NaN or infinite values")
    return float(ct.voxels.min()), float(ct.voxels.max())


def validate_ct(ct: CTImage) -> list[str]:
    """Raise MVCFError when `ct` cannot be a CT in Hounsfield units; return warnings for soft doubts.

    Works on any CTImage (also one built from a Slicer volume node), not only on what read_ct returns."""
    name = ct.source or "the CT"
    if ct.voxels.ndim != 3:
        raise MVCFError(f"{name} is a {ct.voxels.ndim}D array; a CT must be a 3D volume")
    if min(ct.voxels.shape) < 2:
        raise MVCFError(f"{name} has shape {ct.voxels.shape}: a single slice is not a 3D CT")
    if not (np.issubdtype(ct.voxels.dtype, np.integer) or np.issubdtype(ct.voxels.dtype, np.floating)):
        raise MVCFError(f"{name} has voxel type {ct.voxels.dtype}; a CT needs numeric scalar voxels")
    if not np.all(np.isfinite(ct.spacing)) or np.any(ct.spacing < MIN_SPACING_MM) \
            or np.any(ct.spacing > MAX_SPACING_MM):
        raise MVCFError(f"{name} has voxel spacing {shown_numbers(ct.spacing)} mm; each must lie in "
                        f"[{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm")
    if not np.all(np.isfinite(ct.direction)) or abs(abs(np.linalg.det(ct.direction)) - 1.0) > 1e-3:
        raise MVCFError(f"{name} has a degenerate orientation matrix")
    plausibility.check_orthonormal(ct.direction, name)
    if not np.all(np.isfinite(ct.origin)):
        raise MVCFError(f"{name} has a non-finite origin")
    lo, hi = _voxel_range(ct)
    if hi - lo < 100:
        scaled = hi - lo > 0.5 and -5.0 < lo and hi < 50.0   # air -1, bone 1-3: HU divided by 1000?
        raise MVCFError(f"{name} is nearly constant (values {lo:g}..{hi:g}); not a CT"
                        + (" in Hounsfield units (a CT stored as HU / 1000, or a normalised one? mvcf reads HU "
                           "as the scanner writes them)" if scaled else ""))
    if lo < MIN_HU or hi > MAX_HU:
        raise MVCFError(f"{name} has values {lo:g}..{hi:g}, outside the Hounsfield range of a CT "
                        f"[{MIN_HU:g}, {MAX_HU:g}]")
    warnings = plausibility.value_warnings(name, ct.voxels, lo) + plausibility.spacing_warnings(name, ct.spacing)
    return warnings


def read_ct(path: PathLike, warnings: Optional[list[str]] = None, series_uid: Optional[str] = None) -> CTImage:
    """Read and validate a CT: NIfTI/NRRD/MHA file or DICOM series folder -> CTImage (voxels [k,j,i], LPS).

    Voxels keep their stored type (no copy to float). Soft doubts from `validate_ct` are appended to
    `warnings` when a list is given, logged otherwise. A DICOM folder with several series: `series_uid`,
    else its one CT series (which one is logged, and added to `warnings`)."""
    path = Path(path)
    found: list[str] = []
    image = _read_sitk(path, found, series_uid)
    _check_geometry(image, path, "CT")
    ct = CTImage.from_sitk(image, source=str(path))
    found += validate_ct(ct)
    if path.is_dir():
        found += plausibility.slice_warnings(str(path), ct.voxels)
    if warnings is not None:
        warnings.extend(found)
    for warning in found if warnings is None else ():
        log.warning(warning)
    return ct


def read_mask(path: PathLike) -> CTImage:
    """Read a label mask (integer labels; float files with integral values are accepted) as a CTImage."""
    path = Path(path)
    image = _read_sitk(path)
    _check_geometry(image, path, "label mask")
    mask = CTImage.from_sitk(image, source=str(path))
    voxels = mask.voxels
    if np.issubdtype(voxels.dtype, np.floating):
        if not np.all(np.isfinite(voxels)) or not np.all(voxels == np.round(voxels)):
            raise MVCFError(f"{path} is not a label mask: it holds non-integer values")
        voxels = voxels.astype(np.int32)
    elif not np.issubdtype(voxels.dtype, np.integer):
        raise MVCFError(f"{path} is not a label mask: voxel type {voxels.dtype}")
    plausibility.check_label_mask(str(path), voxels)
    mask.voxels = voxels
    return mask

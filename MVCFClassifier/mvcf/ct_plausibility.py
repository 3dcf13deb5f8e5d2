"""Is this really a CT with one trustworthy geometry? What ITK reads without complaint but a classifier must not.

ITK reads a NaN origin in a MetaImage or NIfTI header as 0, takes the sform of a NIfTI whose qform says
something else, keeps a sheared direction matrix from a MetaImage, decodes a garbled JPEG2000 slice to wrong
values, and GDCM finds no series in a folder holding a symbolic-link loop. An MR volume or a CT given as the
mask read fine too. Each check here gives a refusal (an MVCFError saying what was found and what to do) or a
warning, and is called from read_ct / read_mask / locate.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError, shown_numbers

#: Direction columns must be orthonormal to this tolerance (ITK's own NIfTI reader uses about 1e-4).
ORTHONORMAL_TOL = 1e-3
#: qform and sform of a NIfTI may differ by rounding, not by this many millimetres anywhere in the volume.
QFORM_SFORM_TOL_MM = 1.0
#: A slice whose difference from the mean of its two neighbours is this many times the series' median.
SLICE_OUTLIER_RATIO = 3.0
#: Without air, a region cut out around the spine in HU still has a median of soft tissue and bone (well under
#: this); stored values missing their rescale intercept (-1024) put soft tissue near 1060.
UNSCALED_MEDIAN_HU = 600.0
#: A label mask has a few hundred labels at most (TotalSegmentator: 117); a CT has thousands of values.
MAX_MASK_LABELS = 1000


def check_orthonormal(direction: np.ndarray, name: str) -> None:
    """Refuse a sheared (non-orthogonal) or scaled direction matrix: views would come out distorted."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)):
        raise MVCFError(f"{name} has a non-finite orientation matrix")
    error = float(np.abs(d.T @ d - np.eye(3)).max())
    if error > ORTHONORMAL_TOL:
        cosines = d.T @ d / np.outer(np.linalg.norm(d, axis=0), np.linalg.norm(d, axis=0))
        worst = float(np.degrees(np.arccos(np.clip(np.abs(cosines[~np.eye(3, dtype=bool)]), 0, 1))).min())
        raise MVCFError(f"{name} has a sheared (non-orthogonal) orientation matrix: its image axes meet at "
                        f"{worst:.1f} degrees instead of 90; resample it onto an orthogonal grid first "
                        "(e.g. Slicer's Resample Scalar Volume or ITK's ResampleImageFilter)")


_HEADER_ORIGIN = re.compile(r"^\s*(Offset|Position|Origin|space origin)\s*[:=](.*)$", re.IGNORECASE | re.MULTILINE)
_HEADER_SPACING = re.compile(r"^\s*(ElementSpacing|spacings|space directions)\s*[:=](.*)$", re.IGNORECASE | re.MULTILINE)


def check_header_numbers(path: Path) -> None:
    """Refuse a header whose origin is NaN or infinite (ITK reads such a MetaImage or NIfTI origin as 0, which
    would put every point at the wrong place)."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        with open(path, "rb") as handle:
            head = handle.read(1 << 16).decode("latin-1")
        head = head.split("\n\n", 1)[0] if name.endswith((".nrrd", ".nhdr")) else head
        for field, value in _HEADER_ORIGIN.findall(head):
            if re.search(r"nan|inf", value, re.IGNORECASE):
                raise MVCFError(f"{path} has a non-finite origin in its header ({field.strip()} ={value.strip()[:60]}); "
                                "the image's position is unknown; fix the header")
        for field, value in _HEADER_SPACING.findall(head):   # ITK calls a NaN spacing "zero-valued"
            if re.search(r"nan|inf", value, re.IGNORECASE):
                raise MVCFError(f"{path} has a non-finite voxel spacing in its header ({field.strip()} ="
                                f"{value.strip()[:60]}); the voxels' size is unknown; fix the header")
    elif name.endswith((".nii", ".nii.gz")):
        header = _nifti_header(path)
        if header is None:
            return
        fields = ["qoffset_x", "qoffset_y", "qoffset_z", "quatern_b", "quatern_c", "quatern_d"]
        values = [float(header[f]) for f in fields] + [float(v) for row in ("srow_x", "srow_y", "srow_z")
                                                       for v in header[row]]
        used = (int(header["qform_code"]) > 0, int(header["sform_code"]) > 0)
        bad_q = used[0] and not np.all(np.isfinite(values[:6]))
        bad_s = used[1] and not np.all(np.isfinite(values[6:]))
        if bad_q or bad_s:
            raise MVCFError(f"{path} has NaN or infinite values in its {'qform' if bad_q else 'sform'} (origin or "
                            "orientation); the image's position is unknown; fix the header")
        _check_qform_sform(path, header)


def _nifti_header(path: Path):
    try:
        import nibabel
        from nibabel.openers import ImageOpener
    except ImportError:
        return None
    try:
        with ImageOpener(str(path)) as handle:
            head = handle.read(540)
        return nibabel.Nifti1Header.from_fileobj(__import__("io").BytesIO(head), check=False) \
            if head[344:347] in (b"n+1", b"ni1") else None
    except Exception:  # not NIfTI-1 (NIfTI-2 or corrupt): the reader's own message will say so
        return None


def _check_qform_sform(path: Path, header) -> None:
    """Both set and more than QFORM_SFORM_TOL_MM apart anywhere in the volume: two geometries, one is wrong."""
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return
    try:
        q, s = header.get_qform(), header.get_sform()
    except ValueError as exc:   # nibabel: quaternion b, c, d with b^2 + c^2 + d^2 > 1 ("w2 should be positive")
        raise MVCFError(f"{path}: its NIfTI qform quaternion is invalid ({exc}); the header is damaged") from None
    shape = [max(1, int(n)) for n in header.get_data_shape()[:3]] + [1] * (3 - len(header.get_data_shape()[:3]))
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    gap = float(np.linalg.norm((corners @ q.T - corners @ s.T)[:, :3], axis=1).max())
    if gap > QFORM_SFORM_TOL_MM:
        raise MVCFError(f"{path}: its NIfTI qform and sform disagree by up to {gap:.1f} mm, so the file holds two "
                        "different positions of the image; fix the header (e.g. with nibabel, set_qform to the "
                        "correct sform, or set one of the codes to 0)")


#: Voxels coarser than this (mm) along an axis: a vertebral body (25-30 mm tall) spans a handful of them, and
#: the views interpolate across gaps the models (demo: 0.8-1.5 mm voxels) never saw.
COARSE_SPACING_MM = 5.0


def spacing_warnings(name: str, spacing: Sequence[float]) -> list[str]:
    """A soft doubt about the geometry: slices (or pixels) coarser than COARSE_SPACING_MM."""
    coarse = max(float(v) for v in spacing)
    if coarse <= COARSE_SPACING_MM:
        return []
    return [f"{name}: voxels {coarse:g} mm apart along one axis (spacing {shown_numbers(spacing)} mm): a "
            f"vertebral body spans only about {max(1, int(27 // coarse))} of them, so the views interpolate "
            "across gaps a model trained on thin slices never saw; treat its probability with caution"]


def value_warnings(name: str, voxels: np.ndarray, lo: float) -> list[str]:
    """Soft doubts about the values: none below 0 (no air, no fat: an MR, or a CT stored without its rescale)."""
    if lo < -200:
        return []
    typical = float(np.median(voxels[::4, ::4, ::4]))
    if lo >= 0:
        return [f"{name}: no value below 0 (lowest {lo:g}, typical {typical:g}); a CT in Hounsfield units has air "
                "near -1000 and fat near -100: this may be an MR or a CT stored without its rescale "
                "slope/intercept (not Hounsfield units); convert it to HU before trusting the result"]
    if typical > UNSCALED_MEDIAN_HU:
        return [f"{name}: lowest value is {lo:g} (no air at about -1000 HU) and the typical value is "
                f"{typical:g} (soft tissue is about 40 HU); the values may not be Hounsfield units "
                "(missing rescale slope/intercept?)"]
    return []


def check_label_mask(name: str, voxels: np.ndarray) -> None:
    """Refuse a 'mask' that is really a CT (negative values, thousands of distinct values)."""
    lo = voxels.min() if voxels.size else 0
    sample = voxels[::4, ::4, ::4]
    distinct = np.unique(sample).size
    if lo < 0 or distinct > MAX_MASK_LABELS:
        raise MVCFError(f"{name} does not look like a label mask: it holds {'negative values' if lo < 0 else ''}"
                        f"{' and ' if lo < 0 and distinct > MAX_MASK_LABELS else ''}"
                        f"{f'{distinct} distinct values' if distinct > MAX_MASK_LABELS else ''} (a mask holds a "
                        "few non-negative integer labels); was the CT given as the mask?")


def check_vertebra_label(label: int) -> None:
    if int(label) < 1:
        raise MVCFError(f"label {label} is not a vertebra: 0 is a mask's background and labels are positive "
                        "(e.g. 31 for L1 in TotalSegmentator)")


def slice_warnings(name: str, voxels: np.ndarray, positions_mm: Optional[np.ndarray] = None) -> list[str]:
    """A slice that differs from both neighbours far more than the others do (a garbled compressed slice
    decodes to wrong values without an error)."""
    if voxels.shape[0] < 5:
        return []
    v = voxels[:, ::2, ::2].astype(np.float32)
    residual = np.abs(v[1:-1] - 0.5 * (v[:-2] + v[2:])).mean(axis=(1, 2))
    typical = float(np.median(residual))
    if typical <= 0:
        return []
    notes = []
    for i in range(len(residual)):
        here = residual[i]
        left = residual[i - 1] if i > 0 else 0.0
        right = residual[i + 1] if i + 1 < len(residual) else 0.0
        if here > SLICE_OUTLIER_RATIO * typical and here > 1.5 * max(left, right):
            where = f" (z = {positions_mm[i + 1]:.1f} mm)" if positions_mm is not None else ""
            notes.append(f"{name}: slice {i + 1}{where} differs from both neighbours {here / typical:.1f} times "
                         "more than slices usually do; it may be corrupt (a damaged compressed slice decodes "
                         "to wrong values without an error); check that file before trusting a vertebra near it")
    return notes


def _is_regular_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # ELOOP and friends
        return False


@contextlib.contextmanager
def dicom_folder_view(folder: Path, notes: Optional[list[str]] = None) -> Iterator[Path]:
    """The folder GDCM should scan: `folder` itself, or, when it holds symbolic links, a temporary folder
    linking only its regular files (GDCM finds no series at all in a folder with a symlink loop)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise MVCFError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    links = [e for e in entries if e.is_symlink()]
    if not links:
        yield folder
        return
    skipped = [e.name for e in links if not _is_regular_file(Path(e.path))]
    view = Path(tempfile.mkdtemp(prefix="mvcf-dicom-"))
    try:
        for entry in entries:
            path = Path(entry.path)
            if _is_regular_file(path):
                os.symlink(path.resolve(), view / entry.name)
        if skipped and notes is not None:
            notes.append(f"{folder}: skipped {len(skipped)} symbolic link(s) that loop, dangle or name a folder "
                         f"({', '.join(sorted(skipped)[:5])}{' ...' if len(skipped) > 5 else ''})")
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)

"""Trabecular bone density of a vertebral body in HU, and the opportunistic osteoporosis flag.

The region is the vertebral body (morphometry.BodyRegion: the mask in front of the canal, on the body's own
frame) eroded by EROSION_MM, so the cortex, the endplates and partial-volume voxels at the edge are out;
the CT is sampled on that frame with linear interpolation. Thresholds (docs/screening.md, "Bone density"):

- Pickhardt PJ et al., Ann Intern Med 2013;158:588-95 (1867 adults, DXA reference, L1 trabecular ROI on
  routine abdominal CT): L1 <= 160 HU was 90 % sensitive for osteoporosis, <= 110 HU more than 90 %
  specific. Here: <= 110 HU "osteoporosis likely", 110-160 HU "low density, osteoporosis possible",
  > 160 HU "normal density". The thresholds were derived at L1; at other levels the category is reported
  as an approximation (lumbar trabecular HU changes only a little from L1 to L4).
- Contrast: intravenous contrast raises trabecular HU (portal-venous phase by about 10-15 HU at L1,
  Pompe E et al., Eur Radiol 2015;25:1-7), so on a contrast-enhanced CT the flag errs towards "normal";
  when the CT says it is enhanced (DICOM ContrastBolusAgent, a BIDS sidecar, or a given phase) every
  density carries that warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError

EROSION_MM = 3.0
MIN_VOXELS = 20
OSTEOPOROSIS_HU = 110.0     # Pickhardt 2013: > 90 % specific at L1
LOW_DENSITY_HU = 160.0      # Pickhardt 2013: 90 % sensitive at L1
#: Cancellous bone holds no voxel this low (fat reads about -100 HU, its noise stays far above): more than
#: AIR_MAX_SHARE of the sample below it is gas or air inside the body's outline (a vacuum cleft, a cut of the
#: field of view filled with air, a mask shifted off the bone), which pulled the mean down to 2 or even
#: -370 HU, read as "osteoporosis likely".
AIR_HU = -400.0
AIR_MAX_SHARE = 0.01
CATEGORIES = ("osteoporosis likely", "low density", "normal density")
NATIVE_PHASES = ("native", "non-contrast", "noncontrast", "none", "unenhanced")
#: Phase names --contrast-phase accepts (after lower-casing, '_' and ' ' read as '-'): the native ones, the
#: phases of TotalSegmentator's contrast_phase.json and the usual CT protocol names.
ENHANCED_PHASES = ("contrast", "enhanced", "arterial", "arterial-early", "arterial-late", "early-arterial",
                   "late-arterial", "portal-venous", "venous", "nephrographic", "delayed", "excretory")


@dataclass
class Density:
    trabecular_hu: Optional[float]       # mean HU of the eroded body
    median_hu: Optional[float]
    sd_hu: Optional[float]
    n_voxels: int
    category: str                        # one of CATEGORIES, or "" when not measured
    osteoporosis_flag: bool
    notes: list[str]


def category(hu: float) -> str:
    if hu <= OSTEOPOROSIS_HU:
        return CATEGORIES[0]
    return CATEGORIES[1] if hu <= LOW_DENSITY_HU else CATEGORIES[2]


def trabecular_density(ct: CTImage, region, level: str = "", erosion_mm: float = EROSION_MM) -> Density:
    """Mean / median / SD HU of the body in `region` (morphometry.BodyRegion) eroded by `erosion_mm`."""
    import SimpleITK as sitk
    from scipy import ndimage

    notes: list[str] = []
    if region is None or not region.body.any():
        return Density(None, None, None, 0, "", False, ["no body to measure"])
    core = ndimage.distance_transform_edt(region.body, sampling=tuple(region.spacing[::-1])) > erosion_mm
    if core.sum() < MIN_VOXELS:
        core = ndimage.distance_transform_edt(region.body, sampling=tuple(region.spacing[::-1])) > erosion_mm / 2
        notes.append(f"body too thin for a {erosion_mm:g} mm erosion; eroded by {erosion_mm / 2:g} mm")
    if core.sum() < MIN_VOXELS:
        return Density(None, None, None, int(core.sum()), "", False, notes + ["body too small to measure"])
    hu = sitk.GetArrayFromImage(sitk.Resample(ct.to_sitk(), region.to_sitk_reference(), sitk.Transform(),
                                              sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
    values = hu[core]
    mean = float(values.mean())
    air = float(np.mean(values < AIR_HU))
    if air > AIR_MAX_SHARE:
        return Density(None, None, None, int(values.size), "", False, notes + [
            f"no trabecular HU: {100 * air:.0f} % of the body's interior reads below {AIR_HU:g} HU, which no bone "
            "does: gas or air inside its outline (an intravertebral vacuum cleft, a cut of the field of view "
            "filled with air, or a mask shifted off the bone)"])
    if level and level != "L1":
        notes.append("osteoporosis thresholds were derived at L1 (Pickhardt 2013); at "
                     f"{level} the category is an approximation")
    cat = category(mean)
    return Density(mean, float(np.median(values)), float(values.std()), int(values.size), cat,
                   cat == CATEGORIES[0], notes)


def contrast_phase(ct_path: Union[str, Path, None], given: Optional[str] = None) -> Optional[str]:
    """The contrast phase the CT declares, or None when it says nothing.

    `given` is a phase name or TotalSegmentator's contrast_phase.json ({"phase": "native", ...}). Otherwise
    a DICOM series is asked for ContrastBolusAgent (0018,0010) and a NIfTI/NRRD file for a BIDS sidecar
    (<name>.json with ContrastBolusIngredient or ContrastBolusAgent)."""
    if given:
        return check_contrast_phase(given)
    if ct_path is None:
        return None
    path = Path(ct_path)
    if path.is_dir():
        return _dicom_contrast(path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            sidecar = path.with_name(name[: -len(suffix)] + ".json")
            if sidecar.is_file():
                data = _read_json(sidecar)
                agent = data.get("ContrastBolusIngredient") or data.get("ContrastBolusAgent")
                return "contrast" if agent and str(agent).strip().lower() not in NATIVE_PHASES else None
    return None


def check_contrast_phase(given: str) -> str:
    """A phase name (NATIVE_PHASES, ENHANCED_PHASES) or TotalSegmentator's contrast_phase.json -> the phase
    in canonical spelling; anything else is one MVCFError line (a typo must not label a CT 'enhanced')."""
    path = Path(given)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise MVCFError(f"--contrast-phase: file not found: {given}")
        phase = _read_json(path).get("phase")
        if not isinstance(phase, str) or not phase.strip():
            raise MVCFError(f"--contrast-phase: {given} has no \"phase\" (TotalSegmentator's contrast_phase.json "
                            "has one, e.g. \"native\")")
        given = phase
    name = "-".join(given.strip().lower().replace("_", " ").replace("-", " ").split())
    if name not in NATIVE_PHASES + ENHANCED_PHASES:
        raise MVCFError(f"--contrast-phase: unknown phase {given!r}; give one of "
                        f"{', '.join(NATIVE_PHASES + ENHANCED_PHASES)}, or TotalSegmentator's contrast_phase.json")
    return name


def contrast_warning(phase: Optional[str]) -> Optional[str]:
    if phase is None or phase.lower() in NATIVE_PHASES:
        return None
    return (f"the CT is contrast-enhanced ({phase}): contrast raises trabecular HU (about 10-15 HU in the "
            f"portal-venous phase), so the osteoporosis thresholds of non-contrast CT may miss low density")


def _read_json(path: Path) -> dict:
    from mvcf.json_input import loads

    try:
        data = loads(path.read_bytes())
    except (OSError, ValueError):   # mvcf.json_input.JSONInputError is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def _dicom_contrast(folder: Path) -> Optional[str]:
    import SimpleITK as sitk

    for candidate in sorted(folder.iterdir()):
        if not candidate.is_file():
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(candidate))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if reader.HasMetaDataKey("0018|0010"):
            agent = reader.GetMetaData("0018|0010").strip()
            return f"contrast ({agent})" if agent and agent.lower() not in NATIVE_PHASES else None
        return None
    return None

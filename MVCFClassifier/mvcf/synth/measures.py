"""Simple measures of one vertebra from CT + mask, to put synthetic vertebrae beside real ones
(docs/synthetic.md): body height, depth and width, cortical apparent thickness, trabecular HU and its
spread. The same code measures both, on the same 1 mm LPS resampling as the baseline (mvcf.baseline).

- height: mean cranio-caudal extent of the body's middle third on the mid-sagittal plane;
- depth: antero-posterior extent of the body on that plane (in front of the canal);
- width: left-right extent of the body at mid-height;
- trabecular HU, texture SD: mean and standard deviation of HU in the body eroded by 3 mm;
- cortical apparent thickness: on the mid-height axial slices, the area of the body's outer 6 mm band brighter
  than halfway between the trabecular median and the band's 95th percentile, divided by the body's perimeter:
  what the CT shows (the real cortex blurred by the scanner's point spread), not the anatomical thickness.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from mvcf.errors import MVCFError

SHAPE_MEASURES = ("body_height_mm", "body_depth_mm", "body_width_mm")
DENSITY_MEASURES = ("cortical_apparent_mm", "trabecular_hu", "trabecular_sd_hu")


def vertebra_measures(ct, mask, label: int) -> dict[str, Optional[float]]:
    """Measures of vertebra `label` (CTImage mask; CTImage ct or None for a mask alone: shape only)."""
    from mvcf.baseline import _body_profile, _resample_region

    hu, labels = _resample_region(ct if ct is not None else mask, mask, label)
    profile = _body_profile(labels, label)
    if profile is None:
        raise MVCFError(f"vertebra {label}: no vertebral body found on the mid-sagittal plane of the mask")
    heights, y0, y1, _ = profile
    span = y1 - y0
    middle = heights[y0 + span // 3: y0 + max(span // 3 + 1, 2 * span // 3)]
    body = labels == label
    body[:, y1:, :] = False
    body[:, :y0, :] = False
    zs = np.flatnonzero(body.any(axis=(1, 2)))
    z_mid = int(round(np.argwhere(body)[:, 0].mean()))
    width = np.mean([np.ptp(np.flatnonzero(body[z].any(axis=0))) + 1
                     for z in range(max(z_mid - 2, zs[0]), min(z_mid + 3, zs[-1] + 1)) if body[z].any()])
    out: dict[str, Optional[float]] = {"body_height_mm": float(middle.mean()), "body_depth_mm": float(span),
                                       "body_width_mm": float(width)}
    if ct is None:
        return {**out, **{k: None for k in DENSITY_MEASURES}}
    depth = ndimage.distance_transform_edt(body)
    core = depth > 3.0
    if core.sum() < 20:
        raise MVCFError(f"vertebra {label}: the body is too thin to measure its trabecular density")
    trabecular = hu[core]
    thickness = []
    for z in range(z_mid - 2, z_mid + 3):
        section = body[z]
        if section.sum() < 50:
            continue
        dist = ndimage.distance_transform_edt(section)
        band = section & (dist <= 6.0)
        inner = section & (dist > 3.0)
        if not inner.any():
            continue
        level = 0.5 * (np.median(hu[z][inner]) + np.percentile(hu[z][band], 95))
        perimeter = (section & ~ndimage.binary_erosion(section)).sum()
        thickness.append(float((band & (hu[z] > level)).sum()) / max(float(perimeter), 1.0))
    return {**out, "cortical_apparent_mm": float(np.mean(thickness)) if thickness else None,
            "trabecular_hu": float(trabecular.mean()), "trabecular_sd_hu": float(trabecular.std())}


def _ctimage(voxels: np.ndarray, image):
    import SimpleITK as sitk

    from mvcf.ctimage import CTImage

    out = sitk.GetImageFromArray(voxels)
    out.SetSpacing(image.spacing)
    out.SetOrigin(image.origin)
    return CTImage.from_sitk(out)


def case_images(case):
    """(CT, mask) CTImages of a generated case (mvcf.synth.SyntheticCase), in memory."""
    return _ctimage(case.image.hu, case.image), _ctimage(case.image.labels, case.image)


def measure_neighbours(case) -> list[dict]:
    """Measures of the unfractured vertebrae of a generated case (a neighbour cut by the field of view, with
    no measurable body, is left out)."""
    from mvcf.synth.anatomy import LEVELS, level_label

    ct, mask = case_images(case)
    rows = []
    for other in sorted(set(np.unique(case.image.labels).tolist()) - {0, level_label(case.plan.level)}):
        try:
            rows.append({"level": LEVELS[43 - other], "label": other, **vertebra_measures(ct, mask, other)})
        except MVCFError:
            continue
    return rows

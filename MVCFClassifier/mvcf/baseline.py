"""The transparent baseline that fixes what 'difficulty' means: two hand-made features, one logistic
regression.

Features, measured from the CT and the vertebra mask (never from the generator's ground truth):
- `trabecular_hu`: mean HU of the vertebral body eroded by 3 mm (no cortex, no endplates). Lytic tumour
  lowers it, blastic tumour and an impaction band raise it, osteoporosis lowers it.
- `height_loss`: 1 - (smallest of the anterior, middle and posterior body heights on the mid-sagittal
  plane) / (reference height = mean tallest body height of the labelled neighbours, else the body's own
  tallest height): Genant's semi-quantitative idea as one number.

The body is the anterior run of the mask on the mid-sagittal plane (in front of the canal). The region
around the vertebra is resampled to 1 mm in LPS axes first, so any input orientation works.
The logistic regression is trained on the internal institution and tested on the external one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel

FEATURES = ("trabecular_hu", "height_loss")
_MARGIN_MM = (6.0, 6.0, 45.0)   # L, P, S: the z margin reaches the neighbouring bodies


@dataclass
class BodyMeasures:
    trabecular_hu: float
    height_loss: float
    heights_mm: tuple[float, float, float]   # anterior, middle, posterior
    reference_mm: float


def _resample_region(ct, mask, label: int):
    """CT (linear) and mask (nearest) on a 1 mm LPS-aligned grid around `label`, arrays [z, y, x]."""
    import SimpleITK as sitk

    voxels = np.argwhere(mask.voxels == label)
    if len(voxels) == 0:
        raise MVCFError(f"label {label} is absent from the mask {mask.source or ''}".strip())
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    lo_kji, hi_kji = voxels.min(axis=0), voxels.max(axis=0)
    idx = lo_kji[::-1] + corners * (hi_kji - lo_kji)[::-1]
    lps = np.array([mask.index_to_lps(i) for i in idx])
    lo = lps.min(axis=0) - _MARGIN_MM
    hi = lps.max(axis=0) + _MARGIN_MM
    size = [int(v) for v in np.ceil(hi - lo) + 1]
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetOrigin(tuple(float(v) for v in lo))
    reference.SetSpacing((1.0, 1.0, 1.0))
    hu = sitk.Resample(ct.to_sitk(), reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    labels = sitk.Resample(mask.to_sitk(), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(hu), sitk.GetArrayFromImage(labels)


def _body_profile(labels: np.ndarray, label: int) -> Optional[tuple[np.ndarray, int, int, float]]:
    """Heights (mm) along y of the body on the mid-sagittal slab, and the body's y-range [y0, y1)."""
    target = labels == label
    if not target.any():
        return None
    x_mid = int(round(np.argwhere(target)[:, 2].mean()))
    slab = target[:, :, max(x_mid - 2, 0):x_mid + 3]
    heights = slab.sum(axis=0).mean(axis=1)          # [y]: mm of mask per column
    present = np.flatnonzero(heights > 2.0)
    if len(present) == 0:
        return None
    y0 = int(present[0])
    gaps = np.flatnonzero(heights[y0:] <= 2.0)
    y1 = y0 + int(gaps[0]) if len(gaps) else len(heights)
    if y1 - y0 < 8:
        return None
    return heights, y0, y1, float(x_mid)


def _three_heights(heights: np.ndarray, y0: int, y1: int) -> np.ndarray:
    span = y1 - y0
    out = []
    for frac in (0.15, 0.5, 0.85):
        c = y0 + int(round(frac * (span - 1)))
        out.append(float(heights[max(c - 1, y0):min(c + 2, y1)].mean()))
    return np.array(out)


def _padded_box(body: np.ndarray) -> tuple[slice, ...]:
    """The body's bounding box grown by one background voxel on each side. The distance transform inside
    it equals the whole region's: a body voxel's nearest background voxel outside the box is never nearer
    than its clamp onto the box's background border. It is ~5x smaller than the region, whose z margin
    reaches the neighbours."""
    found = np.argwhere(body)
    if len(found) == 0:
        return tuple(slice(None) for _ in body.shape)
    lo, hi = found.min(axis=0) - 1, found.max(axis=0) + 2
    return tuple(slice(max(int(a), 0), int(b)) for a, b in zip(lo, hi))


def measure_body(ct, mask, label: int) -> BodyMeasures:
    """The two baseline features of vertebra `label` (CTImage ct, CTImage mask)."""
    from scipy import ndimage

    hu, labels = _resample_region(ct, mask, label)
    profile = _body_profile(labels, label)
    if profile is None:
        raise MVCFError(f"vertebra {label}: no vertebral body found on the mid-sagittal plane of the mask")
    heights, y0, y1, _ = profile
    three = _three_heights(heights, y0, y1)
    neighbours = []
    for other in (label - 1, label + 1):
        other_profile = _body_profile(labels, other)
        if other_profile is not None:
            neighbours.append(float(_three_heights(*other_profile[:3]).max()))
    reference = float(np.mean(neighbours)) if neighbours else float(three.max())
    body = labels == label
    body[:, y1:, :] = False
    box = _padded_box(body)
    depth = ndimage.distance_transform_edt(body[box])
    core = depth > 3.0
    if core.sum() < 20:
        core = depth > 1.5
    if not core.any():
        raise MVCFError(f"vertebra {label}: the body is too thin to measure its trabecular density")
    return BodyMeasures(trabecular_hu=float(hu[box][core].mean()),
                        height_loss=float(np.clip(1.0 - three.min() / max(reference, 1e-6), -1.0, 1.0)),
                        heights_mm=tuple(float(v) for v in three), reference_mm=reference)


def case_features(record) -> np.ndarray:
    """[trabecular_hu, height_loss] of one manifest record (needs mask + vertebra_label)."""
    from mvcf.read_ct import read_ct, read_mask

    if record.mask is None or record.vertebra_label is None:
        raise MVCFError(f"case {record.case_id}: the baseline needs a mask and vertebra_label")
    measures = measure_body(read_ct(record.ct, warnings=[]), read_mask(record.mask), int(record.vertebra_label))
    return np.array([measures.trabecular_hu, measures.height_loss])


def cohort_features(records: Sequence, on_progress: Optional[ProgressCallback] = None,
                    should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """(n_cases, 2) feature matrix in manifest order."""
    rows = []
    for done, record in enumerate(records, start=1):
        check_cancel(should_cancel)
        rows.append(case_features(record))
        if on_progress is not None:
            on_progress(done, len(records), f"baseline features {record.case_id}")
    return np.array(rows, dtype=float).reshape(-1, 2)


def fit_baseline(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Standardise + logistic regression (scikit-learn); labels 1 = MVCF."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, int)
    if len(set(labels.tolist())) < 2:
        raise MVCFError("the baseline needs both MVCF and OVCF cases in its training set")
    return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed)).fit(features, labels)


def evaluate_baseline(records: Sequence, external: str = "external",
                      on_progress: Optional[ProgressCallback] = None,
                      should_cancel: Optional[CancelCheck] = None) -> dict:
    """Train on every institution but `external`, test on `external`. Returns the AUCs (DeLong CI on the
    external site), the coefficients and the per-case features and probabilities."""
    from mvcf.stats import auc, delong_ci

    features = cohort_features(records, on_progress, should_cancel)
    labels = np.array([r.label for r in records], int)
    test = np.array([r.institution == external for r in records])
    if not test.any():
        raise MVCFError(f"no case from institution {external!r} to test the baseline on")
    if test.all():
        raise MVCFError(f"every case is from {external!r}: nothing left to train the baseline on")
    model = fit_baseline(features[~test], labels[~test])
    prob = model.predict_proba(features)[:, 1]
    result = {
        "features": list(FEATURES), "external": external,
        "n_train": int((~test).sum()), "n_test": int(test.sum()),
        "auc_train": float(auc(labels[~test], prob[~test])),
        "external_auc": delong_ci(labels[test], prob[test]),
        "coefficients": dict(zip(FEATURES, model[-1].coef_[0].tolist())),
        "single_feature_external_auc": {
            name: float(auc(labels[test], features[test, i])) for i, name in enumerate(FEATURES)},
        "cases": [{"case_id": r.case_id, "institution": r.institution, "label": int(r.label),
                   "trabecular_hu": float(f[0]), "height_loss": float(f[1]), "probability_malignant": float(p)}
                  for r, f, p in zip(records, features, prob)],
    }
    return result

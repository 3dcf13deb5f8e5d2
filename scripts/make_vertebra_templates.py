#!/usr/bin/env python
"""Build the generator's vertebra shape templates from the real masks in ../shared/data.

    python scripts/make_vertebra_templates.py [--data ../shared/data]

Writes MVCFClassifier/mvcf/synth/templates/vertebrae.npz: one entry per whole vertebra (VerSe sample T9-L5,
TotalSegmentator example L1-L5 + T12, TPTBox sample L3), each resampled to 1 mm in a canonical frame (x = left,
y = posterior, z = along the spine through the neighbours' centroids, origin = body centre) and split into
body / posterior arch / pedicles. Only the masks travel, never a CT voxel. Licences and attribution:
templates/ATTRIBUTION.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "MVCFClassifier" / "mvcf" / "synth" / "templates" / "vertebrae.npz"

VERSE_NAMES = {16: "T9", 17: "T10", 18: "T11", 19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}
TOTALSEG_NAMES = {32: "T12", 31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5"}
# Not normal anatomy: VerSe 004's L1 is fractured (biconcave, mid-body height ~10 mm); the TotalSegmentator
# example's T12 is cut by the top of the scan (no posterior arch). They are used as axis neighbours only.
EXCLUDED = {("verse004", "L1"), ("totalseg-example", "T12")}
SOURCES = [
    # (source id, mask file relative to the data folder, {label: level}, neighbour labels for the axis)
    ("verse004", "verse_sample/sub-verse004_seg-vert_msk.nii.gz", VERSE_NAMES, None),
    ("totalseg-example", "totalsegmentator/spine_report/totalseg.nii.gz", TOTALSEG_NAMES, {26: "S1"}),
    ("tptbox-ct22", "tptbox_sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz", {22: "L3"}, {21: "L2", 23: "L4"}),
]


def _centroids_lps(image, array: np.ndarray, labels) -> dict[int, np.ndarray]:
    out = {}
    for label in labels:
        kji = np.argwhere(array == label)
        if len(kji):
            out[label] = np.array(image.TransformContinuousIndexToPhysicalPoint(kji.mean(axis=0)[::-1].tolist()))
    return out


def _frame(centre: np.ndarray, below: np.ndarray | None, above: np.ndarray | None) -> np.ndarray:
    """Rows = canonical x (left), y (posterior), z (superior along the spine) in LPS."""
    ends = [p for p in (below, above) if p is not None]
    z = (above if above is not None else centre) - (below if below is not None else centre)
    if len(ends) == 0 or np.linalg.norm(z) < 1e-6:
        z = np.array([0.0, 0.0, 1.0])
    z = z / np.linalg.norm(z)
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def _resample(image, label: int, centre: np.ndarray, axes: np.ndarray, smooth_mm: float):
    """Fraction of the label on a 1 mm canonical grid (x -45..45, y -45..75, z -35..35 around `centre`)."""
    import SimpleITK as sitk

    binary = sitk.Cast(sitk.BinaryThreshold(image, label, label, 1, 0), sitk.sitkFloat32)
    binary = sitk.SmoothingRecursiveGaussian(binary, smooth_mm)
    lo = np.array([-45.0, -45.0, -35.0])
    size = [91, 121, 71]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing((1.0, 1.0, 1.0))
    reference.SetDirection(tuple(axes.T.ravel().tolist()))
    reference.SetOrigin(tuple((centre + axes.T @ lo).tolist()))
    out = sitk.Resample(binary, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out), lo


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def split_vertebra(occ: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 parts [z, y, x] (1 body, 2 arch, 3 pedicle) from a whole-vertebra fraction map, and the measures
    of the body and canal (mm, voxel indices of the canonical grid)."""
    from scipy import ndimage

    whole = _largest_component(occ >= 0.5)
    nz, ny, nx = whole.shape
    xs = np.flatnonzero(whole.any(axis=(0, 1)))
    x_mid = int(round(np.argwhere(whole)[:, 2].mean()))
    slab = whole[:, :, x_mid - 2:x_mid + 3]
    heights = slab.sum(axis=0).mean(axis=1)
    present = np.flatnonzero(heights > 3.0)
    y0 = int(present[0])
    gaps = np.flatnonzero(heights[y0:] <= 1.0)
    y_wall = y0 + int(gaps[0])
    after = np.flatnonzero(heights[y_wall:] > 1.0)
    y_lamina = y_wall + int(after[0]) if len(after) else min(ny - 1, y_wall + 15)
    yy = np.arange(ny)[None, :, None]
    xx = np.arange(nx)[None, None, :]
    # lateral limit from the anterior 70 % of the body, where no transverse process or ala reaches
    front = whole[:, y0:y0 + max(1, int(0.7 * (y_wall - y0))), :].any(axis=(0, 1))
    cols = np.flatnonzero(front)
    body = whole & (yy < y_wall) & (xx >= cols[0] - 1) & (xx <= cols[-1] + 1)
    body = ndimage.binary_opening(body, iterations=1) & whole
    body = _largest_component(body)
    arch = whole & ~body
    canal_y = 0.5 * (y_wall + y_lamina)
    # pedicles: the arch between the posterior wall and the canal's back, lateral to the canal
    zc = int(round(np.argwhere(body)[:, 0].mean()))
    row = arch[zc - 3:zc + 4, int(round(canal_y)), :].any(axis=0)
    left = np.flatnonzero(row[:x_mid])
    right = np.flatnonzero(row[x_mid:])
    canal_half_width = 0.5 * ((x_mid + right[0] if len(right) else x_mid + 10) -
                              (left[-1] if len(left) else x_mid - 10))
    pedicle = arch & (yy >= y_wall - 1) & (yy <= y_lamina) & \
        (np.abs(np.arange(nx)[None, None, :] - x_mid) >= canal_half_width - 1)
    parts = np.zeros(whole.shape, np.uint8)
    parts[arch] = 2
    parts[pedicle] = 3
    parts[body] = 1
    bz, by, bx = np.nonzero(body)
    centre = np.array([bx.mean(), by.mean(), bz.mean()])
    mid = body[:, :, x_mid - 2:x_mid + 3].sum(axis=0).mean(axis=1)
    run = np.flatnonzero(mid > 0)
    third = run[len(run) // 3: 2 * len(run) // 3] if len(run) >= 3 else run
    measures = {
        "body_width_mm": float(np.ptp(bx) + 1), "body_depth_mm": float(np.ptp(by) + 1),
        "body_height_mm": float(mid[third].mean()) if len(third) else float(np.ptp(bz) + 1),
        "body_volume_ml": float(body.sum()) / 1000.0, "canal_ap_mm": float(y_lamina - y_wall),
        "canal_width_mm": float(2 * canal_half_width), "canal_y_mm": float(canal_y - centre[1]),
        "posterior_wall_y_mm": float(y_wall - centre[1]), "vertebra_width_mm": float(np.ptp(xs) + 1),
    }
    return parts, {"centre_index": centre.tolist(), **measures}


def build(data: Path) -> dict[str, np.ndarray]:
    import SimpleITK as sitk

    entries: dict[str, np.ndarray] = {}
    index = []
    for source, rel, names, extra in SOURCES:
        image = sitk.ReadImage(str(data / rel))
        array = sitk.GetArrayFromImage(image).astype(np.int32)
        neighbours = {**names, **(extra or {})}
        cents = _centroids_lps(image, array, neighbours)
        order = sorted(cents, key=lambda lab: cents[lab][2])        # inferior to superior (LPS z up)
        smooth = max(image.GetSpacing()) * 0.5
        for label, level in names.items():
            if label not in cents or (source, level) in EXCLUDED:
                continue
            pos = order.index(label)
            below = cents[order[pos - 1]] if pos > 0 else None
            above = cents[order[pos + 1]] if pos + 1 < len(order) else None
            axes = _frame(cents[label], below, above)
            occ, lo = _resample(image, label, cents[label], axes, smooth)
            parts, measures = split_vertebra(occ)
            nz = np.argwhere(parts > 0)
            k0, j0, i0 = np.maximum(nz.min(axis=0) - 3, 0)
            k1, j1, i1 = nz.max(axis=0) + 4
            crop = parts[k0:k1, j0:j1, i0:i1]
            centre = np.array(measures.pop("centre_index"))
            origin = np.array([i0, j0, k0], float) - centre    # mm of voxel (0, 0, 0) from the body centre
            key = f"{source}_{level}"
            entries[f"{key}__parts"] = crop
            entries[f"{key}__origin"] = origin
            index.append({"key": key, "source": source, "level": level, "voxel_mm": list(image.GetSpacing()),
                          **{k: round(v, 2) for k, v in measures.items()}})
    entries["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    return entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    entries = build(args.data.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **entries)
    for item in json.loads(entries["index"].tobytes()):
        print(item)
    print(f"{args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

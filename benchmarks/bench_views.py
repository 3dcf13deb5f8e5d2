"""Benchmark: views around one vertebra of a 512 x 512 x 400 CT, ROI-only resampling vs the obvious baseline.

Baseline (what a MONAI pipeline does by default): `Spacing` to 1 mm on the whole volume, then
`ScaleIntensityRange` (the bone window) on the whole volume, then crop the view around the point.
Ours: `mvcf.views.build_views`, which resamples only the view's own small grids.

Both must give the same output: our grid points are placed on the baseline's 1 mm grid (centre chosen on it)
and the values are compared there. Prints (and with --out writes) one JSON object with both timings per
mode and the ratio; the target is a ratio >= 20.

    python benchmarks/bench_views.py [--out bench_views.json] [--threads 2] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from report import emit

SHAPE_IJK = (512, 512, 400)
SPACING = (0.78125, 0.78125, 1.25)
DIRECTION_LPS = np.diag([-1.0, -1.0, 1.0])  # a RAS-stored CT, as most NIfTI files
WINDOW = (400.0, 1800.0)
SIZE = 97  # odd, so that every mode's grid points lie on the baseline's grid (see main)
MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")


def synthetic_ct():
    """A smooth body-like volume (air outside an elliptic body, tissue and bone-like bands), int16 HU."""
    from mvcf.ctimage import CTImage

    ni, nj, nk = SHAPE_IJK
    x = (np.arange(ni) - ni / 2) * SPACING[0]
    y = (np.arange(nj) - nj / 2) * SPACING[1]
    z = np.arange(nk) * SPACING[2]
    body = (x[None, :] / 170.0) ** 2 + (y[:, None] / 120.0) ** 2 < 1  # [j, i]
    texture = (300 * np.sin(x / 9.0)[None, :] * np.cos(y / 7.0)[:, None]).astype(np.float32)
    voxels = np.empty((nk, nj, ni), np.int16)
    for k in range(nk):
        slab = 40 + texture * (1 + 0.8 * np.sin(z[k] / 11.0)) + 500 * (np.hypot(x[None, :], y[:, None] - 40) < 20)
        voxels[k] = np.where(body, slab, -1000).astype(np.int16)
    origin = np.array([180.0, 150.0, -600.0])
    return CTImage(voxels, SPACING, origin, DIRECTION_LPS, source="synthetic 512x512x400")


def baseline_volume(ct):
    """MONAI: Spacing(1 mm) + ScaleIntensityRange on the whole volume -> (array [i,j,k], RAS affine)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import ScaleIntensityRange, Spacing

    affine = ct.ijk_to_ras()
    image = MetaTensor(torch.from_numpy(ct.voxels.transpose(2, 1, 0).astype(np.float32))[None],
                       affine=torch.as_tensor(affine))
    resampled = Spacing(pixdim=(1.0, 1.0, 1.0), mode="bilinear", dtype=np.float32)(image)
    lo, hi = WINDOW[0] - WINDOW[1] / 2, WINDOW[0] + WINDOW[1] / 2
    scaled = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(resampled)
    return scaled[0], np.asarray(resampled.affine, dtype=float)


def baseline_crop(volume, affine, grids):
    """Read the baseline at our grid points (which lie on its 1 mm grid): the 'crop' step, per grid."""
    import torch

    inverse = np.linalg.inv(affine)
    out = []
    for grid in grids:
        k, j, i = np.indices(grid.size[::-1])
        lps = grid.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))
        ras = lps * np.array([-1.0, -1.0, 1.0])
        idx = ras @ inverse[:3, :3].T + inverse[:3, 3]
        rounded = np.round(idx).astype(int)
        assert np.abs(idx - rounded).max() < 1e-3, "grid points are not on the baseline grid"
        t = torch.as_tensor(rounded)
        values = volume[t[:, 0], t[:, 1], t[:, 2]].numpy()
        out.append(values.reshape(grid.size[::-1]))
    return out


def timed(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=2, help="threads for both SimpleITK and torch")
    parser.add_argument("--repeats", type=int, default=20, help="repeats of ours per mode (median reported)")
    parser.add_argument("--baseline-repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import SimpleITK as sitk
    import torch

    from mvcf import locate
    from mvcf.views import ViewSpec, build_views

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    torch.set_num_threads(args.threads)
    ct = synthetic_ct()

    (volume, affine), base_times = timed(lambda: baseline_volume(ct), args.baseline_repeats)
    # the centre: the baseline grid point nearest a point in the bright "vertebra" band; with an odd view
    # size every view grid point then lies on the baseline's 1 mm grid, so the outputs compare voxel by voxel
    target_ras = ct.ijk_to_ras() @ np.array([256.0, 307.0, 200.0, 1.0])
    index = np.round(np.linalg.inv(affine) @ target_ras)
    centre_lps = (affine @ index)[:3] * np.array([-1.0, -1.0, 1.0])
    location = locate.from_point(ct, centre_lps, "lps")
    results = {}
    for mode in MODES:
        spec = ViewSpec(mode=mode, size_px=SIZE, windows=("bone",))
        ours, our_times = timed(lambda: build_views(ct, location, spec), args.repeats)
        crops = baseline_crop(volume, affine, ours.grids)
        flat_base = np.concatenate([c.ravel() for c in crops])
        flat_ours = np.concatenate([g.ravel() for g in _per_grid(ours)])
        max_diff = float(np.abs(flat_base - flat_ours).max())
        baseline_s = statistics.median(base_times)  # the crop itself (a slice) is left out: conservative
        ours_s = statistics.median(our_times)
        results[mode] = {"shape": list(ours.shape), "ours_ms": round(ours_s * 1000, 3),
                         "ours_ms_min": round(min(our_times) * 1000, 3),
                         "baseline_ms": round(baseline_s * 1000, 1), "ratio": round(baseline_s / ours_s, 1),
                         "max_abs_diff": max_diff, "same_within_tolerance": max_diff < 1e-3}
    payload = {
        "benchmark": "views around one vertebra: ROI-only SimpleITK resampling vs MONAI Spacing + "
                     "ScaleIntensityRange on the whole volume then crop",
        "ct": {"shape_ijk": list(SHAPE_IJK), "spacing_mm": list(SPACING), "orientation": "RAS",
               "dtype": "int16"},
        "view": {"size_px": SIZE, "spacing_mm": 1.0, "window": list(WINDOW)},
        "threads": args.threads, "baseline_whole_volume_ms": [round(t * 1000, 1) for t in base_times],
        "modes": results,
        "min_ratio": min(r["ratio"] for r in results.values()),
        "target_ratio": 20,
        "all_same_within_tolerance": all(r["same_within_tolerance"] for r in results.values()),
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    emit(payload, args.out)
    return 0 if payload["all_same_within_tolerance"] else 1


def _per_grid(result):
    """Our view values per grid, [k, j, i], to compare with the baseline crops."""
    a = result.array
    if result.mode == "2d":
        return [a[0][None]]
    if result.mode in ("2.5d-adjacent",):
        return [a]
    if result.mode == "2.5d-orthogonal":
        return [a[n][None] for n in range(3)]
    if result.mode == "2.5d-mil":
        return [a[:, 0]]
    return [a[0]]


if __name__ == "__main__":
    sys.exit(main())

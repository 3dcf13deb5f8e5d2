"""Benchmark: views around one vertebra of 512 x 512 x 400 and x 800 CTs, ROI-only resampling vs the obvious
baseline, and the peak memory of ours.

Baseline (what a MONAI pipeline does by default): `Spacing` to 1 mm on the whole volume, then
`ScaleIntensityRange` (the bone window) on the whole volume, then crop the view around the point.
Ours: `mvcf.views.build_views`, which resamples only the view's own small grids.

Both must give the same output: our grid points are placed on the baseline's 1 mm grid (centre chosen on it)
and the values are compared there. Prints (and with --out writes) one JSON object with both timings per
mode and the ratio; the target is a ratio >= 20. Peak memory: a fresh process makes the CT, then builds
the views of every mode (no baseline in it); its peak RSS (VmHWM) beyond the start and the CT itself is
what the views cost (target: a few tens of MB).

    python benchmarks/bench_views.py [--out bench_views.json] [--slices 400,800] [--threads 2] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

from report import emit, median_time

SHAPE_IJK = (512, 512, 400)  # the slice count is --slices
SPACING = (0.78125, 0.78125, 1.25)
DIRECTION_LPS = np.diag([-1.0, -1.0, 1.0])  # a RAS-stored CT, as most NIfTI files
WINDOW = (400.0, 1800.0)
SIZE = 97  # odd, so that every mode's grid points lie on the baseline's grid (see main)
MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")


def synthetic_ct(slices: int = SHAPE_IJK[2]):
    """A smooth body-like volume (air outside an elliptic body, tissue and bone-like bands), int16 HU,
    made slice by slice (no whole-volume temporaries)."""
    from mvcf.ctimage import CTImage

    ni, nj, nk = SHAPE_IJK[0], SHAPE_IJK[1], slices
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
    return CTImage(voxels, SPACING, origin, DIRECTION_LPS, source=f"synthetic 512x512x{nk}")


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


def _centre(ct, affine):
    """The baseline grid point nearest a point in the bright "vertebra" band; with an odd view size every
    view grid point then lies on the baseline's 1 mm grid, so the outputs compare voxel by voxel."""
    target_ras = ct.ijk_to_ras() @ np.array([256.0, 307.0, ct.voxels.shape[0] / 2, 1.0])
    index = np.round(np.linalg.inv(affine) @ target_ras)
    return (affine @ index)[:3] * np.array([-1.0, -1.0, 1.0])


def compare(slices: int, args) -> dict:
    """Ours vs the whole-volume baseline on a 512 x 512 x `slices` CT, every mode."""
    from mvcf import locate
    from mvcf.views import ViewSpec, build_views

    ct = synthetic_ct(slices)
    base = median_time(lambda: baseline_volume(ct), args.baseline_repeats)
    (volume, affine), base_times = base.result, base.runs_s
    location = locate.from_point(ct, _centre(ct, affine), "lps")
    results = {}
    for mode in MODES:
        spec = ViewSpec(mode=mode, size_px=SIZE, windows=("bone",))
        timing = median_time(lambda: build_views(ct, location, spec), args.repeats)
        ours, our_times = timing.result, timing.runs_s
        crops = baseline_crop(volume, affine, ours.grids)
        flat_base = np.concatenate([c.ravel() for c in crops])
        flat_ours = np.concatenate([g.ravel() for g in _per_grid(ours)])
        max_diff = float(np.abs(flat_base - flat_ours).max())
        baseline_s = base.median_s  # the crop itself (a slice) is left out: conservative
        ours_s = timing.median_s
        results[mode] = {"shape": list(ours.shape), "ours_ms": round(ours_s * 1000, 3),
                         "ours_ms_min": round(min(our_times) * 1000, 3),
                         "baseline_ms": round(baseline_s * 1000, 1), "ratio": round(baseline_s / ours_s, 1),
                         "max_abs_diff": max_diff, "same_within_tolerance": max_diff < 1e-3}
    return {"ct_shape_ijk": [SHAPE_IJK[0], SHAPE_IJK[1], slices],
            "baseline_whole_volume_ms": [round(t * 1000, 1) for t in base_times], "modes": results,
            "min_ratio": min(r["ratio"] for r in results.values()),
            "all_same_within_tolerance": all(r["same_within_tolerance"] for r in results.values())}


def _peak_mib() -> float:
    """This process's peak RSS: VmHWM on Linux (getrusage's maxrss is inherited from the parent across
    fork + exec, which would hide what this process itself used), else getrusage."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(slices: int) -> dict:
    """Run in a fresh process: peak RSS after start-up, after making the CT, after the views of every mode."""
    from mvcf import locate
    from mvcf.views import ViewSpec, build_views

    start = _peak_mib()
    ct = synthetic_ct(slices)
    after_ct = _peak_mib()
    location = locate.from_point(ct, ct.index_to_lps(np.array([256.0, 307.0, slices / 2])), "lps")
    for mode in MODES:
        build_views(ct, location, ViewSpec(mode=mode, size_px=SIZE, windows=("bone", "soft")))
    after_views = _peak_mib()
    ct_mib = ct.voxels.nbytes / 2 ** 20
    return {"ct_mib": round(ct_mib, 1), "peak_rss_start_mib": round(start, 1),
            "peak_rss_after_ct_mib": round(after_ct, 1), "peak_rss_after_views_mib": round(after_views, 1),
            "views_extra_mib": round(after_views - after_ct, 1),
            "peak_beyond_start_and_ct_mib": round(after_views - start - ct_mib, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--slices", default="400,800", help="CT slice counts, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="threads for both SimpleITK and torch")
    parser.add_argument("--repeats", type=int, default=20, help="repeats of ours per mode (median reported)")
    parser.add_argument("--baseline-repeats", type=int, default=2)
    parser.add_argument("--memory-probe", type=int, metavar="SLICES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import json
    import subprocess

    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    sizes = {}
    for slices in (int(v) for v in args.slices.split(",")):
        probe = subprocess.run([sys.executable, __file__, "--memory-probe", str(slices), "--threads", str(args.threads)],
                               capture_output=True, text=True, check=True)
        sizes[str(slices)] = {**compare(slices, args), "memory": json.loads(probe.stdout.splitlines()[-1])}
    payload = {
        "benchmark": "views around one vertebra: ROI-only SimpleITK resampling vs MONAI Spacing + "
                     "ScaleIntensityRange on the whole volume then crop",
        "ct": {"shape_ijk": [SHAPE_IJK[0], SHAPE_IJK[1], "see sizes"], "spacing_mm": list(SPACING),
               "orientation": "RAS", "dtype": "int16"},
        "view": {"size_px": SIZE, "spacing_mm": 1.0, "window": list(WINDOW)},
        "threads": args.threads, "sizes": sizes,
        "min_ratio": min(v["min_ratio"] for v in sizes.values()),
        "max_views_extra_mib": max(v["memory"]["views_extra_mib"] for v in sizes.values()),
        "target_ratio": 20,
        "all_same_within_tolerance": all(v["all_same_within_tolerance"] for v in sizes.values()),
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

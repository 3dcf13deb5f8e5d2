#!/usr/bin/env python
"""One synthetic MVCF case, every view mode's heatmap by both methods, next to the lesion the generator drew.

    python scripts/heatmap_figure.py --models demo_out/study --seed 11 [--case 0] --out docs/images/heatmaps_by_mode.png

`--models` holds one bundle per mode (`<mode>/model`, the study folder `mvcf demo` writes). The case is the
`--case`-th MVCF case of the seed's plan with a drawn bone lesion (as scripts/heatmap_in_lesion.py picks
them). Columns: the CT with the lesion outlined, then one column per mode; rows: Grad-CAM and occlusion, each
on the axial and the sagittal plane through the lesion's centre. Maps are for the MVCF class, on the CT's
own lattice, shown above 0.2 of their peak (docs/screening.md, "Heatmaps").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heatmap_in_lesion import _block_of, capture_lesion, lesion_on_ct  # noqa: E402

MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")
HALF_MM = 40.0


def pick_case(seed: int, index: int):
    from mvcf.synth import generate_case, plan_cohort

    found = -1
    for plan in plan_cohort(400, seed=seed):
        if plan.label != 1:
            continue
        store: dict = {}
        with capture_lesion(store):
            case = generate_case(plan, seed)
        if "lesion" in store and case.signs.lesion_fraction >= 0.1:
            found += 1
            if found == index:
                return plan, case, store
    raise SystemExit(f"no MVCF case number {index} with a drawn lesion in seed {seed}")


def full_volume(ct, heat) -> np.ndarray:
    out = np.zeros(ct.voxels.shape, np.float32)
    out[_block_of(ct, heat)] = heat.voxels
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--case", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mvcf.ctimage import CTImage
    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model
    from mvcf.locate import from_mask
    from mvcf.synth.anatomy import level_label
    from mvcf.views import ViewSpec, build_views

    plan, case, store = pick_case(args.seed, args.case)
    ct = CTImage(case.image.hu, case.image.spacing, case.image.origin, source=plan.case_id)
    mask = CTImage(case.image.labels, case.image.spacing, case.image.origin)
    location = from_mask(ct, mask, level_label(plan.level))
    lesion = lesion_on_ct(case, store)
    k, j, i = (int(round(v)) for v in np.argwhere(lesion > 0.5).mean(axis=0))
    sp = np.asarray(ct.spacing)
    hj, hi = int(HALF_MM / sp[1]), int(HALF_MM / sp[0])
    hk = int(HALF_MM / sp[2])

    def planes(volume):
        axial = volume[k, max(j - hj, 0):j + hj, max(i - hi, 0):i + hi]
        sagittal = volume[max(k - hk, 0):k + hk, max(j - hj, 0):j + hj, i][::-1]
        return axial, sagittal

    maps = {}
    for mode in MODES:
        bundle = load_model(args.models / mode / "model", "cpu")
        view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
        for method in ("gradcam", "occlusion"):
            heat = heatmap_for(bundle, view, "cpu", target="MVCF", ct=ct, location=location, method=method)
            maps[mode, method] = planes(full_volume(ct, heat))
        print(mode, "done", flush=True)
    hu_planes, lesion_planes = planes(ct.voxels.astype(np.float32)), planes(lesion)
    aspect = (sp[1] / sp[0], sp[2] / sp[1])          # axial rows/cols, sagittal slices/rows
    fig, axes = plt.subplots(4, len(MODES) + 1, figsize=(2.1 * (len(MODES) + 1), 2.1 * 4), facecolor="black")
    rows = [("gradcam", 0), ("gradcam", 1), ("occlusion", 0), ("occlusion", 1)]
    names = {"gradcam": "Grad-CAM", "occlusion": "occlusion"}
    for r, (method, plane) in enumerate(rows):
        for c in range(len(MODES) + 1):
            ax = axes[r, c]
            ax.imshow(hu_planes[plane], cmap="gray", vmin=-500, vmax=1300, aspect=aspect[plane],
                      interpolation="bilinear")
            if c == 0:
                ax.contour(lesion_planes[plane], levels=[0.5], colors="cyan", linewidths=0.8)
                ax.set_title(f"{('axial', 'sagittal')[plane]}: lesion" if r < 2 else "", color="white", fontsize=8)
                ax.text(-0.08, 0.5, f"{names[method]}\n{('axial', 'sagittal')[plane]}", color="white", fontsize=8,
                        rotation=90, ha="right", va="center", transform=ax.transAxes)
            else:
                shown = np.ma.masked_less(maps[MODES[c - 1], method][plane], 0.2)
                ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.6, aspect=aspect[plane],
                          interpolation="bilinear")
                ax.contour(lesion_planes[plane], levels=[0.5], colors="cyan", linewidths=0.6)
                if r == 0:
                    ax.set_title(MODES[c - 1], color="white", fontsize=8)
            ax.set_axis_off()
    fig.suptitle(f"synthetic MVCF {plan.case_id} ({plan.level}, {plan.institution}; {', '.join(case.signs.names())}): "
                 "heatmaps for MVCF, lesion in cyan; synthetic data, demo models", color="white", fontsize=8)
    fig.tight_layout(rect=(0.02, 0, 1, 0.96))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, facecolor="black")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

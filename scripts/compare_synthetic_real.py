#!/usr/bin/env python
"""Synthetic vs real vertebrae, side by side: the figures and measures of docs/synthetic.md.

    python scripts/compare_synthetic_real.py [--data ../shared/data] [--cases 24] [--seed 0]

Measures (mvcf.synth.measures) every real vertebra we hold (VerSe sample masks T9-L5: shape only, no CT;
TotalSegmentator example CT L1-L5; TPTBox sample CT L3) and the normal (unfractured) vertebrae of `--cases`
synthetic cases at each site, and writes docs/images/synth_vs_real.png (axial and sagittal planes, bone
window), docs/images/synth_vs_real_measures.png (each measure, real against synthetic) and
docs/synthetic_measures.json (every value, and the synthetic 5th-95th percentiles).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("body_height_mm", "body_depth_mm", "body_width_mm", "cortical_apparent_mm", "trabecular_hu",
            "trabecular_sd_hu")
REAL = [  # (name, ct, mask, {label: level})
    ("VerSe 004 (mask only)", None, "verse_sample/sub-verse004_seg-vert_msk.nii.gz",
     {16: "T9", 17: "T10", 18: "T11", 19: "T12", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}),
    ("TotalSegmentator example (3 mm)", "totalsegmentator/example_ct.nii.gz",
     "totalsegmentator/spine_report/totalseg.nii.gz", {31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5"}),
    ("TPTBox sample (1.5 mm)", "tptbox_sample_ct/sub-ct_label-22_ct.nii.gz",
     "tptbox_sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz", {22: "L3"}),
]


def _plane_images(ct, mask, label: int, half_mm: float = 40.0, step: float = 0.5):
    """Axial and mid-sagittal planes through the body centre, resampled to `step` mm in LPS axes."""
    import SimpleITK as sitk

    from mvcf.baseline import _body_profile, _resample_region

    hu, labels = _resample_region(ct, mask, label)
    heights, y0, y1, x_mid = _body_profile(labels, label)
    body = labels == label
    body[:, y1:, :] = False
    zc, yc, _ = np.argwhere(body).mean(axis=0)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    n = int(2 * half_mm / step)
    out = []
    for plane in ("axial", "sagittal"):
        ref = sitk.Image([n, n, 1], sitk.sitkFloat32)
        ref.SetSpacing((step, step, 1.0))
        if plane == "axial":   # rows: anterior -> posterior, columns: patient right -> left
            ref.SetOrigin((x_mid - half_mm, yc - half_mm, zc))
        else:                  # rows: superior -> inferior, columns: anterior -> posterior
            ref.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))
            ref.SetOrigin((x_mid, yc - half_mm, zc + half_mm))
        plane_image = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, -1000.0)
        out.append(sitk.GetArrayFromImage(plane_image)[0])
    return out


def real_vertebrae(data: Path):
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.synth.measures import vertebra_measures

    rows, images = [], []
    for name, ct_path, mask_path, levels in REAL:
        mask = read_mask(data / mask_path)
        ct = read_ct(data / ct_path, warnings=[]) if ct_path else None
        for label, level in levels.items():
            rows.append({"source": name, "level": level, **vertebra_measures(ct, mask, label)})
            if ct is not None and level in ("L2", "L3"):
                images.append((f"real: {name}, {level}", _plane_images(ct, mask, label)))
    return rows, images


def synthetic_vertebrae(n_cases: int, seed: int):
    """Measures of the unfractured neighbours of the fractured vertebra in `n_cases` synthetic cases."""
    from mvcf.synth import generate_case, plan_cohort
    from mvcf.synth.measures import case_images, measure_neighbours

    rows, images = [], []
    for plan in plan_cohort(n_cases, seed=seed, external_fraction=0.5):
        case = generate_case(plan, seed)
        for m in measure_neighbours(case):
            rows.append({"source": f"synthetic {plan.institution}", **m})
            if len(images) < 2 and plan.institution == ("internal" if not images else "external") \
                    and m["level"] in ("L2", "L3"):
                images.append((f"synthetic: {plan.institution} site, {m['level']} (case {plan.case_id})",
                               _plane_images(*case_images(case), m["label"])))
    return rows, images


def write_figures(images, real_rows, synth_rows, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, len(images), figsize=(2.6 * len(images), 5.6))
    for col, (title, (axial, sagittal)) in enumerate(images):
        for row, plane in enumerate((axial, sagittal)):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=-250, vmax=1250)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(title, fontsize=7)
    axes[0, 0].set_ylabel("axial (80 mm)")
    axes[1, 0].set_ylabel("mid-sagittal")
    fig.suptitle("Real and synthetic lumbar vertebrae, bone window [-250, 1250] HU, same scale", fontsize=9)
    fig.tight_layout()
    pictures = out_dir / "synth_vs_real.png"
    fig.savefig(pictures, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(2.3 * len(MEASURES), 3.4))
    groups = [("real", real_rows, "C3"), ("synthetic internal",
              [r for r in synth_rows if r["source"].endswith("internal")], "C0"),
              ("synthetic external", [r for r in synth_rows if r["source"].endswith("external")], "C1")]
    for ax, key in zip(axes, MEASURES):
        for x, (name, rows, colour) in enumerate(groups):
            values = [r[key] for r in rows if r.get(key) is not None]
            jitter = np.random.default_rng(x).uniform(-0.15, 0.15, len(values))
            ax.scatter(x + jitter, values, s=9, color=colour, alpha=0.7)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(["real", "synth\nint.", "synth\next."], fontsize=7)
        ax.set_title(key.replace("_", " "), fontsize=8)
    fig.tight_layout()
    measures = out_dir / "synth_vs_real_measures.png"
    fig.savefig(measures, dpi=110)
    plt.close(fig)
    return [pictures, measures]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    real_rows, real_images = real_vertebrae(args.data.resolve())
    synth_rows, synth_images = synthetic_vertebrae(args.cases, args.seed)
    figures = write_figures(real_images + synth_images, real_rows, synth_rows, args.out / "images")
    summary = {}
    for key in MEASURES:
        real = [r[key] for r in real_rows if r.get(key) is not None]
        synth = {site: [r[key] for r in synth_rows if r["source"] == f"synthetic {site}" and r.get(key) is not None]
                 for site in ("internal", "external")}
        summary[key] = {"real_min": min(real), "real_max": max(real), "real_n": len(real),
                        **{f"synthetic_{site}_p5": float(np.percentile(v, 5)) for site, v in synth.items() if v},
                        **{f"synthetic_{site}_p95": float(np.percentile(v, 95)) for site, v in synth.items() if v},
                        **{f"synthetic_{site}_n": len(v) for site, v in synth.items()}}
    (args.out / "synthetic_measures.json").write_text(json.dumps(
        {"summary": summary, "real": real_rows, "synthetic": synth_rows, "cases": args.cases, "seed": args.seed},
        indent=1) + "\n", encoding="utf-8")
    print("| measure | real (min–max, n) | synthetic internal (5th–95th pct, n) | synthetic external (5th–95th pct, n) |")
    print("|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['real_min']:.1f}–{s['real_max']:.1f} ({s['real_n']}) | "
              f"{s.get('synthetic_internal_p5', float('nan')):.1f}–{s.get('synthetic_internal_p95', float('nan')):.1f}"
              f" ({s['synthetic_internal_n']}) | {s.get('synthetic_external_p5', float('nan')):.1f}–"
              f"{s.get('synthetic_external_p95', float('nan')):.1f} ({s['synthetic_external_n']}) |")
    for path in figures:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Render the Extensions Index screenshot from the module's own output on the shipped sample CT.

    python scripts/slicer_screenshot.py [--out docs/images/mvcf_classifier_result.png]

Runs the module's self-test pipeline (MVCFClassifierLib.selftest: the sample CT, a TotalSegmentator-style
segmentation, one `mvcf predict` child with the embedded demo model on the CPU) in a slicer-core scene, then
draws what the module puts in the scene: a sagittal CT slice with the classified and skipped vertebrae,
each heatmap node over the CT resampled onto its grid, and the result table node's rows. Nothing is
invented: every number and pixel comes from that run. Needs the test extra (slicer-core) and matplotlib.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "images" / "mvcf_classifier_result.png"
TABLE_COLUMNS = ("vertebra", "probability_malignant", "prediction", "threshold", "device", "status")


def ct_on_grid(ct_image, grid_image):
    """The CT resampled (linear) onto another image's grid, as a numpy array [k, j, i]."""
    import SimpleITK as sitk

    resampled = sitk.Resample(ct_image.to_sitk(), grid_image.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1000.0)
    return sitk.GetArrayFromImage(resampled)


def sagittal(ct_image):
    """The CT turned to LPS axes (array [S, P, L] increasing) as (array, sitk image), so a sagittal slice is
    [:, :, i] with superior up after a flip and anterior on the left, whatever the file's direction."""
    import SimpleITK as sitk

    oriented = sitk.DICOMOrient(ct_image.to_sitk(), "LPS")
    return sitk.GetArrayFromImage(oriented), oriented


def render(outputs, ct_image, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mvcf.ctimage import ras_to_lps
    from MVCFClassifierLib import volumes
    from MVCFClassifierLib.logic import DISCLAIMER
    from MVCFClassifierLib.tables import table_rows

    rows = table_rows(outputs.table_node)
    heatmaps = {n.GetName().split(" ")[0]: n for n in outputs.volume_nodes if n.GetName().endswith("heatmap")}
    figure = plt.figure(figsize=(12.8, 7.2), dpi=100, facecolor="#1e1e1e")
    grid = figure.add_gridspec(2, 3, height_ratios=[3, 1.35], hspace=0.28, wspace=0.12, left=0.03, right=0.97,
                               top=0.9, bottom=0.03)
    figure.suptitle("MVCF Classifier in 3D Slicer: sample CT, TotalSegmentator vertebrae, demo model",
                    color="white", fontsize=15)

    centres = {row["vertebra"]: ras_to_lps([float(v) for v in row["center_ras_mm"].split(",")])
               for row in rows if row.get("center_ras_mm")}
    overview = figure.add_subplot(grid[0, 0])
    volume, oriented = sagittal(ct_image)
    column = oriented.TransformPhysicalPointToIndex([float(v) for v in centres["L1"]])[0]
    spacing = oriented.GetSpacing()
    height, width = volume.shape[0] * spacing[2], volume.shape[1] * spacing[1]
    overview.imshow(np.flipud(volume[:, :, column]), cmap="gray", vmin=-250, vmax=1250,
                    extent=(0, width, 0, height), aspect="equal")
    for row in rows:
        name = row["vertebra"]
        if name not in centres:
            continue
        index = oriented.TransformPhysicalPointToContinuousIndex([float(v) for v in centres[name]])
        x, y = index[1] * spacing[1], index[2] * spacing[2]
        ok = row["status"] == "ok"
        overview.plot(x, y, "o", color="#4cd964" if ok else "#ff9f0a", markersize=7)
        overview.text(x + 8, y, f"{name} {row['prediction']} {float(row['probability_malignant']):.2f}" if ok
                      else f"{name} skipped", color="white", fontsize=9, va="center",
                      bbox={"facecolor": "black", "alpha": 0.5, "edgecolor": "none"})
    overview.set_title("Sagittal CT with the classified vertebrae", color="white", fontsize=11)
    overview.axis("off")

    for column, name in enumerate(sorted(heatmaps, key=lambda n: -centres[n][2])[:2], start=1):
        heat = volumes.ct_image_from_volume_node(heatmaps[name])
        ct_view = ct_on_grid(ct_image, heat)
        middle = int(np.argmax((heat.voxels > 0).sum(axis=(1, 2))))  # the axial plane of the heatmap
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(ct_view[middle], cmap="gray", vmin=-250, vmax=1250)
        axis.imshow(np.ma.masked_less(heat.voxels[middle], 0.05), cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.55)
        axis.set_title(f"{name}: model input with Grad-CAM heatmap", color="white", fontsize=11)
        axis.axis("off")

    table_axis = figure.add_subplot(grid[1, :])
    table_axis.axis("off")
    cells = []
    for row in rows:
        probability = row.get("probability_malignant")
        cells.append([row["vertebra"], "" if probability in (None, "") or np.isnan(float(probability))
                      else f"{float(probability):.3f}", row.get("prediction", ""),
                      "" if row.get("threshold") in (None, "") or np.isnan(float(row["threshold"]))
                      else f"{float(row['threshold']):.3f}", row.get("device", ""), row["status"]])
    table = table_axis.table(cellText=cells, colLabels=TABLE_COLUMNS, loc="upper center", cellLoc="left",
                             colWidths=[0.1, 0.17, 0.11, 0.1, 0.08, 0.34])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1.0, 1.35)
    for (r, _c), cell in table.get_celld().items():
        cell.set_facecolor("#3a3a3c" if r == 0 else "#2c2c2e")
        cell.get_text().set_color("white")
        cell.set_edgecolor("#555555")
    table_axis.text(0.5, -0.08, DISCLAIMER, transform=table_axis.transAxes, ha="center", color="#ffcc00",
                    fontsize=10, style="italic")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, facecolor=figure.get_facecolor())
    plt.close(figure)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    for folder in (REPO / "MVCFClassifier", REPO / "MVCFTraining"):
        sys.path.insert(0, str(folder))
    import slicer

    from mvcf.read_ct import read_ct
    from mvcf.resources import sample_ct_paths
    from MVCFClassifierLib.selftest import run_self_test

    scene = slicer.vtkMRMLScene()
    outputs, problems = run_self_test(scene, device="cpu")
    if problems:
        print("error: the self-test failed: " + "; ".join(problems), file=sys.stderr)
        return 1
    written = render(outputs, read_ct(sample_ct_paths()["ct"]), Path(args.out))
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

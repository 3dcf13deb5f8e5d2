"""PNG previews of synthetic cases: mid-sagittal and axial planes through the fractured vertebra.

Radiological display: axial seen from the feet (patient left on the image right, anterior up), sagittal
with superior up and anterior on the left; physical aspect ratio kept for thick slices.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:   # cohort imports this module to write its preview
    from mvcf.synth.cohort import SyntheticCase


def _planes(case: SyntheticCase):
    image = case.image
    spacing = np.array(image.spacing)
    ijk = np.rint((case.body_center_lps - np.array(image.origin)) / spacing).astype(int)
    ijk = np.clip(ijk, 0, np.array(image.hu.shape[::-1]) - 1)
    i, j, k = ijk
    axial = image.hu[k]                      # [y(P), x(L)]: row 0 anterior, column 0 patient right
    sagittal = image.hu[::-1, :, i]          # [z (S first), y (A first)]
    return axial, sagittal, spacing


def write_preview(cases: Sequence[SyntheticCase], path: Path, titles: Sequence[str] = ()) -> Path:
    """One row per case: axial (bone window), sagittal (bone window), sagittal (soft-tissue window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mvcf.fileio import atomic_path

    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3.1 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        axial, sagittal, sp = _planes(case)
        title = titles[row] if row < len(titles) else f"{case.plan.case_id} {case.plan.level}"
        windows = [(axial, (-250, 1250), sp[0], sp[1], "axial, bone"),
                   (sagittal, (-250, 1250), sp[1], sp[2], "sagittal, bone"),
                   (sagittal, (-160, 240), sp[1], sp[2], "sagittal, soft tissue")]
        for col, (plane, (lo, hi), dx, dy, name) in enumerate(windows):
            ax = axes[row][col]
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, aspect=dy / dx, interpolation="bilinear")
            ax.set_title(f"{textwrap.fill(title, 48)}\n{name}" if col == 0 else name, fontsize=7.5,
                         loc="left" if col == 0 else "center")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)

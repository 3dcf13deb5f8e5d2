"""One picture of a whole-spine screen: a sagittal reformat of the CT that follows the spine, every screened
vertebra outlined in the colour of its Genant grade and labelled with level, grade, trabecular HU and
P(MVCF), the flagged ones marked. It is what a reader looks at before the table (the cleared products show
such an overview too), written next to screen.tsv and at the top of the screen's case report.

The plane is curved in the left-right direction only: for each cranio-caudal position it passes through the
left-right centre of the vertebral bodies (interpolated between their centroids), so a scoliotic spine stays
in the picture, while the antero-posterior axis is the CT's own and the lordosis and kyphosis look as they do.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from mvcf.ctimage import CTImage
from mvcf.report.images import KeyImage, canvas_png

PIXEL_MM = 0.75
#: Field around the body centroids: cranio-caudal margin, anterior and posterior reach (mm).
MARGIN_MM, ANTERIOR_MM, POSTERIOR_MM = 25.0, 45.0, 70.0
#: The CT is averaged over these left-right offsets (mm) from the curved plane: a thin slab, less noise.
SLAB_OFFSETS_MM = (-1.5, 0.0, 1.5)
BONE_WINDOW = (400.0, 1800.0)   # centre, width (HU)
GRADE_COLOURS = {0: "#43a047", 1: "#fdd835", 2: "#fb8c00", 3: "#e53935"}
UNGRADED = "#9e9e9e"
FLAG_COLOUR = "#ff1744"


def _centres(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """LPS centroids of the rows that have one, sorted by height (z)."""
    points = np.array([r["center_lps"] for r in rows if r.get("center_lps") is not None], dtype=float)
    return points[np.argsort(points[:, 2])] if len(points) else points.reshape(0, 3)


def _bounds_lps(image: CTImage) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest LPS coordinates of the image's voxel centres."""
    size = np.array(image.size_ijk, dtype=float) - 1.0
    corners = np.array([[i, j, k, 1.0] for i in (0.0, size[0]) for j in (0.0, size[1]) for k in (0.0, size[2])])
    lps = corners @ image.ijk_to_lps_matrix()[:3].T
    return lps.min(axis=0), lps.max(axis=0)


def _sample(image: CTImage, points_lps: np.ndarray, order: int, cval: float) -> np.ndarray:
    """`image` at LPS points (..., 3): linear (order 1) or nearest (order 0), `cval` outside."""
    from scipy.ndimage import map_coordinates

    to_ijk = np.linalg.inv(image.ijk_to_lps_matrix())
    flat = points_lps.reshape(-1, 3)
    ijk = flat @ to_ijk[:3, :3].T + to_ijk[:3, 3]
    values = map_coordinates(image.voxels, ijk[:, ::-1].T, order=order, mode="constant", cval=cval,
                             prefilter=False)
    return values.reshape(points_lps.shape[:-1])


def curved_sagittal(ct: CTImage, seg: CTImage, rows: Sequence[dict[str, Any]]
                    ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(HU [rows, cols], labels [rows, cols]) on the curved plane, or None when no row has a centroid. Rows
    run head to feet, columns anterior to posterior, PIXEL_MM apart."""
    centres = _centres(rows)
    if not len(centres):
        return None
    low, high = _bounds_lps(ct)   # no rows or columns of air beyond the CT's own field of view
    z_top = min(centres[-1, 2] + MARGIN_MM + 15.0, high[2])
    z_bottom = max(centres[0, 2] - MARGIN_MM - 15.0, low[2])
    y_front = max(centres[:, 1].min() - ANTERIOR_MM, low[1])
    y_back = min(centres[:, 1].max() + POSTERIOR_MM, high[1])
    if z_top - z_bottom < 2 * PIXEL_MM or y_back - y_front < 2 * PIXEL_MM:
        return None
    zs = np.arange(z_top, z_bottom, -PIXEL_MM)
    ys = np.arange(y_front, y_back, PIXEL_MM)
    xs = np.interp(zs, centres[:, 2], centres[:, 0])        # constant beyond the first and last body
    Z, Y = np.meshgrid(zs, ys, indexing="ij")
    X = np.broadcast_to(xs[:, None], Z.shape)
    hu = np.mean([_sample(ct, np.stack([X + dx, Y, Z], axis=-1), 1, -1000.0) for dx in SLAB_OFFSETS_MM], axis=0)
    labels = _sample(seg, np.stack([X, Y, Z], axis=-1), 0, 0).astype(np.int64)
    return hu, labels


def _caption(row: dict[str, Any], digits: int = 3) -> str:
    grade = f"grade {row['genant_grade']}" if row.get("genant_grade") is not None else row.get("status", "")
    hu = f"{row['trabecular_hu']:.0f} HU" if row.get("trabecular_hu") is not None else "- HU"
    p = f"P {row['probability_malignant']:.{digits}f}" if row.get("probability_malignant") is not None else "P -"
    return f"{row['level']}  {grade}  {hu}  {p}" + ("  FLAGGED" if row.get("flagged") else "")


def render_overview(hu: np.ndarray, labels: np.ndarray, rows: Sequence[dict[str, Any]], title: str, footer: str,
                    dpi: int = 100, digits: int = 3) -> tuple[bytes, np.ndarray]:
    """The overview picture -> (PNG bytes, RGB array); probabilities with `digits` decimals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    height_mm, width_mm = hu.shape[0] * PIXEL_MM, hu.shape[1] * PIXEL_MM
    image_w_in = 3.2
    image_h_in = min(image_w_in * height_mm / width_mm, 11.0)
    image_w_in = image_h_in * width_mm / height_mm
    left_in, right_in, top_in, bottom_in = 2.7, 0.4, 0.45, 0.95
    fig_w, fig_h = left_in + image_w_in + right_in, top_in + image_h_in + bottom_in
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left_in / fig_w, bottom_in / fig_h, image_w_in / fig_w, image_h_in / fig_h))
    extent = (0.0, width_mm, height_mm, 0.0)
    center, width = BONE_WINDOW
    ax.imshow(hu, cmap="gray", vmin=center - width / 2, vmax=center + width / 2, extent=extent,
              interpolation="bilinear")
    ax.set_xlim(0.0, width_mm)
    ax.set_ylim(height_mm, 0.0)
    ax.set_axis_off()
    margin = blended_transform_factory(ax.transAxes, ax.transData)
    grid_y = (np.arange(hu.shape[0]) + 0.5) * PIXEL_MM
    grid_x = (np.arange(hu.shape[1]) + 0.5) * PIXEL_MM
    placed: list[float] = []
    for row in rows:
        if row.get("label") is None:
            continue
        inside = labels == int(row["label"])
        if not inside.any():
            continue
        grade = row.get("genant_grade")
        colour = GRADE_COLOURS.get(grade, UNGRADED) if grade is not None else UNGRADED
        ax.contour(grid_x, grid_y, inside.astype(float), levels=[0.5], colors=[colour],
                   linewidths=2.6 if row.get("flagged") else 1.4)
        y_mm = float(grid_y[np.flatnonzero(inside.any(axis=1))].mean())
        for other in placed:   # keep labels of short (thoracic) levels from overlapping
            if abs(y_mm - other) < 0.035 * height_mm:
                y_mm = other + 0.035 * height_mm
        placed.append(y_mm)
        ax.text(-0.03, y_mm, _caption(row, digits), transform=margin, ha="right", va="center", fontsize=8,
                color=FLAG_COLOUR if row.get("flagged") else colour, clip_on=False,
                fontweight="bold" if row.get("flagged") else "normal")
    ax.text(0.98, 0.5, "P", transform=ax.transAxes, color="yellow", ha="right", va="center", fontsize=10)
    ax.text(0.02, 0.5, "A", transform=ax.transAxes, color="yellow", ha="left", va="center", fontsize=10)
    ax.plot([5, 25], [height_mm - 5] * 2, color="white", linewidth=2)
    ax.text(15, height_mm - 7, "20 mm", color="white", ha="center", va="bottom", fontsize=7)
    legend = [Patch(facecolor="none", edgecolor=c, label=f"grade {g}") for g, c in GRADE_COLOURS.items()]
    legend.append(Patch(facecolor="none", edgecolor=UNGRADED, label="not graded"))
    legend.append(Patch(facecolor="none", edgecolor=FLAG_COLOUR, linewidth=2.6,
                        label="flagged: grade >= 1 and P >= threshold (thick, red label)"))
    fig.legend(handles=legend, loc="lower left", bbox_to_anchor=(0.01, 0.35 / fig_h + 0.0), ncol=3, fontsize=6.5,
               frameon=False, labelcolor="white", handlelength=1.2, columnspacing=0.8)
    fig.text(0.02, 1 - 0.22 / fig_h, title, color="white", fontsize=10, va="center")
    fig.text(0.02, 0.2 / fig_h, footer, color="#ffcc66", fontsize=6.5, va="center", linespacing=1.3)
    return canvas_png(fig, tag=True)


CAPTION = ("Every screened vertebra outlined in its Genant grade's colour, with trabecular HU and P(MVCF); "
           "sagittal reformat curved along the spine")


def spine_overview(ct: CTImage, seg: CTImage, rows: Sequence[dict[str, Any]], footer: str,
                   title: str = "Whole-spine screen: Genant grade (outline colour) and P(MVCF)",
                   digits: int = 3) -> Optional[KeyImage]:
    """The overview of a screen's `rows` (mvcf.screen) on its CT and label map, as a key image (PNG for the
    folder and the report, RGB for a DICOM Secondary Capture), or None when no vertebra could be located."""
    sampled = curved_sagittal(ct, seg, rows)
    if sampled is None:
        return None
    png, rgb = render_overview(*sampled, rows, title, footer, digits=digits)
    return KeyImage(plane="sagittal", caption=CAPTION, png=png, rgb=rgb, orientation=("P", "F"),
                    overlay="Genant grade outline")


def overview_centre(rows: Sequence[dict[str, Any]]) -> Optional[list[float]]:
    """Where the overview is 'at' for a DICOM reference: the middle located vertebra's centroid."""
    centres = _centres(rows)
    return [float(v) for v in centres[len(centres) // 2]] if len(centres) else None

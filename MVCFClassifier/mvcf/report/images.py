"""Key images of one vertebra: a CT plane through the body centre (axial and mid-sagittal) with the heatmap
heatmap as a colour overlay and a colour bar, rendered with matplotlib (Agg) to PNG bytes and an RGB array
(the same picture goes into the HTML/PDF report and into the DICOM Secondary Capture)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mvcf.ctimage import CTImage

FIELD_MM = 100.0          # field of view of a key image
PIXEL_MM = 0.5
BONE_WINDOW = (400.0, 1800.0)   # centre, width (HU)
#: Heatmap values below this are left transparent, so the CT under a weak response stays readable.
OVERLAY_FLOOR = 0.2
#: Each plane: the patient side (DICOM letters: F = feet) at the image's right and bottom (radiological display, mvcf.views planes), caption.
PLANES = {"axial": (("L", "P"), "axial through the body centre"), "sagittal": (("P", "F"), "mid-sagittal")}


@dataclass
class KeyImage:
    plane: str
    caption: str
    png: bytes
    rgb: np.ndarray          # (rows, columns, 3) uint8
    orientation: tuple[str, str]
    overlay: str = "Grad-CAM"    # the heatmap method's label (mvcf.explain.METHOD_LABELS)


def plane_arrays(ct: CTImage, center_lps, plane: str, heat: Optional[CTImage] = None):
    """(CT HU [rows, cols], heatmap [rows, cols] or None) sampled on `plane` through `center_lps`. The heatmap is
    the maximum over a 3 mm slab, so a map painted on planes half a voxel off the centre still shows."""
    from mvcf.views import PLANE_DIRECTIONS, SampleGrid, sample_on_grid

    direction = PLANE_DIRECTIONS[plane]
    n = int(round(FIELD_MM / PIXEL_MM))
    center = np.asarray(center_lps, dtype=float)
    grid = SampleGrid.centered(plane, center, direction.astype(float), (PIXEL_MM, PIXEL_MM, PIXEL_MM), (n, n, 1))
    hu = sample_on_grid(ct, grid)[0]
    if heat is None:
        return hu, None
    slab = SampleGrid.centered(plane, center, direction.astype(float), (PIXEL_MM, PIXEL_MM, 1.0), (n, n, 3))
    return hu, sample_on_grid(heat, slab, "linear", 0.0).max(axis=0)


def render(hu: np.ndarray, heatmap: Optional[np.ndarray], title: str, footer: str, orientation: tuple[str, str],
           dpi: int = 100, overlay: str = "Grad-CAM") -> tuple[bytes, np.ndarray]:
    """One key image (CT in a bone window, heatmap overlay with a colour bar) -> (PNG bytes, RGB array)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    center, width = BONE_WINDOW
    fig = Figure(figsize=(4.6, 4.2), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.08, 0.78, 0.84))
    extent = (0, hu.shape[1] * PIXEL_MM, hu.shape[0] * PIXEL_MM, 0)
    ax.imshow(hu, cmap="gray", vmin=center - width / 2, vmax=center + width / 2, extent=extent,
              interpolation="bilinear")
    cax = fig.add_axes((0.83, 0.15, 0.04, 0.7))
    if heatmap is not None:
        shown = np.ma.masked_less(np.clip(heatmap, 0.0, 1.0), OVERLAY_FLOOR)
        layer = ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.55, extent=extent,
                          interpolation="bilinear")
        bar = fig.colorbar(layer, cax=cax)
        bar.set_label(f"{overlay} (relative)", color="white", fontsize=8)
    else:
        cax.text(0.5, 0.5, "no heatmap", rotation=90, color="white", ha="center", va="center", fontsize=8)
        cax.set_xticks([])
        cax.set_yticks([])
    cax.tick_params(colors="white", labelsize=7)
    ax.set_axis_off()
    right, bottom = orientation
    ax.text(0.98, 0.5, right, transform=ax.transAxes, color="yellow", ha="right", va="center", fontsize=10)
    ax.text(0.5, 0.02, bottom, transform=ax.transAxes, color="yellow", ha="center", va="bottom", fontsize=10)
    ax.plot([5, 25], [hu.shape[0] * PIXEL_MM - 5] * 2, color="white", linewidth=2)
    ax.text(15, hu.shape[0] * PIXEL_MM - 7, "20 mm", color="white", ha="center", va="bottom", fontsize=7)
    fig.text(0.02, 0.95, title, color="white", fontsize=10, va="center")
    fig.text(0.02, 0.04, footer, color="#ffcc66", fontsize=6.5, va="center", linespacing=1.3)
    return canvas_png(fig)


def canvas_png(fig, tag: bool = False) -> tuple[bytes, np.ndarray]:
    """A drawn Agg figure -> (PNG bytes, RGB array) from the one canvas (no second render); `tag` marks the PNG
    as mvcf's output (outputs_guard.png_metadata), for a file a later --overwrite may replace."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    info = PngInfo()
    if tag:
        from mvcf.outputs_guard import png_metadata

        for key, value in png_metadata().items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3, pnginfo=info)
    return buffer.getvalue(), rgb


def key_images(ct: CTImage, center_lps, heat: Optional[CTImage], name: str, footer: str) -> list[KeyImage]:
    """The axial and mid-sagittal key images of the vertebra `name` centred at `center_lps` (LPS mm)."""
    from mvcf.explain import METHOD_LABELS, method_of

    overlay = METHOD_LABELS[method_of(heat)]
    out = []
    for plane, (orientation, what) in PLANES.items():
        hu, heatmap = plane_arrays(ct, center_lps, plane, heat)
        title = f"{name}: {what}"
        png, rgb = render(hu, heatmap, title, footer, orientation, overlay=overlay)
        caption = title + (f" ({overlay} found no positive evidence for the call here)"
                           if heatmap is not None and float(heatmap.max()) < OVERLAY_FLOOR else "")
        out.append(KeyImage(plane=plane, caption=caption, png=png, rgb=rgb, orientation=orientation,
                            overlay=overlay))
    return out

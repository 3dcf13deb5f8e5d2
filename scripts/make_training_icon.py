#!/usr/bin/env python3
"""Draw the MVCFTraining module icon (128x128 RGBA PNG): a vertebral body under a rising learning curve.

    python scripts/make_training_icon.py   # writes MVCFTraining/Resources/Icons/MVCFTraining.png
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "MVCFTraining" / "Resources" / "Icons" / "MVCFTraining.png"
SIZE, SCALE = 128, 4  # drawn at 512 px and reduced, for smooth edges
BACKGROUND = (28, 46, 74, 255)
GRID = (60, 82, 112, 255)
BONE = (236, 226, 198, 255)
BONE_EDGE = (168, 150, 112, 255)
AUC = (92, 200, 120, 255)
LOSS = (240, 150, 60, 255)


def draw_icon() -> Image.Image:
    u = SCALE

    def box(x0, y0, x1, y1):
        return [x0 * u, y0 * u, x1 * u, y1 * u]

    def pts(*xy):
        return [(x * u, y * u) for x, y in xy]

    image = Image.new("RGBA", (SIZE * u, SIZE * u), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle(box(2, 2, 126, 126), radius=22 * u, fill=BACKGROUND)
    for y in (30, 52, 74):
        d.line(pts((16, y), (112, y)), fill=GRID, width=u)
    # a lateral view of a wedge-fractured vertebral body with its endplates
    d.polygon(pts((30, 84), (98, 80), (98, 112), (30, 112)), fill=BONE_EDGE)
    d.polygon(pts((33, 87), (95, 84), (95, 109), (33, 109)), fill=BONE)
    d.line(pts((33, 96), (60, 92), (95, 94)), fill=BONE_EDGE, width=2 * u)
    # training curves: loss falls (dashed), AUC rises
    loss = ((16, 34), (28, 50), (40, 58), (54, 64), (70, 67), (88, 69), (112, 70))
    for a, b in zip(loss[::2], loss[1::2]):
        d.line(pts(a, b), fill=LOSS, width=4 * u)
    d.line(pts((16, 74), (28, 56), (40, 44), (54, 36), (70, 31), (88, 28), (112, 26)), fill=AUC, width=6 * u,
           joint="curve")
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(TARGET, optimize=True)
    print(f"wrote {TARGET.relative_to(REPO)}")


if __name__ == "__main__":
    main()

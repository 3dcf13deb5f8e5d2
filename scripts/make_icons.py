#!/usr/bin/env python3
"""Draw the extension and module icon (128x128 RGBA PNG): an axial vertebra with a fracture line.

    python scripts/make_icons.py   # writes MVCFClassifier.png and MVCFClassifier/Resources/Icons/MVCFClassifier.png
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
SIZE = 128
SCALE = 4  # drawn at 512 px and reduced, for smooth edges
BONE = (236, 226, 198, 255)
BONE_EDGE = (168, 150, 112, 255)
BACKGROUND = (28, 46, 74, 255)
FRACTURE = (222, 56, 44, 255)


def draw_icon() -> Image.Image:
    s = SIZE * SCALE
    u = s / 128.0  # one icon pixel

    def box(x0, y0, x1, y1):
        return [x0 * u, y0 * u, x1 * u, y1 * u]

    def pts(*xy):
        return [(x * u, y * u) for x, y in xy]

    image = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle(box(2, 2, 126, 126), radius=22 * u, fill=BACKGROUND)

    shape = Image.new("L", (s, s), 0)  # the bone silhouette as a mask, outlined afterwards
    m = ImageDraw.Draw(shape)
    m.ellipse(box(30, 14, 98, 66), fill=255)                      # vertebral body (anterior, up)
    m.polygon(pts((40, 52), (50, 50), (54, 72), (44, 76)), fill=255)  # left pedicle
    m.polygon(pts((88, 52), (78, 50), (74, 72), (84, 76)), fill=255)  # right pedicle
    m.ellipse(box(40, 56, 88, 100), fill=255)                      # neural arch (laminae)
    m.polygon(pts((42, 70), (14, 80), (12, 88), (46, 82)), fill=255)   # left transverse process
    m.polygon(pts((86, 70), (114, 80), (116, 88), (82, 82)), fill=255)  # right transverse process
    m.polygon(pts((58, 90), (70, 90), (67, 118), (61, 118)), fill=255)  # spinous process
    m.ellipse(box(51, 62, 77, 86), fill=0)                         # spinal canal
    edge = shape.filter(ImageFilter.MaxFilter(9))
    image.paste(BONE_EDGE, (0, 0), edge)
    image.paste(BONE, (0, 0), shape)
    d = ImageDraw.Draw(image)
    d.ellipse(box(51, 62, 77, 86), fill=BACKGROUND)
    # trabecular texture of the body
    for x, y in ((46, 30), (58, 24), (72, 27), (84, 33), (52, 44), (66, 40), (80, 46), (60, 54), (74, 55)):
        d.ellipse(box(x - 2.2, y - 2.2, x + 2.2, y + 2.2), fill=(205, 190, 150, 255))
    # the fracture: a jagged line across the body
    d.line(pts((33, 36), (45, 42), (52, 34), (62, 45), (71, 36), (81, 45), (95, 38)),
           fill=FRACTURE, width=int(5 * u), joint="curve")
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    icon = draw_icon()
    for target in (REPO / "MVCFClassifier.png", REPO / "MVCFClassifier" / "Resources" / "Icons" / "MVCFClassifier.png"):
        target.parent.mkdir(parents=True, exist_ok=True)
        icon.save(target, optimize=True)
        print(f"wrote {target.relative_to(REPO)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Draw the MVCFReaderStudy module icon (128x128 RGBA PNG): a vertebral body, a reader's eye and a 1-5 scale.

    python scripts/make_reader_study_icon.py   # writes MVCFReaderStudy/Resources/Icons/MVCFReaderStudy.png
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "MVCFReaderStudy" / "Resources" / "Icons" / "MVCFReaderStudy.png"
SIZE, SCALE = 128, 4
BACKGROUND = (40, 36, 72, 255)
BONE = (236, 226, 198, 255)
BONE_EDGE = (168, 150, 112, 255)
EYE = (120, 190, 240, 255)
SCALE_COLOURS = [(70, 160, 90, 255), (150, 190, 80, 255), (220, 200, 70, 255), (235, 140, 60, 255),
                 (215, 70, 60, 255)]


def draw_icon() -> Image.Image:
    u = SCALE
    image = Image.new("RGBA", (SIZE * u, SIZE * u), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle([2 * u, 2 * u, 126 * u, 126 * u], radius=22 * u, fill=BACKGROUND)
    d.polygon([(28 * u, 52 * u), (100 * u, 48 * u), (100 * u, 80 * u), (28 * u, 80 * u)], fill=BONE_EDGE)
    d.polygon([(31 * u, 55 * u), (97 * u, 51 * u), (97 * u, 77 * u), (31 * u, 77 * u)], fill=BONE)
    d.ellipse([44 * u, 14 * u, 84 * u, 40 * u], outline=EYE, width=3 * u)
    d.ellipse([57 * u, 19 * u, 71 * u, 35 * u], fill=EYE)
    for i, colour in enumerate(SCALE_COLOURS):
        x = 18 + i * 19
        d.rounded_rectangle([x * u, 92 * u, (x + 15) * u, 112 * u], radius=4 * u, fill=colour)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()

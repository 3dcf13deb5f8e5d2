"""Sampling grids in the CT's physical space (numpy only): the planes, stacks and cubes a view samples.

A `SampleGrid` has the same conventions as a CTImage (index i, j, k; LPS direction columns), so any array
sampled on it, or computed on it such as a heatmap, can be placed back in the CT with `to_ctimage`.
`PLANE_DIRECTIONS` fixes how each plane reads whatever the CT's direction cosines (see mvcf.views).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mvcf.ctimage import CTImage

# LPS direction columns (i, j, k) of each plane; see the table in mvcf.views.
_L, _P, _S = np.eye(3)
PLANE_DIRECTIONS = {
    "axial": np.column_stack([_L, _P, _S]),
    "coronal": np.column_stack([_L, -_S, _P]),
    "sagittal": np.column_stack([_P, -_S, -_L]),
}


@dataclass
class SampleGrid:
    """A sampled grid in the CT's physical space; the same conventions as CTImage (i, j, k; LPS columns)."""

    name: str
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    size: tuple[int, int, int]

    @classmethod
    def centered(cls, name: str, center_lps: np.ndarray, direction: np.ndarray, spacing: Sequence[float],
                 size: Sequence[int]) -> "SampleGrid":
        spacing = np.asarray(spacing, dtype=float)
        size_arr = np.asarray(size, dtype=float)
        origin = center_lps - direction @ (spacing * (size_arr - 1) / 2)
        return cls(name, origin, spacing, direction, tuple(int(v) for v in size))

    def index_to_lps(self, ijk) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return self.origin + (self.direction @ np.diag(self.spacing)) @ ijk if ijk.ndim == 1 else \
            self.origin + ijk @ (self.direction @ np.diag(self.spacing)).T

    def corners_lps(self) -> np.ndarray:
        hi = np.asarray(self.size, dtype=float) - 1
        idx = np.array([[a, b, c] for a in (0, hi[0]) for b in (0, hi[1]) for c in (0, hi[2])])
        return self.index_to_lps(idx)

    def to_ctimage(self, values: np.ndarray, source: str = "") -> CTImage:
        """An array on this grid ([k, j, i], e.g. a heatmap) as a CTImage placed in the CT's space."""
        values = np.asarray(values)
        expected = self.size[::-1]
        if values.shape != expected:
            values = values.reshape(expected)
        return CTImage(voxels=values, spacing=self.spacing.copy(), origin=self.origin.copy(),
                       direction=self.direction.copy(), source=source or self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "origin": self.origin.tolist(), "spacing": self.spacing.tolist(),
                "direction": self.direction.ravel().tolist(), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict) -> "SampleGrid":
        return cls(data["name"], np.asarray(data["origin"], float), np.asarray(data["spacing"], float),
                   np.asarray(data["direction"], float).reshape(3, 3), tuple(int(v) for v in data["size"]))

"""Locate the fractured vertebra: from a point (RAS mm, LPS mm or IJK), a box ROI, or a mask + label.

Every location ends as a VertebraLocation in LPS millimetres.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class VertebraLocation:
    """Where the vertebra is. `center_lps` in mm (LPS); `extent_mm` the box size along L, P, S when known."""

    center_lps: np.ndarray
    extent_mm: Optional[np.ndarray] = None
    name: str = ""
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.center_lps = np.asarray(self.center_lps, dtype=float).reshape(3)
        if self.extent_mm is not None:
            self.extent_mm = np.asarray(self.extent_mm, dtype=float).reshape(3)

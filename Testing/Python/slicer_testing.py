"""Helpers for the tests that drive the Slicer adapters with slicer-core's real MRML (no Slicer application)."""
from __future__ import annotations

import numpy as np

from mvcf.ctimage import CTImage


def register_segmentation_converters() -> None:
    """The Slicer application registers these at startup; a bare slicer-core process must do it once."""
    from MVCFClassifierLib.markups import ensure_segmentation_converters

    ensure_segmentation_converters()


def segmentation_from_labels(scene, labels_kji: np.ndarray, ijk_to_ras, reference_node, names: dict):
    """A segmentation node with one segment per {label value: segment name}, on the reference's geometry."""
    from MVCFClassifierLib.markups import segmentation_from_label_mask

    mask = CTImage.from_ijk_to_ras(labels_kji, ijk_to_ras)
    return segmentation_from_label_mask(scene, mask, {name: value for value, name in names.items()}, reference_node,
                                        name="segmentation")

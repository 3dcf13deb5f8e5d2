"""Helpers for the tests that drive the Slicer adapters with slicer-core's real MRML (no Slicer application)."""
from __future__ import annotations

import numpy as np

_REGISTERED: list[bool] = []


def register_segmentation_converters() -> None:
    """The Slicer application registers these at startup; a bare slicer-core process must do it once."""
    import slicer

    if not _REGISTERED:
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
        _REGISTERED.append(True)


def segmentation_from_labels(scene, labels_kji: np.ndarray, ijk_to_ras, reference_node, names: dict):
    """A segmentation node with one segment per {label value: segment name}, on the reference's geometry."""
    import slicer

    from MVCFClassifierLib import volumes

    register_segmentation_converters()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    ids = []
    for value, name in names.items():
        single = (labels_kji == value).astype(np.uint8)
        label_node = volumes.volume_node_from_array(scene, single, ijk_to_ras, "tmp", labelmap=True)
        before = segmentation.GetSegmentation().GetNumberOfSegments()
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(before)
        segmentation.GetSegmentation().GetSegment(segment_id).SetName(name)
        ids.append(segment_id)
        scene.RemoveNode(label_node)
    return segmentation, ids

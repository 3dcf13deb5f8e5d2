"""Markups and segmentations -> mvcf.locate.VertebraLocation (LPS mm), the three ways a user marks a vertebra.

World (RAS) positions are read, so parent transforms are honoured; the RAS -> LPS flip happens here and
nowhere else on the Slicer side.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mvcf.ctimage import CTImage, ras_to_lps
from mvcf.errors import MVCFError
from mvcf.locate import VertebraLocation, from_mask


def locations_from_point_list(node) -> list[VertebraLocation]:
    """One location per defined control point of a markups point list; its label is the vertebra's name."""
    if node is None:
        raise MVCFError("no point list selected: place one point per vertebra")
    locations = []
    for index in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            continue  # a point still being placed has no position yet
        ras = node.GetNthControlPointPositionWorld(index)
        name = node.GetNthControlPointLabel(index) or f"{node.GetName()}-{index + 1}"
        locations.append(VertebraLocation(center_lps=ras_to_lps(ras), name=name,
                                          source=f"point list '{node.GetName()}' point {index + 1}"))
    if not locations:
        raise MVCFError(f"point list '{node.GetName()}' has no placed points: place one point per vertebra")
    return locations


def location_from_roi(node) -> VertebraLocation:
    """The location of a markups ROI: its centre, and the LPS extent of its (possibly rotated) box."""
    if node is None:
        raise MVCFError("no ROI selected")
    size = np.asarray(node.GetSize(), float)
    if not np.all(size > 0):
        raise MVCFError(f"ROI '{node.GetName()}' has an empty size {size.tolist()}: resize it around the vertebra")
    object_to_world = node.GetObjectToWorldMatrix()
    matrix = np.array([[object_to_world.GetElement(r, c) for c in range(4)] for r in range(4)])
    half = size / 2
    corners = np.array([[sx, sy, sz, 1.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    corners[:, :3] *= half
    world_lps = np.array([ras_to_lps((matrix @ c)[:3]) for c in corners])
    center = ras_to_lps((matrix @ np.array([0.0, 0.0, 0.0, 1.0]))[:3])
    return VertebraLocation(center_lps=center, extent_mm=world_lps.max(axis=0) - world_lps.min(axis=0),
                            name=node.GetName(), source=f"ROI '{node.GetName()}'")


def segment_labelmap(segmentation_node, segment_id: str, reference_volume_node) -> CTImage:
    """One segment as a 0/1 CTImage on the reference volume's grid (LPS geometry), via a temporary labelmap
    node that is removed again; the segmentation itself is not modified."""
    import slicer
    import vtk

    from MVCFClassifierLib.volumes import world_ijk_to_ras

    scene = segmentation_node.GetScene()
    if scene is None:
        raise MVCFError("the segmentation is not in a scene")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__mvcf_temp__")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node)
        if not ok or labelmap.GetImageData() is None or labelmap.GetImageData().GetPointData().GetScalars() is None:
            raise MVCFError(f"could not export segment '{segment_id}' of '{segmentation_node.GetName()}'")
        voxels = (slicer.util.arrayFromVolume(labelmap) > 0).astype(np.uint8)
        geometry = world_ijk_to_ras(labelmap)
    finally:
        display = labelmap.GetDisplayNode()
        if display is not None:
            color = display.GetColorNode()
            scene.RemoveNode(display)
            if color is not None and color.GetName().startswith(segmentation_node.GetName()):
                scene.RemoveNode(color)
        scene.RemoveNode(labelmap)
    return CTImage.from_ijk_to_ras(voxels, geometry, source=f"segment {segment_id}")


def touches_edge(mask: CTImage) -> bool:
    """True when a 0/1 mask reaches a face of its grid: the structure is cut by the CT's field of view."""
    v = mask.voxels
    return bool(v[0].any() or v[-1].any() or v[:, 0].any() or v[:, -1].any() or v[:, :, 0].any()
                or v[:, :, -1].any())


def segment_location(segmentation_node, segment_id: str, reference_volume_node, name: str = ""
                     ) -> tuple[Optional[VertebraLocation], CTImage]:
    """(location, mask) of one segment on the reference (CT) volume's grid: its centroid in LPS mm and its
    bounding box, named `name` or the segment's name. The location is None when the segment is empty within
    the CT; a segment cut by the CT's edge carries a warning saying so."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise MVCFError(f"segment '{segment_id}' is not in '{segmentation_node.GetName()}'")
    mask = segment_labelmap(segmentation_node, segment_id, reference_volume_node)
    if not mask.voxels.any():
        return None, mask
    location = from_mask(mask, mask, 1, name=name or segment.GetName())
    location.source = f"segment '{segment.GetName()}' of '{segmentation_node.GetName()}'"
    if touches_edge(mask):
        location.warnings.append(f"segment '{segment.GetName()}' is cut by the edge of the CT")
    return location, mask


def locations_from_segmentation(segmentation_node, segment_ids: Optional[Sequence[str]],
                                reference_volume_node) -> list[VertebraLocation]:
    """One location per segment (all segments when `segment_ids` is empty), see `segment_location`; an
    empty segment is an error here."""
    if segmentation_node is None:
        raise MVCFError("no segmentation selected")
    if reference_volume_node is None:
        raise MVCFError("a reference CT volume is needed to read the segmentation")
    segmentation = segmentation_node.GetSegmentation()
    if not segment_ids:
        segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not segment_ids:
        raise MVCFError(f"segmentation '{segmentation_node.GetName()}' has no segments")
    locations = []
    for segment_id in segment_ids:
        location, _mask = segment_location(segmentation_node, segment_id, reference_volume_node)
        if location is None:
            name = segmentation.GetSegment(segment_id).GetName()
            raise MVCFError(f"segment '{name}' is empty within the CT volume")
        locations.append(location)
    return locations


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface conversion rules when nobody has (the Slicer application does at
    startup; a batch process built on slicer-core alone does not), so segmentations can hold labelmaps."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def segmentation_from_label_mask(scene, mask: CTImage, labels: dict, reference_volume_node, name: str = "vertebrae"):
    """A segmentation node with one segment per {segment name: label value} of a label mask (e.g. a
    TotalSegmentator output file); returns (node, segment ids in the order of `labels`)."""
    import slicer

    from MVCFClassifierLib.volumes import volume_node_from_ct_image

    ensure_segmentation_converters()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    ids = []
    for segment_name, value in labels.items():
        voxels = (mask.voxels == int(value)).astype(np.uint8)
        if not voxels.any():
            scene.RemoveNode(segmentation)
            raise MVCFError(f"label {value} ({segment_name}) is absent from the mask {mask.source}".rstrip())
        single = CTImage(voxels=voxels, spacing=mask.spacing, origin=mask.origin, direction=mask.direction)
        label_node = volume_node_from_ct_image(scene, single, "__mvcf_temp__", labelmap=True)
        try:
            before = segmentation.GetSegmentation().GetNumberOfSegments()
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation):
                raise MVCFError(f"could not import label {value} into a segmentation")
            segment_id = segmentation.GetSegmentation().GetNthSegmentID(before)
            segmentation.GetSegmentation().GetSegment(segment_id).SetName(str(segment_name))
            ids.append(segment_id)
        finally:
            display = label_node.GetDisplayNode()
            if display is not None:
                scene.RemoveNode(display)
            scene.RemoveNode(label_node)
    return segmentation, ids

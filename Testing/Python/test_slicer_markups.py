"""MVCFClassifierLib.markups: point list / ROI / segmentation -> VertebraLocation, on slicer-core's real MRML."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from mvcf.ctimage import CTImage  # noqa: E402
from mvcf.errors import MVCFError  # noqa: E402
from MVCFClassifierLib import markups, volumes  # noqa: E402

from slicer_testing import register_segmentation_converters  # noqa: E402


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def test_point_list_gives_one_location_per_point_named_by_label_in_lps(scene):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "fractures")
    points.AddControlPoint(vtk.vtkVector3d(12.5, -40.0, 310.0), "L1")
    points.AddControlPoint(vtk.vtkVector3d(11.0, -38.0, 345.0), "T12")
    points.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), "")
    locations = markups.locations_from_point_list(points)
    assert [loc.name for loc in locations] == ["L1", "T12", "fractures-3"]
    np.testing.assert_allclose(locations[0].center_lps, [-12.5, 40.0, 310.0])
    np.testing.assert_allclose(locations[1].center_lps, [-11.0, 38.0, 345.0])
    assert locations[0].extent_mm is None


def test_point_list_honours_parent_transform_and_skips_unplaced_points(scene):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    points.AddControlPoint(vtk.vtkVector3d(1.0, 2.0, 3.0), "L2")
    points.AddControlPoint(vtk.vtkVector3d(9.0, 9.0, 9.0), "pending")
    points.UnsetNthControlPointPosition(1)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [10.0, 20.0, 30.0]
    transform.SetMatrixTransformToParent(volumes._vtk_matrix(shift))
    points.SetAndObserveTransformNodeID(transform.GetID())
    (location,) = markups.locations_from_point_list(points)
    np.testing.assert_allclose(location.center_lps, [-11.0, -22.0, 33.0])


def test_empty_or_missing_point_list_is_a_user_error(scene):
    with pytest.raises(MVCFError, match="no placed points"):
        markups.locations_from_point_list(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty"))
    with pytest.raises(MVCFError):
        markups.locations_from_point_list(None)


def test_roi_gives_centre_and_lps_extent_of_the_rotated_box(scene):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "L3 box")
    roi.SetCenter(5.0, -60.0, 250.0)
    roi.SetSize(40.0, 30.0, 20.0)
    location = markups.location_from_roi(roi)
    assert location.name == "L3 box"
    np.testing.assert_allclose(location.center_lps, [-5.0, 60.0, 250.0])
    np.testing.assert_allclose(location.extent_mm, [40.0, 30.0, 20.0])

    rotate = vtk.vtkTransform()
    rotate.RotateZ(90)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(rotate.GetMatrix())
    roi.SetAndObserveTransformNodeID(transform.GetID())
    rotated = markups.location_from_roi(roi)
    np.testing.assert_allclose(rotated.center_lps, [-60.0, -5.0, 250.0], atol=1e-9)
    np.testing.assert_allclose(rotated.extent_mm, [30.0, 40.0, 20.0], atol=1e-9)

    roi.SetSize(0.0, 10.0, 10.0)
    with pytest.raises(MVCFError, match="empty size"):
        markups.location_from_roi(roi)


def labelled_ct(scene, far_piece: bool = False):
    """A small oblique CT with two box 'vertebrae' (labels 1 and 2) and a segmentation made from the labels;
    `far_piece`: label 1 also holds a second box 16 mm away (two vertebrae under one segment)."""
    register_segmentation_converters()
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # i -> P, j -> -L
    labels = np.zeros((20, 24, 28), np.int16)
    labels[2:8, 5:12, 6:14] = 1
    labels[11:17, 10:20, 15:25] = 2
    if far_piece:
        labels[14:18, 18:23, 0:4] = 1
    ct = CTImage(voxels=(labels * 400 - 100).astype(np.int16), spacing=(0.8, 0.9, 2.0),
                 origin=(30.0, -20.0, 100.0), direction=direction)
    ct_node = volumes.volume_node_from_ct_image(scene, ct, "CT")
    label_node = volumes.volume_node_from_array(scene, labels, ct.ijk_to_ras(), "labels", labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
    ids = [segmentation.GetSegmentation().GetNthSegmentID(i) for i in range(2)]
    for segment_id, name in zip(ids, ("vertebrae_L1", "vertebrae_L2")):
        segmentation.GetSegmentation().GetSegment(segment_id).SetName(name)
    scene.RemoveNode(label_node)
    return ct, labels, ct_node, segmentation, ids


def test_segmentation_segments_give_centroids_on_the_ct_grid(scene):
    ct, labels, ct_node, segmentation, ids = labelled_ct(scene)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # always present in the application
    n_nodes = scene.GetNumberOfNodes()
    locations = markups.locations_from_segmentation(segmentation, ids, ct_node)
    assert scene.GetNumberOfNodes() == n_nodes, "temporary nodes must be removed"
    assert [loc.name for loc in locations] == ["vertebrae_L1", "vertebrae_L2"]
    for label, location in zip((1, 2), locations):
        centroid_ijk = np.argwhere(labels == label)[:, ::-1].mean(axis=0)
        np.testing.assert_allclose(location.center_lps, ct.index_to_lps(centroid_ijk), atol=1e-6)
    # Label 1 spans 8 columns (i, 0.8 mm, along P), 7 rows (j, 0.9 mm, along L), 6 slices (k, 2 mm).
    np.testing.assert_allclose(locations[0].extent_mm, [7 * 0.9, 8 * 0.8, 6 * 2.0], atol=1e-6)
    every = markups.locations_from_segmentation(segmentation, [], ct_node)
    assert [loc.name for loc in every] == ["vertebrae_L1", "vertebrae_L2"]


def test_segmentation_errors_are_user_errors(scene):
    _, _, ct_node, segmentation, ids = labelled_ct(scene)
    with pytest.raises(MVCFError, match="not in"):
        markups.locations_from_segmentation(segmentation, ["no-such-segment"], ct_node)
    with pytest.raises(MVCFError, match="reference"):
        markups.locations_from_segmentation(segmentation, ids, None)
    empty_id = segmentation.GetSegmentation().AddEmptySegment("empty")
    with pytest.raises(MVCFError, match="empty"):
        markups.locations_from_segmentation(segmentation, [empty_id], ct_node)


def test_a_segment_in_pieces_is_named_by_its_segment(scene):
    """The segment is label 1 of its temporary mask: the message leads with the name the user picked."""
    _, _, ct_node, segmentation, ids = labelled_ct(scene, far_piece=True)
    with pytest.raises(MVCFError, match=r"^'vertebrae_L1' \(label 1\) of the mask lies in pieces \d+ mm apart"):
        markups.locations_from_segmentation(segmentation, ids[:1], ct_node)

"""Volume nodes <-> mvcf.ctimage.CTImage, and arrays (views, heatmaps, masks) -> volume nodes.

Every function takes the scene or nodes explicitly (no global `slicer.mrmlScene`), so pytest can drive it
with slicer-core's real vtkMRMLScene. Geometry crosses the boundary as the 4x4 IJK-to-RAS matrix; the core
works in LPS (CTImage.from_ijk_to_ras / CTImage.ijk_to_ras do the flip).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError


def _vtk_matrix(matrix) -> "object":
    import vtk

    if isinstance(matrix, vtk.vtkMatrix4x4):
        return matrix
    array = np.asarray(matrix, dtype=float).reshape(4, 4)
    out = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            out.SetElement(row, col, float(array[row, col]))
    return out


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def world_ijk_to_ras(volume_node) -> np.ndarray:
    """IJK-to-RAS of a volume node in world coordinates (its linear parent transforms applied)."""
    import vtk

    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = _numpy_matrix(ijk_to_ras)
    transform_node = volume_node.GetParentTransformNode()
    if transform_node is not None:
        if not transform_node.IsTransformToWorldLinear():
            raise MVCFError(f"volume '{volume_node.GetName()}' is under a non-linear transform: "
                            "harden the transform (Data module) and try again")
        to_world = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformToWorld(to_world)
        matrix = _numpy_matrix(to_world) @ matrix
    return matrix


def ct_image_from_volume_node(volume_node) -> CTImage:
    """A CTImage (voxels [k, j, i] copied, LPS geometry) of a scalar volume node, as the core expects."""
    from slicer.util import arrayFromVolume

    if volume_node is None or volume_node.GetImageData() is None:
        raise MVCFError("no CT volume selected, or the volume has no voxels")
    if volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise MVCFError(f"volume '{volume_node.GetName()}' is not a scalar (single-component) volume")
    voxels = np.array(arrayFromVolume(volume_node), copy=True)
    return CTImage.from_ijk_to_ras(voxels, world_ijk_to_ras(volume_node), source=volume_node.GetName())


def input_ct_from_volume_node(volume_node) -> CTImage:
    """The CT a run reads, checked as the core checks a CT file (mvcf.read_ct.validate_ct: 3D, spacing,
    orientation, finite Hounsfield values), so a volume that cannot be a CT is refused in one line at Apply,
    naming the node, instead of failing inside the child (a zero spacing also made ITK print to stderr)."""
    from mvcf.read_ct import validate_ct

    if volume_node is not None and volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise MVCFError(f"volume '{volume_node.GetName()}' is a label map, not a CT: choose the CT it was made on")
    image = ct_image_from_volume_node(volume_node)
    validate_ct(dataclasses.replace(image, source=f"volume '{volume_node.GetName()}'"))
    return image


def volume_node_from_array(scene, array_kji: np.ndarray, ijk_to_ras, name: str, node=None,
                           labelmap: bool = False, reference_node=None):
    """Put a [k, j, i] array (or [k, j, i, c] for a vector volume) with its 4x4 IJK-to-RAS into a volume node.

    Reuses `node` when given (its voxels and geometry are replaced), else adds a scalar or labelmap volume
    node called `name`. With `reference_node` (usually the CT) the new node goes under the same study in the
    subject hierarchy.
    """
    from slicer.util import updateVolumeFromArray

    array = np.asarray(array_kji)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a [k, j, i] or [k, j, i, c] array, got shape {array.shape}")
    if labelmap and array.ndim != 3:
        raise ValueError("a labelmap must be a [k, j, i] array")
    if node is None:
        node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else (
            "vtkMRMLVectorVolumeNode" if array.ndim == 4 else "vtkMRMLScalarVolumeNode")
        node = scene.AddNewNodeByClass(node_class, name)
    else:
        node.SetName(name)
    if labelmap and not np.issubdtype(array.dtype, np.integer):
        array = np.rint(array).astype(np.int16)
    was_modified = node.StartModify()
    try:
        node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras))
        updateVolumeFromArray(node, np.ascontiguousarray(array))
    finally:
        node.EndModify(was_modified)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if reference_node is not None:
        place_beside(node, reference_node)
    return node


def volume_node_from_ct_image(scene, image: CTImage, name: str, node=None, labelmap: bool = False,
                              reference_node=None):
    """volume_node_from_array for a core CTImage (views, heatmaps and masks come back from the core as these)."""
    return volume_node_from_array(scene, image.voxels, image.ijk_to_ras(), name, node=node, labelmap=labelmap,
                                  reference_node=reference_node)


def place_beside(node, reference_node) -> None:
    """Move `node` under the subject-hierarchy parent of `reference_node` (the CT's study), when both are
    in a scene that has a subject hierarchy; a no-op otherwise."""
    import slicer

    scene = node.GetScene()
    if scene is None or reference_node is None or reference_node.GetScene() is not scene:
        return
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    reference_item = sh.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    parent = sh.GetItemParent(reference_item)
    if not parent:
        return
    item = sh.GetItemByDataNode(node)
    if not item:  # in the Slicer application the plugins create it on NodeAdded; a bare scene has none
        sh.CreateItem(parent, node)
    elif parent != sh.GetItemParent(item):
        sh.SetItemParent(item, parent)

"""MVCFClassifierLib.volumes and .tables against slicer-core's real MRML (no Slicer application)."""
from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from mvcf.ctimage import CTImage  # noqa: E402
from MVCFClassifierLib import tables, volumes  # noqa: E402


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    m = np.eye(3)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def oblique_ct(shape_kji=(7, 9, 11)) -> CTImage:
    rng = np.random.default_rng(0)
    direction = rotation(2, 25) @ rotation(0, -10) @ np.diag([1.0, -1.0, 1.0])  # oblique, PIR-like flip
    return CTImage(voxels=rng.integers(-1000, 1500, size=shape_kji).astype(np.int16),
                   spacing=(0.7, 0.8, 2.5), origin=(-120.0, 35.5, 410.0), direction=direction)


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def test_ct_image_round_trips_through_a_volume_node_with_oblique_geometry(scene):
    image = oblique_ct()
    node = volumes.volume_node_from_ct_image(scene, image, "CT")
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetSpacing() == pytest.approx(tuple(image.spacing))
    # Slicer stores RAS: the origin's L and P flip sign.
    assert node.GetOrigin() == pytest.approx((120.0, -35.5, 410.0))
    back = volumes.ct_image_from_volume_node(node)
    np.testing.assert_array_equal(back.voxels, image.voxels)
    np.testing.assert_allclose(back.spacing, image.spacing)
    np.testing.assert_allclose(back.origin, image.origin)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-12)
    # A voxel lands at the same physical place on both sides.
    ijk = np.array([3.0, 5.0, 2.0])
    ras = volumes.world_ijk_to_ras(node) @ np.append(ijk, 1.0)
    np.testing.assert_allclose(np.diag([-1, -1, 1]) @ ras[:3], image.index_to_lps(ijk))
    back.voxels[0, 0, 0] += 1
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == image.voxels[0, 0, 0], "voxels must be copied"


def test_volume_node_geometry_set_the_slicer_way_reads_back_as_lps(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    slicer.util.updateVolumeFromArray(node, np.zeros((4, 5, 6), np.int16))
    node.SetSpacing(0.5, 0.6, 3.0)
    node.SetOrigin(10.0, 20.0, -30.0)
    ras_dirs = rotation(1, 30)
    node.SetIJKToRASDirections(*[float(v) for v in ras_dirs.ravel()])  # row-major 3x3
    image = volumes.ct_image_from_volume_node(node)
    np.testing.assert_allclose(image.origin, [-10.0, -20.0, -30.0])
    np.testing.assert_allclose(image.direction, np.diag([-1, -1, 1]) @ ras_dirs, atol=1e-12)
    assert image.size_ijk == (6, 5, 4)


def test_linear_parent_transform_is_applied_and_nonlinear_refused(scene):
    image = oblique_ct()
    node = volumes.volume_node_from_ct_image(scene, image, "CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -7.0, 11.0]  # RAS mm
    transform.SetMatrixTransformToParent(volumes._vtk_matrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = volumes.ct_image_from_volume_node(node)
    np.testing.assert_allclose(moved.origin, image.origin + [-5.0, 7.0, 11.0])

    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformNodeID(grid.GetID())
    from mvcf.errors import MVCFError
    with pytest.raises(MVCFError, match="non-linear"):
        volumes.ct_image_from_volume_node(node)


def test_empty_volume_node_is_a_user_error(scene):
    from mvcf.errors import MVCFError
    with pytest.raises(MVCFError):
        volumes.ct_image_from_volume_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))
    with pytest.raises(MVCFError):
        volumes.ct_image_from_volume_node(None)


def test_a_volume_that_cannot_be_a_ct_is_refused_naming_the_node(scene):
    """The run's CT is checked as a CT file is (validate_ct). These went to the child before: a one-slice or
    NaN volume failed there, a zero spacing made ITK print SVD warnings to stderr, and a label map was
    classified as if it were a CT."""
    from mvcf.errors import MVCFError

    ct = oblique_ct()
    flat = np.array(ct.ijk_to_ras())
    flat[:3, 2] = 0.0
    nan = ct.voxels.astype(np.float32)
    nan[0, 0, 0] = np.nan
    cases = [(volumes.volume_node_from_array(scene, ct.voxels[:1], ct.ijk_to_ras(), "one slice"),
              r"^volume 'one slice' has shape \(1, 9, 11\): a single slice is not a 3D CT$"),
             (volumes.volume_node_from_array(scene, nan, ct.ijk_to_ras(), "nan"),
              r"^volume 'nan' contains NaN or infinite values$"),
             (volumes.volume_node_from_array(scene, ct.voxels, flat, "flat"),
              r"^volume 'flat' has voxel spacing \(0\.7, 0\.8, nan\) mm"),
             (volumes.volume_node_from_array(scene, ct.voxels, ct.ijk_to_ras(), "labels", labelmap=True),
              r"^volume 'labels' is a label map, not a CT")]
    for node, message in cases:
        with pytest.raises(MVCFError, match=message):
            volumes.input_ct_from_volume_node(node)
    image = volumes.input_ct_from_volume_node(volumes.volume_node_from_ct_image(scene, ct, "fine"))
    np.testing.assert_array_equal(image.voxels, ct.voxels)


def test_arrays_become_labelmap_vector_and_reused_nodes(scene):
    image = oblique_ct()
    mask = (image.voxels > 500).astype(np.float32)
    label = volumes.volume_node_from_array(scene, mask, image.ijk_to_ras(), "mask", labelmap=True)
    assert label.IsA("vtkMRMLLabelMapVolumeNode")
    assert np.issubdtype(slicer.util.arrayFromVolume(label).dtype, np.integer)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(label), mask.astype(np.int16))
    np.testing.assert_allclose(volumes.world_ijk_to_ras(label), image.ijk_to_ras())

    stack = np.random.default_rng(1).random((3, 64, 64, 2)).astype(np.float32)
    vector = volumes.volume_node_from_array(scene, stack, np.diag([-1.0, -1.0, 1.0, 1.0]), "views")
    assert vector.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(vector), stack)

    heat = np.zeros((5, 6, 7), np.float32)
    reused = volumes.volume_node_from_array(scene, heat, np.eye(4), "old")
    again = volumes.volume_node_from_array(scene, heat + 1, np.diag([2.0, 2.0, 2.0, 1.0]), "heatmap",
                                           node=reused)
    assert again is reused and again.GetName() == "heatmap"
    assert again.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    assert float(slicer.util.arrayFromVolume(again).max()) == 1.0
    with pytest.raises(ValueError):
        volumes.volume_node_from_array(scene, np.zeros((4, 4)), np.eye(4), "flat")


def test_outputs_go_under_the_ct_study_in_the_subject_hierarchy(scene):
    ct = volumes.volume_node_from_ct_image(scene, oblique_ct(), "CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Study 1")
    if sh.GetItemByDataNode(ct):
        sh.SetItemParent(sh.GetItemByDataNode(ct), study)
    else:
        sh.CreateItem(study, ct)
    heat = volumes.volume_node_from_array(scene, np.zeros((2, 3, 4)), np.eye(4), "heat", reference_node=ct)
    table = tables.write_table(scene, [{"p": 0.3}], [("p", float, "probability")], "results")
    if not sh.GetItemByDataNode(table):
        sh.CreateItem(sh.GetSceneItemID(), table)
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) != study
    volumes.place_beside(table, ct)
    assert sh.GetItemParent(sh.GetItemByDataNode(heat)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == study


COLUMNS = [
    ("vertebra", str, "vertebra name or level"),
    ("probability_malignant", float, "probability of a malignant fracture (research use only)"),
    ("prediction", str, "predicted class at the model's threshold"),
    ("n_warnings", int, "number of warnings"),
    ("refined", bool, "point recentred on the vertebral body"),
]


def test_rows_become_typed_columns_with_descriptions(scene):
    rows = [{"vertebra": "L1", "probability_malignant": 0.8125, "prediction": "MVCF", "n_warnings": 0,
             "refined": True},
            {"vertebra": "T12\tfractured\nlevel", "probability_malignant": None, "prediction": "", "n_warnings": 2}]
    node = tables.write_table(scene, rows, COLUMNS, "MVCF results")
    assert node.IsA("vtkMRMLTableNode") and node.GetName() == "MVCF results"
    assert node.GetNumberOfRows() == 2 and node.GetNumberOfColumns() == len(COLUMNS)
    assert node.GetColumnType("probability_malignant") == slicer.vtkMRMLTableNode.GetValueTypeFromString("double")
    assert node.GetColumnType("n_warnings") == slicer.vtkMRMLTableNode.GetValueTypeFromString("int")
    assert node.GetColumnType("vertebra") == slicer.vtkMRMLTableNode.GetValueTypeFromString("string")
    for column_name, _, description in COLUMNS:
        assert node.GetColumnDescription(column_name) == description
    back = tables.table_rows(node)
    assert back[0] == {"vertebra": "L1", "probability_malignant": 0.8125, "prediction": "MVCF",
                       "n_warnings": 0, "refined": 1}
    assert back[1]["vertebra"] == "T12 fractured level"
    assert math.isnan(back[1]["probability_malignant"]) and back[1]["refined"] == 0
    assert slicer.util.arrayFromTableColumn(node, "probability_malignant")[0] == pytest.approx(0.8125)

    same = tables.write_table(scene, rows[:1], COLUMNS[:2], "rerun", node=node)
    assert same is node and node.GetNumberOfColumns() == 2 and node.GetNumberOfRows() == 1
    with pytest.raises(ValueError):
        tables.write_table(scene, rows, [("a", float, ""), ("a", str, "")], "dup")
    with pytest.raises(ValueError):
        tables.write_table(scene, rows, [("a", complex, "")], "bad")


def test_tsv_export_through_the_storage_node_reads_back(scene, tmp_path):
    rows = [{"vertebra": "L1", "probability_malignant": 0.25, "prediction": "OVCF", "n_warnings": 1,
             "refined": False}]
    node = tables.write_table(scene, rows, COLUMNS, "results")
    target = tmp_path / "out" / "results.tsv"
    written = tables.save_table_tsv(node, target)
    assert written == [target, tmp_path / "out" / "results.schema.tsv"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.schema.tsv", "results.tsv"]
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == [c[0] for c in COLUMNS]
    assert lines[1].split("\t")[:3] == ["L1", "0.25", "OVCF"]
    schema = (tmp_path / "out" / "results.schema.tsv").read_text(encoding="utf-8")
    assert "probability of a malignant fracture" in schema

    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(str(target))
    loaded = scene.AddNewNodeByClass("vtkMRMLTableNode", "loaded")
    assert storage.ReadData(loaded)
    assert loaded.GetColumnDescription("prediction") == COLUMNS[2][2]
    assert tables.table_rows(loaded)[0]["probability_malignant"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        tables.save_table_tsv(node, tmp_path / "results.csv")

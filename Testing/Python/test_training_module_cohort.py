"""MVCFTraining cohort building against slicer-core's real MRML: scene -> cohort table -> manifest CSV."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from MVCFClassifierLib.tables import write_table  # noqa: E402
from MVCFClassifierLib.volumes import ct_image_from_volume_node, volume_node_from_array  # noqa: E402
from MVCFTrainingLib.cohort import (COHORT_COLUMNS, check_cohort_table, cohort_table_from_scene,  # noqa: E402
                                    manifest_summary, manifest_table, save_manifest_from_table)
from mvcf.ctimage import ras_to_lps  # noqa: E402
from mvcf.errors import MVCFError  # noqa: E402
from mvcf.manifest import read_manifest  # noqa: E402

IJK_TO_RAS = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 25.0], [0, 0, 2.0, -100.0], [0, 0, 0, 1]])


def _ct(scene, name):
    voxels = np.full((12, 16, 20), -1000, np.int16)
    voxels[3:9, 4:12, 5:15] = 300
    return volume_node_from_array(scene, voxels, IJK_TO_RAS, name)


def _segmentation(scene, volume, segments: dict):
    """Segments given as {name: (k0:k1, j0:j1, i0:i1) slices} on the CT grid, as binary labelmaps."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} segmentation")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    for name, box in segments.items():
        image = slicer.vtkOrientedImageData()
        image.SetExtent(0, 19, 0, 15, 0, 11)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(12, 16, 20)
        voxels[:] = 0
        voxels[box] = 1
        image.SetImageToWorldMatrix(matrix)
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.AddRepresentation("Binary labelmap", image)
        node.GetSegmentation().AddSegment(segment)
    return node


def _points(scene, name, points: dict):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for label, ras in points.items():
        node.AddControlPoint(vtk.vtkVector3d(*ras), label)
    return node


def _set(table_node, row: int, column: str, value: str):
    table_node.SetCellText(row - 1, table_node.GetColumnIndex(column), value)


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    a, b, _c = _ct(scene, "caseA"), _ct(scene, "caseB"), _ct(scene, "caseC")
    _points(scene, "caseA points", {"L1": (30.0, 15.0, -90.0)})
    _segmentation(scene, b, {"T12": (slice(2, 4), slice(4, 8), slice(6, 10)),
                             "L1": (slice(6, 8), slice(4, 6), slice(10, 12))})
    a.SetAttribute("MVCF.label", "MVCF")
    a.SetAttribute("MVCF.institution", "A")
    return scene


def test_cohort_table_lists_every_marked_vertebra(scene):
    table = cohort_table_from_scene(scene)
    rows = [{table.GetColumnName(c): table.GetCellText(r, c) for c in range(table.GetNumberOfColumns())}
            for r in range(table.GetNumberOfRows())]
    assert [c[0] for c in COHORT_COLUMNS] == [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert [(r["case_id"], r["location"], r["vertebra"]) for r in rows] == [
        ("caseA", "caseA points", ""), ("caseB_T12", "caseB segmentation", "T12"),
        ("caseB_L1", "caseB segmentation", "L1"), ("caseC", "", "")]
    assert rows[0]["label"] == "MVCF" and rows[0]["institution"] == "A" and rows[1]["label"] == ""
    assert table.GetColumnDescription("label").startswith("MVCF")


def test_every_bad_row_is_named(scene):
    table = cohort_table_from_scene(scene)
    problems = check_cohort_table(scene, table)
    assert [p.split(":")[0] for p in problems] == ["row 2 (caseB_T12)", "row 3 (caseB_L1)", "row 4 (caseC)"]
    assert "empty label" in problems[0] and "empty location" in problems[2]
    _set(table, 2, "label", "benign")
    _set(table, 3, "location", "nothing")
    with pytest.raises(MVCFError) as error:
        save_manifest_from_table(scene, table, "/nonexistent/never/manifest.csv")
    message = str(error.value)
    assert "\n" not in message and message.startswith("cohort table: 3 bad rows")
    assert "row 2 (caseB_T12)" in message and "unknown label 'benign'" in message
    assert "row 3 (caseB_L1)" in message and "no node named 'nothing'" in message


def test_manifest_from_scene_round_trips_through_the_core(scene, tmp_path):
    table = cohort_table_from_scene(scene)
    for row, label, site in ((2, "OVCF", "A"), (3, "MVCF", "A"), (4, "OVCF", "B")):
        _set(table, row, "label", label)
        _set(table, row, "institution", site)
    _set(table, 4, "location", "caseA points")  # a point list may be reused for another CT of the same frame
    _set(table, 3, "patient_id", "caseB")
    progress = []
    records = save_manifest_from_table(scene, table, tmp_path / "cohort" / "manifest.csv",
                                       on_progress=lambda d, t, m: progress.append((d, t)))
    assert progress[-1] == (5, 5)  # 3 CTs + 2 segment masks
    assert [r.case_id for r in records] == ["caseA", "caseB_T12", "caseB_L1", "caseC"]
    assert [r.label for r in records] == [1, 0, 1, 0]
    again = read_manifest(tmp_path / "cohort" / "manifest.csv")
    assert [(r.case_id, r.ct.resolve()) for r in again] == [(r.case_id, r.ct.resolve()) for r in records]
    np.testing.assert_allclose(records[0].center_lps, ras_to_lps([30.0, 15.0, -90.0]))
    np.testing.assert_allclose(records[3].center_lps, ras_to_lps([30.0, 15.0, -90.0]))
    # a segment becomes a 0/1 mask on the CT grid whose centroid is the box centre
    assert records[1].vertebra_label == 1 and records[1].center_lps is None
    assert records[1].mask.parent == tmp_path / "cohort" / "images"
    assert records[1].extra.get("vertebra") == "T12"
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(records[1].mask))
    kji = np.argwhere(sitk.GetArrayFromImage(mask) == 1)
    assert len(kji) == 2 * 4 * 4
    centroid = mask.TransformContinuousIndexToPhysicalPoint(kji[:, ::-1].mean(axis=0).tolist())
    ijk = np.array([7.5, 5.5, 2.5, 1.0])
    np.testing.assert_allclose(centroid, ras_to_lps((IJK_TO_RAS @ ijk)[:3]), atol=1e-9)
    written = sitk.ReadImage(str(records[1].ct))
    expected = ct_image_from_volume_node(scene.GetFirstNodeByName("caseB"))
    np.testing.assert_allclose(written.GetOrigin(), expected.origin)
    np.testing.assert_allclose(np.reshape(written.GetDirection(), (3, 3)), expected.direction, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected.voxels)
    assert records[1].ct.parent == tmp_path / "cohort" / "images"
    assert manifest_summary(records) == "4 cases, 3 patients; MVCF 2, OVCF 2; A 3, B 1"
    # a one-class cohort was "Valid" with no word that Train and Study would refuse it once started
    only_ovcf = [r for r in records if r.label == 0]
    assert manifest_summary(only_ovcf).endswith("(only OVCF cases: enough to evaluate a model on, not to train "
                                                "one or run a study)")
    shown = manifest_table(scene, records)
    assert shown.GetNumberOfRows() == 4 and shown.GetCellText(1, shown.GetColumnIndex("label")) == "OVCF"


def test_volume_loaded_from_a_file_is_referenced_not_copied(tmp_path):
    import SimpleITK as sitk

    source = tmp_path / "user" / "ct.nrrd"
    source.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(source))
    before = source.read_bytes()
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(source))
    volume.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(volume)
    _points(scene, "loaded point", {"L2": (-1.0, -2.0, 1.0)})
    table = write_table(scene, [{"case_id": "c1", "patient_id": "p1", "institution": "A", "label": "1",
                                 "volume": "loaded", "location": "loaded point", "vertebra": ""}],
                        COHORT_COLUMNS, "cohort")
    records = save_manifest_from_table(scene, table, tmp_path / "out" / "manifest.csv")
    assert records[0].ct.resolve() == source.resolve()
    assert not (tmp_path / "out" / "images").exists() and source.read_bytes() == before
    # the CT stays outside the manifest's folder: the core refuses it unless allowed, and the panel allows it
    from mvcf.cli.main import build_parser
    from MVCFTrainingLib.runner import RunSettings, study_arguments, train_arguments

    with pytest.raises(MVCFError, match="leads outside the manifest's folder"):
        read_manifest(tmp_path / "out" / "manifest.csv")
    for arguments in (train_arguments, study_arguments):
        parsed = build_parser().parse_args(arguments(tmp_path / "out" / "manifest.csv", tmp_path / "run",
                                                     RunSettings(), allow_outside_root=True))
        assert parsed.allow_outside_root


def test_patient_in_two_institutions_and_duplicate_case_are_refused(scene, tmp_path):
    table = cohort_table_from_scene(scene)
    for row in (2, 3, 4):
        _set(table, row, "label", "OVCF")
        _set(table, row, "institution", "A")
    _set(table, 4, "location", "caseA points")
    _set(table, 4, "case_id", "caseA")
    _set(table, 2, "patient_id", "caseA")
    _set(table, 2, "institution", "B")
    problems = check_cohort_table(scene, table)
    assert any(p.startswith("row 4 (caseA)") and "duplicate case_id" in p for p in problems)
    assert any(p.startswith("row 2") and "several institutions" in p for p in problems)
    with pytest.raises(MVCFError):
        save_manifest_from_table(scene, table, tmp_path / "manifest.csv")
    assert not (tmp_path / "manifest.csv").exists() and list(tmp_path.iterdir()) == []


def test_location_nodes_pair_with_the_volume_they_are_named_after():
    from MVCFTrainingLib.cohort import paired_locations

    scene = slicer.vtkMRMLScene()
    ct1, ct10 = _ct(scene, "CT1"), _ct(scene, "CT10")
    _points(scene, "CT10 points", {"L1": (0.0, 0.0, 0.0)})
    _points(scene, "CT1-points", {"L2": (0.0, 0.0, 0.0)})
    _points(scene, "CT1x", {"L3": (0.0, 0.0, 0.0)})  # neither: 'x' continues the name
    assert [n.GetName() for n in paired_locations(scene, ct1)] == ["CT1-points"]
    assert [n.GetName() for n in paired_locations(scene, ct10)] == ["CT10 points"]


def test_names_that_map_to_one_file_name_get_files_of_their_own(tmp_path):
    """`CT 1` and `CT_1` (and case ids `b one` / `b_one`) became one file name: the second CT (or mask)
    overwrote the first, and both cases trained on it without a word."""
    import SimpleITK as sitk

    scene = slicer.vtkMRMLScene()
    first, second = _ct(scene, "CT 1"), _ct(scene, "CT_1")
    voxels = np.full((12, 16, 20), -1000, np.int16)
    voxels[2:10, 3:13, 4:16] = 700
    volume_node_from_array(scene, voxels, IJK_TO_RAS, "CT_1", node=second)
    _segmentation(scene, first, {"L1": (slice(2, 4), slice(4, 8), slice(6, 10))})
    _segmentation(scene, second, {"L1": (slice(6, 8), slice(4, 6), slice(10, 12))})
    table = cohort_table_from_scene(scene)
    _set(table, 1, "case_id", "b one")
    _set(table, 2, "case_id", "b_one")
    for row, label in ((1, "MVCF"), (2, "OVCF")):
        _set(table, row, "label", label)
        _set(table, row, "institution", "A")
    records = save_manifest_from_table(scene, table, tmp_path / "cohort" / "manifest.csv")
    assert len({r.ct for r in records}) == 2 and len({r.mask for r in records}) == 2
    for record, node in zip(records, (first, second)):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(record.ct))),
                                      ct_image_from_volume_node(node).voxels)
    masks = [np.argwhere(sitk.GetArrayFromImage(sitk.ReadImage(str(r.mask)))).min(axis=0)[0] for r in records]
    assert masks == [2, 6]


def test_an_export_never_takes_the_name_of_a_ct_it_references(tmp_path):
    """A CT loaded from an earlier export's images/ folder is referenced; a scene volume whose safe name is
    the same overwrote that file, so the first case trained on the second one's voxels."""
    import SimpleITK as sitk

    images = tmp_path / "cohort" / "images"
    images.mkdir(parents=True)
    scene = slicer.vtkMRMLScene()
    voxels = np.full((12, 16, 20), -1000, np.int16)
    voxels[3:9, 4:12, 5:15] = 300
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(images / "CT_1.nii.gz"))
    before = (images / "CT_1.nii.gz").read_bytes()
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT_1")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(images / "CT_1.nii.gz"))
    loaded.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(loaded)
    _ct(scene, "CT 1")
    _points(scene, "CT_1 points", {"L1": (-5.0, -5.0, 5.0)})
    _points(scene, "CT 1 points", {"L1": (30.0, 15.0, -90.0)})
    table = cohort_table_from_scene(scene)
    for row, label in ((1, "MVCF"), (2, "OVCF")):
        _set(table, row, "label", label)
        _set(table, row, "institution", "A")
    records = save_manifest_from_table(scene, table, tmp_path / "cohort" / "manifest.csv")
    assert sorted(r.ct.name for r in records) == ["CT_1-2.nii.gz", "CT_1.nii.gz"]
    assert (images / "CT_1.nii.gz").read_bytes() == before


def test_one_volume_given_to_two_patients_is_refused(scene):
    """caseB's two vertebrae under two patient ids would land in different folds."""
    table = cohort_table_from_scene(scene)
    for row in (1, 2, 3, 4):
        _set(table, row, "label", "OVCF")
        _set(table, row, "institution", "A")
    _set(table, 3, "patient_id", "someone else")
    _set(table, 4, "location", "caseA points")
    problems = check_cohort_table(scene, table)
    assert problems == ["row 3 (caseB_L1): ct is row 2's scan, of patient 'caseB', not 'someone else' (one scan is "
                        "one patient's; split by patient, its cases would fall on both sides)"]


def test_one_vertebra_in_two_rows_is_refused(scene):
    """caseB's L1 segment in two rows: saved, each row got its own mask file, so the manifest check could not
    see that one vertebra was counted twice."""
    table = cohort_table_from_scene(scene)
    for row in (1, 2, 3, 4):
        _set(table, row, "label", "OVCF")
        _set(table, row, "institution", "A")
    for column, value in (("patient_id", "caseB"), ("volume", "caseB"), ("location", "caseB segmentation"),
                          ("vertebra", "L1")):
        _set(table, 4, column, value)
    problems = check_cohort_table(scene, table)
    assert problems == ["row 4 (caseC): names the vertebra of row 3 (case 'caseB_L1': the same scan and location); "
                        "one vertebra is one case"]


def test_a_second_cohort_saved_beside_the_first_never_replaces_its_files(tmp_path):
    """Two scenes, each with a volume named "CT 1", saved as two manifests in one folder: the second export
    replaced images/CT_1.nii.gz, which the first manifest still named, so the first cohort trained on the
    other patient's CT without a word; a file of the user's in images/ was overwritten the same way."""
    images = tmp_path / "cohort" / "images"
    images.mkdir(parents=True)
    (images / "CT_1_mask.nii.gz").write_bytes(b"the user's own file")
    saved = []
    for offset in (0, 500):
        scene = slicer.vtkMRMLScene()
        node = _ct(scene, "CT 1")
        arr = slicer.util.arrayFromVolume(node)
        arr += offset
        slicer.util.arrayFromVolumeModified(node)
        _points(scene, "CT 1 points", {"L1": (-5.0, -5.0, 5.0)})
        table = cohort_table_from_scene(scene)
        _set(table, 1, "label", "MVCF")
        _set(table, 1, "institution", "A")
        saved.append((save_manifest_from_table(scene, table, tmp_path / "cohort" / f"cohort{offset}.csv")[0].ct,
                      ct_image_from_volume_node(node).voxels.copy()))
    (first, first_voxels), (second, second_voxels) = saved
    assert first != second and first.is_file() and second.is_file()
    import SimpleITK as sitk

    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(first))), first_voxels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(second))), second_voxels)
    assert (images / "CT_1_mask.nii.gz").read_bytes() == b"the user's own file"

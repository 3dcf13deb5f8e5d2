"""MVCFClassifierLib.screening on slicer-core's real MRML: a TotalSegmentator-style segmentation node of the
sample CT -> label map with names -> `mvcf screen` -> table, segment colours, slice views centred on a row."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from conftest import REPO  # noqa: E402
from mvcf.errors import MVCFError  # noqa: E402
from mvcf.read_ct import read_ct, read_mask  # noqa: E402
from MVCFClassifierLib import screening, tables, volumes  # noqa: E402

from slicer_testing import register_segmentation_converters, segmentation_from_labels  # noqa: E402

SAMPLE = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"
NAMES = {26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4", 29: "vertebrae_L3", 30: "vertebrae_L2",
         31: "vertebrae_L1", 32: "vertebrae_T12"}


@pytest.fixture(scope="module")
def spine():
    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    ct = read_ct(SAMPLE / "example_ct.nii.gz")
    mask = read_mask(SAMPLE / "totalseg.nii.gz")
    ct_node = volumes.volume_node_from_ct_image(scene, ct, "example_ct")
    seg_node, _ = segmentation_from_labels(scene, mask.voxels, mask.ijk_to_ras(), ct_node, NAMES)
    seg_node.GetSegmentation().AddEmptySegment("liver_seg", "liver")
    return scene, ct_node, seg_node, ct, mask


def test_vertebra_segments_by_name(spine):
    _, _, seg_node, _, _ = spine
    found = screening.vertebra_segments(seg_node)
    assert set(found) == {"S1", "L5", "L4", "L3", "L2", "L1", "T12"}
    scene = slicer.vtkMRMLScene()
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    other.GetSegmentation().AddEmptySegment("liver", "liver")
    with pytest.raises(MVCFError, match="no vertebra segments"):
        screening.vertebra_segments(other)


def test_label_map_names_and_screen_from_the_scene(spine, tmp_path):
    from mvcf.numbering import segment_names
    from mvcf.screen import screen_files

    scene, ct_node, seg_node, ct, mask = spine
    labels, names = screening.spine_label_map(seg_node, ct_node)
    assert labels.voxels.shape == mask.voxels.shape
    assert np.array_equal(labels.voxels == 31, mask.voxels == 31)
    path = screening.write_seg_nrrd(labels, names, tmp_path / "spine.seg.nrrd")
    assert segment_names(path)[31] == "vertebrae_L1"
    ct_path = tmp_path / "ct.nrrd"
    import SimpleITK as sitk

    sitk.WriteImage(volumes.ct_image_from_volume_node(ct_node).to_sitk(), str(ct_path))
    result = screen_files(ct_path, path, device="cpu")
    assert result.numbering == "segment names"
    rows = {r["level"]: r for r in result.vertebrae}
    assert rows["L1"]["status"] == "measured" and rows["T12"]["status"] == "partial"

    table = screening.write_screen_table(scene, result.vertebrae)
    read = tables.table_rows(table)
    assert [r["level"] for r in read] == [r["level"] for r in result.vertebrae]
    l1 = next(r for r in read if r["level"] == "L1")
    assert l1["height_anterior_mm"] == pytest.approx(rows["L1"]["height_anterior_mm"])
    assert l1["genant_grade"] == str(rows["L1"]["genant_grade"])
    assert np.isnan(next(r for r in read if r["level"] == "T12")["height_anterior_mm"])

    colours = screening.colour_segments(seg_node, result.vertebrae, by="grade")
    segment = seg_node.GetSegmentation().GetSegment(screening.vertebra_segments(seg_node)["L1"])
    assert tuple(segment.GetColor()) == pytest.approx(screening.GRADE_COLOURS[rows["L1"]["genant_grade"]])
    assert colours["T12"] == screening.UNGRADED_COLOUR
    by_p = screening.colour_segments(seg_node, result.vertebrae, by="probability")
    assert by_p["L1"] == pytest.approx(screening.probability_colour(rows["L1"]["probability_malignant"]))
    with pytest.raises(MVCFError):
        screening.colour_segments(seg_node, result.vertebrae, by="size")

    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    red.SetLayoutName("Red")
    ras = screening.center_slices_on(scene, rows["L1"])
    slice_to_ras = red.GetSliceToRAS()
    assert [slice_to_ras.GetElement(i, 3) for i in range(3)] == pytest.approx(list(ras))
    assert ras == pytest.approx([-rows["L1"]["center_lps"][0], -rows["L1"]["center_lps"][1],
                                 rows["L1"]["center_lps"][2]])
    assert screening.center_slices_on(scene, {"level": "L6", "center_lps": None}) is None


def test_overlapping_segments_are_reported(spine):
    """Segments drawn by hand can overlap; the later one takes the shared voxels, and the screen says so."""
    scene, ct_node, _, _, mask = spine
    voxels = mask.voxels.copy()
    l1 = voxels == 31
    grown = l1 | np.roll(l1, 2, axis=0)              # an L1 two slices taller: it reaches into a neighbour
    labels = np.where(voxels == 31, 0, voxels)
    seg_node, _ = segmentation_from_labels(scene, labels, mask.ijk_to_ras(), ct_node,
                                           {v: n for v, n in NAMES.items() if v != 31})
    extra, (extra_id,) = segmentation_from_labels(scene, grown.astype(np.uint8), mask.ijk_to_ras(), ct_node,
                                                  {1: "vertebrae_L1"})
    assert seg_node.GetSegmentation().CopySegmentFromSegmentation(extra.GetSegmentation(), extra_id)
    notes: list = []
    built, _ = screening.spine_label_map(seg_node, ct_node, notes)
    shared = int((grown & (labels > 0)).sum())
    assert shared > 0 and len(notes) >= 1
    assert all(n.startswith("segments vertebrae_") and "and vertebrae_L1 overlap in" in n for n in notes)
    assert sum(int(n.split(" overlap in ")[1].split()[0]) for n in notes) == shared
    assert int((built.voxels == 31).sum()) == int(grown.sum())
    clean: list = []
    screening.spine_label_map(spine[2], ct_node, clean)
    assert clean == []


def test_child_arguments():
    args = screening.screen_arguments("ct.nrrd", "seg.seg.nrrd", None, "cpu")
    assert args[:3] == ["screen", "--ct", "ct.nrrd"] and "--model" not in args and "--heatmap-method" not in args
    args = screening.screen_arguments("ct.nrrd", "seg.seg.nrrd", None, "cpu", "occlusion")
    assert args[-2:] == ["--heatmap-method", "occlusion"]
    with pytest.raises(MVCFError, match="heatmap method"):
        screening.screen_arguments("ct.nrrd", "seg.seg.nrrd", None, "cpu", "lime")
    args = screening.screen_arguments("ct.nrrd", "seg.seg.nrrd", None, "cpu", out="w/out")
    assert args[-2:] == ["--out", "w/out"]


def test_the_whole_spine_apply_asks_for_torch_only_for_grad_cam_dicom_heatmaps(spine, tmp_path):
    """A screen runs its network on ONNX Runtime; only the heatmaps of its DICOM output may need torch. Without
    DICOM output the method is moot: the child is not even told it."""
    from MVCFClassifierLib.logic import PredictionLogic

    _, ct_node, seg_node, _, _ = spine
    calls: list = []
    logic = PredictionLogic(temp_root=str(tmp_path), ensure_dependencies=lambda **kw: calls.append(kw) or False)
    assert logic.apply_screen(ct_node, seg_node, device="cpu") is None
    assert logic.apply_screen(ct_node, seg_node, device="cpu", heatmap_method="occlusion") is None
    assert calls == [{"torch": False}, {"torch": False}] and not list(tmp_path.iterdir())
    with pytest.raises(MVCFError, match="heatmap method"):
        logic.apply_screen(ct_node, seg_node, heatmap_method="lime")
    # no segmentation chosen: said before the user is asked to install anything for a run that cannot start
    with pytest.raises(MVCFError, match="no segmentation selected"):
        logic.apply_screen(ct_node, None, device="cpu")
    assert len(calls) == 2
    run = screening.start_screen(ct_node, seg_node, device="cpu", temp_root=str(tmp_path),
                                 heatmap_method="occlusion")
    try:
        assert "--heatmap-method" not in run.command
    finally:
        run.cancel()


def test_whole_spine_run_in_a_child_fills_the_table(spine):
    import sys

    scene, ct_node, seg_node, _, _ = spine
    events = []
    with pytest.raises(MVCFError, match="colour segments by"):
        screening.start_screen(ct_node, seg_node, python_executable=sys.executable, colour_by="size")
    run = screening.start_screen(ct_node, seg_node, python_executable=sys.executable, device="cpu",
                                 colour_by="probability")
    run.wait(events.append)
    assert run.finished and run.fraction == 1.0
    assert any(e.get("event") == "progress" for e in events)
    outputs = run.finish(scene)
    levels = [r["level"] for r in tables.table_rows(outputs.table_node)]
    assert levels == ["T12", "L1", "L2", "L3", "L4", "L5"]        # S1 is only L5's neighbour
    assert outputs.warnings == outputs.result["warnings"] and any("synthetic data" in w for w in outputs.warnings), \
        "the exam's warnings reach the panel (they were dropped: only each vertebra's notes were shown)"
    assert not run.workdir.exists()
    # named for its CT and carrying the notice as the prediction table does (it was "MVCF screen" for every CT)
    assert outputs.table_node.GetName() == f"{ct_node.GetName()} MVCF screen"
    assert outputs.table_node.GetAttribute("MVCFClassifier.disclaimer").startswith("Research use only")
    assert outputs.table_node.GetAttribute("MVCFClassifier.kind") == "screen"
    table = outputs.table_node
    assert table.GetColumnDescription("probability_malignant").endswith(table.GetAttribute("MVCFClassifier.disclaimer"))
    assert (table.GetColumnUnitLabel("height_anterior_mm"), table.GetColumnUnitLabel("trabecular_hu")) == ("mm", "HU")
    # the panel shows the whole-spine overview the child drew (read before its folder went)
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(outputs.overview_png))
    assert picture.format == "PNG" and picture.mode in ("RGB", "RGBA") and min(picture.size) > 200
    # coloured by P(MVCF) as asked; the panel's switch recolours the same segments by grade, and back
    segments = screening.vertebra_segments(seg_node)
    segmentation = seg_node.GetSegmentation()

    def colour(level):
        return tuple(segmentation.GetSegment(segments[level]).GetColor())

    by_row = {r["level"]: r for r in outputs.rows}
    assert outputs.colour_by == "probability"
    assert colour("L1") == pytest.approx(screening.probability_colour(by_row["L1"]["probability_malignant"]))
    outputs.recolour("grade")
    assert outputs.colour_by == "grade"
    for level in ("L1", "L2", "L3", "L4", "L5"):
        assert colour(level) == pytest.approx(screening.GRADE_COLOURS[by_row[level]["genant_grade"]])
    assert colour("T12") == pytest.approx(screening.UNGRADED_COLOUR)            # partial: not graded
    outputs.recolour("probability")
    assert colour("L3") == pytest.approx(screening.probability_colour(by_row["L3"]["probability_malignant"]))
    cancelled = screening.start_screen(ct_node, seg_node, python_executable=sys.executable, device="cpu")
    cancelled.poll()
    cancelled.cancel()
    with pytest.raises(MVCFError, match="cancelled"):
        cancelled.finish(scene)

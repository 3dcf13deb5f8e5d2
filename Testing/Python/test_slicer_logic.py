"""MVCFClassifierLib.logic: scene inputs -> one `mvcf predict --locations` child process -> table and volume
nodes.

Runs real child processes (`python -m mvcf predict`) on the shipped sample CT inside a slicer-core scene.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.locate import VertebraLocation  # noqa: E402
from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths  # noqa: E402
from MVCFClassifierLib import logic, volumes  # noqa: E402
from slicer_testing import segmentation_from_labels  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    from mvcf.read_ct import read_ct, read_mask

    paths = sample_ct_paths()
    return read_ct(paths["ct"]), read_mask(paths["mask"])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def l1_point_ras(mask, vertebra: str = "L1") -> np.ndarray:
    ijk = np.argwhere(mask.voxels == SAMPLE_VERTEBRA_LABELS[vertebra])[:, ::-1].mean(axis=0)
    return mask.index_to_lps(ijk) * [-1, -1, 1]


def scene_with_sample(scene, sample, vertebrae=("L1",)):
    ct, mask = sample
    ct_node = volumes.volume_node_from_ct_image(scene, ct, "sample CT")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "vertebrae")
    for vertebra in vertebrae:
        points.AddControlPoint(vtk.vtkVector3d(*l1_point_ras(mask, vertebra)), vertebra)
    return ct_node, points


class CountingLogic(logic.PredictionLogic):
    """The real `mvcf predict` child, with every command line it was asked for kept."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[list[str]] = []

    def command(self, args):
        self.commands.append(list(args))
        return super().command(args)


def test_result_row_from_a_prediction_and_from_an_error():
    location = VertebraLocation(center_lps=[-10.0, 20.0, 30.0], name="L1", warnings=["from locate"])
    target = logic.Target(name="L1", location=location)
    result = {"probability_malignant": 0.73, "prediction": "MVCF", "threshold": 0.5,
              "model": {"name": "demo", "version": "1.0", "sha256": "ab" * 32}, "device": "cpu",
              "center_lps": [-11.0, 21.0, 31.0], "timing_ms": {"total": 900.0}, "warnings": ["partly outside"]}
    row = logic.result_row(target, result, wall_s=2.5)
    assert row["probability_malignant"] == 0.73 and row["prediction"] == "MVCF" and row["threshold"] == 0.5
    assert (row["model_name"], row["model_version"], row["device"]) == ("demo", "1.0", "cpu")
    assert row["center_ras_mm"] == "11.0, -21.0, 31.0"
    assert row["status"] == "ok" and row["warnings"] == "from locate; partly outside"
    assert row["run_time_s"] == 2.5
    failed = logic.result_row(target, None, wall_s=1.0, error="label 31 is absent")
    assert failed["status"] == "error: label 31 is absent" and "probability_malignant" not in failed
    assert failed["center_ras_mm"] == "10.0, -20.0, 30.0"
    assert {c[0] for c in logic.RESULT_COLUMNS} >= set(row)
    assert logic.time_shares(4.0, [100.0, 300.0]) == [1.0, 3.0]   # one child's wall time, split by own time
    assert logic.time_shares(3.0, [100.0, None, 5.0]) == [1.0, 1.0, 1.0]


def test_targets_from_each_kind_of_input(scene, sample):
    ct, mask = sample
    ct_node, points = scene_with_sample(scene, sample)
    (target,) = logic.PredictionLogic.targets(ct_node, points=points)
    assert target.name == "L1" and not target.segment_id
    query = target.query()
    assert query.unit == "lps" and query.mask is None and query.heatmap is None
    np.testing.assert_allclose(query.point, target.location.center_lps)

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "L1 box")
    roi.SetCenter(*l1_point_ras(mask))
    roi.SetSize(40.0, 40.0, 30.0)
    (box,) = logic.PredictionLogic.targets(ct_node, "ROI", points=points, roi=roi)
    np.testing.assert_allclose(box.location.extent_mm, [40.0, 40.0, 30.0])
    # the child gets the ROI's box, not only its centre: a plane mode's heatmap reaches as deep as the box
    # (it got the centre alone, so the Slicer heatmap of a 2D bundle differed from the box's in the core)
    from mvcf.locations_file import parse_entry

    sent = parse_entry(box.query().to_dict(), Path("."), "entry")
    assert sent.point is None and sent.box is not None
    np.testing.assert_allclose(np.subtract(sent.box[1], sent.box[0]), [40.0, 40.0, 30.0])
    np.testing.assert_allclose(np.add(*sent.box) / 2, box.location.center_lps)

    labels = {SAMPLE_VERTEBRA_LABELS["L1"]: "vertebrae_L1", SAMPLE_VERTEBRA_LABELS["L2"]: "vertebrae_L2"}
    segmentation, ids = segmentation_from_labels(scene, mask.voxels, mask.ijk_to_ras(), ct_node, labels)
    targets = logic.PredictionLogic.targets(ct_node, "Segmentation", segmentation=segmentation,
                                            segment_ids=ids[1:])
    assert [(t.name, t.segment_id) for t in targets] == [("vertebrae_L2", ids[1])]

    twice = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "twice")
    for name in ("L1", "L1 (2)", "L1", "L2"):
        twice.AddControlPoint(vtk.vtkVector3d(*l1_point_ras(mask)), name)
    assert [t.name for t in logic.PredictionLogic.targets(ct_node, points=twice)] == ["L1", "L1 (2)", "L1 (3)", "L2"]

    with pytest.raises(MVCFError, match="exactly one"):
        logic.PredictionLogic.targets(ct_node, points=points, roi=roi)
    with pytest.raises(MVCFError, match="source"):
        logic.PredictionLogic.targets(ct_node, "Mesh", points=points)


class SleepingLogic(logic.PredictionLogic):
    """A child that never finishes on its own, to test Cancel against a real process."""

    def command(self, args):
        return [sys.executable, "-c", "import time\nfor i in range(600):\n    print('{\"event\": \"progress\", "
                "\"done\": 1, \"total\": 4, \"message\": \"working\"}', flush=True); time.sleep(0.1)"]


def test_cancel_kills_the_child_and_adds_no_node(scene, sample, tmp_path):
    ct_node, points = scene_with_sample(scene, sample, ("L1", "L2"))
    nodes_before = scene.GetNumberOfNodes()
    lg = SleepingLogic(temp_root=str(tmp_path))
    run = lg.start(ct_node, lg.targets(ct_node, points=points), views=False, heatmap=True)
    assert (run.workdir / "ct.nrrd").is_file()
    entries = json.loads((run.workdir / "locations.json").read_text(encoding="utf-8"))
    assert [(e["name"], Path(e["heatmap"]).name) for e in entries] == [("L1", "heatmap_0.nii.gz"),
                                                                      ("L2", "heatmap_1.nii.gz")]
    np.testing.assert_allclose(entries[1]["point_lps"], l1_point_ras(sample[1], "L2") * [-1, -1, 1], atol=1e-6)
    deadline = time.monotonic() + 20
    while run.fraction == 0.0 and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    assert run.fraction == pytest.approx(0.25) and run.message == "working"
    child = run._child
    started = time.monotonic()
    run.cancel()
    assert time.monotonic() - started < 5
    assert child.returncode is not None and child.returncode != 0
    assert run.finished and run.cancelled and not run.workdir.exists()
    with pytest.raises(MVCFError, match="cancelled"):
        run.finish(scene)
    assert scene.GetNumberOfNodes() == nodes_before
    assert not list(tmp_path.iterdir())


def test_bad_inputs_are_refused_before_any_child(scene, sample, tmp_path):
    ct_node, points = scene_with_sample(scene, sample)
    lg = logic.PredictionLogic(temp_root=str(tmp_path))
    targets = lg.targets(ct_node, points=points)
    with pytest.raises(MVCFError, match="not found"):
        lg.start(ct_node, targets, model_dir=str(tmp_path / "missing"))
    with pytest.raises(MVCFError, match="device"):
        lg.start(ct_node, targets, device="tpu")
    with pytest.raises(MVCFError, match="no vertebra"):
        lg.start(ct_node, [])
    one_slice = volumes.volume_node_from_array(scene, sample[0].voxels[:1], sample[0].ijk_to_ras(), "one slice")
    with pytest.raises(MVCFError, match="^volume 'one slice' has shape"):
        lg.start(one_slice, targets)
    assert not list(tmp_path.iterdir())


def test_a_failing_child_gives_an_error_row_per_vertebra(scene, sample, tmp_path):
    """Real `mvcf predict` children, segment masks written and read, a folder that is not a model bundle."""
    ct, mask = sample
    ct_node, _ = scene_with_sample(scene, sample)
    labels = {SAMPLE_VERTEBRA_LABELS["L1"]: "vertebrae_L1", SAMPLE_VERTEBRA_LABELS["L2"]: "vertebrae_L2"}
    segmentation, ids = segmentation_from_labels(scene, mask.voxels, mask.ijk_to_ras(), ct_node, labels)
    not_a_bundle = tmp_path / "not_a_bundle"
    not_a_bundle.mkdir()
    lg = CountingLogic(temp_root=str(tmp_path))
    outputs = lg.process(ct_node, segmentation=segmentation, segment_ids=ids, model_dir=str(not_a_bundle),
                         device="cpu", views=False, heatmap=False)
    assert len(lg.commands) == 1 and "--locations" in lg.commands[0]
    assert [row["vertebra"] for row in outputs.rows] == ["vertebrae_L1", "vertebrae_L2"]
    for row in outputs.rows:
        assert row["status"].startswith("error: ") and "bundle" in row["status"], row
        assert "\n" not in row["status"]
    table = outputs.table_node
    assert table.GetNumberOfRows() == 2
    assert math.isnan(slicer.util.arrayFromTableColumn(table, "probability_malignant")[0])
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_bundle"], "temporary folder must be removed"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A real (untrained, tiny) model bundle, so the whole path runs whether or not the demo bundle is in
    this checkout: the probabilities mean nothing, the plumbing is real."""
    from mvcf.models.bundle import save_bundle
    from mvcf.models.networks import build_ensemble, network_config
    from mvcf.views import ViewSpec

    spec = ViewSpec(mode="2.5d-adjacent", size_px=32, spacing_mm=1.5, n_slices=3, slice_gap_mm=3.0,
                    windows=("bone",))
    config = network_config(spec.mode, spec.output_shape(), arch="resnet10-tiny")
    card = {"name": "test-bundle", "version": "0.0.1", "network": config, "ensemble_size": 1,
            "view_spec": spec.to_dict(), "threshold": 0.5, "trained_on_synthetic_data": True,
            "training_data": {"cases": 0, "note": "untrained weights for plumbing tests"},
            "validation_metrics": {"internal_test": {"n": 28, "auc": 0.5, "auc_ci_delong": [0.25, 0.75],
                                                     "sensitivity": {"value": 0.5, "ci": [0.2, 0.8]}}}}
    return save_bundle(tmp_path_factory.mktemp("bundle") / "model", build_ensemble(config, 1), card)


def test_full_prediction_on_the_sample_ct(scene, sample, tmp_path, bundle_dir):
    ct, mask = sample
    ct_node, points = scene_with_sample(scene, sample)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    sh.CreateItem(study, ct_node) if not sh.GetItemByDataNode(ct_node) else sh.SetItemParent(
        sh.GetItemByDataNode(ct_node), study)
    events = []
    outputs = logic.PredictionLogic(temp_root=str(tmp_path)).process(ct_node, points=points, device="cpu",
                                                                     model_dir=str(bundle_dir),
                                                                     on_event=events.append)
    (row,) = outputs.rows
    assert row["status"] == "ok", row
    assert 0.0 <= row["probability_malignant"] <= 1.0
    assert row["prediction"] == ("MVCF" if row["probability_malignant"] >= row["threshold"] else "OVCF")
    assert row["model_name"] and len(row["model_sha256"]) == 64 and row["device"] == "cpu"
    assert any(e.get("event") == "progress" for e in events)
    centre_ras = np.array([float(v) for v in row["center_ras_mm"].split(",")])
    assert np.linalg.norm(centre_ras - l1_point_ras(mask)) < 0.1
    card = logic.model_card(str(bundle_dir))
    assert row["model_sha256"] == card["weights"]["sha256"] and row["model_name"] == "test-bundle"
    html = logic.model_card_html(card)
    assert "Intended use" in html and "synthetic data only" in html
    assert "internal_test: n=28, AUC 0.50 (0.25-0.75), sensitivity 0.50" in html
    assert "synthetic data" in row["warnings"]
    html = logic.results_html(outputs.rows)
    from mvcf.predict import results_decimals

    digits = results_decimals(outputs.rows)
    assert "<td>L1</td>" in html and f"{row['probability_malignant']:.{digits}f}" in html and logic.DISCLAIMER in html

    views = [n for n in outputs.volume_nodes if "model input" in n.GetName()]
    heatmaps = [n for n in outputs.volume_nodes if n.GetName().endswith("heatmap")]
    assert views and heatmaps
    for node in views + heatmaps:
        # each output overlays the CT: its centre voxel is near the vertebra centre
        image = volumes.ct_image_from_volume_node(node)
        middle = image.index_to_lps((np.array(image.size_ijk) - 1) / 2) * [-1, -1, 1]
        assert np.linalg.norm(middle[:2] - centre_ras[:2]) < 3.0, node.GetName()
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(outputs.table_node)) == study
    assert outputs.table_node.GetColumnDescription("probability_malignant").endswith(logic.DISCLAIMER)
    assert not [p for p in tmp_path.iterdir()]
    assert [n.GetName() for n in views] == ["L1 model input axial bone"]
    np.testing.assert_allclose(volumes.ct_image_from_volume_node(views[0]).spacing, [1.5, 1.5, 3.0])


def test_the_heatmap_method_reaches_the_child_and_the_warm_worker(scene, sample, tmp_path):
    ct_node, points = scene_with_sample(scene, sample)
    lg = logic.PredictionLogic(temp_root=str(tmp_path))
    targets = lg.targets(ct_node, points=points)
    with pytest.raises(MVCFError, match="unknown heatmap method 'lime'"):
        lg.start(ct_node, targets, heatmap=True, heatmap_method="lime")
    assert not list(tmp_path.iterdir())
    plain = lg.start(ct_node, targets, heatmap=True)
    assert "--heatmap-method" not in plain._command()
    run = lg.start(ct_node, targets, heatmap=True, heatmap_method="occlusion")
    command = run._command()
    assert command[command.index("--heatmap-method") + 1] == "occlusion"
    submitted: list = []
    lg.worker = type("Worker", (), {"submit": lambda self, request: submitted.append(request) or request})()
    run._start_child()
    assert submitted[0]["heatmap_method"] == "occlusion"
    for r in (plain, run):
        r.cleanup()


def test_model_input_and_heatmap_files_become_volume_nodes_on_the_ct(scene, sample, tmp_path):
    """The model-input volumes and the heatmap file the child wrote land in the scene with the geometry of
    the grid they were sampled on, so they overlay the CT; nothing is rebuilt on the Slicer side."""
    import SimpleITK as sitk

    from mvcf.views import ViewSpec, build_views

    ct, mask = sample
    ct_node, points = scene_with_sample(scene, sample)
    lg = logic.PredictionLogic(temp_root=str(tmp_path))
    (target,) = lg.targets(ct_node, points=points)
    run = lg.start(ct_node, [target], views=True, heatmap=True)
    entry = json.loads((run.workdir / run.LOCATIONS_FILE).read_text(encoding="utf-8"))[0]
    assert Path(entry["views"]).name == "views_0" and Path(entry["heatmap"]).name == "heatmap_0.nii.gz"
    spec = ViewSpec(mode="2.5d-adjacent", size_px=48, spacing_mm=1.0, n_slices=3, slice_gap_mm=2.0,
                    windows=("bone", "soft"))
    centre = target.location.center_lps
    expected = build_views(ct, centre, spec)
    files = expected.write_volumes(entry["views"])  # what `mvcf predict` writes for this entry
    assert [f.name for f in files] == ["axial_bone.nii.gz", "axial_soft.nii.gz"]
    for window, path in enumerate(files):
        node = run._load_volume(scene, path, f"L1 model input {window}")
        image = volumes.ct_image_from_volume_node(node)
        assert image.voxels.shape == (3, 48, 48)
        np.testing.assert_allclose(image.voxels, expected.array[window::2], atol=1e-6)
        np.testing.assert_allclose(image.index_to_lps([23.5, 23.5, 1.0]), centre, atol=1e-4)
        np.testing.assert_allclose(image.spacing, [1.0, 1.0, 2.0])

    grid = expected.grids[0]
    heat = grid.to_ctimage(np.random.default_rng(0).random(grid.size[::-1]).astype(np.float32))
    sitk.WriteImage(heat.to_sitk(), str(run.workdir / "heatmap_0.nii.gz"))
    heat_node = run._load_heatmap(scene, Path("heatmap_0.nii.gz"), "L1 heatmap")
    display = heat_node.GetDisplayNode()
    assert not display.GetAutoWindowLevel() and (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0, 1)
    loaded = volumes.ct_image_from_volume_node(heat_node)
    np.testing.assert_allclose(loaded.voxels, heat.voxels)
    np.testing.assert_allclose(loaded.origin, heat.origin, atol=1e-4)
    np.testing.assert_allclose(loaded.direction, heat.direction, atol=1e-6)
    run.cleanup()
    assert not run.workdir.exists()


class FakeResultLogic(logic.PredictionLogic):
    """A real child that reads the locations file and returns prediction-shaped results for it at once."""

    def command(self, args):
        code = ("import json, sys\n"
                "entries = json.load(open(sys.argv[1]))\n"
                "results = [{'name': e['name'], 'probability_malignant': 0.4, 'prediction': 'OVCF', "
                "'threshold': 0.5, 'model': {'name': 'm', 'version': '1', 'sha256': '00'}, 'device': 'cpu', "
                "'center_lps': e['point_lps'], 'timing_ms': {'total': 1.0}, 'warnings': [], "
                "'views': [e['views'] + '/axial_bone.nii.gz'] if 'views' in e else []} for e in entries]\n"
                "print(json.dumps({'event': 'result', 'results': results}))\n")
        return [sys.executable, "-c", code, args[args.index("--locations") + 1]]


def test_results_are_added_all_or_nothing(scene, sample, tmp_path):
    ct_node, points = scene_with_sample(scene, sample)
    lg = FakeResultLogic(temp_root=str(tmp_path))
    run = lg.start(ct_node, lg.targets(ct_node, points=points), views=True, heatmap=False)
    run.wait()  # the fake child names a model-input file it never wrote: loading it fails in finish()
    assert run.rows[0]["status"] == "ok" and run.rows[0]["prediction"] == "OVCF"
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(Exception):
        run.finish(scene)
    assert scene.GetNumberOfNodes() == nodes_before, "a failed finish must not leave half the outputs"
    assert not run.workdir.exists()

    good = lg.start(ct_node, lg.targets(ct_node, points=points), views=False, heatmap=False)
    good.wait()
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "my results")
    outputs = good.finish(scene, table_node=table)
    assert outputs.table_node is table and table.GetName() == "my results" and table.GetNumberOfRows() == 1
    assert table.GetAttribute("MVCFClassifier.disclaimer") == logic.DISCLAIMER


def test_one_child_classifies_every_target_and_a_failing_one_keeps_the_others(scene, sample, tmp_path,
                                                                             bundle_dir):
    """Two segments and a point outside the CT, one real `mvcf predict` child: two result rows with their
    heatmaps, one error row, progress per vertebra mapped onto the run's fraction."""
    ct, mask = sample
    ct_node, _ = scene_with_sample(scene, sample)
    labels = {SAMPLE_VERTEBRA_LABELS["L1"]: "vertebrae_L1", SAMPLE_VERTEBRA_LABELS["L2"]: "vertebrae_L2"}
    segmentation, ids = segmentation_from_labels(scene, mask.voxels, mask.ijk_to_ras(), ct_node, labels)
    lg = CountingLogic(temp_root=str(tmp_path))
    targets = lg.targets(ct_node, "Segmentation", segmentation=segmentation, segment_ids=ids)
    targets.append(logic.Target(name="outside", location=VertebraLocation(center_lps=[5000.0, 0.0, 0.0])))
    started = time.monotonic()
    run = lg.start(ct_node, targets, model_dir=str(bundle_dir), device="cpu", views=False, heatmap=True,
                   segmentation=segmentation)
    events, fractions = [], []
    deadline = time.monotonic() + 300
    while not run.finished and time.monotonic() < deadline:
        events += run.poll()
        fractions.append(run.fraction)
        time.sleep(0.05)
    wall = time.monotonic() - started
    assert run.finished and len(lg.commands) == 1
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    progress = [(e["done"], e["total"], e["message"]) for e in events if e.get("event") == "progress"]
    assert progress == [(0, 8, "reading CT"), (1, 8, "loading the model"), (2, 8, "vertebrae_L1 (1/3)"),
                        (3, 8, "vertebrae_L2 (2/3)"), (4, 8, "outside (3/3)"),   # then one step per heatmap
                        (5, 8, "vertebrae_L1: heatmap (gradcam)"), (6, 8, "vertebrae_L2: heatmap (gradcam)"),
                        (8, 8, "done")]
    assert run.message == "done: 2 of 3 classified"

    outputs = run.finish(scene)
    ok, ok2, failed = outputs.rows
    assert [r["vertebra"] for r in outputs.rows] == ["vertebrae_L1", "vertebrae_L2", "outside"]
    assert ok["status"] == ok2["status"] == "ok" and ok["model_name"] == "test-bundle"
    assert failed["status"].startswith("error: ") and "outside the CT" in failed["status"]
    assert "probability_malignant" not in failed and outputs.results[2] is None
    # a vertebra refused before its prediction started (outside the CT) has no time of its own to be given
    assert ok["run_time_s"] > 0 and ok2["run_time_s"] > 0 and failed["run_time_s"] >= 0
    assert sum(r["run_time_s"] for r in outputs.rows) <= wall
    centre_ras = np.array([float(v) for v in ok2["center_ras_mm"].split(",")])
    assert np.linalg.norm(centre_ras - l1_point_ras(mask, "L2")) < 1.0
    assert sorted(n.GetName() for n in outputs.volume_nodes) == ["vertebrae_L1 heatmap", "vertebrae_L2 heatmap"]
    table = outputs.table_node
    assert table.GetNumberOfRows() == 3
    assert math.isnan(slicer.util.arrayFromTableColumn(table, "probability_malignant")[2])
    assert not list(tmp_path.iterdir())


class ScriptedChildLogic(logic.PredictionLogic):
    """A real child that prints the given protocol lines and exits with the given code."""

    def __init__(self, lines, code, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines, self.code = lines, code

    def command(self, args):
        return [sys.executable, "-c", f"import sys\nprint({chr(10).join(self.lines)!r})\nsys.exit({self.code})"]


def test_per_vertebra_errors_are_kept_even_when_every_vertebra_failed(scene, sample, tmp_path):
    ct_node, points = scene_with_sample(scene, sample, ("L1", "L2"))
    results = [{"name": "L1", "error": "label 1 is absent"}, {"name": "L2", "error": "outside the CT"}]
    lines = [json.dumps({"event": "result", "results": results}),
             json.dumps({"event": "error", "message": "none of the 2 vertebrae could be classified"})]
    lg = ScriptedChildLogic(lines, 2, temp_root=str(tmp_path))
    run = lg.start(ct_node, lg.targets(ct_node, points=points), views=False, heatmap=False)
    run.wait()
    assert [r["status"] for r in run.rows] == ["error: label 1 is absent", "error: outside the CT"]
    assert run.finish(scene).table_node.GetNumberOfRows() == 2

    short = ScriptedChildLogic([json.dumps({"event": "result", "results": results[:1]})], 0, temp_root=str(tmp_path))
    run = short.start(ct_node, short.targets(ct_node, points=points), views=False, heatmap=False)
    run.wait()
    assert [r["status"] for r in run.rows] == ["error: the prediction returned no result for this vertebra"] * 2
    outputs = run.finish(scene)
    assert outputs.table_node.GetNumberOfRows() == 2 and not list(tmp_path.iterdir())


def test_a_full_temporary_disk_is_one_error_line(tmp_path):
    """ITK's write error is a multi-line RuntimeError; the files the child reads are written under
    fileio.write_errors, so the panel shows one line (RLIMIT_FSIZE stands in for a full disk)."""
    import subprocess

    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))\n"
              "from pathlib import Path\n"
              "from mvcf.errors import MVCFError\n"
              "from mvcf.read_ct import read_ct\n"
              "from mvcf.resources import sample_ct_paths\n"
              "from MVCFClassifierLib.logic import write_image\n"
              "try:\n"
              f"    write_image(read_ct(sample_ct_paths()['ct']), Path({str(tmp_path / 'ct.nrrd')!r}))\n"
              "except MVCFError as exc:\n"
              "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cannot write {tmp_path / 'ct.nrrd'}: the image writer failed (disk full or not " \
                                  "writable?)"


def test_the_panels_numbers_never_contradict_their_calls():
    """Two decimals showed P = t + 0.0007 and P = t - 0.0004 as "0.66 MVCF" and "0.66 OVCF" in one table, at a
    threshold the card showed as 0.661; the table now states the threshold with the decimals its rows need."""
    import re

    t = 0.6610353
    rows = [{"vertebra": "L1", "probability_malignant": t + 0.0007, "prediction": "MVCF", "threshold": t,
             "status": "ok"},
            {"vertebra": "L2", "probability_malignant": t - 0.0004, "prediction": "OVCF", "threshold": t,
             "status": "ok"}]
    html = logic.results_html(rows)
    shown = dict(re.findall(r"<td>(L\d)</td><td align='center'>([0-9.]+)</td>", html))
    threshold = float(re.search(r"MVCF at P\(MVCF\) &ge; ([0-9.]+)", html).group(1))
    assert float(shown["L1"]) >= threshold > float(shown["L2"]), (shown, threshold)


def test_a_table_of_another_ct_or_of_a_screen_is_never_refilled_under_its_name(scene, sample, tmp_path,
                                                                                 bundle_dir):
    """The panel passes the last results table to the next Apply: Patient B's rows went into "Patient A CT
    MVCF results", and a whole-spine screen replaced the marked vertebrae's results without a word. Now a
    table holding another CT's or another kind's results stays as it is and the run gets its own table; the
    same kind on the same CT (or a table the user picked that no run has filled) is refilled."""
    from MVCFClassifierLib import tables
    from mvcf.ctimage import CTImage

    ct, mask = sample
    ct_a, points_a = scene_with_sample(scene, sample)
    shifted = CTImage(ct.voxels, ct.spacing, ct.origin + np.array([0.0, 0.0, 500.0]), ct.direction)
    ct_b = volumes.volume_node_from_ct_image(scene, shifted, "patient B CT")
    points_b = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "B")
    points_b.AddControlPoint(vtk.vtkVector3d(*(l1_point_ras(mask) + [0.0, 0.0, 500.0])), "L1")
    run = logic.PredictionLogic(temp_root=str(tmp_path))
    kwargs = {"device": "cpu", "model_dir": str(bundle_dir), "views": False, "heatmap": True}

    def heatmaps():
        return sorted(n.GetAttribute("MVCFClassifier.ct") for n in
                      (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())) if n.GetName() == "L1 heatmap")
    first = run.process(ct_a, points=points_a, **kwargs).table_node
    nodes = scene.GetNumberOfNodes()
    again = run.process(ct_a, points=points_a, table_node=first, **kwargs).table_node
    assert heatmaps() == [ct_a.GetID()] and scene.GetNumberOfNodes() == nodes   # replaced, not added again
    other = run.process(ct_b, points=points_b, table_node=again, **kwargs).table_node
    assert heatmaps() == sorted([ct_a.GetID(), ct_b.GetID()])                    # A's results stay
    assert again is first and other is not first
    assert first.GetName() == "sample CT MVCF results" and other.GetName() == "patient B CT MVCF results"
    assert tables.table_rows(first)[0]["center_ras_mm"] != tables.table_rows(other)[0]["center_ras_mm"]
    assert other.GetAttribute("MVCFClassifier.ct") == ct_b.GetID()
    assert tables.table_for(first, ct_a, "screen") is None        # a screen of A gets its own table too
    mine = scene.AddNewNodeByClass("vtkMRMLTableNode", "my table")
    assert tables.table_for(mine, ct_b, "screen") is mine


def test_segments_named_by_level_are_chosen_as_the_screen_chooses_them(scene, sample):
    """With no segment chosen, a segmentation named "S1", "L2", "L1" (not vertebrae_*) classified S1 unasked
    in the file's order, and one with L1 and two ribs gave each rib a fracture call; a second L2 was dropped
    from the screen without a word."""
    from MVCFClassifierLib import screening

    ct, mask = sample
    ct_node = volumes.volume_node_from_ct_image(scene, ct, "sample CT")
    values = SAMPLE_VERTEBRA_LABELS
    labels = {values["S1"]: "S1", values["L2"]: "L2", values["L1"]: "L1", values["L3"]: "Vertebra L2",
              values["L4"]: "rib_left_12"}
    segmentation, ids = segmentation_from_labels(scene, mask.voxels, mask.ijk_to_ras(), ct_node, labels)
    targets = logic.PredictionLogic.targets(ct_node, "Segmentation", segmentation=segmentation)
    assert [t.name for t in targets] == ["L1", "L2", "S1"]
    assert targets[2].skipped and not targets[0].skipped and not targets[1].skipped
    assert any("is a second L2" in w for w in targets[1].location.warnings)
    notes: list[str] = []
    assert sorted(screening.vertebra_segments(segmentation, notes)) == ["L1", "L2", "S1"]
    assert len(notes) == 1 and "second L2" in notes[0]

"""Every decision the two panels make lives in the logic and is tested here (the widgets only copy these
answers onto Qt widgets): Apply's state, the model folder, the segment selection text, the skipped-vertebra
line, the training buttons, the output folder and Resume, the end-of-run message, the results shown; and
the Reload & Test self-test itself, run end to end on the shipped sample CT in a slicer-core scene."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

slicer = pytest.importorskip("slicer")

from MVCFClassifierLib import logic  # noqa: E402
from MVCFClassifierLib.process import RunOutcome  # noqa: E402
from MVCFTrainingLib.logic import TrainingLogic, path_text  # noqa: E402


def test_classifier_panel_decisions():
    scene = slicer.vtkMRMLScene()
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    assert logic.apply_state(ct, "Point list", points=points) == (True, "Classify the marked vertebrae")
    assert not logic.apply_state(ct, "ROI", points=points)[0], "the chosen source must be the one marked"
    assert not logic.apply_state(None, "Point list", points=points)[0]
    assert logic.marked_input("Segmentation", points=points) is None
    assert logic.chosen_model_dir(True, Path("/models/a")) is None
    assert logic.chosen_model_dir(False, Path(".")) is None and logic.chosen_model_dir(False, None) is None
    assert logic.chosen_model_dir(False, Path("/models/a")) == "/models/a"
    assert logic.segment_ids_from_text("a,b,,c") == ["a", "b", "c"] and logic.segment_ids_from_text("") == []
    targets = [logic.Target("L1", None), logic.Target("T11", None, skipped="cut by the edge of the CT")]
    assert logic.skipped_summary(targets) == "Skipped 1 of 2: T11 (cut by the edge of the CT)"
    assert logic.skipped_summary(targets[:1]) == ""


def parameters(tmp_path: Path, **overrides) -> SimpleNamespace:
    fields = dict(manifestPath=tmp_path / "cohort" / "manifest.csv", outputFolder=Path("."), resume=False,
                  readerCsv=Path("."), cohortTable=None, bundleFolder=Path("."), viewMode="3d",
                  architecture="resnet10-tiny", epochs=2, learningRate=5e-4, folds=3, externalInstitution=" B ",
                  device="cpu", seed=4, viewSize=48, nSlices=0, sliceGap=0.0, metricsTable=None, studyTable=None, rocChart=None,
                  readerTable=None, readerAnalysisTable=None)
    return SimpleNamespace(**{**fields, **overrides})


def test_training_settings_output_folder_and_resume(tmp_path):
    p = parameters(tmp_path)
    settings = TrainingLogic.settings(p)
    assert (settings.view, settings.folds, settings.external, settings.size_px) == ("3d", 3, "B", 48)
    assert (settings.training.lr, settings.training.epochs, settings.training.arch) == (5e-4, 2, "resnet10-tiny")
    assert "--n-slices" not in settings.arguments() and "--slice-gap" not in settings.arguments()
    stack = dict(nSlices=5, sliceGap=2.5)
    adjacent = TrainingLogic.settings(parameters(tmp_path, viewMode="2.5d-adjacent", **stack)).arguments()
    assert adjacent[adjacent.index("--n-slices") + 1] == "5" and adjacent[adjacent.index("--slice-gap") + 1] == "2.5"
    flat = TrainingLogic.settings(parameters(tmp_path, **stack))
    assert (flat.n_slices, flat.slice_gap_mm) == (0, 0.0), "the 3d view has no stack: a training run leaves it out"
    studied = TrainingLogic.settings(parameters(tmp_path, **stack), study=True)
    assert (studied.n_slices, studied.slice_gap_mm) == (5, 2.5), "a study trains the stacked modes too"
    folder, resume = TrainingLogic.outputFolder(p, study=False, now=lambda: "T")
    assert folder == (tmp_path / "cohort" / "mvcf_runs" / "train-T").resolve() and not resume
    chosen = tmp_path / "mine"
    assert TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen), True) == (chosen, False)
    chosen.mkdir()
    (chosen / "log.txt").write_text("earlier run")
    moved, resume = TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen, resume=True), True, lambda: "U")
    assert moved.name == "study-U" and not resume, "a used folder without a checkpoint is never overwritten"
    (chosen / "notes-checkpoint.ipynb").write_text("{}")   # a user's file named like a checkpoint: not a run
    moved, resume = TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen, resume=True), True, lambda: "W")
    assert moved.name == "study-W" and not resume
    (chosen / "cohort.json").write_text("{}")   # a training run's record: no study to continue
    assert not TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen, resume=True), True)[1]
    assert TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen, resume=True), False) == (chosen, True)
    (chosen / "study_config.json").write_text("{}")
    assert TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=chosen, resume=True), True) == (chosen, True)
    (tmp_path / "afile").write_text("not a folder")
    moved, _ = TrainingLogic.outputFolder(parameters(tmp_path, outputFolder=tmp_path / "afile"), False, lambda: "V")
    assert moved.name == "train-V", "a file where the folder should be is left alone (it was NotADirectoryError)"
    assert path_text(Path(".")) == "" and path_text(None) == ""


def test_training_buttons_follow_the_run(tmp_path):
    lg = TrainingLogic(ensure_dependencies=lambda: True)
    idle = lg.buttonStates(parameters(tmp_path))
    assert (idle["train"].text, idle["train"].enabled) == ("Train", True)
    assert (idle["mrmc"].text, idle["mrmc"].enabled) == ("Run MRMC analysis", False)  # no reader CSV yet
    assert not idle["saveBundle"].enabled and not idle["useInClassifier"].enabled and not idle["resume"].enabled
    assert not lg.buttonStates(parameters(tmp_path, manifestPath=Path(".")))["study"].enabled

    lg.run, lg.kind = object(), "study"  # a study is running
    busy = lg.buttonStates(parameters(tmp_path, readerCsv=tmp_path / "r.csv"))
    assert (busy["study"].text, busy["study"].enabled) == ("Cancel", True)
    assert not busy["train"].enabled and not busy["mrmc"].enabled and not busy["saveManifest"].enabled

    lg.lastOutcome = RunOutcome("succeeded", 0)
    lg.lastRunFolder = tmp_path / "run"
    (lg.lastRunFolder / "model").mkdir(parents=True)
    done = lg.buttonStates(parameters(tmp_path, bundleFolder=tmp_path / "keep"))
    assert done["saveBundle"].enabled and done["useInClassifier"].enabled and done["study"].text == "Run study"
    assert lg.trainedBundle() == lg.lastRunFolder / "model"


def test_end_of_run_messages_and_reader_study_results(tmp_path):
    lg = TrainingLogic(ensure_dependencies=lambda: True)
    lg.kind, lg.lastOutcome = "train", RunOutcome("cancelled", -15, None, "cancelled by the user")
    assert lg.endMessage().startswith("Cancelled. Check 'Resume'")
    lg.kind = "mrmc"
    assert lg.endMessage() == "Cancelled."
    lg.lastOutcome = RunOutcome("failed", 2, None, "manifest row 3: bad label")
    assert lg.endMessage() == "Failed: manifest row 3: bad label"

    scene = slicer.vtkMRMLScene()
    p = parameters(tmp_path)
    lg.lastResult = {"reader_auc": {"0": {"r1": 0.8}, "1": {"r1": 0.9}},
                     "mean_auc": {"0": 0.8, "1": 0.9}, "analyses": []}
    message = lg.showResults(scene, p, "mrmc")
    assert message.startswith("Reader study: mean AUC per modality 0: 0.800, 1: 0.900")
    assert p.readerTable is not None and p.readerTable.GetNumberOfRows() >= 1


def test_the_reload_and_test_self_test_runs_end_to_end_on_the_sample_ct(tmp_path):
    """What MVCFClassifierTest.test_sample_ct_end_to_end runs inside Slicer: the demo model on the CPU,
    L1 and L2 classified with heatmaps, T11 (cut by the top of the scan) skipped and reported."""
    from MVCFClassifierLib.selftest import EXPECTED_STATUS, run_self_test

    scene = slicer.vtkMRMLScene()
    outputs, problems = run_self_test(scene, logic.PredictionLogic(temp_root=str(tmp_path)), device="cpu")
    assert problems == []
    assert {row["vertebra"]: row["status"] for row in outputs.rows} == EXPECTED_STATUS
    assert outputs.table_node.GetNumberOfRows() == 3 and not list(tmp_path.iterdir())
    assert any("model input" in node.GetName() for node in outputs.volume_nodes)

"""The Training module's evaluation runs in the same warm `mvcf worker` as the Classifier's Applies: two
evaluations in one process (torch and the bundle loaded once), the results into a slicer-core scene, a bad
request fails alone, Cancel and scene close end the worker (issue 11)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")

from mvcf.inference import default_model_path  # noqa: E402
from MVCFClassifierLib.worker import WarmWorker  # noqa: E402
from MVCFTrainingLib.logic import TrainingLogic  # noqa: E402
from tiny_cohort import make_tiny_cohort  # noqa: E402

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    manifest = make_tiny_cohort(root / "cohort", n_per_site=4)
    bundle = root / "bundle"
    shutil.copytree(default_model_path(), bundle)
    return manifest, bundle


def _parameters(manifest: Path, bundle: Path, **overrides) -> SimpleNamespace:
    fields = dict(manifestPath=manifest, bundleFolder=bundle, device="cpu", readerCsv=Path("."),
                  cohortTable=None, outputFolder=Path("."), metricsTable=None, rocChart=None)
    return SimpleNamespace(**{**fields, **overrides})


def _logic() -> TrainingLogic:
    logic = TrainingLogic(ensure_dependencies=lambda: True, python_executable=sys.executable)
    logic.worker = WarmWorker(sys.executable, args=["--device", "cpu"], env=ENV)
    return logic


def test_two_evaluations_share_one_worker_and_show_their_metrics(cohort):
    manifest, bundle = cohort
    logic, scene = _logic(), slicer.vtkMRMLScene()
    p = _parameters(manifest, bundle)
    assert logic.buttonStates(p)["evaluate"].enabled and logic.buttonStates(p)["evaluate"].text == "Evaluate model"
    try:
        outs, reports = [], []
        for stamp in ("first", "second"):
            out = logic.startEvaluation(p, now=lambda: stamp)
            assert logic.buttonStates(p)["evaluate"].text == "Cancel"
            outcome = logic.wait(timeout=300)
            assert outcome.status == "succeeded", outcome.error
            status = logic.showResults(scene, p)
            assert "Evaluation finished" in status and "on 8 cases" in status and str(out) in status
            outs.append(out)
            reports.append(json.loads((out / "metrics.json").read_text(encoding="utf-8")))
        assert logic.worker.starts == 1 and logic.worker.alive
        assert outs[0] != outs[1] and outs[0].parent == manifest.resolve().parent / "mvcf_runs"
        assert reports[0]["overall"] == reports[1]["overall"] and reports[0]["overall"]["n"] == 8
        assert (outs[0] / "predictions.csv").read_text() == (outs[1] / "predictions.csv").read_text()
        table = p.metricsTable
        assert table.GetNumberOfRows() == 3  # all, A, B
        assert [table.GetCellText(r, 2) for r in range(3)] == ["all", "A", "B"]
        assert p.rocChart is not None and p.rocChart.GetNumberOfPlotSeriesNodes() == 2  # the ROC and chance
        assert float(table.GetCellText(0, 6)) == pytest.approx(reports[0]["overall"]["auc"], abs=1e-3)
    finally:
        logic.close()
    assert not logic.worker.alive


def test_the_status_line_names_cases_the_model_was_trained_on(cohort, tmp_path):
    """An evaluation on the model's own training CTs is no test of it; the panel's status line says so (the
    report's training_overlap, from the card's training_scans)."""
    from mvcf.manifest import read_manifest
    from mvcf.training_scans import METHOD, scan_digest

    manifest, bundle = cohort
    records = read_manifest(manifest)
    trained = shutil.copytree(bundle, tmp_path / "trained_on_A_001")
    card = json.loads((trained / "model.json").read_text(encoding="utf-8"))
    card["training_scans"] = {"method": METHOD, "count": 1, "digests": [scan_digest(records[1].ct)]}
    (trained / "model.json").write_text(json.dumps(card), encoding="utf-8")
    logic, scene = _logic(), slicer.vtkMRMLScene()
    try:
        for model, expected in ((bundle, None), (trained, "1 of 8 cases have a CT the model was trained on "
                                                          f"({records[1].case_id})")):
            logic.startEvaluation(_parameters(manifest, model), now=lambda: model.name)
            assert logic.wait(timeout=300).status == "succeeded"
            status = logic.showResults(scene, _parameters(manifest, model))
            if expected is None:
                assert "have a CT the model" not in status
            else:
                assert f"Warning: {expected}: these metrics are not an independent test." in status
    finally:
        logic.close()


def test_a_bad_evaluation_fails_alone_and_cancel_and_scene_close_end_the_worker(cohort, tmp_path):
    manifest, bundle = cohort
    logic = _logic()
    try:
        bad = _parameters(tmp_path / "missing.csv", bundle)
        logic.startEvaluation(bad, now=lambda: "bad")
        outcome = logic.wait(timeout=300)
        assert outcome.status == "failed" and "missing.csv" in outcome.error and "\n" not in outcome.error
        pid = logic.worker.pid
        assert pid is not None
        logic.startEvaluation(_parameters(manifest, bundle), now=lambda: "cancelled")
        logic.cancel()
        assert not logic.worker.alive
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert logic.poll() is False and logic.lastOutcome.status == "cancelled"
        logic.startEvaluation(_parameters(manifest, bundle), now=lambda: "again")
        assert logic.wait(timeout=300).status == "succeeded" and logic.worker.starts == 2
        logic.close(scene_only=True)  # scene close
        assert not logic.worker.alive
    finally:
        logic.close()
    with pytest.raises(ValueError, match="No model to evaluate"):
        TrainingLogic(ensure_dependencies=lambda: True).startEvaluation(_parameters(manifest, tmp_path / "x"))


def test_an_evaluation_of_one_class_and_the_models_warnings_reach_the_status_line(tmp_path):
    """A cohort with one class has no AUC: the status line raised TypeError (formatting None) after the table
    was written; and the model's own warnings (trained on synthetic data only), which `mvcf evaluate` prints,
    never reached the panel."""
    from mvcf.metrics import summarize

    logic, scene = TrainingLogic(ensure_dependencies=lambda: True, python_executable=sys.executable), \
        slicer.vtkMRMLScene()
    p = _parameters(tmp_path / "manifest.csv", tmp_path / "model")
    logic.lastResult = {"report": {"overall": summarize([0, 0, 0], [0.1, 0.2, 0.3], 0.5),
                                   "warnings": ["this model was trained on synthetic data only"]}}
    logic.lastEvaluation = tmp_path / "evaluation"
    status = logic.showResults(scene, p, kind="evaluate")
    assert "AUC n/a (one class only: AUC undefined) on 3 cases" in status
    assert "Warning: this model was trained on synthetic data only." in status


def test_saving_the_model_never_copies_it_into_itself_or_over_another(tmp_path):
    """Save bundle into the trained bundle's own folder copied it into itself (a half copy left there); into
    a folder holding an earlier export it nested the bundle inside that bundle; a file gave a raw
    NotADirectoryError; an empty target wrote into the working directory."""
    from mvcf.errors import MVCFError

    logic = TrainingLogic(ensure_dependencies=lambda: True, python_executable=sys.executable)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.json").write_text("{}")
    (run / "model" / "weights.safetensors").write_bytes(b"w")
    logic.lastRunFolder = run
    before = sorted(p.name for p in (run / "model").iterdir())
    (tmp_path / "a file").write_text("x")
    for target, says in ((str(run / "model"), "the trained model itself"), (str(run / "model" / "sub"), "inside it"),
                         (str(tmp_path / "a file"), "is a file"), ("", "choose a folder")):
        with pytest.raises(MVCFError, match=says):
            logic.saveBundle(target)
    assert sorted(p.name for p in (run / "model").iterdir()) == before
    saved = logic.saveBundle(str(tmp_path / "export"))
    assert (saved / "model.json").is_file()
    with pytest.raises(MVCFError, match="holds a model already"):
        logic.saveBundle(str(saved))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert logic.saveBundle(str(mine)) == mine / "run-model"
    with pytest.raises(MVCFError, match="exists already"):
        logic.saveBundle(str(mine))
    assert (mine / "notes.txt").read_text() == "keep"

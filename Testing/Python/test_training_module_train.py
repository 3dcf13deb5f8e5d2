"""The MVCFTraining child-process protocol end to end with the real core: a cohort built in an MRML scene,
`mvcf train` in a child process (progress with ETA, metrics into the live plot, Cancel, --resume, results
into table/ROC nodes), the exit code of a user error, and `mvcf stats mrmc` into tables."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from MVCFClassifierLib.volumes import volume_node_from_array  # noqa: E402
from MVCFTrainingLib.cohort import cohort_table_from_scene, save_manifest_from_table  # noqa: E402
from MVCFTrainingLib.plots import LiveCurves  # noqa: E402
from MVCFTrainingLib.results import mrmc_tables, show_study_results, show_training_results  # noqa: E402
from MVCFClassifierLib.process import ChildRun  # noqa: E402
from MVCFTrainingLib.runner import (EventRouter, RunSettings, module_training, mrmc_arguments,  # noqa: E402
                                    resumable, study_arguments, train_arguments)

TINY = RunSettings(view="2d", folds=1, external="B", size_px=32,
                   training=module_training(arch="resnet10-tiny", epochs=3, device="cpu", seed=1))
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_to_end(args, timeout: float, **callbacks):
    """A ChildRun of `mvcf <args>` waited for, its events routed to the callbacks; its outcome."""
    run = ChildRun(env=CHILD_ENV).start(args)
    run.wait(on_event=EventRouter(**callbacks), timeout=timeout)
    return run.outcome()


@pytest.fixture(scope="module")
def scene_cohort(tmp_path_factory):
    return _scene_cohort(tmp_path_factory.mktemp("cohort"))


def _scene_cohort(tmp_path):
    """20 small CTs (12 at site A, 8 at B), each with a segmentation of its bony 'body' (so the study's
    baseline has masks); MVCF cases have a lytic core."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    rng = np.random.default_rng(0)
    scene = slicer.vtkMRMLScene()
    k, j, i = np.mgrid[0:32, 0:32, 0:32]
    r = np.sqrt((k - 16) ** 2 + (j - 16) ** 2 + (i - 16) ** 2)
    ijk_to_ras = np.diag([-2.0, -2.0, 2.0, 1.0])
    ijk_to_ras[:3, 3] = [32.0, 32.0, -32.0]
    for n in range(20):
        site, label = ("A" if n < 12 else "B"), ("MVCF" if n % 2 else "OVCF")
        hu = 40 + rng.normal(0, 15, r.shape)
        hu[r < 8] = 700
        core = r < 6
        hu[core] = (40 if label == "MVCF" else 250) + rng.normal(0, 30, int(core.sum()))
        volume = volume_node_from_array(scene, hu.astype(np.int16), ijk_to_ras, f"{site}{n:02d}")
        volume.SetAttribute("MVCF.label", label)
        volume.SetAttribute("MVCF.institution", site)
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{site}{n:02d} segmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        labelmap = slicer.vtkOrientedImageData()
        labelmap.SetExtent(0, 31, 0, 31, 0, 31)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(32, 32, 32)[:] = r < 8
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        labelmap.SetImageToWorldMatrix(matrix)
        segment = slicer.vtkSegment()
        segment.SetName("L1")
        segment.AddRepresentation("Binary labelmap", labelmap)
        segmentation.GetSegmentation().AddSegment(segment)
    table = cohort_table_from_scene(scene)
    save_manifest_from_table(scene, table, tmp_path / "cohort" / "manifest.csv")
    return scene, tmp_path / "cohort" / "manifest.csv"


@pytest.mark.slow
def test_train_cancel_resume_and_results(scene_cohort, tmp_path):
    scene, manifest = scene_cohort
    out = tmp_path / "run"
    curves = LiveCurves(scene, "test")
    progress: list = []
    router = EventRouter(on_metrics=curves.add, on_progress=lambda d, t, m, eta: progress.append((d, t, m, eta)))
    run = ChildRun(env=CHILD_ENV).start(train_arguments(manifest, out, TINY))
    deadline = time.monotonic() + 240
    while not run.finished() and not any("epoch 2/3" in p[2] for p in progress):
        for event in run.poll():
            router(event)
        assert time.monotonic() < deadline, "training did not reach epoch 2"
        time.sleep(0.02)
    assert run.running, f"the run ended before it could be cancelled: {run.returncode}"
    pid = run.pid
    run.cancel()
    run.wait(on_event=router, timeout=30)
    assert run.outcome().status == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert resumable(out) and not (out / "model").exists()
    views = [p for p in progress if p[2].startswith("views")]
    assert views and views[-1][:2] == (20, 20)
    assert any(p[3] is not None for p in progress), "no ETA was ever estimated"
    # the epochs the child reported before the cancel reached it: on a loaded machine the parent may read
    # "epoch 2/3" in one batch with the child's later events, epoch 3 done but the run not yet finished
    assert list(curves.values("fold 0", "epoch")) in ([1.0], [1.0, 2.0], [1.0, 2.0, 3.0])

    result: dict = {}
    outcome = run_to_end(train_arguments(manifest, out, TINY, resume=True), 300, on_metrics=curves.add,
                         on_result=result.update)
    assert outcome.status == "succeeded", outcome.error
    assert result["view"] == "2d" and (out / "model" / "model.json").is_file()
    epochs = list(curves.values("fold 0", "epoch"))
    assert epochs[0] == 1.0 and epochs[-1] == 3.0 and sorted(epochs) == epochs
    assert np.all(np.isfinite(curves.values("fold 0", "train_loss")))

    table, chart = show_training_results(scene, out)
    rows = {(table.GetCellText(r, 1), table.GetCellText(r, 2)) for r in range(table.GetNumberOfRows())}
    assert {("validation", "all"), ("internal_test", "all"), ("external_test", "all"),
            ("external_test", "B")} <= rows
    assert chart is not None and chart.GetNumberOfPlotSeriesNodes() >= 2  # test set(s) + chance line

    from MVCFTrainingLib.batch import save_result_tables

    tsv, schema = save_result_tables("train", out, result, tmp_path / "tables")
    header = tsv.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header[:3] == ["model", "split", "institution"] and "auc_ci_low" in header and schema.is_file()


@pytest.mark.slow
def test_study_metrics_and_comparison_table(scene_cohort, tmp_path):
    scene, manifest = scene_cohort
    from dataclasses import replace

    settings = replace(TINY, training=replace(TINY.training, epochs=1),
                       extra_args=("--modes", "2d", "--reference", "2d"))
    args = study_arguments(manifest, tmp_path / "study", settings, resume=True)
    assert "--view" not in args and args[-1] == "--resume"  # no view: the study trains every mode
    curves = LiveCurves(scene, "study")
    result: dict = {}
    outcome = run_to_end(args, 300, on_metrics=curves.add, on_result=result.update)
    assert outcome.status == "succeeded", outcome.error
    assert list(curves.values("mode 2d, fold 0", "epoch")) == [1.0]
    table, chart = show_study_results(scene, result)
    models = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    assert models == ["2d", "baseline-logistic"]
    p_column = table.GetColumnIndex("external_p_vs_reference")
    p_value = float(table.GetCellText(1, p_column))
    note = table.GetCellText(1, table.GetColumnIndex("comparison_note"))
    # a pair with zero DeLong variance is no test (p was 0): the cell is empty and the note says why
    assert (0.0 <= p_value <= 1.0 and not note) or (p_value != p_value and "no test possible" in note)
    assert table.GetCellText(0, table.GetColumnIndex("reference")) == "1"
    assert chart is not None and chart.GetNumberOfPlotSeriesNodes() == 3  # two models + chance


def test_batch_script_user_error_exit_code_and_message(tmp_path):
    """scripts/slicer_train.py under plain python: the core's one-line error and exit code 2 come through."""
    import subprocess
    import sys

    bad = tmp_path / "manifest.csv"
    bad.write_text("case_id,patient_id,institution,label,ct,center_lps\nc1,p1,A,benign,missing.nii.gz,1,2,3\n")
    script = Path(__file__).resolve().parents[2] / "scripts" / "slicer_train.py"
    proc = subprocess.run([sys.executable, str(script), "--manifest", str(bad), "--out", str(tmp_path / "out"),
                           "--epochs", "1", "--device", "cpu"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **CHILD_ENV})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: manifest") and "row 2" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["slicer_train.py", "slicer_study.py"])
def test_batch_script_resume_with_nothing_to_resume(tmp_path, script):
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[2] / "scripts" / script
    proc = subprocess.run([sys.executable, str(path), "--manifest", str(tmp_path / "m.csv"), "--out",
                           str(tmp_path / "out"), "--resume"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    kind = "study" if script == "slicer_study.py" else "train"
    assert proc.stderr.strip().splitlines() == [f"error: nothing to resume in {tmp_path / 'out'} (no {kind} of mvcf "
                                                "there)"]


def test_reader_study_through_the_child_process(shared_data):
    csv_path = shared_data("reader_study/vandyke_dataset02.csv")
    result: dict = {}
    outcome = run_to_end(mrmc_arguments(csv_path), 120, on_result=result.update)
    assert outcome.status == "succeeded", outcome.error
    scene = slicer.vtkMRMLScene()
    readers, analysis = mrmc_tables(scene, result)
    assert readers.GetNumberOfRows() == 6 and readers.GetCellText(5, 0) == "mean"
    assert float(readers.GetCellText(5, 1)) == pytest.approx(0.897037, abs=1e-6)  # Van Dyke, modality 0
    first = {analysis.GetColumnName(c): analysis.GetCellText(0, c) for c in range(analysis.GetNumberOfColumns())}
    assert first["analysis"] == "random readers, random cases" and first["comparison"] == "0 vs 1"
    assert float(first["p"]) == pytest.approx(0.05166569, abs=1e-6)


def test_a_perfect_separation_shows_newcombes_interval_not_a_point():
    """The metrics and study tables read only DeLong's interval: a perfect internal test showed "1-1 (DeLong)"
    where `mvcf train` prints 1.000 (0.510-1.000, Newcombe), and a class of one showed no interval at all."""
    from MVCFTrainingLib.results import metrics_row, study_rows

    from mvcf.metrics import summarize

    perfect = summarize([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], 0.5)
    row = metrics_row("2d", "internal_test", "all", perfect)
    assert row["auc"] == 1.0 and row["auc_ci_method"] == "Newcombe" and row["auc_ci_low"] < 0.9
    assert row["auc_ci_low"] == perfect["auc_ci_newcombe"][0] and "collapse to a point" in row["note"]
    single = metrics_row("2d", "validation", "all", summarize([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.7], 0.5))
    assert single["auc_ci_method"] == "Newcombe" and single["auc_ci_low"] is not None
    usual = summarize([0, 0, 1, 1, 0, 1], [0.1, 0.6, 0.4, 0.8, 0.3, 0.9], 0.5)
    assert metrics_row("2d", "internal_test", "all", usual)["auc_ci_method"] == "DeLong"
    (study,) = study_rows({"design": {"reference": "2d"}, "models": [
        {"name": "2d", "internal_test": perfect, "external_test": usual}]})
    assert study["internal_auc_ci_method"] == "Newcombe" and study["internal_auc_ci_low"] < 0.9
    assert study["external_auc_ci_method"] == "DeLong"

"""Benchmark: the Classifier's warm worker. First Apply (starts `mvcf worker`, loads the model, classifies
L1) against the second Apply (same worker, only the work), and 17 vertebrae in one warm request.

An Apply is what the module panel does on a slicer-core scene: PredictionLogic.apply (the CT written for
the worker, the request), the run polled every APPLY_POLL_MS as the panel's timer does (first poll at once),
then finish() (the table node). Once with classification only and once with the module's defaults
(model-input volumes + Grad-CAM heatmap, which makes the worker import torch). Each repeat starts from a
fresh logic with no worker, so every first Apply pays the worker's start-up and the model loading. The
baseline of every ratio is the first Apply of the same repeat.
17 vertebrae: the 8 labelled vertebrae of the shipped CT's mask, cycled to 17 entries (T1-L5 is 17),
as one request to a warm worker. Targets: second / first <= 0.1; 17 vertebrae warm <= 1 s. The Training
module's evaluation: Evaluate model twice on one warm worker (the second pays no torch start-up).

    python benchmarks/bench_worker.py [--repeats 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from procs import REPO, machine
from report import emit, median_time

sys.path[:0] = [str(REPO / "MVCFClassifier"), str(REPO / "MVCFTraining")]
LABELS = [31, 30, 29, 28, 27, 26, 32, 33]  # L1..L5, S1?, T12, T11 in TotalSegmentator numbering


def _scene():
    import numpy as np
    import slicer
    import vtk

    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import sample_ct_paths
    from MVCFClassifierLib import volumes

    paths = sample_ct_paths()
    ct, mask = read_ct(paths["ct"]), read_mask(paths["mask"])
    scene = slicer.vtkMRMLScene()
    node = volumes.volume_node_from_ct_image(scene, ct, "sample CT")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "L1")
    ijk = np.argwhere(mask.voxels == 31)[:, ::-1].mean(axis=0)
    points.AddControlPoint(vtk.vtkVector3d(*(mask.index_to_lps(ijk) * [-1, -1, 1])), "L1")
    return scene, node, points


def _apply(logic, node, points, heatmap: bool) -> float:
    """One Apply as the panel runs it; wall seconds from the click to the table node."""
    from MVCFClassifierLib.logic import APPLY_POLL_MS

    started = time.perf_counter()
    run = logic.apply(node, "Point list", points=points, device="cpu", views=heatmap, heatmap=heatmap)
    run.poll()
    while not run.finished:
        time.sleep(APPLY_POLL_MS / 1000)
        run.poll()
    rows = run.finish(node.GetScene()).rows
    wall = time.perf_counter() - started
    assert rows[0]["status"] == "ok", rows[0]
    return wall


def _applies(heatmap: bool, repeats: int, tmp) -> dict:
    from MVCFClassifierLib.logic import PredictionLogic

    scene, node, points = _scene()
    first, second, third = [], [], []
    for _ in range(repeats):
        logic = PredictionLogic(python_executable=sys.executable, temp_root=str(tmp), warm_worker=True,
                                ensure_dependencies=lambda **_: True)
        logic.worker.env = {"OMP_NUM_THREADS": "1"}
        try:
            for times in (first, second, third):
                times.append(_apply(logic, node, points, heatmap))
            assert logic.worker.starts == 1 and logic.ct_files.writes == 1
        finally:
            logic.close_worker()
    a, b, c = (statistics.median(t) for t in (first, second, third))
    return {"first_apply_s": round(a, 3), "second_apply_s": round(b, 3), "third_apply_s": round(c, 3),
            "first_runs_s": [round(t, 3) for t in first], "second_runs_s": [round(t, 3) for t in second],
            "ratio_second_over_first": round(b / a, 3)}


def _many(repeats: int) -> dict:
    from mvcf.resources import sample_ct_paths
    from MVCFClassifierLib.worker import WarmWorker

    paths = sample_ct_paths()
    entries = [{"name": f"v{i + 1}", "mask": str(paths["mask"]), "label": LABELS[i % len(LABELS)]} for i in range(17)]
    worker = WarmWorker(sys.executable, args=["--device", "cpu"], env={"OMP_NUM_THREADS": "1"})

    def request(where: list) -> None:
        pending = worker.submit({"command": "predict", "ct": str(paths["ct"]), "locations": where, "device": "cpu"})
        pending.wait()
        if pending.returncode != 0:
            raise RuntimeError(pending.error)

    try:
        request(entries[:1])  # start-up and model loading: not part of these figures
        many = median_time(lambda: request(entries), repeats)
        single = median_time(lambda: request(entries[:1]), repeats)
    finally:
        worker.stop()
    return {"vertebrae": 17, "warm_request_s": round(many.median_s, 3), "runs_s": [round(t, 3) for t in many.runs_s],
            "one_vertebra_warm_request_s": round(single.median_s, 3), "target_s": 1.0,
            "meets_target": many.median_s <= 1.0}


def _evaluations(repeats: int, tmp) -> dict:
    """The Training module's Evaluate model twice on one warm worker (the demo bundle on a 16-case tiny
    cohort); each repeat starts from a fresh logic, so the first evaluation pays the start-up and torch."""
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(REPO / "Testing" / "Python"))
    from tiny_cohort import make_tiny_cohort

    from mvcf.inference import default_model_path
    from MVCFClassifierLib.worker import WarmWorker
    from MVCFTrainingLib.logic import TrainingLogic

    manifest = make_tiny_cohort(Path(tmp) / "cohort", n_per_site=8)
    bundle = Path(tmp) / "bundle"
    shutil.copytree(default_model_path(), bundle)
    parameters = SimpleNamespace(manifestPath=manifest, bundleFolder=bundle, device="cpu")
    first, second = [], []
    for repeat in range(repeats):
        logic = TrainingLogic(ensure_dependencies=lambda: True, python_executable=sys.executable)
        logic.worker = WarmWorker(sys.executable, args=["--device", "cpu"], env={"OMP_NUM_THREADS": "1"})
        try:
            for times, stamp in ((first, f"{repeat}a"), (second, f"{repeat}b")):
                started = time.perf_counter()
                logic.startEvaluation(parameters, now=lambda: stamp)
                outcome = logic.wait(timeout=600)
                times.append(time.perf_counter() - started)
                assert outcome.status == "succeeded", outcome.error
            assert logic.worker.starts == 1
        finally:
            logic.close()
    a, b = statistics.median(first), statistics.median(second)
    return {"cases": 16, "first_evaluation_s": round(a, 3), "second_evaluation_s": round(b, 3),
            "first_runs_s": [round(t, 3) for t in first], "second_runs_s": [round(t, 3) for t in second],
            "ratio_second_over_first": round(b / a, 3)}


def main(argv=None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            __import__("slicer")  # slicer-core, for the Apply figures
            applies = {"classify_only": _applies(False, args.repeats, tmp),
                       "views_and_heatmap": _applies(True, args.repeats, tmp)}
        except ImportError:
            applies = {"skipped": "slicer-core is not installed: no Apply figures"}
        evaluations = _evaluations(args.repeats, tmp)
    many = _many(args.repeats)
    ratios = [v["ratio_second_over_first"] for v in applies.values() if isinstance(v, dict)]
    payload = {"benchmark": "warm worker: second Apply vs first Apply (one vertebra), second vs first evaluation "
                            "in the Training module, 17 vertebrae warm",
               "applies": applies, "training_evaluation": evaluations, "seventeen_vertebrae": many, "target_ratio_second_over_first": 0.1,
               "meets_target_ratio": bool(ratios) and max(ratios) <= 0.1, "repeats": args.repeats, **machine()}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

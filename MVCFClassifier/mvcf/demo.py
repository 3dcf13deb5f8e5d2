"""`mvcf demo`: the whole pipeline on embedded defaults, small enough for a laptop in a few minutes.

synthetic two-institution cohort -> study (every view mode + the logistic baseline, identical splits)
-> prediction on the shipped real CT (TotalSegmentator example, L1 = label 31) with the study's reference
model and with the embedded demo bundle, plus a Grad-CAM heatmap, and the whole-spine screen of that CT
(every vertebra of its TotalSegmentator mask: heights, Genant grade, HU, P(MVCF), the overview picture)
-> one report folder (index.html).
The defaults are deliberately small (cohort, view size, epochs); `DemoConfig` and the CLI options scale
it up to the full study.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mvcf.progress import CancelCheck, ProgressCallback, check_cancel, dumps

SAMPLE_LABEL = 31  # TotalSegmentator: L1


@dataclass
class DemoConfig:
    cases: int = 120
    seed: int = 0
    difficulty: str = "standard"
    size_px: int = 64
    size_3d_px: int = 48
    epochs: int = 15
    folds: int = 1
    arch: str = "resnet10-tiny"
    batch_size: int = 8
    device: str = "auto"
    workers: int = 2


def run_demo(out_dir: Path, config: DemoConfig = DemoConfig(), overwrite: bool = False,
             on_progress: Optional[ProgressCallback] = None, should_cancel: Optional[CancelCheck] = None,
             on_log: Optional[Callable[[str], None]] = None,
             on_metrics: Optional[Callable[..., None]] = None) -> dict[str, Any]:
    """Run the demo into `out_dir` (atomically: the folder appears complete or not at all)."""
    from mvcf.cli.train import fold_arguments
    from mvcf.explain import write_prediction_heatmap
    from mvcf.inference import default_model_path, load_model, resolve_device
    from mvcf.fileio import atomic_dir
    from mvcf.outputs_guard import check_output
    from mvcf.locate import from_mask
    from mvcf.manifest import read_manifest
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import sample_ct_paths
    from mvcf.screen import screen_ct
    from mvcf.screen import write_outputs as write_screen
    from mvcf.study import StudyConfig, run_study
    from mvcf.synth import generate_cohort
    from mvcf.train import TrainConfig

    log = on_log or (lambda message: None)
    out = Path(out_dir)
    check_output(out, kind="folder", overwrite=overwrite, what="--out")
    timings: dict[str, float] = {}
    stages = [("synthetic cohort", 30), ("study", 65), ("prediction", 5)]
    offsets = {name: sum(w for _, w in stages[:i]) for i, (name, _) in enumerate(stages)}
    weights = dict(stages)

    def stage(name: str) -> ProgressCallback:
        def report(done: int, total: int, message: str) -> None:
            if on_progress is not None:
                on_progress(int(10 * (offsets[name] + weights[name] * done / max(total, 1))), 1000,
                            f"{name}: {message}")
        return report

    with atomic_dir(out, overwrite=overwrite) as tmp:
        started = time.perf_counter()
        log(f"1/3 generating {config.cases} synthetic cases (two institutions, difficulty {config.difficulty})")
        manifest = generate_cohort(tmp / "cohort", n_cases=config.cases, seed=config.seed,
                                   difficulty=config.difficulty, workers=config.workers,
                                   on_progress=stage("synthetic cohort"), should_cancel=should_cancel)
        timings["synthetic_cohort_s"] = time.perf_counter() - started
        records = read_manifest(manifest)

        check_cancel(should_cancel)
        started = time.perf_counter()
        log("2/3 study: 2D, 2.5D (adjacent, orthogonal, MIL), 3D and the logistic baseline on identical splits")
        n_folds, train_folds = fold_arguments(config.folds)
        study_config = StudyConfig(size_px=config.size_px, size_3d_px=config.size_3d_px, n_folds=n_folds,
                                   train_folds=train_folds,
                                   train=TrainConfig(arch=config.arch, epochs=config.epochs,
                                                     batch_size=config.batch_size, seed=config.seed,
                                                     device=config.device, patience=max(3, config.epochs)))
        summary = run_study(records, tmp / "study", study_config, cache_dir=tmp / "cache",
                            card_extra={"trained_on_synthetic_data": True}, on_progress=stage("study"),
                            should_cancel=should_cancel, on_log=log, on_metrics=on_metrics)
        timings["study_s"] = time.perf_counter() - started

        check_cancel(should_cancel)
        started = time.perf_counter()
        log("3/3 predicting L1 of the shipped real CT (TotalSegmentator example) and screening its whole spine")
        sample = sample_ct_paths()
        ct = read_ct(sample["ct"])
        seg = read_mask(sample["mask"])
        location = from_mask(ct, seg, SAMPLE_LABEL)
        reference = summary["design"]["reference"]
        device = resolve_device(config.device)
        demo_bundle = load_model(default_model_path(), device)
        demo_prediction = predict_ct(ct, location, demo_bundle, device)
        predictions = {
            "study_reference_model": predict_ct(ct, location, tmp / "study" / reference / "model",
                                                device).to_dict(),
            "embedded_demo_model": demo_prediction.to_dict(),
        }
        (tmp / "prediction").mkdir()
        heatmap = write_prediction_heatmap(demo_bundle, demo_prediction, tmp / "prediction" / "heatmap_L1.nii.gz",
                                           device=device, ct=ct, location=location)
        (tmp / "prediction" / "prediction_L1.json").write_text(json.dumps(predictions, indent=2) + "\n",
                                                               encoding="utf-8")
        timings["prediction_s"] = time.perf_counter() - started
        check_cancel(should_cancel)
        started = time.perf_counter()
        screened = screen_ct(ct, seg, model=demo_bundle, device=device, should_cancel=should_cancel)
        screen_files = write_screen(screened, tmp / "screen")
        stage("prediction")(1, 1, "done")
        timings["whole_spine_screen_s"] = time.perf_counter() - started
        result = {"out": str(out), "config": asdict(config), "manifest": "cohort/manifest.csv",
                  "report": "study/report.html", "study": _brief(summary), "predictions": predictions,
                  "heatmap": f"prediction/{heatmap.name}", "sample_ct": str(sample["ct"]),
                  "screen": _screen_brief(screened, [f"screen/{p.name}" for p in screen_files]),
                  "timings_s": {k: round(v, 1) for k, v in timings.items()}}
        (tmp / "demo.json").write_text(dumps(result, indent=2) + "\n", encoding="utf-8")
        _write_index(tmp, result, ct, location, heatmap, demo_bundle.card)
        if (tmp / "cache").exists():
            import shutil

            shutil.rmtree(tmp / "cache")
    return result


def _screen_brief(result: Any, files: list[str]) -> dict[str, Any]:
    """What demo.json and the front page say of the whole-spine screen (the table itself is screen/)."""
    keys = ("level", "status", "height_anterior_mm", "height_middle_mm", "height_posterior_mm", "genant_grade",
            "shape", "trabecular_hu", "density", "probability_malignant", "prediction", "flagged")
    rows = [{k: r.get(k) for k in keys} for r in result.vertebrae]
    return {"files": files, "threshold": result.threshold, "vertebrae": rows, "collapsed": result.collapsed,
            "flagged": result.flagged}


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    from mvcf.metrics import auc_interval

    out = {}
    for m in summary["models"]:
        row = {}
        for which, block in (("internal", m["internal_test"]), ("external", m["external_test"])):
            # a degenerate DeLong interval is replaced by Newcombe's, and the reason travels with it
            row[f"{which}_auc"] = block.get("auc")
            row[f"{which}_auc_ci"] = auc_interval(block)[0]
            if block.get("note"):
                row[f"{which}_auc_note"] = block["note"]
        out[m["name"]] = row
    return out


def _write_index(folder: Path, result: dict[str, Any], ct, location, heatmap: Path, card: dict[str, Any]) -> None:
    """The front page: mvcf.report.demo_page (key images with the heatmap, ROC curves, tables)."""
    import SimpleITK as sitk

    from mvcf.ctimage import CTImage
    from mvcf.report.demo_page import write_demo_page

    heat = CTImage.from_sitk(sitk.ReadImage(str(heatmap)))
    write_demo_page(folder, result, ct, location.center_lps, heat, card)

"""Evaluate a model bundle on a cohort: per-case predictions, metrics with CIs at the frozen threshold
(overall and per institution), calibration, and ROC / calibration / decision-curve plots."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mvcf.fileio import atomic_dir
from mvcf.progress import CancelCheck, ProgressCallback, dumps


def predict_records(bundle, records: Sequence[Any], device: str = "cpu", cache_dir: Optional[os.PathLike] = None,
                    on_progress: Optional[ProgressCallback] = None,
                    should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Probabilities of MVCF for every record with the bundle's own view spec."""
    from mvcf.dataset import ViewCache, spec_key
    from mvcf.inference import forward
    from mvcf.views import ViewSpec

    spec = ViewSpec.from_dict(bundle.view_spec)
    views = ViewCache(cache_dir).views(records, [spec], on_progress=on_progress, should_cancel=should_cancel)
    arrays = [views[spec_key(spec)][r.case_id] for r in records]
    bundle.model.to(device)
    return forward(bundle, arrays, device, should_cancel=should_cancel)


def metrics_report(labels: Sequence[int], prob: Sequence[float], threshold: float,
                   institutions: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Overall and per-institution summaries (mvcf.metrics.summarize) plus calibration."""
    from mvcf.metrics import summarize
    from mvcf.stats import calibration, default_n_bins

    y, p = np.asarray(labels, dtype=int), np.asarray(prob, dtype=float)
    report: dict[str, Any] = {"overall": summarize(y, p, threshold)}
    if 0 < y.sum() < y.size:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels warns on perfect separation; the fit still reports
            cal = calibration(y, p, n_bins=default_n_bins(y.size))
        report["calibration"] = {k: cal[k] for k in cal if k != "bins"}
    if institutions is not None:
        sites = np.asarray(institutions)
        report["per_institution"] = {str(s): summarize(y[sites == s], p[sites == s], threshold)
                                     for s in sorted(set(sites.tolist()))}
    return report


def write_plots(folder: Path, labels: Sequence[int], prob: Sequence[float], threshold: float,
                name: str = "model") -> list[str]:
    """roc.png, calibration.png, decision_curve.png (skipped when one class only)."""
    from mvcf.stats import default_n_bins
    from mvcf.stats.plots import plot_calibration, plot_decision_curve, plot_roc

    y, p = np.asarray(labels, dtype=int), np.asarray(prob, dtype=float)
    if not (1 < y.sum() < y.size - 1):
        return []
    plot_roc(folder / "roc.png", y, {name: p}, operating_points={"frozen threshold": threshold})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels: perfect separation on tiny sets; the plot still draws
        plot_calibration(folder / "calibration.png", y, p, n_bins=default_n_bins(y.size))
    plot_decision_curve(folder / "decision_curve.png", y, {name: p})
    return ["roc.png", "calibration.png", "decision_curve.png"]


def evaluate(model: os.PathLike, manifest: os.PathLike, out_dir: os.PathLike, device: str = "auto",
             cache_dir: Optional[os.PathLike] = None, overwrite: bool = False,
             on_progress: Optional[ProgressCallback] = None,
             should_cancel: Optional[CancelCheck] = None, allow_outside_root: bool = False) -> dict[str, Any]:
    """`mvcf evaluate`: writes predictions.csv, metrics.json and the plots into out_dir (atomically). The
    card, every manifest row's files and the output's place are checked before any work."""
    from mvcf import RESEARCH_USE_DISCLAIMER, training_scans
    from mvcf.cohort_checks import check_cohort_files
    from mvcf.inference import resolve_device
    from mvcf.manifest import read_manifest, write_predictions
    from mvcf.models.bundle import load_bundle, read_card
    from mvcf.outputs_guard import check_cache_folder, check_output, check_outside_folders, run_inputs
    from mvcf.predict import bundle_warnings

    device = resolve_device(device)
    out = Path(out_dir)
    read_card(model)
    records = read_manifest(manifest, allow_outside_root=allow_outside_root)
    inputs = run_inputs(records, manifest, model)
    check_output(out, inputs, kind="folder", overwrite=overwrite)
    check_cache_folder(cache_dir, inputs)
    check_outside_folders([("--cache", cache_dir)], [("--out", out)])   # out is replaced as a whole
    check_cohort_files(records, Path(manifest))
    bundle = load_bundle(model, device=device)
    seen = training_scans.report_overlap(bundle.card, records, "mvcf.evaluate")
    prob = predict_records(bundle, records, device, cache_dir, on_progress, should_cancel)
    labels = [int(r.label) for r in records]
    sites = [r.institution for r in records]
    threshold = bundle.threshold
    report = metrics_report(labels, prob, threshold, sites)
    report["model"] = bundle.identity()
    report["training_overlap"] = seen
    report["manifest"] = str(manifest)
    report["device"] = device
    report["warnings"] = bundle_warnings(bundle.card)   # a synthetic-data demo model says so here too
    report["disclaimer"] = RESEARCH_USE_DISCLAIMER
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_predictions(tmp / "predictions.csv", records,
                          {"probability_malignant": {r.case_id: float(p) for r, p in zip(records, prob)}},
                          threshold=threshold)
        report["plots"] = write_plots(tmp, labels, prob, threshold, bundle.name)
        (tmp / "metrics.json").write_text(dumps(report, indent=2) + "\n", encoding="utf-8")
    report["out"] = str(out)
    return report

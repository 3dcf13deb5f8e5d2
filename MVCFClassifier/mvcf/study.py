"""The paper's design in one call: 2D, every 2.5D mode and 3D trained on identical patient-level splits, the
transparent logistic baseline beside them, internal (out-of-fold) and external results, paired DeLong tests,
cost (train time, inference ms, parameters) beside accuracy, and a markdown + HTML report with the plots."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf import modes as view_modes
from mvcf.errors import MVCFError
from mvcf.fileio import atomic_open
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel, dumps
from mvcf.study_report import HEADER, comparison_rows, write_report  # noqa: F401  (the study's report API)
from mvcf.views import MODEL_WINDOWS

BASELINE = "baseline-logistic"
DEFAULT_REFERENCE = view_modes.DEFAULT
#: The first file a study writes into its folder: its configuration and cohort, checked by --resume.
RUN_RECORD = "study_config.json"


@dataclass
class StudyConfig:
    modes: Sequence[str] = field(default_factory=view_modes.names)   # every registered view mode
    size_px: int = 64
    size_3d_px: int = 48
    spacing_mm: float = 1.0
    n_slices: Optional[int] = None       # the stacked modes' (2.5d-adjacent, 2.5d-mil); None: each mode's own
    slice_gap_mm: Optional[float] = None
    windows: tuple = MODEL_WINDOWS
    n_folds: int = 5
    train_folds: Optional[int] = None
    external: Optional[str] = None
    reference: Optional[str] = None  # None: DEFAULT_REFERENCE when studied, else the first mode
    baseline: bool = True
    train: Any = None  # mvcf.train.TrainConfig

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in view_modes.names()]
        if unknown or not (self.modes or self.baseline):
            raise MVCFError(f"unknown or no study modes {unknown}; choose from {', '.join(view_modes.names())}")
        twice = sorted({m for m in self.modes if list(self.modes).count(m) > 1})
        if twice:   # one model was trained and reported twice, and Holm counted its copies as comparisons
            raise MVCFError(f"study mode {twice[0]} is listed twice; list each mode once")
        if self.reference is None:
            self.reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in self.modes else \
                (self.modes[0] if self.modes else BASELINE)
        elif self.reference not in self.modes:
            raise MVCFError(f"the reference {self.reference} is not among the studied modes "
                            f"({', '.join(self.modes)}); the p-values compare every mode with it")
        stacked = view_modes.stacked_names()
        if (self.n_slices is not None or self.slice_gap_mm is not None) and not set(stacked) & set(self.modes):
            raise MVCFError(f"n_slices/slice_gap_mm apply to {' and '.join(stacked)}, and neither is studied "
                            f"({', '.join(self.modes) or 'the baseline alone'})")
        if self.train is None:
            from mvcf.train import TrainConfig

            self.train = TrainConfig()
        for mode in self.modes:
            self.spec(mode)   # a bad size, spacing or window is refused before any data is read

    def spec(self, mode: str):
        from mvcf.views import ViewSpec

        view_mode = view_modes.get(mode)
        size = self.size_3d_px if view_mode.spatial_dims == 3 else self.size_px
        stack = {"n_slices": self.n_slices, "slice_gap_mm": self.slice_gap_mm} \
            if view_mode.stack_defaults is not None else {}
        return ViewSpec(mode=mode, size_px=size, spacing_mm=self.spacing_mm, windows=self.windows, **stack)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("n_slices", "slice_gap_mm"):   # unset: left out, so earlier studies' records stay as they were
            if d[key] is None:
                del d[key]
        d["modes"] = list(self.modes)
        d["train"] = asdict(self.train)
        return d


def default_external(records: Sequence[Any]) -> Optional[str]:
    """'external' when the cohort has such an institution (as `mvcf synth` writes), else the smallest site
    when there are several, else None (internal test only)."""
    sites: dict[str, int] = {}
    for r in records:
        sites[r.institution] = sites.get(r.institution, 0) + 1
    if "external" in sites:
        return "external"
    if len(sites) > 1:
        return min(sorted(sites), key=lambda s: sites[s])
    return None


@dataclass
class ModelResult:
    name: str
    internal: dict[str, float]
    external: dict[str, float]
    threshold: float
    train_seconds: float = 0.0
    inference_ms: float = 0.0
    parameters: int = 0
    bundle: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


def _baseline_result(records: Sequence[Any], plan: Any, should_cancel: Optional[CancelCheck] = None,
                     on_progress: Optional[ProgressCallback] = None) -> ModelResult:
    """mvcf.baseline's logistic regression on its two hand-made features, fitted per fold on the CNNs' own
    training cases, thresholded (Youden) on their validation cases, the fold models averaged externally."""
    from mvcf.baseline import FEATURES, cohort_features, fit_baseline
    from mvcf.stats import youden_threshold

    started = time.perf_counter()
    features = cohort_features(records, on_progress=on_progress, should_cancel=should_cancel)
    feature_seconds = time.perf_counter() - started
    row = {r.case_id: i for i, r in enumerate(records)}
    labels = np.array([int(r.label) for r in records])
    internal: dict[str, float] = {}
    val_y, val_p, models = [], [], []
    for fold in plan.folds:
        train_idx = [row[c] for c in fold.train]
        model = fit_baseline(features[train_idx], labels[train_idx])
        models.append(model)
        val_idx = [row[c] for c in fold.val]
        val_y += labels[val_idx].tolist()
        val_p += model.predict_proba(features[val_idx])[:, 1].tolist()
        test_idx = [row[c] for c in fold.test]
        internal.update(zip(fold.test, model.predict_proba(features[test_idx])[:, 1].tolist()))
    ext_idx = [row[c] for c in plan.external]
    external = {}
    if ext_idx:
        ext_prob = np.mean([m.predict_proba(features[ext_idx])[:, 1] for m in models], axis=0)
        external = dict(zip(plan.external, ext_prob.tolist()))
    y, p = np.array(val_y), np.array(val_p)
    threshold = float(youden_threshold(y, p)) if 0 < y.sum() < y.size else 0.5
    coefficients = [dict(zip(FEATURES, m[-1].coef_[0].tolist())) for m in models]
    return ModelResult(name=BASELINE, internal=internal, external=external, threshold=threshold,
                       train_seconds=time.perf_counter() - started,
                       inference_ms=1000.0 * feature_seconds / max(1, len(records)), parameters=3,
                       extra={"features": list(FEATURES), "coefficients_per_fold": coefficients})


def _auc_block(labels: dict[str, int], prob: dict[str, float], threshold: float) -> dict[str, Any]:
    from mvcf.metrics import summarize

    ids = sorted(prob)
    return summarize([labels[c] for c in ids], [prob[c] for c in ids], threshold, n_bootstrap=500)


def paired_delong(labels: dict[str, int], results: Sequence[ModelResult], which: str) -> dict[str, Any]:
    """Paired DeLong tests between every two models on the cases all of them scored."""
    from mvcf.stats import delong_test

    common = sorted(set.intersection(*[set(getattr(r, which)) for r in results])) if results else []
    y = np.array([labels[c] for c in common])
    if len(results) < 2 or not common or min(y.sum(), y.size - y.sum()) < 2:
        return {"cases": len(common), "pairs": []}
    scores = [np.array([getattr(r, which)[c] for c in common]) for r in results]
    test = delong_test(y, scores, names=[r.name for r in results])
    return {"cases": len(common), "pairs": test["pairs"]}


def run_study(records: Sequence[Any], out_dir: os.PathLike, config: StudyConfig,
              cache_dir: Optional[os.PathLike] = None, card_extra: Optional[dict[str, Any]] = None, on_progress: Optional[ProgressCallback] = None,
              should_cancel: Optional[CancelCheck] = None, on_metrics: Optional[Callable[..., None]] = None,
              on_log: Optional[Callable[[str], None]] = None, resume: bool = False) -> dict[str, Any]:
    """Run the study into out_dir (per-mode folders with bundles, study.json, predictions.csv, report.md/html).
    Bundle paths in the summary are relative to out_dir.

    `resume` continues a cancelled or killed study in the same out_dir: finished folds are read back from their
    checkpoints, the interrupted one continues from its last epoch (as `mvcf train --resume`), so the summary
    equals an uninterrupted run's. It refuses a different configuration or cohort (`study_config.json`)."""
    from mvcf.dataset import ViewCache, spec_key
    from mvcf.splits import make_splits
    from mvcf.train import train_cohort

    log = on_log or (lambda message: None)
    out = Path(out_dir)
    external = config.external if config.external is not None else default_external(records)
    plan = make_splits(records, n_folds=config.n_folds, external=external, seed=config.train.seed,
                       train_folds=config.train_folds)   # its refusals before anything is written
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_run_config(out / RUN_RECORD, config, records, resume)
    labels = {r.case_id: int(r.label) for r in records}
    specs = {mode: config.spec(mode) for mode in config.modes}
    n_modes = len(config.modes)
    stages = n_modes + 1 + int(config.baseline)

    def stage_progress(stage: int) -> ProgressCallback:
        def report(done: int, total: int, message: str) -> None:
            if on_progress is not None:
                on_progress(stage * 1000 + int(1000 * done / max(total, 1)), stages * 1000, message)
        return report

    started = time.perf_counter()
    views = ViewCache(cache_dir if cache_dir is not None else out / "cache").views(
        records, list(specs.values()), on_progress=stage_progress(0), should_cancel=should_cancel)
    view_seconds = time.perf_counter() - started
    log(f"views for {len(records)} cases x {n_modes} modes in {view_seconds:.1f} s")

    from mvcf import training_scans

    # every mode is fitted on the same folds, so on the same scans: hashed once, not once per mode
    card_extra = {**(card_extra or {}), "training_scans": training_scans.card_entry(records, plan)}
    results: list[ModelResult] = []
    for k, mode in enumerate(config.modes):
        check_cancel(should_cancel)
        run = train_cohort(records, specs[mode], config.train, out_dir=out / mode, plan=plan,
                           views=views[spec_key(specs[mode])], name=f"mvcf-{mode}", resume=resume,
                           description=f"{mode} model of the study in {out.name}", card_extra=card_extra,
                           on_progress=stage_progress(k + 1), should_cancel=should_cancel,
                           on_metrics=(lambda _m=mode, **row: on_metrics(mode=_m, **row)) if on_metrics else None)
        results.append(ModelResult(name=mode, internal=run.internal_prob, external=run.external_prob,
                                   threshold=run.threshold, train_seconds=run.train_seconds,
                                   inference_ms=run.inference_ms, parameters=run.parameters,
                                   bundle=f"{mode}/model" if run.bundle_path else None))
        log(f"{mode}: internal AUC {_fmt(_auc_block(labels, run.internal_prob, run.threshold))}, external AUC "
            f"{_fmt(_auc_block(labels, run.external_prob, run.threshold))}, {run.train_seconds:.0f} s")
    if config.baseline:
        check_cancel(should_cancel)
        results.append(_baseline_result(records, plan, should_cancel, stage_progress(stages - 1)))
        log(f"{BASELINE}: internal AUC {_fmt(_auc_block(labels, results[-1].internal, results[-1].threshold))}, "
            f"external AUC {_fmt(_auc_block(labels, results[-1].external, results[-1].threshold))}")

    summary = {
        "design": {"cases": len(records), "patients": len({r.patient_id for r in records}),
                   "synthetic": bool((card_extra or {}).get("trained_on_synthetic_data")),
                   "external_institution": external, "n_folds": plan.n_folds, "folds_trained": len(plan.folds),
                   "internal_test_cases": sum(len(f.test) for f in plan.folds),
                   "external_test_cases": len(plan.external), "reference": config.reference,
                   "config": config.to_dict(), "view_seconds": round(view_seconds, 2)},
        "models": [],
        "delong_internal": paired_delong(labels, results, "internal"),
        "delong_external": paired_delong(labels, results, "external"),
    }
    for r in results:
        summary["models"].append({
            "name": r.name, "bundle": r.bundle, "threshold": r.threshold,
            "internal_test": _auc_block(labels, r.internal, r.threshold),
            "external_test": _auc_block(labels, r.external, r.threshold),
            "train_seconds": round(r.train_seconds, 2), "inference_ms_per_case": round(r.inference_ms, 3),
            "parameters": r.parameters, **({"extra": r.extra} if r.extra else {}),
            **_honest_blocks(labels, r)})
    summary["design"]["run_seconds"] = round(time.perf_counter() - started, 1)
    summary["design"]["resumed"] = bool(resume)
    _write_predictions(out / "predictions.csv", records, plan, results)
    with atomic_open(out / "study.json", "w", encoding="utf-8") as handle:
        handle.write(dumps(summary, indent=2))
    summary["plots"] = write_study_plots(out, labels, results)
    write_report(out, summary)
    summary["out"] = str(out)
    return summary


def _honest_blocks(labels: dict[str, int], result: ModelResult) -> dict[str, Any]:
    """Calibration on both test sets and threshold transfer to the external one (mvcf.study_report)."""
    from mvcf.study_report import calibration_block, threshold_transfer

    def arrays(prob: dict[str, float]):
        ids = sorted(prob)
        return [labels[c] for c in ids], [prob[c] for c in ids]

    return {"calibration": {w: calibration_block(*arrays(getattr(result, w))) for w in ("internal", "external")},
            "threshold_transfer": threshold_transfer(*arrays(result.external), result.threshold)
            if result.external else {"not_estimable": "no external cases"}}


def _comparable(config: dict[str, Any], records: Sequence[Any]) -> dict[str, Any]:
    """A study's settings with its training settings by name (`lr`, not `train`), less those a resumed run
    may change (where it runs: mvcf.train.RESUMABLE_CHANGES) and those that change nothing: the 3D size of a
    study without the 3D mode, and an external site given as the one it defaults to."""
    from mvcf.train import RESUMABLE_CHANGES

    train = config.get("train")
    flat = {k: v for k, v in config.items() if k != "train"}
    if flat.get("external") is None:
        flat["external"] = default_external(records)
    modes = flat.get("modes")
    if isinstance(modes, list) and not any(m in view_modes.names() and view_modes.get(m).spatial_dims == 3
                                           for m in modes):
        flat.pop("size_3d_px", None)
    if not isinstance(train, dict):
        return {**flat, "train": train}
    return {**flat, **{k: v for k, v in train.items() if k not in RESUMABLE_CHANGES and k not in flat}}


def _check_or_write_run_config(path: Path, config: StudyConfig, records: Sequence[Any], resume: bool) -> None:
    """The configuration and cohort a study folder belongs to; a resumed study must match them exactly. The
    cohort is identified by its rows and by the size and modification time of every CT and mask file
    (mvcf.cohort_checks.cohort_key), so swapped files under the same case ids are noticed."""
    from mvcf.cohort_checks import resume_record
    from mvcf.train import changed_settings

    config_dict = json.loads(json.dumps(config.to_dict(), default=str))
    saved = resume_record(path, records, resume, "study", {"config": config_dict})
    if saved is None:
        return
    if not isinstance(saved.get("config"), dict):
        raise MVCFError(f"cannot resume the study in {path.parent}: {path.name} is corrupt; start again in another "
                        "--out")
    changed = changed_settings(_comparable(saved["config"], records), _comparable(config_dict, records))
    if changed:
        raise MVCFError(f"cannot resume the study in {path.parent}: its settings differ ({', '.join(changed)})")


def _fmt(block: dict[str, Any]) -> str:
    from mvcf.metrics import format_auc

    return format_auc(block)


def _write_predictions(path: Path, records: Sequence[Any], plan: Any, results: Sequence[ModelResult]) -> None:
    from mvcf.manifest import write_predictions

    test_set = {c: "internal_test" for f in plan.folds for c in f.test}
    test_set.update({c: "external_test" for c in plan.external})
    write_predictions(path, records, {r.name: {**r.external, **r.internal} for r in results}, sets=test_set)


def write_study_plots(out: Path, labels: dict[str, int], results: Sequence[ModelResult]) -> list[str]:
    """ROC, decision curve and calibration (every model) per test set with both classes present."""
    from mvcf.stats.plots import plot_decision_curve, plot_roc
    from mvcf.study_report import plot_calibration_models

    files = []
    for which in ("internal", "external"):
        common = sorted(set.intersection(*[set(getattr(r, which)) for r in results])) if results else []
        y = np.array([labels[c] for c in common])
        if not common or min(y.sum(), y.size - y.sum()) < 2:
            continue
        curves = {r.name: np.array([getattr(r, which)[c] for c in common]) for r in results}
        plot_roc(out / f"roc_{which}.png", y, curves, band=False, title=f"ROC, {which} test")
        plot_decision_curve(out / f"decision_curve_{which}.png", y, curves, title=f"Decision curve, {which} test")
        plot_calibration_models(out / f"calibration_{which}.png", y, curves, title=f"Calibration, {which} test")
        files += [f"roc_{which}.png", f"decision_curve_{which}.png", f"calibration_{which}.png"]
    return files

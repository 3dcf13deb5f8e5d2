"""Predict: one vertebra of one CT -> probability of a malignant fracture, the call at the bundle's frozen
threshold, and everything needed to trust (or distrust) the number: model identity, device, centre, timings,
warnings, and the research-use disclaimer. `predict_many` does several vertebrae of one CT with one model
load, each vertebra failing on its own.

A Prediction keeps the view it was computed on (`Prediction.view`, not serialised), so a heatmap
(mvcf.explain.heatmap_for) reuses it instead of building the view and running the model again.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.errors import MVCFError
from mvcf.inference import default_model_path, forward, load_model, resolve_device, synchronize
from mvcf.manifest import CLASS_NAMES

__all__ = ["Prediction", "bundle_warnings", "call", "default_model_path", "predict_ct", "predict_file",
           "predict_many"]


def call(probability: float, threshold: float) -> str:
    """The class name a probability of MVCF is called at `threshold` (manifest.CLASS_NAMES)."""
    return CLASS_NAMES[int(probability >= threshold)]


@dataclass
class Prediction:
    probability_malignant: float
    prediction: str
    threshold: float
    model: dict[str, str]
    device: str
    center_lps: list[float]
    timing_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    view_mode: str = ""
    disclaimer: str = RESEARCH_USE_DISCLAIMER
    #: The mvcf.views.ViewResult the probability was computed on (not part of to_dict()).
    view: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self) if f.name != "view"}


def _copy(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else \
        (dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value)


def bundle_warnings(card: dict[str, Any]) -> list[str]:
    notes = []
    if card.get("trained_on_synthetic_data"):
        notes.append("this model was trained on synthetic data only: the probability is a software "
                     "demonstration, not a clinical estimate")
    return notes


def _predict_located(ct, location, bundle, device: str) -> Prediction:
    """predict_ct on an already loaded bundle and a resolved device; every classification passes here, so
    here a location without vertebral bone is refused (mvcf.locate.require_bone)."""
    from mvcf.locate import require_bone
    from mvcf.views import ViewSpec, build_views

    require_bone(ct, location)

    timing: dict[str, float] = {}
    t = time.perf_counter()
    spec = ViewSpec.from_dict(bundle.view_spec)
    view = build_views(ct, location, spec)
    timing["views"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    probability = float(forward(bundle, [view.array], device)[0])
    synchronize(device)
    timing["inference"] = 1000 * (time.perf_counter() - t)
    threshold = bundle.threshold
    return Prediction(probability_malignant=probability, prediction=call(probability, threshold),
                      threshold=threshold, model=bundle.identity(), device=device,
                      center_lps=[float(v) for v in view.center_lps], timing_ms=timing,
                      warnings=list(view.warnings) + bundle_warnings(bundle.card), view_mode=spec.mode, view=view)


def predict_ct(ct, location, model: Union[str, Path, None, Any] = None, device: str = "auto") -> Prediction:
    """Classify the vertebra at `location` (a VertebraLocation, LPS mm) of `ct` (a CTImage).
    `model` is a bundle directory, an already loaded Bundle, or None for the embedded demo bundle.
    The warnings start with the location's own (build_views carries them), then the view's and the bundle's."""
    device = resolve_device(device)
    started = time.perf_counter()
    bundle = load_model(model, device)
    load_ms = 1000 * (time.perf_counter() - started)
    result = _predict_located(ct, location, bundle, device)
    result.timing_ms = {k: round(v, 2) for k, v in {"load_model": load_ms, **result.timing_ms,
                                                    "total": 1000 * (time.perf_counter() - started)}.items()}
    return result


def predict_file(ct_path: Union[str, Path], point: Optional[Sequence[float]] = None, unit: str = "lps",
                 mask_path: Union[str, Path, None] = None, label: Optional[int] = None,
                 model: Union[str, Path, None] = None, device: str = "auto", refine: bool = False) -> Prediction:
    """read_ct -> locate -> predict_ct, with the reading and locating time added to timing_ms."""
    from mvcf.locate import VertebraQuery, resolve
    from mvcf.read_ct import read_ct

    query = VertebraQuery(point=None if point is None else tuple(point), unit=unit if point is not None else "",
                          mask=None if mask_path is None else Path(mask_path), label=label, refine=refine)
    started = time.perf_counter()
    ct = read_ct(ct_path)
    read_ms = 1000 * (time.perf_counter() - started)
    t = time.perf_counter()
    location = resolve(ct, query)
    locate_ms = 1000 * (time.perf_counter() - t)
    result = predict_ct(ct, location, model, device)
    result.timing_ms = {"read_ct": round(read_ms, 2), "locate": round(locate_ms, 2), **result.timing_ms}
    result.timing_ms["total"] = round(read_ms + locate_ms + result.timing_ms["total"], 2)
    return result


def _predict_query(ct, query, bundle, device: str, masks: dict, refine: bool) -> dict[str, Any]:
    from dataclasses import replace

    from mvcf.locate import resolve

    started = time.perf_counter()
    location = resolve(ct, replace(query, refine=query.refine or refine), masks)
    locate_ms = 1000 * (time.perf_counter() - started)
    result = _predict_located(ct, location, bundle, device)
    payload = result.to_dict()
    timing = {"locate": locate_ms, **result.timing_ms}
    if query.heatmap is not None:
        from mvcf.explain import write_prediction_heatmap

        t = time.perf_counter()
        payload["heatmap"] = str(write_prediction_heatmap(bundle, result, query.heatmap, device=device, ct=ct,
                                                          location=location))
        timing["heatmap"] = 1000 * (time.perf_counter() - t)
    if query.views is not None:  # the model input itself, e.g. for Slicer to overlay on the CT
        from mvcf.fileio import atomic_dir

        with atomic_dir(query.views, overwrite=True) as tmp:  # replaces only an earlier views folder of mvcf
            names = [path.name for path in result.view.write_volumes(tmp)]
        payload["views"] = [str(Path(query.views) / name) for name in names]
    timing["total"] = 1000 * (time.perf_counter() - started)
    payload["timing_ms"] = {k: round(v, 2) for k, v in timing.items()}
    return payload


def predict_many(ct, queries: Sequence[Any], model: Union[str, Path, None, Any] = None, device: str = "auto",
                 refine: bool = False, on_progress: Optional[Callable[[int, int, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None) -> list[dict[str, Any]]:
    """Classify several vertebrae (mvcf.locate.VertebraQuery) of one CTImage with one bundle load.

    Returns one dict per query, in order: `name` and the fields of Prediction.to_dict() (plus `heatmap`
    when the query asks for one), or `name`, `error` (one line) and `timing_ms` when that vertebra failed
    (unreadable mask, absent label, point outside the CT, heatmap not writable): one failure never loses
    the others. A bad bundle fails the whole call (MVCFError), as does cancellation (Cancelled)."""
    from mvcf.errors import Cancelled
    from mvcf.progress import check_cancel

    device = resolve_device(device)
    bundle = load_model(model, device)
    total = len(queries)
    masks: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    for index, query in enumerate(queries):
        check_cancel(should_cancel)
        if on_progress is not None:
            on_progress(index, total, f"{query.name} ({index + 1}/{total})")
        started = time.perf_counter()
        try:
            results.append({"name": query.name, **_predict_query(ct, query, bundle, device, masks, refine)})
        except Cancelled:
            raise
        except (MVCFError, OSError) as exc:
            message = str(exc) if isinstance(exc, MVCFError) else \
                f"cannot write {getattr(exc, 'filename', None) or query.heatmap}: {exc.strerror or exc}"
            results.append({"name": query.name, "error": (message.splitlines() or [type(exc).__name__])[0],
                            "timing_ms": {"total": round(1000 * (time.perf_counter() - started), 2)}})
    if on_progress is not None:
        on_progress(total, total, "done")
    return results

"""Predict: one vertebra of one CT -> probability of a malignant fracture, the call at the bundle's frozen
threshold, and everything needed to trust (or distrust) the number: model identity, device, centre, timings,
warnings, and the research-use disclaimer. `predict_many` does several vertebrae of one CT with one model
load, each vertebra failing on its own."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.errors import MVCFError


def default_model_path() -> Path:
    """The embedded demo bundle (trained on synthetic data) shipped in mvcf/resources/demo_model."""
    return Path(__file__).resolve().parent / "resources" / "demo_model"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUNDLES: dict[tuple[str, str, float], Any] = {}


def load_model(path: Union[str, Path, None] = None, device: str = "cpu"):
    """Load (and memoise per process) a bundle; None = the embedded demo bundle."""
    from mvcf.models.bundle import WEIGHTS_FILE, load_bundle

    bundle_dir = Path(path) if path is not None else default_model_path()
    weights = bundle_dir / WEIGHTS_FILE
    key = (str(bundle_dir.resolve()), device, weights.stat().st_mtime if weights.exists() else 0.0)
    if key not in _BUNDLES:
        _BUNDLES[key] = load_bundle(bundle_dir, device=device)
    return _BUNDLES[key]


def bundle_warnings(card: dict[str, Any]) -> list[str]:
    notes = []
    if card.get("trained_on_synthetic_data"):
        notes.append("this model was trained on synthetic data only: the probability is a software "
                     "demonstration, not a clinical estimate")
    return notes


def predict_view(array: np.ndarray, bundle, device: str = "cpu") -> float:
    """Probability of MVCF for one view array (the shape the bundle's card names)."""
    import torch

    expected = tuple(bundle.card["network"]["input_shape"])
    if tuple(array.shape) != expected:
        raise MVCFError(f"view shape {tuple(array.shape)} does not match the model's input {expected}")
    from mvcf.models.card_schema import check_probability

    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)
        return check_probability(float(bundle.model(x)[0].float().cpu()), f"the model {bundle.name}")


def predict_ct(ct, location, model: Union[str, Path, None, Any] = None, device: str = "auto") -> Prediction:
    """Classify the vertebra at `location` (a VertebraLocation, LPS mm) of `ct` (a CTImage).
    `model` is a bundle directory, an already loaded Bundle, or None for the embedded demo bundle.
    The warnings start with the location's own (build_views carries them), then the view's and the bundle's."""
    from mvcf.models.bundle import Bundle
    from mvcf.train import resolve_device
    from mvcf.views import ViewSpec, build_views

    from mvcf.locate import require_bone

    require_bone(ct, location)
    device = resolve_device(device)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    bundle = model if isinstance(model, Bundle) else load_model(model, device)
    if isinstance(model, Bundle):
        bundle.model.to(device)
    timing["load_model"] = 1000 * (time.perf_counter() - started)
    t = time.perf_counter()
    spec = ViewSpec.from_dict(bundle.view_spec)
    view = build_views(ct, location, spec)
    timing["views"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    probability = predict_view(view.array, bundle, device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    timing["inference"] = 1000 * (time.perf_counter() - t)
    timing["total"] = 1000 * (time.perf_counter() - started)
    threshold = bundle.threshold
    return Prediction(probability_malignant=probability,
                      prediction="MVCF" if probability >= threshold else "OVCF", threshold=threshold,
                      model=bundle.identity(), device=device,
                      center_lps=[float(v) for v in view.center_lps],
                      timing_ms={k: round(v, 2) for k, v in timing.items()},
                      warnings=list(view.warnings) + bundle_warnings(bundle.card), view_mode=spec.mode)


def locate_in(ct, point: Optional[Sequence[float]] = None, unit: str = "lps", mask_path: Union[str, Path, None] = None,
              label: Optional[int] = None, refine: bool = False):
    """A VertebraLocation from either a point (unit 'ras', 'lps' or 'ijk') or a mask file + label."""
    from mvcf.locate import from_mask, from_point, refine_on_body
    from mvcf.read_ct import read_mask

    if (point is None) == (mask_path is None):
        raise MVCFError("give exactly one of a point (RAS, LPS or IJK) or a mask with a label")
    if mask_path is not None:
        if label is None:
            raise MVCFError("--mask needs --label (the vertebra's label value, e.g. 31 for L1 in TotalSegmentator)")
        location = from_mask(ct, read_mask(mask_path), int(label))
    else:
        location = from_point(ct, point, unit)
    return refine_on_body(ct, location) if refine else location


def predict_file(ct_path: Union[str, Path], point: Optional[Sequence[float]] = None, unit: str = "lps",
                 mask_path: Union[str, Path, None] = None, label: Optional[int] = None,
                 model: Union[str, Path, None] = None, device: str = "auto", refine: bool = False) -> Prediction:
    """read_ct -> locate -> predict_ct, with the reading and locating time added to timing_ms."""
    from mvcf.read_ct import read_ct

    started = time.perf_counter()
    ct = read_ct(ct_path)
    read_ms = 1000 * (time.perf_counter() - started)
    t = time.perf_counter()
    location = locate_in(ct, point, unit, mask_path, label, refine)
    locate_ms = 1000 * (time.perf_counter() - t)
    result = predict_ct(ct, location, model, device)
    result.timing_ms = {"read_ct": round(read_ms, 2), "locate": round(locate_ms, 2), **result.timing_ms}
    result.timing_ms["total"] = round(read_ms + locate_ms + result.timing_ms["total"], 2)
    return result


def _locate_query(ct, query, masks: dict, refine: bool):
    """A VertebraLocation for one VertebraQuery; each mask file is read once per run (`masks` caches the
    image, or the error that reading it raised)."""
    from mvcf.locate import from_mask, from_point, refine_on_body
    from mvcf.read_ct import read_mask

    if query.mask is not None:
        key = str(Path(query.mask).resolve())
        if key not in masks:
            try:
                masks[key] = read_mask(query.mask)
            except MVCFError as exc:
                masks[key] = exc
        if isinstance(masks[key], MVCFError):
            raise masks[key]
        location = from_mask(ct, masks[key], int(query.label), name=query.name)
    else:
        location = from_point(ct, query.point, query.unit, name=query.name)
    return refine_on_body(ct, location) if refine else location


def _predict_query(ct, query, bundle, device: str, masks: dict, refine: bool) -> dict[str, Any]:
    started = time.perf_counter()
    location = _locate_query(ct, query, masks, refine)
    locate_ms = 1000 * (time.perf_counter() - started)
    result = predict_ct(ct, location, bundle, device)
    payload = result.to_dict()
    timing = {"locate": round(locate_ms, 2), **result.timing_ms}
    if query.heatmap is not None:
        from mvcf.explain import write_heatmap

        t = time.perf_counter()
        payload["heatmap"] = str(write_heatmap(ct, location, bundle, query.heatmap, device=device))
        timing["heatmap"] = round(1000 * (time.perf_counter() - t), 2)
    timing["total"] = round(1000 * (time.perf_counter() - started), 2)
    payload["timing_ms"] = timing
    return payload


def predict_many(ct, queries: Sequence[Any], model: Union[str, Path, None, Any] = None, device: str = "auto",
                 refine: bool = False, on_progress: Optional[Callable[[int, int, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None) -> list[dict[str, Any]]:
    """Classify several vertebrae (mvcf.locations_file.VertebraQuery) of one CTImage with one bundle load.

    Returns one dict per query, in order: `name` and the fields of Prediction.to_dict() (plus `heatmap`
    when the query asks for one), or `name`, `error` (one line) and `timing_ms` when that vertebra failed
    (unreadable mask, absent label, point outside the CT, heatmap not writable): one failure never loses
    the others. A bad bundle fails the whole call (MVCFError), as does cancellation (Cancelled)."""
    from mvcf.errors import Cancelled
    from mvcf.models.bundle import Bundle
    from mvcf.progress import check_cancel
    from mvcf.train import resolve_device

    device = resolve_device(device)
    bundle = model if isinstance(model, Bundle) else load_model(model, device)
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

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
    backend: str = ""
    disclaimer: str = RESEARCH_USE_DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUNDLES: dict[tuple, Any] = {}


def load_model(path: Union[str, Path, None] = None, device: str = "auto", backend: str = "auto"):
    """Load (and memoise per process) a bundle; None = the embedded demo bundle. `backend` auto runs the
    bundle's ONNX graph with ONNX Runtime when it has one (torch is then never imported), else torch;
    the returned bundle's `.backend` and `.device` say what was picked (mvcf.models.runtime)."""
    from mvcf.models.bundle import CARD_FILE, WEIGHTS_FILE
    from mvcf.models.runtime import open_bundle

    bundle_dir = Path(path) if path is not None else default_model_path()
    stamps = tuple((bundle_dir / name).stat().st_mtime_ns if (bundle_dir / name).exists() else 0
                   for name in (WEIGHTS_FILE, CARD_FILE))
    key = (str(bundle_dir.resolve()), device, backend, stamps)
    if key not in _BUNDLES:
        _BUNDLES[key] = open_bundle(bundle_dir, device, backend)
    return _BUNDLES[key]


def bundle_for(model: Union[str, Path, None, Any], device: str = "auto", backend: str = "auto"):
    """`model` as a loaded bundle: a bundle directory or None (loaded, memoised) or an already loaded
    Bundle (a torch one is moved to `device` when that names another device)."""
    from mvcf.models.bundle import Bundle

    if not isinstance(model, Bundle):
        return load_model(model, device, backend)
    if model.backend == "torch" and device not in ("auto", model.device):
        from mvcf.train import resolve_device

        model.device = resolve_device(device)
        model.model.to(model.device)
    return model


def bundle_warnings(card: dict[str, Any]) -> list[str]:
    notes = []
    if card.get("trained_on_synthetic_data"):
        notes.append("this model was trained on synthetic data only: the probability is a software "
                     "demonstration, not a clinical estimate")
    return notes


def predict_view(array: np.ndarray, bundle, device: str = "cpu") -> float:
    """Probability of MVCF for one view array (the shape the bundle's card names), on the bundle's device."""
    from mvcf.models.runtime import forward

    return float(forward(bundle, np.asarray(array)[None])[1][0])


def _prediction(bundle, view, probability: float, timing: dict[str, float], extra_warnings: list[str]) -> Prediction:
    threshold = bundle.threshold
    return Prediction(probability_malignant=float(probability),
                      prediction="MVCF" if probability >= threshold else "OVCF", threshold=threshold,
                      model=bundle.identity(), device=bundle.device,
                      center_lps=[float(v) for v in view.center_lps],
                      timing_ms={k: round(v, 2) for k, v in timing.items()},
                      warnings=list(view.warnings) + bundle_warnings(bundle.card) + extra_warnings,
                      view_mode=view.mode, backend=bundle.backend)


def predict_ct(ct, location, model: Union[str, Path, None, Any] = None, device: str = "auto",
               backend: str = "auto") -> Prediction:
    """Classify the vertebra at `location` (a VertebraLocation, LPS mm) of `ct` (a CTImage).
    `model` is a bundle directory, an already loaded Bundle, or None for the embedded demo bundle.
    The warnings start with the location's own (build_views carries them), then the view's and the bundle's."""
    from mvcf.models.runtime import forward
    from mvcf.views import ViewSpec, build_views

    timing: dict[str, float] = {}
    started = time.perf_counter()
    bundle = bundle_for(model, device, backend)
    timing["load_model"] = 1000 * (time.perf_counter() - started)
    t = time.perf_counter()
    view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
    timing["views"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    bundle, probabilities, notes = forward(bundle, view.array[None])
    timing["inference"] = 1000 * (time.perf_counter() - t)
    timing["total"] = 1000 * (time.perf_counter() - started)
    return _prediction(bundle, view, probabilities[0], timing, notes)


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


def _label_boxes(mask) -> list:
    """Bounding slices of every label of a mask, found in one pass (scipy.ndimage.find_objects)."""
    from scipy import ndimage

    voxels = mask.voxels
    if not np.issubdtype(voxels.dtype, np.integer) or voxels.size == 0 or voxels.min() < 0:
        return []
    return ndimage.find_objects(voxels)


def _label_region(mask, boxes: list, label: int):
    """The part of `mask` around `label` (same physical space), so locating several labels of one mask
    scans the mask once instead of once per label; the whole mask when the label is absent (from_mask
    then names the labels present)."""
    from mvcf.ctimage import CTImage

    box = boxes[label - 1] if 0 < label <= len(boxes) else None
    if box is None:
        return mask
    start_ijk = [box[2].start, box[1].start, box[0].start]
    return CTImage(mask.voxels[box], mask.spacing, mask.index_to_lps(np.asarray(start_ijk, dtype=float)),
                   mask.direction, source=mask.source)


def _locate_query(ct, query, masks: dict, refine: bool):
    """A VertebraLocation for one VertebraQuery; each mask file is read once per run (`masks` caches the
    image and its label boxes, or the error that reading it raised)."""
    from mvcf.locate import from_mask, from_point, refine_on_body
    from mvcf.read_ct import read_mask

    if query.mask is not None:
        key = str(Path(query.mask).resolve())
        if key not in masks:
            try:
                mask = read_mask(query.mask)
                masks[key] = (mask, _label_boxes(mask))
            except MVCFError as exc:
                masks[key] = exc
        if isinstance(masks[key], MVCFError):
            raise masks[key]
        location = from_mask(ct, _label_region(*masks[key], int(query.label)), int(query.label), name=query.name)
    else:
        location = from_point(ct, query.point, query.unit, name=query.name)
    return refine_on_body(ct, location) if refine else location


def _failure(name: str, exc: BaseException, heatmap, started: float) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, MVCFError) else \
        f"cannot write {getattr(exc, 'filename', None) or heatmap}: {getattr(exc, 'strerror', None) or exc}"
    return {"name": name, "error": (message.splitlines() or [type(exc).__name__])[0],
            "timing_ms": {"total": round(1000 * (time.perf_counter() - started), 2)}}


def predict_many(ct, queries: Sequence[Any], model: Union[str, Path, None, Any] = None, device: str = "auto",
                 refine: bool = False, on_progress: Optional[Callable[[int, int, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None, backend: str = "auto") -> list[dict[str, Any]]:
    """Classify several vertebrae (mvcf.locations_file.VertebraQuery) of one CTImage with one bundle load
    and one batched forward pass (chunked to a memory bound, mvcf.models.runtime.forward).

    Returns one dict per query, in order: `name` and the fields of Prediction.to_dict() (plus `heatmap`
    when the query asks for one), or `name`, `error` (one line) and `timing_ms` when that vertebra failed
    (unreadable mask, absent label, point outside the CT, heatmap not writable): one failure never loses
    the others. A bad bundle fails the whole call (MVCFError), as does cancellation (Cancelled).
    Each vertebra's `inference` time is its share of the batched pass."""
    from mvcf.errors import Cancelled
    from mvcf.models.runtime import forward
    from mvcf.progress import check_cancel
    from mvcf.views import ViewSpec, build_views

    bundle = bundle_for(model, device, backend)
    spec = ViewSpec.from_dict(bundle.view_spec)
    total = len(queries)
    masks: dict[str, Any] = {}
    results: list[Optional[dict[str, Any]]] = [None] * total
    ready: list[tuple[int, Any, Any, dict[str, float]]] = []
    for index, query in enumerate(queries):
        check_cancel(should_cancel)
        if on_progress is not None:
            on_progress(index, total, f"{query.name} ({index + 1}/{total})")
        started = time.perf_counter()
        try:
            location = _locate_query(ct, query, masks, refine)
            t = time.perf_counter()
            view = build_views(ct, location, spec)
            ready.append((index, location, view, {"locate": 1000 * (t - started),
                                                  "views": 1000 * (time.perf_counter() - t)}))
        except MVCFError as exc:
            results[index] = _failure(query.name, exc, query.heatmap, started)
    check_cancel(should_cancel)
    if ready:
        t = time.perf_counter()
        bundle, probabilities, notes = forward(bundle, np.stack([view.array for _, _, view, _ in ready]))
        share = 1000 * (time.perf_counter() - t) / len(ready)
        for (index, location, view, timing), probability in zip(ready, probabilities):
            query = queries[index]
            started = time.perf_counter()
            timing = {**timing, "inference": share}
            payload = {"name": query.name, **_prediction(bundle, view, probability, timing, notes).to_dict()}
            try:
                if query.heatmap is not None:
                    check_cancel(should_cancel)
                    from mvcf.explain import write_heatmap

                    payload["heatmap"] = str(write_heatmap(ct, location, bundle, query.heatmap, device=bundle.device))
                    timing["heatmap"] = 1000 * (time.perf_counter() - started)
            except Cancelled:
                raise
            except (MVCFError, OSError) as exc:
                results[index] = _failure(query.name, exc, query.heatmap, started)
                continue
            timing["total"] = sum(timing.values())
            payload["timing_ms"] = {k: round(v, 2) for k, v in timing.items()}
            results[index] = payload
    if on_progress is not None:
        on_progress(total, total, "done")
    return [r for r in results if r is not None]


def predict_ct_file(ct_path: Union[str, Path], queries: Sequence[Any], model: Union[str, Path, None, Any] = None,
                    device: str = "auto", backend: str = "auto", refine: bool = False,
                    on_progress: Optional[Callable[[int, int, str], None]] = None,
                    should_cancel: Optional[Callable[[], bool]] = None) -> tuple[dict[str, Any], Any]:
    """Read a CT, load the bundle (memoised) and classify every query: the payload of `mvcf predict
    --locations` ({"results", "timing_ms", "disclaimer"}) and the bundle that ran. Progress: reading,
    loading, then one step per vertebra."""
    from mvcf.read_ct import read_ct

    steps = len(queries) + 2
    progress = on_progress or (lambda done, total, message: None)
    progress(0, steps, "reading CT")
    started = time.perf_counter()
    ct = read_ct(ct_path)
    read_ms = 1000 * (time.perf_counter() - started)
    progress(1, steps, "loading the model")
    t = time.perf_counter()
    bundle = bundle_for(model, device, backend)
    load_ms = 1000 * (time.perf_counter() - t)
    results = predict_many(ct, queries, bundle, bundle.device, refine=refine, should_cancel=should_cancel,
                           on_progress=lambda done, _total, message: progress(2 + done, steps, message))
    payload = {"results": results,
               "timing_ms": {"read_ct": round(read_ms, 2), "load_model": round(load_ms, 2),
                             "total": round(1000 * (time.perf_counter() - started), 2)},
               "disclaimer": RESEARCH_USE_DISCLAIMER}
    return payload, bundle

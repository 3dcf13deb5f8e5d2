"""Predict: one vertebra of one CT -> probability of a malignant fracture, the call at the bundle's frozen
threshold, and everything needed to trust (or distrust) the number: model identity, device, centre, timings,
warnings, and the research-use disclaimer. `predict_many` does several vertebrae of one CT with one model
load and one batched forward pass, each vertebra failing on its own. The network runs on ONNX Runtime when
the bundle has its graph (backend "auto"; torch is then not imported), else on torch (mvcf.inference).

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
from mvcf.inference import default_model_path, forward_checked, load_model, synchronize
from mvcf.manifest import CLASS_NAMES
from mvcf.training_scans import trained_on

__all__ = ["Prediction", "bundle_warnings", "call", "default_model_path", "predict_ct", "predict_ct_file",
           "predict_file", "predict_many"]


def call(probability: float, threshold: float) -> str:
    """The class name a probability of MVCF is called at `threshold` (manifest.CLASS_NAMES)."""
    return CLASS_NAMES[int(probability >= threshold)]


def shown_decimals(threshold: float, probabilities: Sequence[Optional[float]], least: int = 3) -> int:
    """How many decimals one output shows its probabilities and threshold with: the fewest (at least `least`)
    at which every shown probability lies on the side of the shown threshold that its call says (0.66099
    against 0.66104 was "0.661 OVCF (threshold 0.661)"). Format them all with it."""
    return _decimals([(float(p), float(threshold)) for p in probabilities if p is not None], least)


def results_decimals(results: Sequence[dict[str, Any]], least: int = 3) -> int:
    """shown_decimals of several results shown together (rows with `probability_malignant` and `threshold`)."""
    return _decimals([(float(r["probability_malignant"]), float(r["threshold"])) for r in results
                      if r.get("probability_malignant") is not None and r.get("threshold") is not None], least)


def _decimals(pairs: Sequence[tuple[float, float]], least: int) -> int:
    """The fewest decimals at which every (probability, threshold) pair keeps its order. Found for all pairs
    at once: more decimals can break a pair that fewer kept (0.6604999 and 0.6605001 are 0.660 and 0.661,
    but 0.66050 twice), so the largest of each pair's own count is not enough."""
    for digits in range(least, 10):
        if all((round(p, digits) >= round(t, digits)) == (p >= t) for p, t in pairs):
            return digits
    return 10


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


def _prediction(bundle, view, probability: float, timing: dict[str, float], notes: Sequence[str]) -> Prediction:
    threshold = bundle.threshold
    return Prediction(probability_malignant=float(probability), prediction=call(probability, threshold),
                      threshold=threshold, model=bundle.identity(), device=bundle.device,
                      center_lps=[float(v) for v in view.center_lps], timing_ms=timing,
                      warnings=list(view.warnings) + bundle_warnings(bundle.card) + list(notes),
                      view_mode=view.spec.mode, backend=bundle.backend, view=view)


def predict_ct(ct, location, model: Union[str, Path, None, Any] = None, device: str = "auto",
               backend: str = "auto") -> Prediction:
    """Classify the vertebra at `location` (a VertebraLocation, LPS mm) of `ct` (a CTImage).
    `model` is a bundle directory, an already loaded Bundle, or None for the embedded demo bundle.
    The warnings start with the location's own (build_views carries them), then the view's and the bundle's."""
    from mvcf.locate import require_bone
    from mvcf.views import ViewSpec, build_views

    require_bone(ct, location)  # every classification passes here or through predict_many
    started = time.perf_counter()
    bundle = load_model(model, device, backend)
    timing = {"load_model": 1000 * (time.perf_counter() - started)}
    t = time.perf_counter()
    view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
    timing["views"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    done = forward_checked(bundle, [view.array])
    synchronize(done.bundle.device)
    timing["inference"] = 1000 * (time.perf_counter() - t)
    timing["total"] = 1000 * (time.perf_counter() - started)
    return _prediction(done.bundle, view, done.probabilities[0], {k: round(v, 2) for k, v in timing.items()},
                       [*done.warnings, *trained_on(bundle.card, ct.source)])


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


def _failure(name: str, exc: BaseException, heatmap: Any, started: float) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, MVCFError) else \
        f"cannot write {getattr(exc, 'filename', None) or heatmap}: {getattr(exc, 'strerror', None) or exc}"
    return {"name": name, "error": (message.splitlines() or [type(exc).__name__])[0],
            "timing_ms": {"total": round(1000 * (time.perf_counter() - started), 2)}}


def progress_steps(queries: Sequence[Any]) -> int:
    """predict_many's progress steps for `queries`: one per vertebra located, one per heatmap asked for."""
    return len(queries) + sum(q.heatmap is not None for q in queries)


def predict_many(ct, queries: Sequence[Any], model: Union[str, Path, None, Any] = None, device: str = "auto",
                 refine: bool = False, on_progress: Optional[Callable[[int, int, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None, backend: str = "auto",
                 heatmap_method: str = "gradcam", outputs: Optional[Any] = None) -> list[dict[str, Any]]:
    """Classify several vertebrae (mvcf.locate.VertebraQuery) of one CTImage with one bundle load and one
    batched forward pass (chunked to a memory bound, mvcf.inference.forward_checked); the heatmaps that
    queries ask for by `heatmap_method` (mvcf.explain.METHODS).

    Returns one dict per query, in order: `name` and the fields of Prediction.to_dict() (plus `heatmap`
    when the query asks for one), or `name`, `error` (one line) and `timing_ms` when that vertebra failed
    (unreadable mask, absent label, point outside the CT, heatmap not writable): one failure never loses
    the others. A bad bundle fails the whole call (MVCFError), as does cancellation (Cancelled), which also
    removes the heatmaps and views folders this call had written already (with the folders it made for them;
    `outputs`: the caller's fileio.RunOutputs when its own later writes are to be undone with them).
    Each vertebra's `inference` time is its share of the batched pass. Progress counts one step per vertebra
    located, then one per heatmap, so the count never goes back while a heatmap is computed."""
    from dataclasses import replace

    from mvcf.explain import check_method
    from mvcf.fileio import RunOutputs, undone_on_failure
    from mvcf.locate import require_bone, resolve
    from mvcf.progress import check_cancel
    from mvcf.views import ViewSpec, build_views

    check_method(heatmap_method)
    bundle = load_model(model, device, backend)
    spec = ViewSpec.from_dict(bundle.view_spec)
    total = len(queries)
    steps = progress_steps(queries)
    masks: dict[str, Any] = {}
    results: list[Optional[dict[str, Any]]] = [None] * total
    ready: list[tuple[int, Any, Any, dict[str, float]]] = []
    for index, query in enumerate(queries):
        check_cancel(should_cancel)
        if on_progress is not None:
            on_progress(index, steps, f"{query.name} ({index + 1}/{total})")
        started = time.perf_counter()
        try:
            location = require_bone(ct, resolve(ct, replace(query, refine=query.refine or refine), masks))
            t = time.perf_counter()
            view = build_views(ct, location, spec)
            ready.append((index, location, view, {"locate": 1000 * (t - started),
                                                  "views": 1000 * (time.perf_counter() - t)}))
        except MVCFError as exc:
            results[index] = _failure(query.name, exc, query.heatmap, started)
    check_cancel(should_cancel)
    if ready:
        written = outputs if outputs is not None else RunOutputs([p for q in queries for p in (q.heatmap, q.views)])
        with undone_on_failure(written):   # cancelled or interrupted: none of this call's outputs stays behind
            _classify_ready(bundle, ct, queries, ready, results, written, steps, on_progress, should_cancel,
                            heatmap_method)
    if on_progress is not None:
        on_progress(steps, steps, "done")
    return [r for r in results if r is not None]


def _classify_ready(bundle: Any, ct: Any, queries: Sequence[Any], ready: list, results: list,
                    written: Any, steps: int, on_progress: Optional[Callable[[int, int, str], None]],
                    should_cancel: Optional[Callable[[], bool]], heatmap_method: str) -> None:
    """predict_many's batched pass over the located vertebrae, then each one's heatmap and views files (their
    paths told to `written`, a fileio.RunOutputs, as they appear). The heatmap of the r-th query that asks
    for one is progress step len(queries) + r of `steps`."""
    from mvcf.errors import Cancelled
    from mvcf.fileio import atomic_dir
    from mvcf.progress import check_cancel

    t = time.perf_counter()
    done = forward_checked(bundle, [view.array for _, _, view, _ in ready], should_cancel=should_cancel)
    synchronize(done.bundle.device)
    notes = [*done.warnings, *trained_on(bundle.card, ct.source)]
    share = 1000 * (time.perf_counter() - t) / len(ready)
    for (index, location, view, timing), probability in zip(ready, done.probabilities):
        query, started = queries[index], time.perf_counter()
        timing["inference"] = share
        result = _prediction(done.bundle, view, probability, timing, notes)
        payload = {"name": query.name, **result.to_dict()}
        try:
            if query.heatmap is not None:
                from mvcf.explain import write_prediction_heatmap

                step = len(queries) + sum(q.heatmap is not None for q in queries[:index])

                def blocks(n: int, of: int, step: int = step, name: str = query.name) -> None:
                    if on_progress is not None:
                        on_progress(step, steps, f"{name}: occlusion heatmap {n}/{of} blocks")

                check_cancel(should_cancel)
                if on_progress is not None:
                    on_progress(step, steps, f"{query.name}: heatmap ({heatmap_method})")
                payload["heatmap"] = str(write_prediction_heatmap(done.bundle, result, query.heatmap,
                                                                  device=done.bundle.device, ct=ct,
                                                                  location=location, method=heatmap_method,
                                                                  progress=blocks,
                                                                  should_cancel=should_cancel, undo=written))
                payload["heatmap_method"] = heatmap_method
                timing["heatmap"] = 1000 * (time.perf_counter() - started)
            if query.views is not None:  # the model input itself, e.g. for Slicer to overlay on the CT
                # replaces only an earlier mvcf views folder
                with atomic_dir(query.views, overwrite=True, undo=written) as tmp:
                    names = [path.name for path in result.view.write_volumes(tmp)]
                payload["views"] = [str(Path(query.views) / name) for name in names]
        except Cancelled:
            raise
        except (MVCFError, OSError) as exc:
            results[index] = _failure(query.name, exc, query.heatmap or query.views, started)
            continue
        timing["total"] = sum(timing.values())
        payload["timing_ms"] = {k: round(v, 2) for k, v in timing.items()}
        results[index] = payload


def predict_ct_file(ct_path: Union[str, Path], queries: Sequence[Any], model: Union[str, Path, None, Any] = None,
                    device: str = "auto", backend: str = "auto", refine: bool = False,
                    on_progress: Optional[Callable[[int, int, str], None]] = None,
                    should_cancel: Optional[Callable[[], bool]] = None,
                    series_uid: Optional[str] = None,
                    read: Optional[Callable[..., Any]] = None,
                    heatmap_method: str = "gradcam", outputs: Optional[Any] = None) -> tuple[dict[str, Any], Any, Any]:
    """Read a CT, load the bundle (memoised) and classify every query: the payload of `mvcf predict
    --locations` ({"results", "timing_ms", "disclaimer"}), the bundle that ran and the CTImage. Progress:
    reading, loading, then predict_many's steps (one per vertebra, one per heatmap). The call behind the CLI
    and the warm worker (mvcf.worker, whose `read` is read_ct memoised per file); `outputs` as predict_many's."""
    from mvcf.read_ct import read_ct

    steps = progress_steps(queries) + 2
    progress = on_progress or (lambda done, total, message: None)
    progress(0, steps, "reading CT")
    started = time.perf_counter()
    ct_warnings: list[str] = []   # which DICOM series, HU scaling: part of every vertebra's record
    ct = read(ct_path, series_uid=series_uid) if read is not None else \
        read_ct(ct_path, warnings=ct_warnings, series_uid=series_uid)
    read_ms = 1000 * (time.perf_counter() - started)
    progress(1, steps, "loading the model")
    t = time.perf_counter()
    bundle = load_model(model, device, backend)
    load_ms = 1000 * (time.perf_counter() - t)
    results = predict_many(ct, queries, bundle, bundle.device, refine=refine, should_cancel=should_cancel,
                           on_progress=lambda done, total, message: progress(2 + done, 2 + total, message),
                           heatmap_method=heatmap_method, outputs=outputs)
    for result in results:
        if "warnings" in result:
            result["warnings"] = [*ct_warnings, *result["warnings"]]
    payload = {"results": results,
               "timing_ms": {"read_ct": round(read_ms, 2), "load_model": round(load_ms, 2),
                             "total": round(1000 * (time.perf_counter() - started), 2)},
               "disclaimer": RESEARCH_USE_DISCLAIMER}
    return payload, bundle, ct

"""Predict: one vertebra of one CT -> probability of a malignant fracture, the call at the bundle's frozen
threshold, and everything needed to trust (or distrust) the number: model identity, device, centre, timings,
warnings, and the research-use disclaimer."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

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
    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)
        return float(bundle.model(x)[0].float().cpu())


def predict_ct(ct, location, model: Union[str, Path, None, Any] = None, device: str = "auto") -> Prediction:
    """Classify the vertebra at `location` (a VertebraLocation, LPS mm) of `ct` (a CTImage).
    `model` is a bundle directory, an already loaded Bundle, or None for the embedded demo bundle."""
    from mvcf.models.bundle import Bundle
    from mvcf.train import resolve_device
    from mvcf.views import ViewSpec, build_views

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
    result.warnings = list(location.warnings) + [w for w in result.warnings if w not in location.warnings]
    return result

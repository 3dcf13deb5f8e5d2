"""Inference plumbing shared by predict, explain, evaluate and train: the device (resolved once per run),
the engine, model loading (memoised per process) and batched forward passes.

    device = resolve_device(args.device)            # "auto" -> "cuda" or "cpu", once (imports torch)
    bundle = load_model(path, device)               # None = the embedded demo bundle; torch
    bundle = load_model(path, "auto", "auto")       # ONNX Runtime when the bundle has its graph: no torch
    probabilities = forward(bundle, arrays, device)  # one MVCF probability per view array

The engine (`backend`): "torch" (the default of load_model: training, evaluation, Grad-CAM), "onnxruntime"
(the bundle's verified ONNX graph, mvcf.models.ort_backend) or "auto" (ONNX Runtime when the bundle has a
graph, else torch; how CUDA is chosen without importing torch: ort_backend.choose). The loaded bundle's
`.backend` and `.device` say what was picked. `forward_checked` runs any number of views in chunks bounded
in memory and, when CUDA runs out of memory, moves the bundle to the CPU and finishes there with a warning.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from mvcf.errors import MVCFError
from mvcf.models.forward import forward_arrays  # noqa: F401  (re-exported: train, tests)
from mvcf.progress import CancelCheck, check_cancel

log = logging.getLogger(__name__)

#: The --device choices of every command.
DEVICES = ("auto", "cpu", "cuda")
#: The --backend choices of predict and the worker.
BACKENDS = ("auto", "onnxruntime", "torch")
CHUNK_BYTES = 512 << 20  # activation budget of one forward pass (see chunk_size)
ACTIVATION_FACTOR = 32   # a resnet10's activations per case are ~10-30x its input
OOM_WARNING = "CUDA ran out of memory; the model was moved to the CPU and the rest of this run ran there"


def check_device_name(name: str) -> str:
    """`name` when it is a device this software can be asked for (also 'cuda:N'); MVCFError otherwise."""
    if name not in DEVICES and not re.fullmatch(r"cuda:\d+", str(name)):
        raise MVCFError(f"--device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}[:N], got {name!r}")
    return name


def resolve_device(name: str = "auto") -> str:
    """The torch device to run on: 'auto' picks CUDA when present; asking for CUDA without one fails."""
    import torch

    check_device_name(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MVCFError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    return name


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timing measures it; a no-op on CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def default_model_path() -> Path:
    """The embedded demo bundle (trained on synthetic data) shipped in mvcf/resources/demo_model."""
    return Path(__file__).resolve().parent / "resources" / "demo_model"


_BUNDLES: dict[tuple, Any] = {}


def load_model(path: Union[str, Path, None, Any] = None, device: str = "cpu", backend: str = "torch"):
    """A loaded, verified bundle: a bundle directory (loaded once per process), an already loaded Bundle,
    or None for the embedded demo bundle. backend "torch" (default) gives the torch network on `device`
    (an already loaded torch Bundle is moved there); "onnxruntime" / "auto" see the module doc."""
    from mvcf.models.bundle import CARD_FILE, WEIGHTS_FILE, Bundle

    if backend not in BACKENDS:
        raise MVCFError(f"--backend must be {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}, got {backend!r}")
    if isinstance(path, Bundle):
        if path.backend == "torch" and backend in ("torch", "auto"):
            path.device = resolve_device(device)
            path.model.to(path.device)
            return path
        if path.backend == "onnxruntime" and backend != "torch":
            return path
        path = path.path
    bundle_dir = Path(path) if path is not None else default_model_path()
    stamps = tuple((bundle_dir / name).stat().st_mtime_ns if (bundle_dir / name).exists() else 0
                   for name in (WEIGHTS_FILE, CARD_FILE))
    key = (str(bundle_dir.resolve()), device, backend, stamps)
    if key not in _BUNDLES:
        _BUNDLES[key] = _open(bundle_dir, device, backend)
    return _BUNDLES[key]


def _open(bundle_dir: Path, device: str, backend: str):
    from mvcf.models.bundle import load_bundle, read_card
    from mvcf.models.ort_backend import choose, load_ort_bundle

    engine, device = ("torch", device) if backend == "torch" else choose(check_device_name(device),
                                                                       read_card(bundle_dir), backend)
    if engine == "onnxruntime":
        return load_ort_bundle(bundle_dir, device)
    device = resolve_device(device)
    return load_bundle(bundle_dir, device=device)




def chunk_size(input_shape: Sequence[int], budget_bytes: int = CHUNK_BYTES) -> int:
    """Cases per forward pass so that the input times ACTIVATION_FACTOR stays within budget_bytes."""
    per_case = 4 * int(np.prod(input_shape)) * ACTIVATION_FACTOR
    return max(1, int(budget_bytes // per_case))


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or ONNX Runtime's CUDA allocation failure (a RuntimeException)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text or "cudaerrormemoryallocation" in text


@dataclass
class Forward:
    """What forward_checked returns: the bundle that finished the work (the input one, or its CPU copy
    after CUDA ran out of memory), one probability per case, and the warnings for the user."""

    bundle: Any
    probabilities: np.ndarray
    warnings: list[str] = field(default_factory=list)


def forward_checked(bundle, arrays: Union[np.ndarray, Sequence[np.ndarray]], batch_size: Optional[int] = None,
                    should_cancel: Optional[CancelCheck] = None, budget_bytes: int = CHUNK_BYTES) -> Forward:
    """Probabilities of MVCF from a loaded bundle (either backend, on its own device), `batch_size` cases
    per pass (default: as many as fit `budget_bytes`, chunk_size). Every array must have the shape the
    bundle's card names. CUDA out of memory: the bundle goes to the CPU, the run goes on, a warning says so."""
    expected = tuple(bundle.card["network"]["input_shape"])
    for array in arrays:
        if tuple(np.shape(array)) != expected:
            raise MVCFError(f"view shape {tuple(np.shape(array))} does not match the model's input {expected}")
    step = batch_size or chunk_size(expected, budget_bytes)
    out: list[np.ndarray] = []
    warnings: list[str] = []
    start = 0
    while start < len(arrays):
        check_cancel(should_cancel)
        chunk = np.ascontiguousarray(np.stack(arrays[start:start + step]), dtype=np.float32)
        try:
            out.append(np.asarray(bundle.probabilities(chunk), dtype=np.float32).ravel())
        except Exception as exc:  # noqa: BLE001 - only CUDA running out of memory is handled here
            if not (str(bundle.device).startswith("cuda") and is_out_of_memory(exc)):
                raise
            log.warning("%s (%s)", OOM_WARNING, (str(exc).splitlines() or [type(exc).__name__])[0])
            bundle = bundle.on_cpu()
            if OOM_WARNING not in warnings:
                warnings.append(OOM_WARNING)
            continue
        start += len(chunk)
    from mvcf.models.card_schema import check_probabilities

    probabilities = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    return Forward(bundle, check_probabilities(probabilities, f"the model {bundle.name}"), warnings)


def forward(bundle, arrays: Sequence[np.ndarray], device: Optional[str] = None, batch_size: Optional[int] = None,
            should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Probabilities of MVCF (float32, one per array) from a loaded bundle; `device` names where a torch
    bundle's network already is (default: its own). See forward_checked (chunks, CUDA out of memory)."""
    if device is not None and bundle.backend == "torch":
        bundle.device = device
    return forward_checked(bundle, arrays, batch_size, should_cancel).probabilities

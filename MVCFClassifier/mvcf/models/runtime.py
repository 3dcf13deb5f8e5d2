"""Which engine runs a bundle's network, and the batched forward pass shared by every caller.

`open_bundle` picks the backend (ONNX Runtime when the bundle has a verified graph, torch otherwise or
when asked; see mvcf.models.ort_backend.choose) and returns a Bundle whose `.backend` and `.device` say
what was picked. `forward` runs many cases in chunks bounded in memory; when CUDA runs out of memory it
moves the bundle to the CPU, finishes there and returns a warning instead of failing the run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Union

import numpy as np

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 << 20  # activation budget per forward pass, as a multiple of the input (see chunk_size)
ACTIVATION_FACTOR = 32   # resnet10 activations per case are ~10-30x its input
OOM_WARNING = ("CUDA ran out of memory; the model was moved to the CPU and the rest of this run ran there")


def load_torch_bundle(path: Union[str, Path], device: str):
    from mvcf.models.bundle import load_bundle
    from mvcf.train import resolve_device

    device = resolve_device(device)
    bundle = load_bundle(path, device=device)
    bundle.device = device
    return bundle


def open_bundle(path: Union[str, Path], device: str = "auto", backend: str = "auto"):
    """A verified bundle ready to run: OrtBundle (no torch import) or the torch Bundle."""
    from mvcf.models.bundle import read_card
    from mvcf.models.ort_backend import choose, load_ort_bundle

    engine, device = choose(device, read_card(path), backend)
    if engine == "onnxruntime":
        return load_ort_bundle(path, device)
    return load_torch_bundle(path, device)


def chunk_size(input_shape, budget_bytes: int = CHUNK_BYTES) -> int:
    """Cases per forward pass so that input x ACTIVATION_FACTOR stays within budget_bytes."""
    per_case = 4 * int(np.prod(input_shape)) * ACTIVATION_FACTOR
    return max(1, int(budget_bytes // per_case))


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or ONNX Runtime's CUDA allocation failure (a RuntimeException)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text or "cudaerrormemoryallocation" in text


def forward(bundle, arrays: np.ndarray, budget_bytes: int = CHUNK_BYTES) -> tuple[Any, np.ndarray, list[str]]:
    """(bundle, probabilities, warnings) for `arrays` (N, *input_shape). The returned bundle is the one
    that finished the work: the input bundle, or its CPU copy after CUDA ran out of memory."""
    from mvcf.errors import MVCFError

    expected = tuple(bundle.card["network"]["input_shape"])
    if tuple(arrays.shape[1:]) != expected:
        raise MVCFError(f"view shape {tuple(arrays.shape[1:])} does not match the model's input {expected}")
    step = chunk_size(expected, budget_bytes)
    out: list[np.ndarray] = []
    warnings: list[str] = []
    start = 0
    while start < len(arrays):
        chunk = arrays[start:start + step]
        try:
            out.append(bundle.probabilities(chunk))
        except Exception as exc:  # noqa: BLE001 - only CUDA OOM is handled, everything else re-raised
            if not (str(bundle.device).startswith("cuda") and is_out_of_memory(exc)):
                raise
            log.warning("%s (%s)", OOM_WARNING, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            bundle = bundle.on_cpu()
            warnings.append(OOM_WARNING)
            continue
        start += len(chunk)
    probabilities = np.concatenate(out) if out else np.zeros(0, dtype=np.float64)
    return bundle, probabilities, warnings

"""Run a bundle's ONNX graph with ONNX Runtime: prediction without importing torch.

`load_ort_bundle` verifies the card, the weights' sha256, the graph's sha256 and its binding to the
weights (mvcf.models.onnx_graph), builds one InferenceSession (CUDA provider when asked for and present,
else CPU) and checks the probe before returning. `OrtBundle.probabilities(batch)` is the forward pass.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from mvcf.errors import MVCFError
from mvcf.models.bundle import Bundle


def cuda_devices_by_driver() -> int:
    """How many CUDA devices the NVIDIA driver reports (0 without a driver), asked through the driver
    library itself so that deciding 'is there a GPU' does not import torch."""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in filter(None, names):
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
        except AttributeError:
            return 0
        return int(count.value)
    return 0


def ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass
class OrtBundle(Bundle):
    """A verified bundle whose network runs as an ONNX Runtime session (`model` is the session)."""

    backend: str = "onnxruntime"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Probability of MVCF per case of `batch` (N, *input_shape), float32 -> float64 array (N,)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self.model.run(None, {self.model.get_inputs()[0].name: x})[0], dtype=np.float64).ravel()

    def on_cpu(self) -> "OrtBundle":
        """The same bundle on the CPU provider (the fallback after CUDA ran out of memory)."""
        return load_ort_bundle(self.path, "cpu")


def _session(graph: bytes, device: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(graph, options, providers=providers)
    if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        raise MVCFError("ONNX Runtime could not start its CUDA provider")
    return session


def load_ort_bundle(path: Union[str, Path], device: str = "cpu") -> OrtBundle:
    """Verify a bundle and its graph and open the graph on `device` ('cpu' or 'cuda[:N]')."""
    from mvcf.models.bundle import check_weights_sha256, read_card
    from mvcf.models.onnx_graph import check_graph, check_probe

    bundle_dir = Path(path)
    card = read_card(bundle_dir)
    check_weights_sha256(bundle_dir, card)
    graph = check_graph(bundle_dir, card)
    session = _session(graph, device)
    bundle = OrtBundle(path=bundle_dir, card=card, model=session, device=device)
    check_probe(bundle.probabilities, card, bundle_dir / card["onnx"].get("file", "model.onnx"))
    return bundle


def has_graph(card: dict[str, Any]) -> bool:
    return isinstance(card.get("onnx"), dict)


def choose(device: str, card: Optional[dict[str, Any]], backend: str = "auto") -> tuple[str, str]:
    """(backend, device) for a run, deciding without importing torch where possible:
    --backend torch, or a bundle without a graph -> torch on `device`; cpu -> onnxruntime on the CPU;
    cuda / auto with a GPU -> ONNX Runtime's CUDA provider when installed, else torch on CUDA;
    auto without a GPU -> onnxruntime on the CPU. Device 'auto' stays 'auto' for torch to resolve."""
    if backend not in ("auto", "onnxruntime", "torch"):
        raise MVCFError(f"--backend must be auto, onnxruntime or torch, got {backend!r}")
    graph = card is not None and has_graph(card)
    if backend == "onnxruntime" and not graph:
        raise MVCFError("--backend onnxruntime: this model bundle has no ONNX graph (add one with "
                        "scripts/add_onnx_graph.py)")
    if backend == "torch" or not graph:
        return "torch", device
    if device == "cpu":
        return "onnxruntime", "cpu"
    wants_gpu = device.startswith("cuda") or cuda_devices_by_driver() > 0
    if not wants_gpu:
        return "onnxruntime", "cpu"
    if ort_has_cuda():
        return "onnxruntime", "cuda" if device == "auto" else device
    if backend == "onnxruntime":
        if device == "auto":
            return "onnxruntime", "cpu"
        if cuda_devices_by_driver() == 0:   # neither engine can help: say what is really missing
            raise MVCFError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
        raise MVCFError("--backend onnxruntime --device cuda: this onnxruntime has no CUDA provider "
                        "(install onnxruntime-gpu, or use --backend torch)")
    return "torch", device

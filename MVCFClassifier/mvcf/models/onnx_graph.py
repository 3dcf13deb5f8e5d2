"""The bundle's ONNX graph: the same network as the safetensors weights, runnable without torch.

A bundle may hold `model.onnx` next to `weights.safetensors`. The card's `onnx` entry binds the two:
the graph file's sha256 (checked on load, like the weights'), the sha256 of the weights it was exported
from (must equal the card's), and a probe: a fixed pseudo-random input batch and the probabilities torch
computed for it from the weights at export time. Before a graph is used its output on the probe must
reproduce those probabilities to PROBE_TOLERANCE, so a graph exported from other weights, or edited, is
refused. The weights' sha256 is also written into the graph's own metadata.

Export (`write_graph`; `mvcf.models.bundle.add_graph` for an existing bundle) needs torch and the `onnx` package; checking and running
(`check_graph`, mvcf.models.ort_backend) need only numpy and onnxruntime. The export is deterministic:
the same weights give the same bytes, so a retrained bundle regenerates its graph with `mvcf.models.bundle.add_graph`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from mvcf.errors import MVCFError

GRAPH_FILE = "model.onnx"
OPSET = 17
INPUT_NAME = "view"
OUTPUT_NAME = "probability_mvcf"
PROBE_SEED = 20250611
PROBE_BATCH = 2
PROBE_TOLERANCE = 1e-5
METADATA_WEIGHTS_KEY = "mvcf_weights_sha256"


def probe_input(input_shape: list[int], seed: int = PROBE_SEED, batch: int = PROBE_BATCH) -> np.ndarray:
    """The fixed probe batch: uniform [0, 1) values (the range of windowed views), float32."""
    return np.random.default_rng(seed).random((batch, *[int(s) for s in input_shape]), dtype=np.float32)


def _export(model, input_shape: list[int], out_path: Path, weights_sha256: str) -> None:
    """torch.onnx export (TorchScript exporter; the dynamo one would need onnxscript), dynamic batch,
    the weights' sha256 in the graph's metadata."""
    import warnings

    import onnx
    import torch

    dummy = torch.zeros(1, *input_shape, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(out_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    graph = onnx.load(str(out_path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_WEIGHTS_KEY, weights_sha256
    onnx.save(graph, str(out_path))


def write_graph(model, input_shape: list[int], weights_sha256: str, out_path: Union[str, Path]) -> dict[str, Any]:
    """Export `model` (an Ensemble returning probabilities) to `out_path` and return the card's `onnx`
    entry. The graph is run once on the probe with onnxruntime and must agree with torch; otherwise
    nothing is written."""
    import torch

    from mvcf.fileio import atomic_path
    from mvcf.limits import sha256_stream as sha256_file

    out_path = Path(out_path)
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model = model.to("cpu").eval()
    probe = probe_input(input_shape)
    try:
        with torch.no_grad():
            expected = model(torch.from_numpy(probe)).float().numpy()
        with atomic_path(out_path) as tmp:
            _export(model, list(input_shape), tmp, weights_sha256)
            got = _run(tmp.read_bytes(), probe)
            diff = float(np.abs(got - expected).max())
            if not diff <= PROBE_TOLERANCE:
                raise MVCFError(f"the exported ONNX graph differs from torch by {diff:.2e} on the probe input "
                                f"(tolerance {PROBE_TOLERANCE:g}); no graph written")
    finally:
        model.to(device).train(was_training)
    import onnxruntime

    return {"file": out_path.name, "sha256": sha256_file(out_path), "weights_sha256": weights_sha256,
            "opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME,
            "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "probe": {"seed": PROBE_SEED, "batch": PROBE_BATCH, "distribution": "uniform [0, 1)",
                      "probabilities": [float(v) for v in expected.ravel()], "tolerance": PROBE_TOLERANCE}}


def _run(graph: bytes, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {INPUT_NAME: batch})[0], dtype=np.float32)


def check_graph(bundle_dir: Union[str, Path], card: dict[str, Any]) -> bytes:
    """The verified bytes of the bundle's graph: an MVCFError if the card has no `onnx` entry, the file is
    missing, its sha256 differs from the card's, or it names other weights than the card. (The probe is
    checked by whoever builds the session: mvcf.models.ort_backend.)"""
    import hashlib

    entry = card.get("onnx")
    if not isinstance(entry, dict):
        raise MVCFError("this model bundle has no ONNX graph (add one with scripts/add_onnx_graph.py, or use "
                        "--backend torch)")
    path = Path(bundle_dir) / str(entry.get("file", GRAPH_FILE))
    if not path.is_file():
        raise MVCFError(f"invalid model bundle: {path} is missing")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise MVCFError(f"the ONNX graph does not match the card's sha256 (expected {str(entry.get('sha256'))[:12]}"
                        f"..., got {actual[:12]}...): {path} was modified or corrupted")
    if entry.get("weights_sha256") != card["weights"].get("sha256"):
        raise MVCFError(f"the ONNX graph {path} was exported from other weights than this bundle's "
                        f"(re-export it with scripts/add_onnx_graph.py)")
    return data


def check_probe(run, card: dict[str, Any], path: Union[str, Path]) -> None:
    """`run(batch) -> probabilities` must reproduce the card's probe probabilities (the weights' outputs)."""
    entry = card["onnx"]
    probe = entry.get("probe") if isinstance(entry.get("probe"), dict) else {}
    try:
        expected = np.asarray(probe.get("probabilities", []), dtype=np.float64).ravel()
        seed, size = int(probe.get("seed", PROBE_SEED)), int(probe.get("batch", PROBE_BATCH))
        tolerance = min(float(probe.get("tolerance", PROBE_TOLERANCE)), 1e-3)
        if not 1 <= size <= 16:
            raise ValueError(size)
    except (TypeError, ValueError):
        raise MVCFError(f"invalid model card: the 'onnx' probe of {path} is malformed") from None
    batch = probe_input(card["network"]["input_shape"], seed, size)
    got = np.asarray(run(batch), dtype=np.float64).ravel()
    if got.shape != expected.shape or not np.all(np.abs(got - expected) <= tolerance):
        worst = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        raise MVCFError(f"the ONNX graph in {path} does not reproduce its weights' outputs (max difference "
                        f"{worst:.2e} on the probe input, tolerance {tolerance:g}); re-export it")

"""Benchmark: model inference, torch eager vs ONNX Runtime, for a bundle (default: the embedded demo bundle).

Both run the same exported network on the same random inputs of the bundle's input shape, single-threaded
by default (the Slicer use case: one vertebra at a time on a laptop CPU), at batch 1 and batch 16. Outputs
must agree (max abs difference reported). Prints (and with --out writes) one JSON object: median ms per
batch for each engine and the ratio eager / onnxruntime (> 1 means ONNX Runtime is faster).

    python benchmarks/bench_inference.py [--model DIR] [--out bench_inference.json] [--repeats 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from report import emit, median_time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder (default: the embedded demo bundle)")
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from mvcf.models.bundle import export_onnx, load_bundle
    from mvcf.predict import default_model_path

    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model or default_model_path())
    shape = tuple(bundle.card["network"]["input_shape"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(bundle, Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    results = {}
    rng = np.random.default_rng(0)
    for batch in (1, 16):
        x = rng.random((batch,) + shape, dtype=np.float32)
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            eager = bundle.model(tx).numpy()
            eager_ms = 1000 * median_time(lambda: bundle.model(tx), args.repeats, warmup=1).median_s
        onnx_out = session.run(None, {"view": x})[0]
        onnx_ms = 1000 * median_time(lambda: session.run(None, {"view": x}), args.repeats, warmup=1).median_s
        results[f"batch_{batch}"] = {"torch_eager_ms": round(eager_ms, 3), "onnxruntime_ms": round(onnx_ms, 3),
                                     "ratio_eager_over_onnx": round(eager_ms / onnx_ms, 3),
                                     "max_abs_diff": float(np.abs(eager - onnx_out).max())}
    payload = {"benchmark": "inference", "model": bundle.identity(), "mode": bundle.mode, "input_shape": list(shape),
               "threads": args.threads, "repeats": args.repeats, "results": results,
               "machine": {"python": platform.python_version(), "processor": platform.processor(),
                           "torch": torch.__version__, "onnxruntime": ort.__version__}}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

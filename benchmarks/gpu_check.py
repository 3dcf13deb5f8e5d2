"""The GPU checks of the prediction paths, for a machine with a CUDA device (one prepared run, < 4 min):

1. probabilities of L1-L5 of the shipped CT: CPU (ONNX Runtime) vs torch on CUDA vs ONNX Runtime's CUDA
   provider (when this onnxruntime has it), max abs differences;
2. inference throughput of the demo network on CUDA: float32 vs float16 and bfloat16 autocast, and ONNX
   Runtime CUDA (batch 256), samples/s;
3. one training step of the study's 2.5D network at 224 px (batch 16) on CUDA, float32 vs float16 autocast
   + GradScaler, ms;
4. the CUDA out-of-memory fallback on the real device: with torch's allocator capped at 1 GiB, a batch
   far too big for it must finish on the CPU with a warning.

Writes one JSON (benchmarks/results/gpu_check.json by default). Without CUDA it says so and exits 0.

    python benchmarks/gpu_check.py [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from procs import REPO, machine
from report import emit

sys.path[:0] = [str(REPO / "MVCFClassifier")]


def _median_ms(fn, repeats: int = 10) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def probabilities() -> dict:
    from mvcf.locations_file import VertebraQuery
    from mvcf.models.ort_backend import ort_has_cuda
    from mvcf.predict import predict_many
    from mvcf.read_ct import read_ct
    from mvcf.resources import sample_ct_paths

    paths = sample_ct_paths()
    ct = read_ct(paths["ct"])
    queries = [VertebraQuery(name=f"L{n}", mask=paths["mask"], label=32 - n) for n in range(1, 6)]
    runs = {"cpu_onnxruntime": predict_many(ct, queries, None, "cpu", backend="onnxruntime"),
            "cuda_torch": predict_many(ct, queries, None, "cuda", backend="torch")}
    if ort_has_cuda():
        runs["cuda_onnxruntime"] = predict_many(ct, queries, None, "cuda", backend="onnxruntime")
    values = {k: [r["probability_malignant"] for r in v] for k, v in runs.items()}
    devices = {k: sorted({f"{r['backend']}/{r['device']}" for r in v}) for k, v in runs.items()}
    cpu = np.array(values["cpu_onnxruntime"])
    return {"probabilities": values, "ran_on": devices, "onnxruntime_cuda_provider": ort_has_cuda(),
            "max_abs_diff_vs_cpu": {k: float(np.abs(np.array(v) - cpu).max()) for k, v in values.items()}}


def inference_throughput(batch: int = 256) -> dict:
    import torch

    from mvcf.models.ort_backend import load_ort_bundle, ort_has_cuda
    from mvcf.inference import default_model_path, load_model

    bundle = load_model(None, "cuda", "torch")
    x = torch.rand(batch, *bundle.card["network"]["input_shape"], device="cuda")
    out = {}
    with torch.no_grad():
        for name, dtype in (("fp32", None), ("fp16_autocast", torch.float16), ("bf16_autocast", torch.bfloat16)):
            def run():
                with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                    return bundle.model(x)
            out[f"torch_{name}_samples_per_s"] = round(batch / (_median_ms(run) / 1000), 1)
        reference = bundle.model(x).float().cpu().numpy()
        with torch.autocast("cuda", dtype=torch.float16):
            half = bundle.model(x).float().cpu().numpy()
    out["max_abs_diff_fp16_vs_fp32"] = float(np.abs(half - reference).max())
    if ort_has_cuda():
        ort = load_ort_bundle(default_model_path(), "cuda")
        host = x.cpu().numpy()
        out["onnxruntime_cuda_samples_per_s"] = round(batch / (_median_ms(lambda: ort.probabilities(host)) / 1000), 1)
        out["max_abs_diff_onnxruntime_cuda_vs_torch_fp32"] = float(np.abs(ort.probabilities(host) - reference).max())
    return {"batch": batch, **out}


def training_step() -> dict:
    import torch

    from mvcf.models.networks import build_network, network_config

    net = build_network(network_config("2.5d-orthogonal", (6, 224, 224), "resnet18")).cuda().train()
    optimizer = torch.optim.AdamW(net.parameters())
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.rand(16, 6, 224, 224, device="cuda"), torch.randint(0, 2, (16,), device="cuda").float()
    result = {}
    for amp in (False, True):
        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)
            scaler.scale(loss).backward() if amp else loss.backward()
            if amp:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        result["amp_fp16_ms" if amp else "fp32_ms"] = round(_median_ms(step, 5), 2)
    result["ratio_fp32_over_amp"] = round(result["fp32_ms"] / result["amp_fp16_ms"], 2)
    return {"network": "resnet18 2.5d-orthogonal 6x224x224", "batch": 16, **result}


def out_of_memory_fallback(cap_gib: float = 1.0, cases: int = 4096) -> dict:
    """torch's allocator capped at `cap_gib` (set_per_process_memory_fraction), then one forward pass of
    `cases` views in a single chunk: CUDA runs out of memory, the run must finish on the CPU with a warning."""
    import torch

    from mvcf.inference import forward_checked, load_model

    total = torch.cuda.get_device_properties(0).total_memory
    bundle = load_model(None, "cuda", "torch")
    batch = np.random.default_rng(0).random((cases, *bundle.card["network"]["input_shape"]), dtype=np.float32)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2 ** 30 / total))
    try:
        done = forward_checked(bundle, batch, budget_bytes=1 << 50)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    return {"cases": cases, "cap_gib": cap_gib, "finished_on": done.bundle.device, "warnings": done.warnings,
            "outputs": int(done.probabilities.size), "fell_back": done.bundle.device == "cpu" and bool(done.warnings)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; nothing checked")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing checked")
        return 0
    payload = {"benchmark": "GPU checks of the prediction and training paths", "device": torch.cuda.get_device_name(0),
               "torch": torch.__version__}
    for name, check in (("probabilities", probabilities), ("inference", inference_throughput),
                        ("training_step", training_step), ("oom_fallback", out_of_memory_fallback)):
        started = time.perf_counter()
        try:
            payload[name] = check()
        except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
            payload[name] = {"failed": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        payload[name]["seconds"] = round(time.perf_counter() - started, 1)
    payload.update(machine())
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

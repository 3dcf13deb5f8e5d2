"""Benchmark: CPU training throughput (samples/s) of every view mode's network, float32 against bfloat16
autocast, at equal data (the same batch of cases per step).

The networks and input shapes are the study's (mvcf.models.networks, resnet10-tiny; 64 px views in the
bone + soft windows, 3D at 48^3), batch 16, AdamW, binary cross-entropy: one step = forward + backward +
optimizer. Inputs are random tensors of the views' shapes (view building is timed in bench_views). Each
figure is the median of --repeats timed steps after one warm-up; float32 and bfloat16 steps alternate
so a busy moment hits both. Baselines in the same run: 2.5d-orthogonal float32 (for the mode ratios) and
each mode's own float32 (for bf16). bf16 runs only where the CPU has it (avx512_bf16 / amx_bf16 flags).

    python benchmarks/bench_train_throughput.py [--repeats 5] [--threads 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

from procs import REPO, machine
from report import Timing, emit

sys.path[:0] = [str(REPO / "MVCFClassifier")]
SHAPES = {"2d": (2, 64, 64), "2.5d-adjacent": (6, 64, 64), "2.5d-orthogonal": (6, 64, 64),
          "2.5d-mil": (8, 2, 64, 64), "3d": (2, 48, 48, 48)}
BATCH = 16


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from mvcf.models.networks import build_network, network_config

    torch.set_num_threads(args.threads)
    bf16 = cpu_has_bf16()
    results = {}
    for mode, shape in SHAPES.items():
        torch.manual_seed(0)
        net = build_network(network_config(mode, shape, "resnet10-tiny")).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        x, y = torch.rand(BATCH, *shape), torch.randint(0, 2, (BATCH,)).float()

        def step(low: bool) -> float:
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
                logits = net(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - started

        kinds = [False, True] if bf16 else [False]
        times = {k: Timing() for k in kinds}
        for kind in kinds:
            step(kind)
        for _ in range(args.repeats):
            for kind in kinds:  # interleaved, so a busy moment hits both
                times[kind].runs_s.append(step(kind))
        entry = {"input_shape": list(shape), "fp32_samples_per_s": round(BATCH / times[False].median_s, 2)}
        if bf16:
            entry["bf16_samples_per_s"] = round(BATCH / times[True].median_s, 2)
            entry["ratio_bf16_over_fp32"] = round(entry["bf16_samples_per_s"] / entry["fp32_samples_per_s"], 2)
        results[mode] = entry
    base = results["2.5d-orthogonal"]["fp32_samples_per_s"]
    for entry in results.values():
        entry["ratio_fp32_over_2.5d_orthogonal"] = round(entry["fp32_samples_per_s"] / base, 2)
    payload = {"benchmark": "CPU training throughput per mode, fp32 vs bf16 autocast, batch 16",
               "modes": results, "bf16_supported": bf16, "batch": BATCH, "threads": args.threads,
               "ratio_2.5d_orthogonal_over_3d_fp32": round(base / results["3d"]["fp32_samples_per_s"], 2),
               "training_precision_on_cpu": "float32 (mvcf train does not use bf16 on the CPU; see README)",
               "repeats": args.repeats, **machine()}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

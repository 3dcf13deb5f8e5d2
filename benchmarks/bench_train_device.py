"""Benchmark: one training step and one inference batch of the study's networks, CPU (all its threads,
float32) against CUDA (float16 autocast + GradScaler, the settings `mvcf train` uses), in the same run.

Networks come from mvcf.models.networks (MONAI ResNets, conv1 stride 2), inputs shaped by ViewSpec's defaults at
the sizes a real cohort would use: 2.5d-orthogonal at 224 px, 2d at 224 px and 3d at 96^3, ResNet-18, batch 16 (3d: batch 8). Inputs are random
tensors of the views' shapes: the timing is the network's, view building is in bench_views. Prints (and with
--out writes) one JSON object: median ms per step for each device and the ratio cpu / cuda. Without CUDA it
times the CPU only and says so.

    python benchmarks/bench_train_device.py [--out FILE] [--repeats 5] [--cpu-repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

from report import emit, median_time


def _time_case(mode: str, shape: tuple[int, ...], batch: int, arch: str, device: str, repeats: int) -> dict:
    import torch

    from mvcf.models.networks import build_network, network_config

    torch.manual_seed(0)
    model = build_network(network_config(mode, shape, arch)).to(device)
    amp = device == "cuda"
    x = torch.rand((batch,) + shape, device=device)
    y = (torch.arange(batch, device=device) % 2).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sync = torch.cuda.synchronize if amp else (lambda: None)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            logits = model(x)
        scaler.scale(loss_fn(logits.float(), y)).backward()
        scaler.step(optimizer)
        scaler.update()

    def infer():
        model.eval()
        with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            model(x)

    return {"train_step_ms": round(1000 * median_time(train_step, repeats, warmup=1, sync=sync).median_s, 2),
            "inference_batch_ms": round(1000 * median_time(infer, repeats, warmup=1, sync=sync).median_s, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats on CUDA")
    parser.add_argument("--cpu-repeats", type=int, default=3, help="timed repeats on the CPU")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--quick", action="store_true", help="small inputs (a smoke run, not a measurement)")
    args = parser.parse_args(argv)

    import torch

    from mvcf.views import ViewSpec

    size, size3d = (64, 32) if args.quick else (224, 96)
    cases = [(mode, ViewSpec(mode=mode, size_px=px).output_shape(), batch)
             for mode, px, batch in (("2.5d-orthogonal", size, 16), ("2d", size, 16), ("3d", size3d, 8))]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    for mode, shape, batch in cases:
        row = {"input_shape": list(shape), "batch": batch}
        for device in devices:
            row[device] = _time_case(mode, shape, batch, args.arch, device,
                                     args.repeats if device == "cuda" else args.cpu_repeats)
        if "cuda" in row:
            row["ratio_cpu_over_cuda"] = {k: round(row["cpu"][k] / row["cuda"][k], 1) for k in row["cpu"]}
        results[mode] = row
        print(mode, json.dumps(row), file=sys.stderr, flush=True)
    payload = {"benchmark": "train_device", "arch": args.arch, "quick": args.quick, "results": results,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "note": None if torch.cuda.is_available() else "no CUDA device: CPU timings only",
               "machine": {"python": platform.python_version(), "processor": platform.processor(),
                           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__}}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

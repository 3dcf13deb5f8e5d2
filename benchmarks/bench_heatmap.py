"""Benchmark: a heatmap of one vertebra, Grad-CAM (the default) vs 3D occlusion sensitivity, per view mode.

The sample CT's L1, its view built once; each method timed over repeats on the CPU (`--threads`, default 1:
a laptop in Slicer). Bundles: the embedded demo bundle (torch and ONNX Runtime; occlusion needs no torch),
plus with `--models DIR` one bundle per mode (`DIR/<mode>/model`, e.g. the study `mvcf demo` writes).
Prints (and with --out writes) one JSON object: median ms per method, the number of occluded blocks
(forward passes), and the ratio occlusion / Grad-CAM.

    python benchmarks/bench_heatmap.py [--models demo_out/study] [--out bench_heatmap.json] [--repeats 3]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from report import emit, median_time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="folder with <mode>/model bundles")
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from mvcf.explain import heatmap_for
    from mvcf.inference import default_model_path, load_model
    from mvcf.locate import from_mask
    from mvcf.occlusion import BLOCK_MM, STRIDE_MM, _blocks, block_lattice, sample_positions
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import sample_ct_paths
    from mvcf.views import ViewSpec, build_views

    torch.set_num_threads(args.threads)
    paths = sample_ct_paths()
    ct = read_ct(paths["ct"])
    location = from_mask(ct, read_mask(paths["mask"]), 31)
    bundles = {"embedded demo (torch)": load_model(None, "cpu", "torch")}
    if (default_model_path() / "model.onnx").is_file():
        bundles["embedded demo (onnxruntime)"] = load_model(None, "cpu", "onnxruntime")
    if args.models is not None:
        cards = sorted(args.models.glob("*/model/model.json"))
        if not cards:   # a wrong folder must not silently rewrite the JSON without the study rows
            print(f"error: --models {args.models}: no <mode>/model/model.json bundle in it", file=sys.stderr)
            return 2
        for card in cards:
            bundles[card.parent.parent.name] = load_model(card.parent, "cpu", "torch")
    results = {}
    for name, bundle in bundles.items():
        view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
        positions = sample_positions(view)
        blocks = sum(1 for _ in _blocks(positions, block_lattice(positions, view.center_lps, BLOCK_MM, STRIDE_MM),
                                        BLOCK_MM / 2))
        row = {"mode": bundle.mode, "input_shape": list(view.shape), "occlusion_blocks": blocks}
        methods = ("occlusion",) if bundle.backend == "onnxruntime" else ("gradcam", "occlusion")
        for method in methods:
            timing = median_time(lambda: heatmap_for(bundle, view, "cpu", ct=ct, location=location, method=method),
                                 args.repeats, warmup=1)
            row[f"{method}_ms"] = round(1000 * timing.median_s, 1)
        if "gradcam_ms" in row:
            row["ratio_occlusion_over_gradcam"] = round(row["occlusion_ms"] / row["gradcam_ms"], 1)
        results[name] = row
        print(name, row, file=sys.stderr, flush=True)
    payload = {"benchmark": "heatmap", "block_mm": BLOCK_MM, "stride_mm": STRIDE_MM, "threads": args.threads,
               "repeats": args.repeats, "results": results,
               "machine": {"python": platform.python_version(), "processor": platform.processor(),
                           "torch": torch.__version__}}
    emit(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

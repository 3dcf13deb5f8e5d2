"""Benchmark: what the whole-spine overview picture (screen_overview.png) adds to `mvcf screen`, on the shipped
sample CT and its TotalSegmentator mask.

Times, in one process with the model loaded and torch imported: the screen itself (measure, grade, bone
density, one batched forward pass: the baseline), the overview's curved-plane sampling and its drawing
(matplotlib), and, for scale, the per-vertebra key images of one vertebra as the report draws them. The ratio
overview / screen says what share of a screen's time the picture costs. Prints (and with --out writes) one
JSON object.

    python benchmarks/bench_overview.py [--repeats 3] [--out F]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

from report import emit, median_time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)

    import torch

    from mvcf.explain import explain
    from mvcf.inference import load_model
    from mvcf.locate import from_point
    from mvcf.report.images import key_images
    from mvcf.report.overview import curved_sagittal, render_overview
    from mvcf.resources import sample_ct_paths
    from mvcf.screen import screen_files

    paths = sample_ct_paths()
    bundle = load_model(None, "cpu")
    screen = median_time(lambda: screen_files(paths["ct"], paths["mask"], model=bundle, device="cpu"),
                         args.repeats, warmup=1)
    result = screen.result
    ct, seg = result.images
    sampling = median_time(lambda: curved_sagittal(ct, seg, result.vertebrae), args.repeats, warmup=1)
    hu, labels = sampling.result
    drawing = median_time(lambda: render_overview(hu, labels, result.vertebrae, "Whole-spine screen", "benchmark"),
                          args.repeats, warmup=1)
    whole = median_time(result.overview, args.repeats)
    located = [r for r in result.vertebrae if r.get("center_lps") is not None]
    middle = located[len(located) // 2]
    heat, _ = explain(ct, from_point(ct, middle["center_lps"], "lps"), bundle, "cpu")
    one_key = median_time(lambda: key_images(ct, middle["center_lps"], heat, middle["level"], "benchmark"),
                          args.repeats, warmup=1)
    emit({"benchmark": "overview", "ct": paths["ct"].name, "vertebrae": len(result.vertebrae),
          "located": len(located), "overview_px": list(hu.shape), "repeats": args.repeats,
          "seconds": {"screen_baseline": screen.summary(), "overview": whole.summary(),
                      "overview_sampling": sampling.summary(), "overview_drawing": drawing.summary(),
                      f"key_images_one_vertebra_{middle['level']}": one_key.summary()},
          "ratio_overview_over_screen": round(whole.median_s / max(screen.median_s, 1e-9), 3),
          "ratio_overview_over_one_vertebra_key_images": round(whole.median_s / max(one_key.median_s, 1e-9), 2),
          "load_average_1min": round(os.getloadavg()[0], 2),
          "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                      "torch_threads": torch.get_num_threads()}},
         args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`mvcf demo`: synthetic cohort -> study -> prediction on the shipped real CT, into a report folder."""
from __future__ import annotations

import argparse

from mvcf.cli import args as A
from mvcf.errors import MVCFError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.demo import DemoConfig

    d = DemoConfig()
    parser.add_argument("--out", required=True, help="report folder (must not exist unless --overwrite)")
    parser.add_argument("--cases", type=A.int_in(20, int(A.RANGES["cases"][1])), default=d.cases, help=f"synthetic cases (default {d.cases})")
    parser.add_argument("--epochs", type=A.ranged("epochs"), default=d.epochs, help=f"epochs per model (default {d.epochs})")
    parser.add_argument("--size", type=A.ranged("size"), default=d.size_px, help=f"2D/2.5D view size in px (default {d.size_px})")
    parser.add_argument("--folds", type=A.ranged("folds"), default=d.folds, help="folds (1 = one 60/20/20 split; default 1)")
    parser.add_argument("--seed", type=A.ranged("seed"), default=d.seed)
    from mvcf.inference import DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--workers", type=A.ranged("workers"), default=d.workers, help="processes generating the cohort")
    parser.add_argument("--full", action="store_true", help="the full study instead of the quick demo: 200 "
                        "cases, 64 px views (48 for 3d), resnet10, 30 epochs, 5 folds (about an hour on 2 cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def run(args: argparse.Namespace, reporter) -> int:
    from pathlib import Path

    from mvcf.demo import DemoConfig, run_demo
    from mvcf import RESEARCH_USE_DISCLAIMER
    from mvcf.progress import emit_result

    if args.cases < 20:
        raise MVCFError("--cases must be at least 20 (two institutions, two classes, patient-level folds)")
    if args.full:
        config = DemoConfig(cases=200, seed=args.seed, size_px=64, size_3d_px=48, epochs=30, folds=5,
                            arch="resnet10", batch_size=16, device=args.device, workers=args.workers)
    else:
        config = DemoConfig(cases=args.cases, seed=args.seed, size_px=args.size, epochs=args.epochs,
                            folds=args.folds, device=args.device, workers=args.workers)
    result = run_demo(Path(args.out), config, overwrite=args.overwrite, on_progress=reporter.progress,
                      on_log=reporter.log)
    def text() -> None:
        print(f"demo report: {Path(args.out) / 'index.html'} (study: {Path(args.out) / result['report']})")
        for name, r in result["study"].items():
            ext = "n/a" if r["external_auc"] is None else f"{r['external_auc']:.3f}"
            print(f"  {name}: external AUC {ext}")
        from mvcf.predict import results_decimals

        for name, p in result["predictions"].items():
            digits = results_decimals([p])
            print(f"  L1 of the real sample CT, {name}: P(MVCF) = {p['probability_malignant']:.{digits}f} -> "
                  f"{p['prediction']} (threshold {p['threshold']:.{digits}f})")
        screen = result.get("screen")
        if screen:
            print(f"  whole spine of the real sample CT: {len(screen['vertebrae'])} levels; collapsed (Genant >= 1): "
                  f"{', '.join(screen['collapsed']) or 'none'}; flagged: {', '.join(screen['flagged']) or 'none'} "
                  f"({Path(args.out) / 'screen'})")
        print(RESEARCH_USE_DISCLAIMER)

    emit_result(reporter, result, args.json, text)
    return 0

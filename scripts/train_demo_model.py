#!/usr/bin/env python
"""Train the embedded demo bundle (mvcf/resources/demo_model) on a synthetic cohort, reproducibly.

    python scripts/train_demo_model.py [--work DIR] [--cases 320] [--seed 0] [--epochs 12]

Generates the `standard` synthetic cohort of the README's study (`mvcf synth --cases 320 --seed 0
--external-fraction 0.5`: real vertebra templates, the two-site domain shift) under --work unless it is
already there, trains the 2.5d-orthogonal model (64 px, bone + soft-tissue windows, resnet10-tiny, one
60/20/20 patient-level split of the internal site, the external site held out), and writes the bundle with a
card that says it was trained on synthetic data only, by which generator. It is a demonstration model: its
probabilities say nothing about real patients.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "MVCFClassifier" / "mvcf" / "resources" / "demo_model"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("demo_model_work"), help="cohort, cache and run folder")
    parser.add_argument("--cases", type=int, default=320)
    parser.add_argument("--external-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import torch

    from mvcf.manifest import read_manifest
    from mvcf.metrics import format_auc
    from mvcf.progress import TqdmReporter
    from mvcf.synth import GENERATOR, generate_cohort
    from mvcf.train import TrainConfig, train_cohort
    from mvcf.views import MODEL_WINDOWS, ViewSpec

    torch.set_num_threads(min(2, torch.get_num_threads()))
    reporter = TqdmReporter()
    manifest = args.work / "cohort" / "manifest.csv"
    if not manifest.is_file():
        generate_cohort(args.work / "cohort", n_cases=args.cases, seed=args.seed, difficulty="standard",
                        external_fraction=args.external_fraction, on_progress=reporter.progress)
    records = read_manifest(manifest)
    run_dir = args.work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = TrainConfig(arch="resnet10-tiny", epochs=args.epochs, batch_size=16, seed=args.seed, device="cpu",
                         patience=8)
    run = train_cohort(
        records, ViewSpec(mode="2.5d-orthogonal", size_px=64, spacing_mm=1.0, windows=MODEL_WINDOWS), config,
        out_dir=run_dir, n_folds=5, train_folds=1, external="external", cache_dir=args.work / "cache", name="mvcf-demo",
        version="0.1.0-synthetic",
        description=("DEMO MODEL trained on a synthetic cohort (mvcf synth --cases {0} --seed {1} --difficulty "
                     "standard --external-fraction {2}; generator {3}: {4}) by scripts/train_demo_model.py. Not "
                     "trained on any patient data; for demonstrating the software only.").format(
            args.cases, args.seed, args.external_fraction, GENERATOR["version"], GENERATOR["summary"]),
        on_progress=reporter.progress, on_metrics=reporter.metrics,
        card_extra={"trained_on_synthetic_data": True,
                    "training_cohort": {"generator": "mvcf.synth", "generator_version": GENERATOR["version"],
                                        "generator_summary": GENERATOR["summary"], "cases": args.cases,
                                        "seed": args.seed, "external_fraction": args.external_fraction,
                                        "difficulty": "standard"}})
    reporter.close()
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(run.bundle_path, args.out)
    metrics = run.card["validation_metrics"]
    print(f"demo bundle: {args.out} (threshold {run.threshold:.3f}); internal test AUC "
          f"{format_auc(metrics['internal_test'])}, external test AUC {format_auc(metrics['external_test'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

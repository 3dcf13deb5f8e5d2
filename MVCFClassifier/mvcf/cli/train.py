"""`mvcf train`: train a 2D / 2.5D / 3D model from a cohort manifest; writes logs, checkpoints and a bundle."""
from __future__ import annotations

import argparse
from pathlib import Path

from mvcf.cli import args as A
from mvcf.errors import MVCFError

def add_view_arguments(parser: argparse.ArgumentParser, default_size: int = 64) -> None:
    from mvcf.views import MODEL_WINDOWS

    parser.add_argument("--size", type=A.ranged("size"), default=default_size, metavar="PX",
                        help=f"view size in pixels (default {default_size})")
    parser.add_argument("--spacing", type=A.SPACING_MM, default=1.0, metavar="MM", help="view spacing in mm (default 1)")
    parser.add_argument("--windows", type=A.WINDOWS, default=",".join(MODEL_WINDOWS), metavar="W[,W...]",
                        help="HU windows, one input channel each: bone, soft, wide or CENTER:WIDTH "
                             f"(default {','.join(MODEL_WINDOWS)}: the fracture and lesion in the bone window, "
                             "epidural and paraspinal soft tissue in the soft-tissue window)")
    from mvcf.cli.views import add_stack_arguments

    add_stack_arguments(parser)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.models.architectures import ARCHITECTURES, DEFAULT_ARCH

    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHITECTURES),
                        help=f"network: a MONAI family and size (mvcf.models.architectures; default {DEFAULT_ARCH})")
    parser.add_argument("--epochs", type=A.ranged("epochs"), default=30, help="maximum epochs per fold (default 30)")
    parser.add_argument("--batch-size", type=A.ranged("batch_size"), default=16, help="batch size (default 16)")
    parser.add_argument("--lr", type=A.LEARNING_RATE, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--patience", type=A.ranged("patience"), default=8, help="early-stopping patience in epochs (default 8)")
    parser.add_argument("--folds", type=A.ranged("folds"), default=5,
                        help="K-fold cross-validation on the internal site; 1 = one 60/20/20 split (default 5)")
    parser.add_argument("--external", metavar="INSTITUTION",
                        help="institution held out entirely as the external test set")
    from mvcf.inference import DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--seed", type=A.ranged("seed"), default=0)
    parser.add_argument("--mil-pooling", default="mean", choices=["mean", "attention"],
                        help="how 2.5d-mil pools its slices (default mean: on the synthetic study attention "
                             "pooling did not transfer to the external site)")
    parser.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    parser.add_argument("--cache", metavar="DIR", help="folder for cached views (.npy), reused across runs")
    add_manifest_root_argument(parser)


def add_manifest_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-outside-root", action="store_true", help="accept manifest paths (relative or "
                        "absolute) outside the manifest's folder (refused by default)")


def read_checked_manifest(args: argparse.Namespace, reporter=None, *others) -> tuple[list, list]:
    """The manifest's records, every row's files opened and checked before anything is written, and every
    input path of the run (for the output placement checks)."""
    from mvcf.cohort_checks import check_cohort_files
    from mvcf.manifest import read_manifest
    from mvcf.outputs_guard import run_inputs

    records = read_manifest(args.manifest, allow_outside_root=args.allow_outside_root)
    check_cohort_files(records, Path(args.manifest), on_progress=reporter.progress if reporter else None)
    return records, run_inputs(records, args.manifest, *others)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="cohort manifest CSV (see docs/models.md)")
    parser.add_argument("--out", required=True, help="output folder: logs, checkpoints, model bundle")
    from mvcf import modes

    parser.add_argument("--view", default=modes.DEFAULT, choices=modes.names(), help="view mode")
    add_view_arguments(parser)
    add_training_arguments(parser)
    parser.add_argument("--name", default=None, help="model name in the card (default mvcf-<view>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def fold_arguments(folds: int) -> tuple[int, int]:
    """(number of parts, folds trained): --folds 1 means fold 0 of a 5-part split (60/20/20)."""
    if folds < 1:
        raise MVCFError("--folds must be at least 1")
    return (5, 1) if folds == 1 else (folds, folds)


def run_settings(spec, n_folds: int, train_folds: int, external) -> dict:
    """What a run's views and splits are made with, as its cohort.json keeps it (JSON types)."""
    import json

    return json.loads(json.dumps({**spec.to_dict(), "n_folds": n_folds, "train_folds": train_folds,
                                  "external": external}))


def check_same_settings(saved, settings: dict, out: Path) -> None:
    """A resumed run must make its views and splits as the run it continues did: a checkpoint trained on
    other views or another split would be described by a card it does not fit (folders older than the
    record hold none and are not checked)."""
    from mvcf.train import changed_settings

    if saved is None or not isinstance(saved.get("settings"), dict):
        return
    changed = changed_settings(saved["settings"], settings)
    if changed:
        raise MVCFError(f"cannot resume the run in {out}: it was run with other view or split settings "
                        f"({', '.join(changed)}); use the same options, or another --out")


def train_config(args: argparse.Namespace):
    from mvcf.train import TrainConfig

    return TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       patience=args.patience, seed=args.seed, device=args.device, augment=not args.no_augment,
                       mil_pooling=args.mil_pooling)


def run(args: argparse.Namespace, reporter) -> int:
    import torch

    from mvcf.metrics import format_auc
    from mvcf.progress import emit_result
    from mvcf.train import RUN_RECORD, is_synthetic_cohort, train_cohort
    from mvcf.views import ViewSpec

    import os
    from contextlib import nullcontext

    from mvcf.fileio import run_folder_lock
    from mvcf.outputs_guard import check_cache_folder, check_not_input, check_run_folder

    from mvcf.cli.views import parse_windows

    # bad arguments (a view's size, spacing or repeated window, the folds, the training settings) are refused
    # before the manifest's cases are read
    spec = ViewSpec(mode=args.view, size_px=args.size, spacing_mm=args.spacing, n_slices=args.n_slices,
                    slice_gap_mm=args.slice_gap, windows=parse_windows(args.windows))
    n_folds, train_folds = fold_arguments(args.folds)
    config = train_config(args)
    out = Path(args.out)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 checks and writes
    if main_process:
        check_run_folder(out, RUN_RECORD, [args.manifest], resume=args.resume)
    records, inputs = read_checked_manifest(args, reporter)
    if main_process:
        check_not_input(out, inputs, "--out")
        check_cache_folder(args.cache, inputs)
    from mvcf.inference import resolve_device

    resolve_device(args.device)  # --device cuda without one: refused before anything is written
    from mvcf.cohort_checks import resume_record
    from mvcf.splits import make_splits

    settings = run_settings(spec, n_folds, train_folds, args.external)
    if main_process and args.resume and (out / RUN_RECORD).is_file():   # read only: its reason comes first
        check_same_settings(resume_record(out / RUN_RECORD, records, True, "run"), settings, out)
    # the splits' refusals (too few cases per class, an unknown --external) also come before the first write
    plan = make_splits(records, n_folds=n_folds, external=args.external, seed=config.seed, train_folds=train_folds)
    with run_folder_lock(out, RUN_RECORD, resume=args.resume) if main_process else nullcontext():
        if main_process:  # the last check, and the first file written: what the run folder was run on
            check_same_settings(resume_record(out / RUN_RECORD, records, args.resume, "run", {"settings": settings}),
                                settings, out)
        if args.device != "cuda":
            torch.set_num_threads(max(1, torch.get_num_threads()))
        try:
            run_ = train_cohort(records, spec, config, out_dir=out, plan=plan,
                                cache_dir=args.cache or (out / "cache"), resume=args.resume,
                                name=args.name or f"mvcf-{args.view}", on_progress=reporter.progress,
                                on_metrics=reporter.metrics,
                                card_extra={"trained_on_synthetic_data": is_synthetic_cohort(records)})
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    metrics = run_.card["validation_metrics"]
    payload = {"model": str(run_.bundle_path) if run_.bundle_path else None, "view": args.view,
               "threshold": run_.threshold, "parameters": run_.parameters,
               "train_seconds": round(run_.train_seconds, 2),
               "validation_auc": metrics["validation"].get("auc"),
               "internal_test": metrics["internal_test"], "external_test": metrics["external_test"],
               "log": str(out / "log.csv"), "predictions": str(out / "predictions.csv")}
    if not main_process:
        return 0
    def text() -> None:
        print(f"model bundle: {run_.bundle_path}")
        print(f"internal test AUC {format_auc(metrics['internal_test'], reason=True)}; "
              f"external test AUC {format_auc(metrics['external_test'], reason=True)}; threshold {run_.threshold:.3f}")

    emit_result(reporter, payload, args.json, text)
    return 0

"""`mvcf study`: 2D vs 2.5D (each mode) vs 3D and the logistic baseline on identical splits, with a report."""
from __future__ import annotations

import argparse
from pathlib import Path

from mvcf.cli import args as A
from mvcf.errors import MVCFError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.cli.train import add_training_arguments, add_view_arguments
    from mvcf import modes
    from mvcf.study import DEFAULT_REFERENCE

    parser.add_argument("--manifest", required=True, help="cohort manifest CSV")
    parser.add_argument("--out", required=True, help="output folder (per-mode bundles, study.json, report)")
    parser.add_argument("--modes", type=A.text_list(len(modes.names())), default=",".join(modes.names()),
                        help="comma-separated view modes (default: all); 'none' = the logistic baseline alone")
    parser.add_argument("--reference", default=None, help="mode the p-values compare against (default "
                        f"{DEFAULT_REFERENCE} when studied, else the first of --modes)")
    add_view_arguments(parser)
    parser.add_argument("--size-3d", type=A.ranged("size_3d"), default=48, metavar="PX", help="cube size for 3d (default 48)")
    add_training_arguments(parser)
    parser.add_argument("--no-baseline", action="store_true", help="leave out the logistic baseline")
    parser.add_argument("--resume", action="store_true", help="continue a cancelled or killed study in --out "
                        "(same manifest and settings; finished models are read back, not retrained)")
    parser.add_argument("--json", action="store_true", help="print the study summary as JSON on stdout")


def run(args: argparse.Namespace, reporter) -> int:
    from mvcf.cli.train import fold_arguments, read_checked_manifest, train_config
    from mvcf.cli.views import parse_windows
    from mvcf.fileio import run_folder_lock
    from mvcf.outputs_guard import check_cache_folder, check_not_input, check_run_folder
    from mvcf.progress import emit_result
    from mvcf.study import HEADER, RUN_RECORD, StudyConfig, comparison_rows, run_study
    from mvcf.study_report import auc_notes

    out = Path(args.out)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip() and m.strip() != "none")
    if not modes and args.no_baseline:
        raise MVCFError("nothing to study: --modes none with --no-baseline")
    if args.reference is not None and args.reference not in modes:
        raise MVCFError(f"--reference {args.reference} is not among --modes ({', '.join(modes)}); the p-values "
                        "compare every mode with the reference, so it must be one of them")
    n_folds, train_folds = fold_arguments(args.folds)
    config = StudyConfig(modes=modes, size_px=args.size, size_3d_px=args.size_3d, spacing_mm=args.spacing,
                         n_slices=args.n_slices, slice_gap_mm=args.slice_gap,
                         windows=parse_windows(args.windows), n_folds=n_folds, train_folds=train_folds, external=args.external,
                         reference=args.reference, baseline=not args.no_baseline, train=train_config(args))
    check_run_folder(out, RUN_RECORD, [args.manifest], resume=args.resume)
    records, inputs = read_checked_manifest(args, reporter)
    check_not_input(out, inputs, "--out")
    check_cache_folder(args.cache, inputs)
    from mvcf.train import is_synthetic_cohort

    with run_folder_lock(out, RUN_RECORD, resume=args.resume):
        summary = run_study(records, out, config, cache_dir=args.cache, on_progress=reporter.progress,
                            card_extra={"trained_on_synthetic_data": is_synthetic_cohort(records)},
                            on_metrics=reporter.metrics, on_log=reporter.log, resume=args.resume)
    def text() -> None:
        print(" | ".join(HEADER))
        for row in comparison_rows(summary):
            print(" | ".join(row))
        for note in auc_notes(summary):   # why an AUC reads n/a or a Newcombe interval (the report's notes)
            print(f"note: {note}")
        print(f"report: {out / 'report.html'}")

    emit_result(reporter, summary, args.json, text)
    return 0

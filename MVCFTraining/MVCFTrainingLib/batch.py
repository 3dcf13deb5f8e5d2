"""Headless training and study runs for scripts: the same child process, events and result tables as the
module, without the GUI.

Used by scripts/slicer_train.py and scripts/slicer_study.py, which run both as
`Slicer --no-main-window --python-script scripts/slicer_train.py --manifest M.csv --out DIR` and as plain
`python scripts/slicer_train.py ...`. Exit codes follow the CLI: 0 done, 2 a problem with the input,
130 cancelled (Ctrl+C cancels the child process tree), 1 anything else.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import IO, Optional, Sequence

from mvcf.cli import args as A

from MVCFClassifierLib.choices import DEVICES, view_modes
from MVCFClassifierLib.process import ChildRun, mvcf_command
from MVCFTrainingLib.runner import (EventRouter, RunSettings, describe_progress, module_training, resumable,
                                    study_arguments, train_arguments)


def build_parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"slicer_{kind}.py",
        description=("Train an MVCF/OVCF model from a cohort manifest" if kind == "train" else
                     "Run the 2D vs 2.5D vs 3D study on identical splits") + " in a child process.")
    parser.add_argument("--manifest", required=True, help="cohort manifest CSV")
    parser.add_argument("--out", required=True, help="output folder (must be new, or a run to --resume)")
    if kind == "train":
        parser.add_argument("--view", default="2.5d-orthogonal", choices=view_modes())
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--arch", default=None, help="network size (default: the core's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the core's)")
    parser.add_argument("--folds", type=int, default=1, help="1 = one 60/20/20 split; K = K-fold CV")
    parser.add_argument("--external", default="", metavar="INSTITUTION", help="institution held out for testing")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=0, metavar="PX", help="view size (default: the core's)")
    parser.add_argument("--n-slices", type=A.ranged("n_slices"), metavar="N",
                        help="slices of the stacked 2.5D modes (default: each mode's own)")
    parser.add_argument("--slice-gap", type=A.SLICE_GAP_MM, metavar="MM",
                        help="mm between those slices (default: each mode's own)")
    parser.add_argument("--tables", metavar="DIR", help="also save the result tables as TSV (Slicer table "
                                                        "format with .schema.tsv) in DIR")
    parser.add_argument("--python", help="interpreter for the child (default: PythonSlicer inside Slicer)")
    parser.add_argument("--print-command", action="store_true", help="print the child's command and exit")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after '--': more options for mvcf train/study")
    return parser


def _arguments(kind: str, args: argparse.Namespace) -> list[str]:
    extra = [a for a in args.extra if a != "--"]
    chosen = {"arch": args.arch, "lr": args.lr}
    training = module_training(epochs=args.epochs, device=args.device, seed=args.seed,
                               **{k: v for k, v in chosen.items() if v is not None})
    settings = RunSettings(view=getattr(args, "view", "2.5d-orthogonal"), folds=args.folds, external=args.external,
                           size_px=args.size, n_slices=args.n_slices or 0, slice_gap_mm=args.slice_gap or 0.0,
                           training=training, extra_args=tuple(extra))
    resume = bool(args.resume)
    if resume and not resumable(args.out, kind == "study"):
        print(f"error: nothing to resume in {args.out} (no {kind} of mvcf there)", file=sys.stderr)
        raise SystemExit(2)
    return (train_arguments if kind == "train" else study_arguments)(args.manifest, args.out, settings, resume=resume)


def save_result_tables(kind: str, out_dir: Path, result: Optional[dict], tables_dir: Path) -> list[Path]:
    """Metrics (train) or comparison (study) table as TSV through MRML, when slicer (the application or
    slicer-core) is importable; the scene is Slicer's own inside the application."""
    import slicer

    from MVCFClassifierLib.tables import save_table_tsv
    from MVCFTrainingLib import results

    scene = getattr(slicer, "mrmlScene", None) or slicer.vtkMRMLScene()
    if kind == "train":
        table, _ = results.show_training_results(scene, out_dir)
        return save_table_tsv(table, tables_dir / "metrics.tsv")
    table, _ = results.show_study_results(scene, result or {})
    return save_table_tsv(table, tables_dir / "study.tsv")


def main(argv: Sequence[str], kind: str, stream: IO[str] = sys.stdout) -> int:
    if kind not in ("train", "study"):
        raise ValueError(kind)
    args = build_parser(kind).parse_args([a for a in argv if a] if argv else [])
    child_args = _arguments(kind, args)
    result: dict = {}

    def progress(done: int, total: int, message: str, eta) -> None:
        print(describe_progress(done, total, message, eta), file=stream, flush=True)

    def metrics(values: dict) -> None:
        print("  " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in values.items()), file=stream, flush=True)

    def log(message: str, level: str) -> None:
        print(message if level == "info" else f"{level}: {message}", file=stream, flush=True)

    router = EventRouter(on_progress=progress, on_metrics=metrics, on_result=result.update, on_log=log)
    run = ChildRun(python_executable=args.python)
    if args.print_command:
        print(shlex.join(mvcf_command(child_args, args.python)), file=stream)
        return 0
    run.start(child_args)
    try:
        run.wait(on_event=router)
    except KeyboardInterrupt:
        run.cancel()
        run.wait(on_event=router)
    outcome = run.outcome()
    if outcome.status != "succeeded":
        if outcome.error and outcome.status == "failed":
            print(f"error: {outcome.error}", file=sys.stderr)
        return outcome.returncode if outcome.returncode in (1, 2, 130) else (130 if outcome.status == "cancelled"
                                                                              else 1)
    if args.tables:
        try:
            written = save_result_tables(kind, Path(args.out), result, Path(args.tables))
            print("tables: " + ", ".join(str(p) for p in written), file=stream)
        except ImportError:
            print("warning: no slicer/slicer-core here; result tables not written (see --out)", file=sys.stderr)
    return 0


def run_script(argv: Sequence[str], kind: str) -> None:
    """The body of scripts/slicer_{train,study}.py: run, then leave with the exit code, through Slicer's own
    exit when the script runs inside the application (`Slicer --python-script`)."""
    code = main(argv, kind)
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)
    else:
        sys.exit(code)

"""`mvcf evaluate`: a model bundle on a cohort manifest -> predictions CSV, metrics JSON with CIs, plots."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.cli.train import add_manifest_root_argument

    parser.add_argument("--model", required=True, metavar="DIR", help="model bundle folder")
    parser.add_argument("--manifest", required=True, help="cohort manifest CSV")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    from mvcf.inference import DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--cache", metavar="DIR", help="folder for cached views (.npy)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output folder of mvcf")
    add_manifest_root_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")


def run(args: argparse.Namespace, reporter) -> int:
    from mvcf.evaluate import evaluate
    from mvcf.metrics import format_auc
    from mvcf.progress import emit_result

    report = evaluate(args.model, args.manifest, args.out, device=args.device, cache_dir=args.cache,
                      overwrite=args.overwrite, on_progress=reporter.progress,
                      allow_outside_root=args.allow_outside_root)
    def text() -> None:
        print(f"AUC {format_auc(report['overall'], reason=True)} on {report['overall']['n']} cases; "
              f"results in {report['out']}")
        for site, summary in report.get("per_institution", {}).items():
            print(f"  {site}: AUC {format_auc(summary, reason=True)} (n={summary['n']})")
        for warning in report["warnings"]:
            print(f"warning: {warning}")
        print(report["disclaimer"])

    emit_result(reporter, report, args.json, text)
    return 0

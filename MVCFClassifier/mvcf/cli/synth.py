"""`mvcf synth`: generate a synthetic two-institution OVCF/MVCF cohort (NIfTI CT + mask, manifest.csv)."""
from __future__ import annotations

import argparse
import time

from mvcf.cli import args as A
from mvcf.progress import Reporter, emit_result

DIFFICULTY_CHOICES = ("easy", "standard", "hard")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created atomically; must not exist "
                                                     "unless --overwrite)")
    parser.add_argument("--cases", type=A.ranged("cases"), default=200, help="number of cases (fractured vertebrae)")
    parser.add_argument("--seed", type=A.ranged("seed"), default=0, help="random seed; the same seed gives identical files")
    parser.add_argument("--difficulty", choices=DIFFICULTY_CHOICES, default="standard",
                        help="how much the MVCF and OVCF signs overlap (docs/synthetic.md)")
    parser.add_argument("--external-fraction", type=A.FRACTION, default=0.3,
                        help="fraction of cases acquired at the 'external' institution (0 = none)")
    parser.add_argument("--prevalence", type=A.PREVALENCE, default=0.5,
                        help="fraction of MVCF patients at the internal site; the external site keeps its own "
                             "population's (docs/synthetic.md)")
    parser.add_argument("--workers", type=A.ranged("workers"), default=1, help="processes generating in parallel")
    parser.add_argument("--previews", action="store_true",
                        help="also write previews/*.png (axial + sagittal through the fractured vertebra)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from mvcf.manifest import read_manifest
    from mvcf.synth import generate_cohort

    started = time.perf_counter()
    manifest = generate_cohort(args.out, n_cases=args.cases, seed=args.seed, difficulty=args.difficulty,
                               external_fraction=args.external_fraction, prevalence=args.prevalence,
                               workers=args.workers, overwrite=args.overwrite, on_progress=reporter.progress,
                               with_previews=args.previews)
    records = read_manifest(manifest)
    counts: dict = {}
    for record in records:
        site = counts.setdefault(record.institution, {"MVCF": 0, "OVCF": 0})
        site[record.label_name] += 1
    payload = {"manifest": str(manifest), "cases": len(records),
               "patients": len({r.patient_id for r in records}), "counts": counts, "seed": args.seed,
               "difficulty": args.difficulty, "seconds": round(time.perf_counter() - started, 2)}
    emit_result(reporter, payload, args.json, lambda: print(f"wrote {len(records)} cases to {manifest}"),
                indent=None)
    return 0

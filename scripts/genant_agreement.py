"""Genant grade measured by mvcf.morphometry vs the height loss the synthetic generator drew.

    python scripts/genant_agreement.py --cases 60 --seed 3 --out genant_agreement.json

Cases are generated in memory (mvcf.synth), their TotalSegmentator-numbered masks measured like `mvcf screen`
does, and the target vertebra's grade compared with genant_grade(drawn height loss). Writes the confusion
table, exact agreement and the share more than one grade off, per institution and overall (docs/screening.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def agreement(n_cases: int, seed: int, difficulty: str = "standard") -> dict:
    from mvcf import morphometry, numbering
    from mvcf.ctimage import CTImage
    from mvcf.synth import generate_case, plan_cohort

    rows = []
    for plan in plan_cohort(n_cases, seed=seed):
        case = generate_case(plan, seed, difficulty)
        mask = CTImage(case.image.labels, case.image.spacing, case.image.origin)
        levels = numbering.resolve_numbering("totalsegmentator", np.unique(case.image.labels)).levels
        measured = morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)
        above, below = numbering.adjacent_levels(plan.level, measured)
        grade = morphometry.grade_vertebra(measured[plan.level], [measured[x] for x in (above, below) if x])
        rows.append({"case_id": plan.case_id, "institution": plan.institution, "kind": case.signs.height_kind,
                     "drawn_loss": round(case.signs.height_loss, 4),
                     "truth_grade": morphometry.genant_grade(case.signs.height_loss),
                     "measured_loss": grade.height_loss, "grade": grade.grade, "shape": grade.shape})
    return summarise(rows) | {"cases": rows, "seed": seed, "difficulty": difficulty}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name, subset in (("all", rows), *((site, [r for r in rows if r["institution"] == site])
                                          for site in sorted({r["institution"] for r in rows}))):
        graded = [r for r in subset if r["grade"] is not None]
        confusion = np.zeros((4, 4), int)
        for r in graded:
            confusion[r["truth_grade"], r["grade"]] += 1
        out[name] = {"n": len(subset), "graded": len(graded),
                     "exact": float(np.mean([r["grade"] == r["truth_grade"] for r in graded])) if graded else None,
                     "more_than_one_off": int(sum(abs(r["grade"] - r["truth_grade"]) > 1 for r in graded)),
                     "confusion_truth_rows_measured_columns": confusion.tolist()}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--difficulty", default="standard")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = agreement(args.cases, args.seed, args.difficulty)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

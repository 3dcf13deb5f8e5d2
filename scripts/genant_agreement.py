"""Genant grade measured by mvcf.morphometry vs the height loss the synthetic generator drew.

    python scripts/genant_agreement.py --cases 60 --seed 3 --out genant_agreement.json

Cases are generated in memory (mvcf.synth), their TotalSegmentator-numbered masks measured like `mvcf screen`
does, and the target vertebra's grade compared with genant_grade(drawn height loss). Writes the confusion
table, exact agreement and the share more than one grade off, per institution and overall (docs/screening.md).

`--ceiling` also draws every case a second time with the same random numbers but no collapse and grades the
target against its own intact heights (1 - H / H_intact, worst position): what any reference a reader can
estimate (neighbours, level-normal ratios) could reach at best with this measurement.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _measure(case) -> dict:
    from mvcf import morphometry, numbering
    from mvcf.ctimage import CTImage

    mask = CTImage(case.image.labels, case.image.spacing, case.image.origin)
    levels = numbering.resolve_numbering("totalsegmentator", np.unique(case.image.labels)).levels
    return morphometry.measure_spine(mask, levels, numbering.LEVEL_ORDER)


def _intact_case(plan, seed: int, difficulty: str):
    """The same case drawn again without the collapse: the generator's random draws are unchanged (the
    signs are sampled as before, then their height loss set to 0), so only the target's endplates differ."""
    from mvcf.synth import generate_case

    def no_collapse(signs) -> None:
        signs.height_loss = 0.0

    return generate_case(plan, seed, difficulty, edit_signs=no_collapse)


def agreement(n_cases: int, seed: int, difficulty: str = "standard", ceiling: bool = False) -> dict:
    from mvcf import morphometry, numbering
    from mvcf.synth import generate_case, plan_cohort

    rows = []
    for plan in plan_cohort(n_cases, seed=seed):
        case = generate_case(plan, seed, difficulty)
        measured = _measure(case)
        above, below = numbering.adjacent_levels(plan.level, measured)
        grade = morphometry.grade_vertebra(measured[plan.level], [measured[x] for x in (above, below) if x])
        row = {"case_id": plan.case_id, "institution": plan.institution, "kind": case.signs.height_kind,
               "drawn_loss": round(case.signs.height_loss, 4),
               "truth_grade": morphometry.genant_grade(case.signs.height_loss),
               "measured_loss": grade.height_loss, "grade": grade.grade, "shape": grade.shape}
        target = measured[plan.level]
        intact = _measure(_intact_case(plan, seed, difficulty))[plan.level] if ceiling else None
        if intact is not None and target.measured and intact.measured:
            loss = float(np.max(1.0 - np.asarray(target.heights_mm) / np.asarray(intact.heights_mm)))
            row |= {"loss_vs_intact": round(loss, 4), "grade_vs_intact": morphometry.genant_grade(loss)}
        rows.append(row)
    out = summarise(rows)
    if ceiling:
        ceiling_rows = [r | {"grade": r.get("grade_vs_intact")} for r in rows]
        out["ceiling_own_intact_heights"] = summarise(ceiling_rows)["all"]
    return out | {"cases": rows, "seed": seed, "difficulty": difficulty}


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
    parser.add_argument("--ceiling", action="store_true",
                        help="also grade against the target's own intact heights (the case drawn without collapse)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = agreement(args.cases, args.seed, args.difficulty, args.ceiling)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

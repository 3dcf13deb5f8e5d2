"""Collect: the readers' answers + the key -> the long format `mvcf stats mrmc` reads
(reader, modality, case, truth, rating), with group, both scale values and reading time as extra columns,
and the model's score per case (case, score) for the model-vs-readers comparison.

Refuses, with one line listing every problem, a key that belongs to another plan, answers of another study
or reader, and incomplete or duplicated readings. Nothing is written unless everything checks out.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from mvcf.errors import MVCFError
from mvcf.reader_study.packages import ANSWERS_FILE, read_json
from mvcf.reader_study.plan import KEY_FILE, PACKAGES_DIR, PLAN_FILE
from mvcf.reader_study.ratings import readings_damage
from mvcf.reader_study.scale import Scale

READINGS_FILE = "readings.csv"
MODEL_SCORES_FILE = "model_scores.csv"
_SHOWN = 8


def load_plan_and_key(plan_dir: Path, key_path: Optional[Path] = None) -> tuple[dict, dict]:
    """plan.json and the key, checked to belong together (same study, same fingerprint, same cases)."""
    plan = read_json(plan_dir / PLAN_FILE, "study plan")
    key = read_json(Path(key_path) if key_path else plan_dir / KEY_FILE, "study key")
    for field in ("study_id", "fingerprint"):
        if key.get(field) != plan.get(field):
            raise MVCFError(f"the key does not match the plan: key {field} {key.get(field)!r}, plan "
                            f"{plan.get(field)!r} (use the key written with this plan)")
    if len(key.get("cases", {})) != plan.get("n_cases"):
        raise MVCFError(f"the key does not match the plan: {len(key.get('cases', {}))} cases in the key, "
                        f"{plan.get('n_cases')} planned")
    return plan, key


def _answers_files(plan_dir: Path, plan: dict, answers: Optional[Sequence[Path]]) -> list[Path]:
    if not answers:
        return [plan_dir / PACKAGES_DIR / reader / ANSWERS_FILE for reader in plan["readers"]]
    files = []
    for path in map(Path, answers):
        files.append(path / ANSWERS_FILE if path.is_dir() else path)
    return files


def _summary(problems: list[str]) -> str:
    shown = "; ".join(problems[:_SHOWN])
    more = f"; ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"cannot collect the reader study: {len(problems)} problem(s): {shown}{more}"


def collect_readings(plan_dir, key_path=None, answers: Optional[Sequence] = None):
    """(readings DataFrame, model scores DataFrame or None, summary dict); MVCFError listing every problem."""
    import pandas as pd

    plan_dir = Path(plan_dir)
    plan, key = load_plan_and_key(plan_dir, key_path)
    scale = Scale.from_dict(plan["scale"])
    group_of = {m: g for g, members in plan.get("groups", {}).items() for m in members}
    rounds = [r["name"] for r in plan["rounds"]]
    cases = key["cases"]
    problems: list[str] = []
    by_reader: dict[str, dict] = {}
    for path in _answers_files(plan_dir, plan, answers):
        if not path.is_file():
            problems.append(f"no answers file {path.parent.name}/{path.name}")
            continue
        try:
            data = read_json(path, "answers file")
        except MVCFError as exc:
            problems.append(str(exc))
            continue
        reader = data.get("reader")
        if data.get("study_id") != plan["study_id"] or data.get("fingerprint") != plan["fingerprint"]:
            problems.append(f"{path} is from another study or plan ({data.get('study_id')!r})")
            continue
        if reader not in plan["readers"]:
            problems.append(f"{path}: reader {reader!r} is not in the plan")
            continue
        if reader in by_reader:
            problems.append(f"reader {reader}: two answers files ({by_reader[reader]['path']} and {path})")
            continue
        entries = data.get("readings", [])
        damage = readings_damage(entries)
        if damage is not None:
            problems.append(f"{path}: {damage} (was the file edited?)")
            continue
        by_reader[reader] = {"path": path, "readings": entries}
    rows = []
    for reader in plan["readers"]:
        if reader not in by_reader:
            if not any(p.startswith("no answers file") and f"{reader}/" in p for p in problems):
                problems.append(f"reader {reader}: no answers")
            continue
        seen: dict[tuple, int] = {}
        for reading in by_reader[reader]["readings"]:
            pair = (reading.get("round"), reading.get("case"))
            seen[pair] = seen.get(pair, 0) + 1
            if pair[0] not in rounds or pair[1] not in cases:
                problems.append(f"reader {reader}: reading of unknown case {pair[1]!r} in round {pair[0]!r}")
                continue
            try:
                values = scale.check(reading.get("confidence"), reading.get("probability"))
            except MVCFError as exc:
                problems.append(f"reader {reader} {pair[0]} case {pair[1]}: {exc}")
                continue
            seconds = reading.get("reading_time_s")
            if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                        or not math.isfinite(seconds)):
                problems.append(f"reader {reader} {pair[0]} case {pair[1]}: reading_time_s {seconds!r} is not seconds")
                continue
            case = cases[pair[1]]
            rows.append({"reader": reader, "modality": pair[0], "case": case["case_id"], "truth": int(case["label"]),
                         "rating": values[scale.primary], "group": group_of.get(reader, ""),
                         "confidence": values["confidence"], "probability": values["probability"],
                         "reading_time_s": reading.get("reading_time_s"), "note": reading.get("note", "")})
        doubles = [f"{c} ({r})" for (r, c), n in seen.items() if n > 1]
        if doubles:
            problems.append(f"reader {reader}: {len(doubles)} case(s) rated twice: {', '.join(doubles[:_SHOWN])}")
        for round_name in rounds:
            missing = [c for c in cases if (round_name, c) not in seen]
            if missing:
                problems.append(f"reader {reader} {round_name}: {len(missing)} of {len(cases)} cases not rated "
                                f"({', '.join(missing[:_SHOWN])}{' ...' if len(missing) > _SHOWN else ''})")
    if problems:
        raise MVCFError(_summary(problems))
    readings = pd.DataFrame(rows).sort_values(["modality", "reader", "case"], kind="stable").reset_index(drop=True)
    model = None
    if all("model" in c for c in cases.values()):
        model = pd.DataFrame([{"case": c["case_id"], "score": c["model"]["probability"],
                               "prediction": c["model"]["prediction"], "threshold": c["model"]["threshold"]}
                              for c in cases.values()]).sort_values("case").reset_index(drop=True)
    summary = {"study_id": plan["study_id"], "readers": len(plan["readers"]), "rounds": rounds,
               "cases": len(cases), "ratings": len(readings)}
    return readings, model, summary


def write_collected(readings, model, out_dir: Path) -> list[Path]:
    """readings.csv (and model_scores.csv) written atomically into `out_dir` (both or neither)."""
    from mvcf.fileio import atomic_files

    frames = [(frame, name) for frame, name in ((readings, READINGS_FILE), (model, MODEL_SCORES_FILE))
              if frame is not None]
    with atomic_files(out_dir, [name for _, name in frames], mark=True) as tmp:
        for frame, name in frames:
            frame.to_csv(tmp / name, index=False)
    return [Path(out_dir) / name for _, name in frames]

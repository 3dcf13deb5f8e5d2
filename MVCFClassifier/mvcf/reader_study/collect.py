"""Collect: the readers' answers + the key -> the long format `mvcf stats mrmc` reads
(reader, modality, case, truth, rating), with group, both scale values and reading time as extra columns,
and the model's score per case (case, score) for the model-vs-readers comparison.

Refuses, with one line listing every problem, a key that belongs to another plan, answers of another study
or reader, and incomplete or duplicated readings. Nothing is written unless everything checks out.
"""
from __future__ import annotations

import logging
import math
import time
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
    import hashlib

    plan = read_json(plan_dir / PLAN_FILE, "study plan")
    key_file = Path(key_path) if key_path else plan_dir / KEY_FILE
    key = read_json(key_file, "study key")
    _check_plan(plan)
    for field in ("study_id", "fingerprint"):
        if key.get(field) != plan.get(field):
            raise MVCFError(f"the key does not match the plan: key {field} {key.get(field)!r}, plan "
                            f"{plan.get(field)!r} (use the key written with this plan)")
    expected = plan.get("key_sha256")   # plans before it kept no digest of the key
    if expected is not None and hashlib.sha256(key_file.read_bytes()).hexdigest() != expected:
        raise MVCFError(f"the key {key_file} was changed after the plan was made (its sha256 is not plan.json's "
                        "key_sha256): truth or case ids may have been edited; use the key written with this plan")
    _check_key(key)
    if len(key.get("cases", {})) != plan.get("n_cases"):
        raise MVCFError(f"the key does not match the plan: {len(key.get('cases', {}))} cases in the key, "
                        f"{plan.get('n_cases')} planned")
    return plan, key


def check_readings_against_plan(readings, plan: dict, key: dict) -> None:
    """Refuse readings that contradict the plan folder they are reported with: a reader or round the plan does
    not have (`zed`, or `Cy` for `cy`), a truth other than the key's, a rating off the plan's scale. `report`
    took them and moved the AUC (0.562 to 0.438 with the truth inverted) without a word."""
    from mvcf.reader_study.scale import Scale

    def refuse(what: str, found: str, allowed) -> None:
        raise MVCFError(f"the readings name {what} {found!r}, which the plan does not have (it has "
                        f"{', '.join(map(str, allowed))}): are they this study's readings?")

    readers = [str(r) for r in plan.get("readers", [])]
    for reader in sorted(set(readings["reader"].astype(str)) - set(readers)):
        refuse("reader", reader, readers)
    rounds = [str(r.get("name")) for r in plan.get("rounds", [])]
    for modality in sorted(set(readings["modality"].astype(str)) - set(rounds)):
        refuse("round", modality, rounds)
    labels = {str(entry.get("case_id")): entry.get("label") for entry in key.get("cases", {}).values()}
    for case, truth in readings[["case", "truth"]].itertuples(index=False):
        expected = labels.get(str(case))
        if expected is None:
            raise MVCFError(f"the readings name case {str(case)!r}, which is not in the plan's key")
        try:
            same = float(truth) == float(expected)
        except (TypeError, ValueError):
            continue   # a truth in words: the analysis reads it with its own rule
        if not same:
            raise MVCFError(f"the readings give case {str(case)!r} the truth {truth!r}, the plan's key "
                            f"{expected!r}: the readings' truth column was edited or belongs to another study")
    scale = Scale.from_dict(plan["scale"]) if isinstance(plan.get("scale"), dict) else None
    if scale is not None:
        low, high = scale.bounds
        whole = scale.primary == "confidence"
        for reader, case, rating in readings[["reader", "case", "rating"]].itertuples(index=False):
            try:
                value = float(rating)
            except (TypeError, ValueError):
                continue   # the analysis names a rating that is no number
            if not low <= value <= high or (whole and not value.is_integer()):
                raise MVCFError(f"reader {str(reader)!r} rated case {str(case)!r} {rating!r}, off the plan's scale "
                                f"({'a whole number ' if whole else ''}{low:g}-{high:g})")


def _check_plan(plan: dict) -> None:
    """The fields collect reads, of the types the plan writes them in (an edited plan was a traceback)."""
    problems = []
    if not isinstance(plan.get("readers"), list) or not all(isinstance(r, str) for r in plan["readers"]):
        problems.append("readers must be a list of names")
    if not isinstance(plan.get("rounds"), list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                          for r in plan["rounds"]):
        problems.append("rounds must be a list of {name, aided}")
    if not isinstance(plan.get("scale"), dict):
        problems.append("scale must be an object")
    groups = plan.get("groups", {})
    if not isinstance(groups, dict) or not all(isinstance(m, list) for m in groups.values()):
        problems.append("groups must map a group to its readers")
    if problems:
        raise MVCFError(f"the study plan is damaged (was plan.json edited?): {'; '.join(problems)}")


def _check_key(key: dict) -> None:
    """Every case of the key: a case id (each once), truth 0 or 1, a model probability in [0, 1] when given;
    a key edited by hand was collected into wrong truth, or failed with a traceback."""
    cases = key.get("cases")
    if not isinstance(cases, dict):
        raise MVCFError("the study key is damaged (was it edited?): cases must be an object")
    seen: dict[str, str] = {}
    for opaque, case in cases.items():
        where = f"the study key's case {opaque}"
        if not isinstance(case, dict) or not isinstance(case.get("case_id"), str):
            raise MVCFError(f"{where} is damaged: it needs a case_id")
        if case.get("label") not in (0, 1) or isinstance(case.get("label"), bool):
            raise MVCFError(f"{where} has truth {case.get('label')!r}; it must be 0 or 1")
        if case["case_id"] in seen:
            raise MVCFError(f"{where} repeats case {case['case_id']!r} of case {seen[case['case_id']]}")
        seen[case["case_id"]] = opaque
        model = case.get("model")
        if model is not None:
            probability = model.get("probability") if isinstance(model, dict) else None
            if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                    or not 0.0 <= probability <= 1.0:
                raise MVCFError(f"{where} has a model probability of {probability!r}; it must be in [0, 1]")


def _planned_orders(plan_dir: Path, reader: str) -> Optional[dict[str, list]]:
    """{round: [case, ...]} of the reader's package, None when it is not there to compare with."""
    from mvcf.reader_study.packages import open_package

    try:
        return {r["name"]: list(r["cases"]) for r in open_package(plan_dir / PACKAGES_DIR / reader, reader).rounds}
    except (MVCFError, KeyError, TypeError):
        return None


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
        orders = _planned_orders(plan_dir, reader)
        for reading in by_reader[reader]["readings"]:
            pair = (reading.get("round"), reading.get("case"))
            seen[pair] = seen.get(pair, 0) + 1
            if pair[0] not in rounds or pair[1] not in cases:
                problems.append(f"reader {reader}: reading of unknown case {pair[1]!r} in round {pair[0]!r}")
                continue
            position = reading.get("position")
            order = (orders or {}).get(pair[0])
            if order is not None and (not isinstance(position, int) or not 1 <= position <= len(order)
                                      or order[position - 1] != pair[1]):
                # another reader's answers under this name: the cases come in that reader's order
                problems.append(f"reader {reader} {pair[0]}: case {pair[1]} at position {position!r} is not where "
                                f"{reader}'s package puts it (another reader's answers?)")
                continue
            try:
                values = scale.check(reading.get("confidence"), reading.get("probability"))
            except MVCFError as exc:
                problems.append(f"reader {reader} {pair[0]} case {pair[1]}: {exc}")
                continue
            seconds = reading.get("reading_time_s")
            if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                        or not math.isfinite(seconds) or seconds < 0):   # -50 entered the median
                problems.append(f"reader {reader} {pair[0]} case {pair[1]}: reading_time_s {seconds!r} is not seconds")
                continue
            if not isinstance(reading.get("note", ""), str):   # an object reached the CSV as its repr
                problems.append(f"reader {reader} {pair[0]} case {pair[1]}: the note is not text")
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
    deviations = protocol_deviations(plan, {r: by_reader[r]["readings"] for r in by_reader})
    for line in deviations:
        logging.getLogger("mvcf.reader_study").warning(line)
    summary = {"study_id": plan["study_id"], "readers": len(plan["readers"]), "rounds": rounds,
               "cases": len(cases), "ratings": len(readings), "protocol_deviations": deviations}
    return readings, model, summary


def protocol_deviations(plan: dict, readings: dict[str, list]) -> list[str]:
    """What the answers' times say against the plan: a round read before the previous one ended plus the
    washout, a reading before the plan was made or in the future (a clock or an edit). Collected all the same,
    and said, so that the report's reader knows (the reading panel enforces the washout; a hand-made or edited
    answers file need not)."""
    import datetime as dt

    try:
        created = dt.datetime.strptime(str(plan.get("created")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        created = None
    washout = float(plan.get("washout_days") or 0) * 86400.0
    now, out = time.time(), []
    order = [r["name"] for r in plan["rounds"]]
    for reader, entries in readings.items():
        times: dict[str, list[float]] = {}
        for e in entries:
            stamp = e.get("submitted_at")
            if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
                times.setdefault(e.get("round"), []).append(float(stamp))
            else:
                out.append(f"reader {reader}: a reading of case {e.get('case')!r} has no time ({stamp!r})")
        every = [t for ts in times.values() for t in ts]
        if every and created is not None and min(every) < created - 60:
            out.append(f"reader {reader}: readings dated before the plan was made ({plan.get('created')})")
        if every and max(every) > now + 86400:
            out.append(f"reader {reader}: readings dated in the future")
        for earlier, later in zip(order, order[1:]):
            if times.get(earlier) and times.get(later) and min(times[later]) < max(times[earlier]) + washout - 60:
                days = (min(times[later]) - max(times[earlier])) / 86400.0
                out.append(f"reader {reader}: round {later} began {days:.1f} days after {earlier} ended; the plan's "
                           f"washout is {washout / 86400.0:g} days")
    return out


def write_collected(readings, model, out_dir: Path) -> list[Path]:
    """readings.csv (and model_scores.csv) written atomically into `out_dir` (both or neither)."""
    from mvcf.fileio import atomic_files

    frames = [(frame, name) for frame, name in ((readings, READINGS_FILE), (model, MODEL_SCORES_FILE))
              if frame is not None]
    with atomic_files(out_dir, [name for _, name in frames], mark=True) as tmp:
        for frame, name in frames:
            frame.to_csv(tmp / name, index=False)
    return [Path(out_dir) / name for _, name in frames]

"""The reader's answers: saved atomically after every case, so a crash or closing Slicer loses nothing,
and reading resumes at the first case of the plan's order that has no rating.

answers.json = {format, study_id, fingerprint, reader, readings: [{round, case, position, confidence,
probability, note, reading_time_s, submitted_at}], completed: {round: unix time}}. Cases are rated in the
planned order only; a submitted rating can be changed only when the plan allows revision.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Optional

from mvcf.errors import MVCFError
from mvcf.fileio import atomic_open
from mvcf.reader_study.packages import ReaderPackage, read_json

FORMAT = "mvcf-reader-answers"


def readings_damage(entries: object) -> Optional[str]:
    """What makes an answers file's readings unreadable (not a list, an entry without a text round and case),
    or None."""
    if not isinstance(entries, list):
        return "'readings' is not a list"
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("round"), str) \
                or not isinstance(entry.get("case"), str):
            return f"reading {number} is not an object with a round and a case"
    return None


@dataclass(frozen=True)
class NextCase:
    round_index: int
    round_name: str
    aided: bool
    position: int  # 1-based within the round
    total: int
    case: str


class RatingsStore:
    """The answers of one reader package. `clock` (unix seconds) is injectable for tests of the washout."""

    def __init__(self, package: ReaderPackage, clock: Callable[[], float] = time.time) -> None:
        self.package = package
        self.clock = clock
        path = package.answers_path
        if path.exists():
            data = read_json(path, "answers file")
            for key, expected in (("study_id", package.study_id), ("fingerprint", package.fingerprint),
                                  ("reader", package.reader)):
                if data.get(key) != expected:
                    raise MVCFError(f"{path} belongs to {key} {data.get(key)!r}, this package to {expected!r}: "
                                    "it was not written for this package; move it away (it was left untouched)")
            damage = readings_damage(data.get("readings")) or \
                (None if isinstance(data.get("completed", {}), dict) else "'completed' is not an object")
            if damage is not None:
                raise MVCFError(f"{path} is damaged: {damage} (was it edited?); it was left untouched: ask the "
                                "study coordinator")
            data.setdefault("completed", {})
            self.data = data
        else:
            self.data = {"format": FORMAT, "study_id": package.study_id, "fingerprint": package.fingerprint,
                         "reader": package.reader, "readings": [], "completed": {}}

    @property
    def readings(self) -> list[dict]:
        return self.data["readings"]

    def rated(self, round_name: str) -> set[str]:
        return {r["case"] for r in self.readings if r["round"] == round_name}

    def next_case(self) -> Optional[NextCase]:
        """The first unrated case in the planned order (round by round), or None when all are done."""
        for index, round_ in enumerate(self.package.rounds):
            done = self.rated(round_["name"])
            for position, case in enumerate(round_["cases"], start=1):
                if case not in done:
                    return NextCase(index, round_["name"], bool(round_["aided"]), position, len(round_["cases"]),
                                    case)
        return None

    def progress(self) -> tuple[int, int]:
        """(ratings submitted, ratings planned) over all rounds."""
        return len(self.readings), sum(len(r["cases"]) for r in self.package.rounds)

    def opens_at(self, round_index: int) -> Optional[float]:
        """Unix time at which round `round_index` may start (previous round completed + washout), or None
        if the previous round is not complete yet; 0 for the first round."""
        if round_index == 0:
            return 0.0
        previous = self.package.rounds[round_index - 1]["name"]
        finished = self.data["completed"].get(previous)
        return None if finished is None else float(finished) + 86400.0 * self.package.washout_days

    def check_open(self, step: NextCase) -> None:
        opens = self.opens_at(step.round_index)
        if opens is None:
            raise MVCFError(f"the {step.round_name} round starts after the previous round is complete")
        now = self.clock()
        if now < opens:
            days = (opens - now) / 86400.0
            raise MVCFError(f"the {step.round_name} round opens on {time.strftime('%Y-%m-%d %H:%M', time.localtime(opens))} "
                            f"(washout of {self.package.washout_days:g} days; {days:.1f} days to go)")

    def submit(self, case: str, confidence=None, probability=None, note: str = "",
               reading_time_s: Optional[float] = None) -> dict:
        """Record the rating of the next case (it must be `case`) and save at once; returns the reading."""
        step = self.next_case()
        if step is None:
            raise MVCFError("every case of this package is already rated")
        if case != step.case:
            raise MVCFError(f"case {case} is not the next case to read ({step.case}, {step.round_name} "
                            f"{step.position}/{step.total}): cases are read in the planned order")
        self.check_open(step)
        values = self.package.scale.check(confidence, probability)
        reading = {"round": step.round_name, "case": case, "position": step.position, **values,
                   "note": str(note or "").strip(),
                   "reading_time_s": None if reading_time_s is None else round(float(reading_time_s), 2),
                   "submitted_at": round(self.clock(), 3)}
        self.readings.append(reading)
        if step.position == step.total:
            self.data["completed"][step.round_name] = reading["submitted_at"]
        try:
            self.save()
        except (OSError, MVCFError):  # nothing half-recorded: the reading is taken back
            self.readings.pop()
            if step.position == step.total:
                self.data["completed"].pop(step.round_name, None)
            raise
        return reading

    def revise(self, round_name: str, case: str, confidence=None, probability=None, note: str = "") -> dict:
        """Change a submitted rating; only when the plan allows it, and only within the current round."""
        if not self.package.allow_revision:
            raise MVCFError("this study does not allow changing a submitted rating")
        if round_name in self.data["completed"]:
            raise MVCFError(f"the {round_name} round is complete; its ratings can no longer be changed")
        for reading in self.readings:
            if reading["round"] == round_name and reading["case"] == case:
                before = dict(reading)
                reading.update(self.package.scale.check(confidence, probability), note=str(note or "").strip(),
                               revised_at=round(self.clock(), 3))
                try:
                    self.save()
                except (OSError, MVCFError):  # nothing half-recorded: the reading is taken back
                    reading.clear()
                    reading.update(before)
                    raise
                return reading
        raise MVCFError(f"case {case} has no rating in the {round_name} round yet")

    def save(self) -> None:
        text = json.dumps(self.data, separators=(",", ":"))  # no indent: the C encoder, fast for 1000s of cases
        with atomic_open(self.package.answers_path, "w", encoding="utf-8") as handle:
            handle.write(text)  # atomic_open flushes and fsyncs before the rename

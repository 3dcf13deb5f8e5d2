"""Vertebra numbering of multi-label spine segmentations: which label value is which level.

Three label conventions are in use for CT vertebra masks (docs/screening.md, "Numbering"):

- ``totalsegmentator``: TotalSegmentator v2 (>= 2.0) task ``total``: 26 = S1 (``vertebrae_S1``),
  27 = L5, 28 = L4 ... 31 = L1, 32 = T12 ... 43 = T1, 44 = C7 ... 50 = C1. The sample CT's mask
  (L1 = 31) and every mask TotalSegmentator >= 2.0 writes use it; organs and muscles share the file
  (1-25, 51-117) and are ignored.
- ``totalsegmentator-v1``: TotalSegmentator 1.x task ``total``: 18 = L5 ... 22 = L1, 23 = T12 ...
  34 = T1, 35 = C7 ... 41 = C1. Never guessed (its values collide with v2's): give it explicitly.
- ``verse``: VerSe challenge (Sekuboyina et al. 2021; also TPTBox/SPINEPS): 1-7 = C1-C7, 8-19 = T1-T12,
  20-24 = L1-L5, 25 = L6 (lumbosacral transitional vertebra), 26 = sacrum (read as S1: L5's lower
  neighbour, not screened itself), 28 = T13 (a 13th thoracic vertebra).

A Slicer segmentation (``.seg.nrrd``) also names its segments (``vertebrae_L1`` as TotalSegmentator's
Slicer extension writes them, or ``L1``); names, when present, win over label values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from mvcf.errors import MVCFError

#: Cranio-caudal order of every level any numbering knows (T13 and L6 are anatomical variants).
LEVEL_ORDER: tuple[str, ...] = tuple([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + ["T13"]
                                     + [f"L{i}" for i in range(1, 6)] + ["L6", "S1"])

_CERVICAL = [f"C{i}" for i in range(1, 8)]
_THORACIC = [f"T{i}" for i in range(1, 13)]
_LUMBAR = [f"L{i}" for i in range(1, 6)]

#: label value -> level, per numbering.
TABLES: dict[str, dict[int, str]] = {
    "totalsegmentator": {26: "S1", **{27 + i: level for i, level in enumerate(reversed(_LUMBAR))},
                         **{32 + i: level for i, level in enumerate(reversed(_THORACIC))},
                         **{44 + i: level for i, level in enumerate(reversed(_CERVICAL))}},
    "totalsegmentator-v1": {**{18 + i: level for i, level in enumerate(reversed(_LUMBAR))},
                            **{23 + i: level for i, level in enumerate(reversed(_THORACIC))},
                            **{35 + i: level for i, level in enumerate(reversed(_CERVICAL))}},
    "verse": {**{1 + i: level for i, level in enumerate(_CERVICAL)},
              **{8 + i: level for i, level in enumerate(_THORACIC)},
              **{20 + i: level for i, level in enumerate(_LUMBAR)}, 25: "L6", 26: "S1", 28: "T13"},
}
NUMBERINGS: tuple[str, ...] = tuple(TABLES)

#: Levels the screen measures and classifies: C3 to L6 (C1 has no body, C2's dens is not a body, S1 is
#: fused into the sacrum). S1 is still read, as the lower neighbour of L5.
SCREENED_LEVELS: tuple[str, ...] = tuple(level for level in LEVEL_ORDER if level not in ("C1", "C2", "S1"))

_NAME = re.compile(r"^(?:vertebra(?:e)?[\s_-]*)?([CTLS])(\d{1,2})$", re.IGNORECASE)


def level_index(level: str) -> int:
    """Position of `level` from cranial (C1 = 0) to caudal; neighbours differ by one."""
    try:
        return LEVEL_ORDER.index(level)
    except ValueError:
        raise MVCFError(f"unknown vertebra level {level!r}") from None


_VARIANTS = ("T13", "L6")


def adjacent_levels(level: str, present: Iterable[str]) -> tuple[Optional[str], Optional[str]]:
    """(the level just above, the level just below) `level` among `present`; a variant level (T13, L6)
    sits between its neighbours when the spine has it and is skipped when it does not."""
    present = set(present)
    i = level_index(level)

    def step(direction: int) -> Optional[str]:
        j = i + direction
        while 0 <= j < len(LEVEL_ORDER):
            candidate = LEVEL_ORDER[j]
            if candidate in present:
                return candidate
            if candidate not in _VARIANTS:
                return None
            j += direction
        return None

    return step(-1), step(+1)


def missing_levels(present: Iterable[str]) -> list[str]:
    """Levels absent between the most cranial and the most caudal present level (variants excepted)."""
    indices = sorted(level_index(level) for level in present)
    if not indices:
        return []
    return [LEVEL_ORDER[j] for j in range(indices[0], indices[-1] + 1)
            if LEVEL_ORDER[j] not in set(present) and LEVEL_ORDER[j] not in _VARIANTS]


def level_from_name(name: str) -> Optional[str]:
    """'vertebrae_L1', 'Vertebra L1', 'L1' -> 'L1'; None for anything that does not name a vertebra."""
    match = _NAME.match(name.strip())
    if not match:
        return None
    level = f"{match.group(1).upper()}{int(match.group(2))}"
    return level if level in LEVEL_ORDER else None


def segment_name(level: str, numbering: str = "totalsegmentator") -> str:
    """The segment name Slicer shows for `level` (TotalSegmentator's ``vertebrae_L1`` style for both
    TotalSegmentator numberings; the bare level for VerSe)."""
    return f"vertebrae_{level}" if numbering.startswith("totalsegmentator") else level


def check_numbering(numbering: str) -> str:
    key = numbering.strip().lower()
    if key not in TABLES:
        raise MVCFError(f"unknown numbering {numbering!r}; choose one of {', '.join(NUMBERINGS)} (or 'auto')")
    return key


@dataclass(frozen=True)
class Numbering:
    """How the labels of one segmentation map to levels, and how that was decided."""

    name: str                   # one of NUMBERINGS, or "segment names"
    levels: dict[int, str]      # label value -> level, only for vertebra labels
    reason: str

    def label_of(self, level: str) -> Optional[int]:
        return next((value for value, name in self.levels.items() if name == level), None)


def detect_numbering(values: Iterable[int], names: Optional[Mapping[int, str]] = None) -> Numbering:
    """Decide the numbering of a label map from its label values (and segment names where the file has them).

    Rules (docs/screening.md): vertebra-like segment names win; any value in 29-50 or 27 is
    TotalSegmentator v2 (VerSe stops at 28 and has no 27); values only in 1-28 are VerSe (in
    TotalSegmentator v2, 1-25 are organs, 26 and 28 would be S1 and L4 without L5); values above 50
    alone are TotalSegmentator organs, hence no vertebra. A map with no vertebra label is refused."""
    present = sorted({int(v) for v in values if int(v) != 0})
    if names:
        named = {int(value): level for value, name in names.items()
                 if (level := level_from_name(str(name))) is not None}
        if named:
            return Numbering("segment names", named, f"segment names ({len(named)} vertebrae)")
    if not present:
        raise MVCFError("the segmentation is empty: it has no labels, so no vertebra to screen")
    if any(29 <= v <= 50 or v == 27 for v in present):
        return resolve_numbering("totalsegmentator", present,
                                 "label values 27-50 occur (TotalSegmentator v2 'total': L1 = 31)")
    if all(v <= 28 for v in present):
        return resolve_numbering("verse", present, "label values only in 1-28 without 27 (VerSe: L1 = 20)")
    return resolve_numbering("totalsegmentator", present, "label values above 50 (TotalSegmentator v2 organs)")


def resolve_numbering(numbering: str, values: Iterable[int], reason: str = "") -> Numbering:
    """The vertebra labels among `values` under a given numbering; refuses a map with none."""
    key = check_numbering(numbering)
    table = TABLES[key]
    present = sorted({int(v) for v in values if int(v) != 0})
    levels = {v: table[v] for v in present if v in table}
    if not levels:
        shown = ", ".join(str(v) for v in present[:20]) or "none"
        raise MVCFError(f"the label map has no vertebra labels in {key} numbering (labels present: {shown})")
    return Numbering(key, levels, reason or f"--numbering {key}")


def numbering_doubt(numbering: str, values: Iterable[int]) -> Optional[str]:
    """A warning when the numbering given disagrees with what the label values say (detect_numbering): a
    TotalSegmentator map read as VerSe makes its organs (1-25) vertebrae C1-L5."""
    try:
        detected = detect_numbering(values)
    except MVCFError:
        return None
    given = check_numbering(numbering)
    if detected.name.split("-")[0] == given.split("-")[0]:   # TotalSegmentator v1 and v2 look alike by values
        return None
    return (f"--numbering {numbering} was given, but the label values look like {detected.name} numbering "
            f"({detected.reason}); the levels may be wrong: check --numbering (auto decides from the labels)")


def segment_names(path: Union[str, Path]) -> dict[int, str]:
    """Segment names of a Slicer ``.seg.nrrd`` (label value -> name) from its header; {} for other files.

    Only single-layer segmentations carry a name per label value; for several layers the names are
    ambiguous and the label values decide."""
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd") or not path.is_file():
        return {}
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    keys = set(reader.GetMetaDataKeys())
    names: dict[int, str] = {}
    layers = set()
    index = 0
    while f"Segment{index}_Name" in keys:
        name = reader.GetMetaData(f"Segment{index}_Name")
        value = reader.GetMetaData(f"Segment{index}_LabelValue") if f"Segment{index}_LabelValue" in keys else None
        layers.add(reader.GetMetaData(f"Segment{index}_Layer") if f"Segment{index}_Layer" in keys else "0")
        if value is not None and value.strip().lstrip("-").isdigit():
            names[int(value)] = name
        index += 1
    return names if len(layers) <= 1 else {}

"""The rating scale of a reader study: a 1–5 confidence of malignancy and/or a 0–100 probability.

The plan fixes the scale; the reading panel shows it, the ratings store refuses values outside it, and the
report uses `primary` as the MRMC rating and `positive_at` as the reader's call for sensitivity/specificity.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from mvcf.errors import MVCFError

CONFIDENCE_LABELS = {
    1: "definitely osteoporotic (OVCF)",
    2: "probably osteoporotic",
    3: "indeterminate",
    4: "probably malignant",
    5: "definitely malignant (MVCF)",
}
KINDS = ("confidence", "probability", "both")
#: lowest and highest value of each rating
RANGES = {"confidence": (1, 5), "probability": (0, 100)}


@dataclass(frozen=True)
class Scale:
    """kind: 'confidence' (integers 1..5), 'probability' (0..100) or 'both' (primary: confidence)."""

    kind: str = "confidence"
    positive_at_confidence: int = 4
    positive_at_probability: float = 50.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MVCFError(f"unknown rating scale {self.kind!r} (use {', '.join(KINDS)})")

    @property
    def asks_confidence(self) -> bool:
        return self.kind in ("confidence", "both")

    @property
    def asks_probability(self) -> bool:
        return self.kind in ("probability", "both")

    @property
    def primary(self) -> str:
        """The value that becomes the MRMC `rating`."""
        return "confidence" if self.asks_confidence else "probability"

    @property
    def bounds(self) -> tuple[float, float]:
        """Lowest and highest value of the primary rating."""
        low, high = RANGES[self.primary]
        return float(low), float(high)

    @property
    def positive_at(self) -> float:
        return float(self.positive_at_confidence if self.primary == "confidence" else self.positive_at_probability)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scale":
        try:
            return cls(**{k: data[k] for k in ("kind", "positive_at_confidence", "positive_at_probability") if k in data})
        except TypeError as exc:
            raise MVCFError(f"bad rating scale in the plan: {exc}") from None

    def check(self, confidence: Optional[Any], probability: Optional[Any]) -> dict:
        """The validated answer {confidence, probability} or an MVCFError saying what is out of range."""
        return {"confidence": _value(confidence, self.asks_confidence, "confidence rating", *RANGES["confidence"],
                                      whole=True),
                "probability": _value(probability, self.asks_probability, "probability", *RANGES["probability"],
                                       whole=False)}


def _value(value: Any, asked: bool, what: str, low: float, high: float, whole: bool):
    """One answer on a scale [low, high] (whole numbers only if `whole`); None when not asked."""
    span = f"{low:g}-{high:g}"
    if not asked:
        if value not in (None, ""):
            raise MVCFError(f"this study does not ask for a {what}")
        return None
    if value is None or value == "":
        raise MVCFError(f"a {what} ({span}) is required")
    try:
        if isinstance(value, bool):   # JSON true is not the rating 1
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise MVCFError(f"{what} {shown} is not a number (use {span})") from None
    except OverflowError:   # an integer of 400 digits
        raise MVCFError(f"{what} {str(value)[:20]}... is out of range ({span})") from None
    if not math.isfinite(number) or not low <= number <= high or (whole and not number.is_integer()):
        raise MVCFError(f"{what} {value!r} is out of range (use {'a whole number ' if whole else ''}{span})")
    return int(number) if whole else number

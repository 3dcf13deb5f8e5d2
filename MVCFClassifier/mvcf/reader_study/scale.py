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
        out: dict = {"confidence": None, "probability": None}
        if self.asks_confidence:
            if confidence is None or confidence == "":
                raise MVCFError("a confidence rating (1-5) is required")
            try:
                value = float(confidence)
            except (TypeError, ValueError):
                raise MVCFError(f"confidence rating {confidence!r} is not a number (use 1-5)") from None
            if not value.is_integer() or not 1 <= value <= 5:
                raise MVCFError(f"confidence rating {confidence!r} is out of range (use a whole number 1-5)")
            out["confidence"] = int(value)
        elif confidence not in (None, ""):
            raise MVCFError("this study asks for a probability only, not a confidence rating")
        if self.asks_probability:
            if probability is None or probability == "":
                raise MVCFError("a probability of malignancy (0-100) is required")
            try:
                value = float(probability)
            except (TypeError, ValueError):
                raise MVCFError(f"probability {probability!r} is not a number (use 0-100)") from None
            if not math.isfinite(value) or not 0 <= value <= 100:
                raise MVCFError(f"probability {probability!r} is out of range (use 0-100)")
            out["probability"] = value
        elif probability not in (None, ""):
            raise MVCFError("this study asks for a confidence rating only, not a probability")
        return out

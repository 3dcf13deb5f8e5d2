"""Files shipped inside the `mvcf` package (found relative to this folder, so they work in Slicer too)."""
from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent

#: TotalSegmentator vertebra labels present in the sample mask (v2 'total' IDs).
SAMPLE_VERTEBRA_LABELS = {"S1": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31, "T12": 32, "T11": 33}


def sample_ct_paths() -> dict[str, Path]:
    """The shipped real CT (TotalSegmentator example, Apache-2.0) and its vertebra label mask on the same grid.

    Keys: 'ct', 'mask', 'license', 'attribution'."""
    folder = RESOURCES / "sample_ct"
    return {"ct": folder / "example_ct.nii.gz", "mask": folder / "totalseg.nii.gz",
            "license": folder / "LICENSE", "attribution": folder / "ATTRIBUTION.txt"}

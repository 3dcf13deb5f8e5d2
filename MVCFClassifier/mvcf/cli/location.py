"""The vertebra options shared by `mvcf views` and `mvcf predict`, turned into one mvcf.locate.VertebraQuery.

Negative coordinates are values, not options, on every Python: `--point-ras -5.7,10,3` works as well as
`--point-ras=-5.7,10,3` (Python >= 3.13's argparse does this by itself, older ones only for one plain number).
"""
from __future__ import annotations

import argparse
import re

from mvcf.cli.args import ranged
from mvcf.errors import MVCFError

POINT_HELP = "three comma-separated numbers, e.g. -12.5,30,4"
POINT_OPTIONS = {"ras": "vertebra centre in RAS mm (Slicer)", "lps": "vertebra centre in LPS mm (ITK/DICOM)",
                 "ijk": "vertebra centre as a voxel index (0-based, may be fractional)"}


def add_location_arguments(parser: argparse.ArgumentParser, several: bool = False) -> argparse._MutuallyExclusiveGroup:
    """--point-ras/--point-lps/--point-ijk | --mask with --label, and --refine; `several` makes --label
    repeatable. Returns the exclusive group, so a command can add another way in (e.g. --locations)."""
    parser._negative_number_matcher = re.compile(r"^-\.?\d")
    where = parser.add_mutually_exclusive_group(required=True)
    for unit, text in POINT_OPTIONS.items():
        where.add_argument(f"--point-{unit}", metavar="X,Y,Z" if unit != "ijk" else "I,J,K",
                           help=f"{text}; {POINT_HELP}")
    where.add_argument("--mask", metavar="PATH", help="label mask; the centre is the centroid of --label")
    parser.add_argument("--label", type=ranged("label"), action="append",
                        help="label value of the vertebra in --mask (e.g. TotalSegmentator 31 = L1)"
                             + ("; repeat it to classify several vertebrae of the mask" if several else ""))
    parser.add_argument("--refine", action="store_true", help="recentre the point on the vertebral body "
                        "from bone intensity (heuristic, off by default)")
    return where


def query_from_args(args: argparse.Namespace, label=None):
    """The VertebraQuery the options name: one vertebra; `label` picks one of a repeated --label (default:
    the first)."""
    from pathlib import Path

    from mvcf.locate import VertebraQuery, parse_point

    if label is None:
        labels = list(args.label or [])
        if len(labels) > 1:   # views builds one vertebra's input: the last --label was taken in silence
            raise MVCFError(f"--label is given {len(labels)} times; this command reads one vertebra")
        label = labels[0] if labels else None
    if args.mask is not None:
        if label is None:
            raise MVCFError("--mask needs --label (the vertebra's label value)")
        return VertebraQuery(name=f"label {label}", mask=Path(args.mask), label=int(label), refine=args.refine)
    if label is not None:
        raise MVCFError("--label applies only with --mask")
    for unit in POINT_OPTIONS:
        value = getattr(args, f"point_{unit}", None)
        if value is not None:
            point = tuple(float(v) for v in parse_point(value, f"--point-{unit}"))
            return VertebraQuery(point=point, unit=unit, refine=args.refine)
    raise MVCFError("give the vertebra as --point-ras, --point-lps, --point-ijk or --mask with --label")

"""Blinding: readers see cases by opaque IDs only, and nothing in their package names a case.

A reader package holds de-identified copies of the CTs (voxels and geometry only: no file name, no header
text, no DICOM tags) under opaque names, and `find_leaks` checks every file name and every text file of a
package for the secrets of the key (case IDs, patient IDs, institutions, original file names, labels).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Sequence

from mvcf.errors import MVCFError

_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"  # no look-alikes (0/O, 1/I/L, 5/S, 8/B, 2/Z, 6/G)


def opaque_ids(n: int, rng: random.Random, length: int = 6) -> list[str]:
    """n distinct opaque case IDs such as 'K7RM3X', drawn from the plan's seeded generator."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = "".join(rng.choice(_ALPHABET) for _ in range(length))
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def crop_around(ct, center_lps, size_mm: float):
    """The part of `ct` (a CTImage) inside a cube of `size_mm` around `center_lps`, clipped to the CT,
    on the same voxel grid (no resampling): smaller packages, and less of the patient outside the spine."""
    import itertools

    import numpy as np

    from mvcf.ctimage import CTImage

    half = float(size_mm) / 2.0
    corners = [np.asarray(center_lps, float) + np.array(offset) * half
               for offset in itertools.product((-1, 1), repeat=3)]
    index = np.array([ct.lps_to_index(c) for c in corners])
    size = np.array(ct.size_ijk)
    low = np.clip(np.floor(index.min(axis=0)).astype(int), 0, size - 1)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, low + 1, size)
    voxels = ct.voxels[low[2]:high[2], low[1]:high[1], low[0]:high[0]]
    return CTImage(voxels=np.ascontiguousarray(voxels), spacing=ct.spacing, origin=ct.index_to_lps(low),
                   direction=ct.direction)


def write_blinded_ct(ct, path: Path) -> Path:
    """Write a CTImage (voxels + geometry only) to `path` (NIfTI), atomically; no metadata is carried."""
    from mvcf.fileio import atomic_path, write_image_file

    image = ct.to_sitk()
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    with atomic_path(path) as tmp:
        write_image_file(image, tmp)
    return path


def secrets_of(cases: Iterable[dict]) -> set[str]:
    """The strings that must not appear in a reader package: case and patient IDs, institutions, and the
    original CT / mask file names (with and without their extension)."""
    out: set[str] = set()
    for case in cases:
        for key in ("case_id", "patient_id", "institution"):
            if case.get(key):
                out.add(str(case[key]))
        for key in ("ct", "mask"):
            if case.get(key):
                name = Path(str(case[key])).name
                out.add(name)
                out.add(name.split(".")[0])
    return {s for s in out if len(s) >= 3}


def _strings(value) -> Iterable[str]:
    """Every string (keys included) inside parsed JSON; numbers are not text and cannot name a case."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def find_leaks(folder: Path, secrets: Sequence[str]) -> list[str]:
    """'file: secret' for every secret found in a file name, a JSON string or a text file under `folder`."""
    import json

    found = []
    lowered = [(s, s.lower()) for s in secrets]
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        found += [f"{rel}: file name contains {secret!r}" for secret, low in lowered if low in rel.lower()]
        if not path.is_file():
            continue
        if path.suffix == ".json":
            texts = [t.lower() for t in _strings(json.loads(path.read_text(encoding="utf-8")))]
        elif path.suffix in (".csv", ".txt", ".md"):
            texts = [path.read_text(encoding="utf-8", errors="replace").lower()]
        else:
            continue
        found += [f"{rel}: contains {secret!r}" for secret, low in lowered if any(low in t for t in texts)]
    return found


def require_no_leaks(folder: Path, secrets: Sequence[str]) -> None:
    leaks = find_leaks(folder, secrets)
    if leaks:
        raise MVCFError(f"reader package {folder.name} would reveal case identity ({len(leaks)} finding(s): "
                        f"{'; '.join(leaks[:3])}); rename the cases or institutions so their IDs are not "
                        "ordinary words, and plan again")

"""Which scans a model learned from, kept in its card, so that evaluating it on them is caught.

An evaluation cohort that shares CTs with the training cohort (the same files, or byte-identical copies)
measures how well the model remembers, not how well it generalises; nothing in the numbers shows it. The
card keeps a short digest of every CT the ensemble was fitted or tuned on (its folds' train and validation
cases; the internal test and external cases stay out of it), never the patient ids: a digest tells only
whoever holds that very file that it was used. A scan re-exported to another format or re-anonymised has
other bytes and is not recognised.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from mvcf.errors import MVCFError

#: Digest method, as the card names it.
METHOD = ("sha256/16: the first 16 hex digits of the SHA-256 of the CT file; of a DICOM folder, of its files' "
          "sorted digests")
#: More training scans than this are counted but not listed (the card stays under MAX_CARD_BYTES).
MAX_LISTED = 100_000
DIGEST_HEX = 16


def scan_digest(path: os.PathLike) -> str:
    """The digest of one CT: a file's bytes, or a DICOM folder's regular files, whatever their names."""
    from mvcf.limits import sha256_stream

    path = Path(path)
    if not path.is_dir():
        return sha256_stream(path, "MAX_IMAGE_BYTES", "CT file")[:DIGEST_HEX]
    files = sorted(sha256_stream(entry.path, "MAX_IMAGE_BYTES", "DICOM file")
                   for entry in os.scandir(path) if _regular(entry))
    return hashlib.sha256("".join(files).encode()).hexdigest()[:DIGEST_HEX]


def _regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _digests(records: Iterable[Any]) -> dict[str, str]:
    """{case_id: digest}, each file read once however many of its vertebrae are rows."""
    by_file: dict[str, str] = {}
    out: dict[str, str] = {}
    for record in records:
        key = os.path.realpath(record.ct)
        try:
            if key not in by_file:
                by_file[key] = scan_digest(record.ct)
        except OSError as exc:
            raise MVCFError(f"cannot read the CT of case {record.case_id}: {exc.strerror or exc}") from None
        out[record.case_id] = by_file[key]
    return out


def card_entry(records: Sequence[Any], plan: Any) -> dict[str, Any]:
    """The card's `training_scans`: the digests of the CTs of every trained fold's train and val cases."""
    used = {c for fold in plan.folds for c in (*fold.train, *fold.val)}
    digests = sorted(set(_digests(r for r in records if r.case_id in used).values()))
    entry: dict[str, Any] = {"method": METHOD, "count": len(digests)}
    if len(digests) <= MAX_LISTED:
        entry["digests"] = digests
    return entry


def overlap(card: dict[str, Any], records: Sequence[Any]) -> dict[str, Any]:
    """Which rows' CTs the model was trained on: {"checked": bool, "cases": [...], "reason"?: str}."""
    entry = card.get("training_scans")
    if not isinstance(entry, dict) or "digests" not in entry:
        reason = ("the card does not list the scans it was trained on (a bundle from before this check, or one "
                  "not trained by mvcf)") if not isinstance(entry, dict) else \
            f"the card counts {entry.get('count')} training scans but lists none (more than {MAX_LISTED:,})"
        return {"checked": False, "cases": [], "reason": reason}
    known = set(entry["digests"])
    seen = [case for case, digest in _digests(records).items() if digest in known]
    return {"checked": True, "cases": seen}


def overlap_warning(found: dict[str, Any], n_cases: int, what: str = "these metrics are") -> Optional[str]:
    """One line for the user when some rows are training scans; None otherwise."""
    cases = found["cases"]
    if not cases:
        return None
    shown = ", ".join(cases[:5]) + (" ..." if len(cases) > 5 else "")
    return (f"{len(cases)} of {n_cases} cases have a CT the model was trained on ({shown}): {what} not an "
            "independent test")


def report_overlap(card: dict[str, Any], records: Sequence[Any], logger: str,
                   what: str = "these metrics are") -> dict[str, Any]:
    """overlap(), with its warning logged to `logger` (the CLI prints it, Slicer shows it) when cases hit."""
    found = overlap(card, records)
    warning = overlap_warning(found, len(records), what)
    if warning:
        logging.getLogger(logger).warning(warning)
    return found


def trained_on(card: dict[str, Any], ct_source: str) -> list[str]:
    """The one-line warning for a prediction on a CT the model was trained on (empty when it is not, or when
    the card lists no scans or the CT has no file behind it, as a Slicer volume), so a probability it
    remembers is not read as an estimate. The file is hashed once while it stays the same."""
    entry = card.get("training_scans")
    digests = entry.get("digests") if isinstance(entry, dict) else None
    if not digests or not ct_source:
        return []
    try:
        digest = _digest_of_unchanged(os.path.realpath(ct_source), _signature(ct_source))
    except (OSError, MVCFError):
        return []
    if digest not in set(digests):
        return []
    return ["this CT is one the model was trained on (its card's training_scans): the probability is what the "
            "model learned from this very scan, not an independent estimate"]


def _signature(path: str) -> tuple:
    """What changes when a CT file, or a DICOM folder's files, are replaced or rewritten."""
    from mvcf.outputs_guard import content_stamp

    if not os.path.isdir(path):
        return content_stamp(path)
    with os.scandir(path) as entries:
        return tuple(sorted((e.name, content_stamp(e.path)) for e in entries if _regular(e)))


@lru_cache(maxsize=64)
def _digest_of_unchanged(path: str, signature: tuple) -> str:
    return scan_digest(path)

"""The study plan: every reader reads every case in every round (fully crossed), each in an order of their
own, randomised per reader and round from one seed (the same seed and manifest give the same plan).

    <out>/plan.json            readers, groups, rounds, scale, washout, fingerprint (no case identity)
    <out>/key.json             opaque ID -> case ID, patient, institution, label, model output: the
                               coordinator's file, never sent to readers
    <out>/packages/<reader>/   one reader package each (see mvcf.reader_study.packages)

The plan is written into a temporary folder and appears only when complete; an existing plan is never
overwritten.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.errors import MVCFError
from mvcf.reader_study import packages as pk
from mvcf.reader_study.blinding import crop_around, opaque_ids, require_no_leaks, secrets_of, write_blinded_ct
from mvcf.reader_study.scale import Scale

PLAN_FILE = "plan.json"
KEY_FILE = "key.json"
PACKAGES_DIR = "packages"
ROUND_NAMES = ("unaided", "aided")
_READER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@dataclass
class PlanSettings:
    readers: list[str]
    rounds: list[str] = field(default_factory=lambda: ["unaided", "aided"])
    groups: dict[str, list[str]] = field(default_factory=dict)
    washout_days: float = 0.0
    seed: int = 0
    scale: Scale = field(default_factory=Scale)
    allow_revision: bool = False
    model: Optional[str] = None
    device: str = "auto"
    heatmaps: bool = True
    crop_mm: Optional[float] = None  # cube around the vertebra copied into the packages; None: the whole CT
    allow_outside_root: bool = False  # accept manifest paths outside the manifest's folder


def parse_readers(spec: str) -> list[str]:
    """'5' -> reader1..reader5; 'ann,ben' -> those names (letters, digits, _ . -; unique)."""
    spec = str(spec).strip()
    if spec.isdigit():
        n = int(spec)
        if not 2 <= n <= 200:
            raise MVCFError(f"--readers {spec}: an MRMC study needs 2 to 200 readers")
        return [f"reader{i + 1}" for i in range(n)]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if not _READER_NAME.fullmatch(n)]
    if bad:
        raise MVCFError(f"reader name {bad[0]!r} is not allowed (letters, digits, '_', '.', '-'; at most 40)")
    if len({n.casefold() for n in names}) != len(names):   # Ann and ann: one package folder on macOS/Windows
        raise MVCFError(f"--readers lists a reader twice (letter case aside): {spec}")
    if len(names) < 2:
        raise MVCFError("an MRMC reader study needs at least two readers")
    return names


def parse_groups(specs: Sequence[str], readers: Sequence[str]) -> dict[str, list[str]]:
    """['senior:ann,ben', 'junior:cy'] -> {'senior': ['ann', 'ben'], 'junior': ['cy']}; every name must be a
    reader, and a reader is in one group at most."""
    groups: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for spec in specs or []:
        name, sep, members = str(spec).partition(":")
        name = name.strip()
        if not sep or not name or not members.strip():
            raise MVCFError(f"--group {spec!r}: use NAME:reader,reader (e.g. senior:reader1,reader2)")
        listed = [m.strip() for m in members.split(",") if m.strip()]
        for m in listed:
            if m not in readers:
                raise MVCFError(f"--group {name}: {m!r} is not one of the readers ({', '.join(readers)})")
            if m in seen:
                raise MVCFError(f"reader {m!r} is in two groups ({seen[m]} and {name})")
            seen[m] = name
        if name in groups:
            raise MVCFError(f"group {name!r} given twice")
        groups[name] = listed
    return groups


def parse_rounds(spec: str) -> list[str]:
    rounds = [s.strip().lower() for s in str(spec).split(",") if s.strip()]
    bad = [r for r in rounds if r not in ROUND_NAMES]
    if bad or not rounds or len(set(rounds)) != len(rounds):
        raise MVCFError(f"--rounds {spec!r}: use unaided, aided, or both in reading order (unaided,aided; "
                        "each once)")
    return rounds


def aided_first_warning(rounds: Sequence[str], washout_days: float) -> Optional[str]:
    """The reader-study design caveat of reading with the model before reading without it, or None."""
    if list(rounds) != ["aided", "unaided"]:
        return None
    return (f"rounds aided,unaided: every reader sees the model's output before reading the same cases without "
            f"it, so what they remember of it can carry into the unaided round (washout {washout_days:g} days); "
            "the usual sequential design, and the paper's, reads unaided first (--rounds unaided,aided)")


def _one_time(folder: Path) -> None:
    """Every file of a package with one modification time: the times the files were written in told the
    manifest's order (nanoseconds apart), which a manifest sorted by label or site would give away."""
    when = time.time()
    for path in folder.rglob("*"):
        os.utime(path, (when, when), follow_symlinks=False)


def fingerprint(study_id: str, orders: dict) -> str:
    """What ties the key, the packages and the answers to one plan: a hash of the study ID and every order."""
    text = json.dumps({"study_id": study_id, "orders": orders}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _study_id(manifest: Path, settings: PlanSettings) -> str:
    """A hash of the manifest and every setting that shapes what readers see and how their answers count (the
    washout, the crop, revision, heatmaps, the scale, the groups, and the aided round's model weights): plans
    that differed only in those shared one id and fingerprint, so one plan's answers were collected by the
    other."""
    digest = hashlib.sha256(manifest.read_bytes())
    model = None
    if "aided" in settings.rounds:
        from mvcf.inference import default_model_path
        from mvcf.models.bundle import read_card

        model = read_card(settings.model or default_model_path())["weights"]["sha256"]
    digest.update(json.dumps([settings.readers, settings.rounds, settings.seed, settings.washout_days,
                              settings.crop_mm, settings.allow_revision, settings.heatmaps,
                              settings.scale.to_dict(), settings.groups, model], sort_keys=True).encode())
    return "RS-" + digest.hexdigest()[:8].upper()


def make_plan(manifest, settings: PlanSettings, out,
              on_progress: Optional[Callable[[int, int, str], None]] = None) -> dict:
    """Plan the study into the new folder `out`; returns plan.json's content."""
    from mvcf.dataset import locate_record
    from mvcf.fileio import atomic_dir
    from mvcf.manifest import read_manifest
    from mvcf.read_ct import read_ct

    from mvcf.outputs_guard import check_output_folder, run_inputs

    manifest, out = Path(manifest), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MVCFError(f"{out} already exists and is not empty: a plan is never overwritten")
    records = read_manifest(manifest, allow_outside_root=settings.allow_outside_root)
    check_output_folder(out, run_inputs(records, manifest, settings.model), what="--out")
    if len(records) < 4:
        raise MVCFError(f"manifest {manifest.name}: a reader study needs at least 4 cases (got {len(records)})")
    n_pos = sum(r.label for r in records)
    if n_pos < 2 or len(records) - n_pos < 2:
        raise MVCFError(f"manifest {manifest.name}: needs at least 2 MVCF and 2 OVCF cases (got {n_pos} MVCF)")
    if settings.crop_mm is not None and not settings.crop_mm >= 40:
        raise MVCFError(f"--crop-mm {settings.crop_mm}: use at least 40 mm (one vertebra with its neighbours)")
    for group, members in settings.groups.items():
        if any(m not in settings.readers for m in members):
            raise MVCFError(f"group {group} names an unknown reader")
    caveat = aided_first_warning(settings.rounds, settings.washout_days)
    if caveat is not None:
        logging.getLogger("mvcf.reader_study").warning(caveat)

    rng = random.Random(settings.seed)
    ids = opaque_ids(len(records), rng)
    study_id = _study_id(manifest, settings)
    orders = {reader: {round_name: rng.sample(ids, len(ids)) for round_name in settings.rounds}
              for reader in settings.readers}
    print_ = fingerprint(study_id, orders)
    steps = len(records) * (1 + ("aided" in settings.rounds)) + len(settings.readers)
    step = 0

    def progress(message: str) -> None:
        nonlocal step
        step += 1
        if on_progress is not None:
            on_progress(step, steps, message)

    with atomic_dir(out) as tmp:   # an empty --out is replaced by the plan once it is complete
        staging = tmp / ".staging"
        (staging / "cases").mkdir(parents=True)
        centers = {}
        for record, opaque in zip(records, ids):
            ct = read_ct(record.ct)
            location = locate_record(ct, record)
            centers[opaque] = [round(float(v), 3) for v in location.center_lps]
            if settings.crop_mm:
                ct = crop_around(ct, location.center_lps, settings.crop_mm)
            write_blinded_ct(ct, staging / "cases" / f"{opaque}.nii.gz")
            progress(f"blinded CT {len(centers)}/{len(records)}")
        outputs: dict[str, dict] = {}
        identity: dict = {}
        if "aided" in settings.rounds:
            from mvcf.reader_study.model_outputs import compute_model_outputs

            (staging / "aided").mkdir()

            def model_progress(done: int, total: int, message: str) -> None:
                if done < total:
                    progress(message)

            values, identity = compute_model_outputs(records, staging / "aided" if settings.heatmaps else None,
                                                     ids, settings.model, settings.device, model_progress)
            outputs = dict(zip(ids, values))
        key = {"format": "mvcf-reader-study-key", "study_id": study_id, "fingerprint": print_,
               "manifest": str(manifest.resolve()), "model": identity,
               "cases": {opaque: {"case_id": r.case_id, "patient_id": r.patient_id, "institution": r.institution,
                                  "label": int(r.label), "ct": str(r.ct), "mask": str(r.mask) if r.mask else None,
                                  **({"model": {k: outputs[opaque][k] for k in ("probability", "prediction",
                                                                                 "threshold")}}
                                     if opaque in outputs else {})}
                         for r, opaque in zip(records, ids)}}
        plan = {"format": "mvcf-reader-study-plan", "version": 1, "study_id": study_id, "fingerprint": print_,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": settings.seed, "n_cases": len(records),
                "n_positive": n_pos, "readers": list(settings.readers), "groups": settings.groups,
                "rounds": [{"name": r, "aided": r == "aided"} for r in settings.rounds],
                "washout_days": settings.washout_days, "scale": settings.scale.to_dict(),
                "crop_mm": settings.crop_mm, "allow_revision": settings.allow_revision, "model": identity}
        secrets = sorted(secrets_of(key["cases"].values()))
        for reader in settings.readers:
            folder = tmp / PACKAGES_DIR / reader
            (folder / pk.CASES_DIR).mkdir(parents=True)
            # in the order of the opaque ids, not the manifest's: file and inode order (ls -i, ls -tr) told it
            for opaque in sorted(ids):
                shutil.copyfile(staging / "cases" / f"{opaque}.nii.gz", folder / pk.CASES_DIR / f"{opaque}.nii.gz")
            package = {"format": pk.FORMAT, "version": pk.VERSION, "study_id": study_id, "fingerprint": print_,
                       "reader": reader, "rounds": [{"name": r, "aided": r == "aided", "cases": orders[reader][r]}
                                                    for r in settings.rounds],
                       "scale": settings.scale.to_dict(), "washout_days": settings.washout_days,
                       "allow_revision": settings.allow_revision,
                       "cases": {opaque: {"center_lps": centers[opaque]} for opaque in sorted(ids)},
                       "disclaimer": RESEARCH_USE_DISCLAIMER}
            (folder / pk.PACKAGE_FILE).write_text(json.dumps(package, indent=1), encoding="utf-8")
            if outputs:
                aided = folder / pk.AIDED_DIR
                aided.mkdir()
                for opaque in sorted(outputs):
                    if outputs[opaque].get("heatmap"):
                        shutil.copyfile(staging / "aided" / outputs[opaque]["heatmap"],
                                        aided / outputs[opaque]["heatmap"])
                (aided / pk.AIDED_FILE).write_text(json.dumps({"model": identity, "disclaimer": RESEARCH_USE_DISCLAIMER,
                                                               "cases": {k: outputs[k] for k in sorted(outputs)}},
                                                              indent=1), encoding="utf-8")
            _one_time(folder)
            require_no_leaks(folder, secrets)
            progress(f"package {reader}")
        shutil.rmtree(staging)
        key_text = json.dumps(key, indent=1)
        plan["key_sha256"] = hashlib.sha256(key_text.encode("utf-8")).hexdigest()   # an edited key is told
        (tmp / PLAN_FILE).write_text(json.dumps(plan, indent=1), encoding="utf-8")
        (tmp / KEY_FILE).write_text(key_text, encoding="utf-8")
    return plan

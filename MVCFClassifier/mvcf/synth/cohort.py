"""Seeded generation of a two-institution cohort: plan patients and cases, draw each case, write NIfTI
files and the manifest.

Reproducibility: the plan comes from SeedSequence([seed, 0]) and case i from SeedSequence([seed, 1, i]),
so a case does not depend on the number of workers or on the other cases, and the same seed gives
byte-identical files.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from mvcf.errors import MVCFError
from mvcf.manifest import CaseRecord, format_point, write_manifest
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel
from mvcf.synth.anatomy import level_label, render_anatomy, sample_spine
from mvcf.synth.institutions import INSTITUTIONS, Acquired, Population, acquire
from mvcf.synth.signs import DIFFICULTIES, FractureSigns, sample_signs

LUMBAR_TARGETS = ["L1", "L2", "L3", "L4"]
THORACIC_TARGETS = ["T10", "T11", "T12"]      # the levels with real templates around them (anatomy.py)


@dataclass
class CasePlan:
    index: int
    case_id: str
    patient_id: str
    institution: str
    label: int                   # 1 MVCF, 0 OVCF
    level: str
    n_levels: int
    trabecular_hu: float         # the patient's bone density (all of the segment's vertebrae)
    osteoporotic: bool


@dataclass
class SyntheticCase:
    plan: CasePlan
    image: Acquired
    signs: FractureSigns
    center_lps: np.ndarray       # centroid of the target label in the mask (what locate-from-mask finds)
    body_center_lps: np.ndarray  # centre of the vertebral body


def _patient_bone(rng: np.random.Generator, label: int, population: Population) -> tuple[float, bool]:
    """Trabecular HU of the patient's spine. OVCF patients are osteoporotic (~50-110 HU internally); MVCF
    patients are older adults too, a third of them osteopenic, so bone density alone does not separate the
    classes. The external site's older population has lower density in both classes."""
    if label == 0:
        return float(rng.uniform(*population.ovcf_bone_hu)), True
    if rng.random() < population.mvcf_osteopenic:
        return float(rng.uniform(*population.mvcf_osteopenic_hu)), True
    return float(rng.uniform(*population.mvcf_normal_hu)), False


def plan_cohort(n_cases: int, seed: int = 0, external_fraction: float = 0.3, prevalence: float = 0.5,
                multi_level_fraction: float = 0.12) -> list[CasePlan]:
    """Patients and their fractured levels. Some patients have two fractured levels (two cases, one
    institution, one class); the external site receives about `external_fraction` of the cases."""
    if n_cases < 1:
        raise MVCFError("the cohort needs at least 1 case")
    if seed < 0:
        raise MVCFError(f"the seed must be a non-negative integer, not {seed}")
    if not 0.0 <= external_fraction < 1.0:
        raise MVCFError("external fraction must be in [0, 1)")
    if not 0.0 < prevalence < 1.0:
        raise MVCFError("prevalence of MVCF must be in (0, 1)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    n_external = int(round(n_cases * external_fraction))
    if n_external == n_cases:   # the state an external fraction of 1 is refused for
        raise MVCFError(f"an external fraction of {external_fraction:g} of {n_cases} case(s) leaves no internal case; "
                        "use a smaller fraction or more cases")
    counts = {"internal": 0, "external": 0}
    quota = {"internal": n_cases - n_external, "external": n_external}
    plans: list[CasePlan] = []
    patient = 0
    while len(plans) < n_cases:
        patient += 1
        left = {site: quota[site] - counts[site] for site in quota}
        site = "external" if left["external"] > 0 and rng.random() < left["external"] / sum(left.values()) \
            else "internal"
        n_fractures = 2 if (rng.random() < multi_level_fraction and left[site] >= 2) else 1
        population = INSTITUTIONS[site].population
        label = int(rng.random() < (prevalence if population.prevalence is None else population.prevalence))
        trabecular, osteoporotic = _patient_bone(rng, label, population)
        targets = LUMBAR_TARGETS if rng.random() < 0.65 else THORACIC_TARGETS
        levels = rng.choice(targets, size=n_fractures, replace=False)
        for level in levels:
            index = len(plans)
            plans.append(CasePlan(
                index=index, case_id=f"case{index + 1:04d}", patient_id=f"P{patient:04d}", institution=site,
                label=label, level=str(level), n_levels=int(rng.choice([3, 4], p=[0.8, 0.2])),
                trabecular_hu=trabecular, osteoporotic=osteoporotic))
            counts[site] += 1
    return plans


def generate_case(plan: CasePlan, seed: int = 0, difficulty: str = "standard",
                  edit_signs: Optional[Callable[[FractureSigns], None]] = None) -> SyntheticCase:
    """Draw one case from its plan: anatomy, signs, acquisition at the plan's institution. `edit_signs`
    changes the drawn signs in place before rendering (every random draw stays the same), e.g. the same
    case without its collapse (scripts/genant_agreement.py --ceiling)."""
    if difficulty not in DIFFICULTIES:
        raise MVCFError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, not {difficulty!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, plan.index]))
    spine = sample_spine(rng, plan.level, plan.n_levels, plan.trabecular_hu, plan.osteoporotic)
    signs = sample_signs(rng, plan.label, difficulty, INSTITUTIONS[plan.institution].population)
    if edit_signs is not None:
        edit_signs(signs)
    rendered = render_anatomy(spine, signs, rng)
    lps_offset = np.array([rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(-300, 100)])
    image = acquire(rendered, INSTITUTIONS[plan.institution], rng, lps_offset)
    spacing = np.array(image.spacing)
    origin = np.array(image.origin)
    kji = np.argwhere(image.labels == level_label(plan.level))
    center = origin + spacing * kji[:, ::-1].mean(axis=0) if len(kji) else origin
    body = spine.target.center + lps_offset
    return SyntheticCase(plan=plan, image=image, signs=signs, center_lps=center, body_center_lps=body)


def _to_sitk(voxels: np.ndarray, image: Acquired):
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(voxels)
    out.SetSpacing(image.spacing)
    out.SetOrigin(image.origin)
    out.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return out


def write_case(case: SyntheticCase, folder: Path) -> tuple[Path, Path]:
    """NIfTI CT (int16 HU) and label mask (uint8, TotalSegmentator values) of one case."""
    from mvcf.fileio import write_image_file

    folder.mkdir(parents=True, exist_ok=True)
    ct = folder / f"{case.plan.case_id}_ct.nii.gz"
    mask = folder / f"{case.plan.case_id}_mask.nii.gz"
    write_image_file(_to_sitk(case.image.hu, case.image), ct)
    write_image_file(_to_sitk(case.image.labels, case.image), mask)
    return ct, mask


def _generate_and_write(job: tuple[CasePlan, int, str, str]) -> dict:
    plan, seed, difficulty, folder = job
    case = generate_case(plan, seed, difficulty)
    ct, mask = write_case(case, Path(folder))
    return {"ct": ct, "mask": mask, "center_lps": case.center_lps, "body_center_lps": case.body_center_lps,
            "signs": ";".join(case.signs.names()), "spacing": case.image.spacing}


def _record(plan: CasePlan, result: dict, difficulty: str) -> CaseRecord:
    spacing = result["spacing"]
    return CaseRecord(
        case_id=plan.case_id, patient_id=plan.patient_id, institution=plan.institution, label=plan.label,
        ct=result["ct"], mask=result["mask"], vertebra_label=level_label(plan.level),
        center_lps=result["center_lps"],
        extra={"level": plan.level, "body_center_lps": format_point(result["body_center_lps"]),
               "spacing_mm": format_point(spacing), "difficulty": difficulty, "signs": result["signs"]})


def generate_cohort(out_dir: Union[str, os.PathLike], n_cases: int = 200, seed: int = 0,
                    difficulty: str = "standard", external_fraction: float = 0.3, prevalence: float = 0.5,
                    workers: int = 1, overwrite: bool = False, with_previews: bool = False,
                    on_progress: Optional[ProgressCallback] = None,
                    should_cancel: Optional[CancelCheck] = None) -> Path:
    """Generate a cohort into `out_dir` (atomically: the folder appears only when complete) and return the
    path of its manifest.csv. With `with_previews`, previews/{mvcf,ovcf}_<site>.png show two cases of each
    class and site (mid-axial and mid-sagittal through the fractured vertebra)."""
    from mvcf.fileio import atomic_dir

    if difficulty not in DIFFICULTIES:
        raise MVCFError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, not {difficulty!r}")
    from mvcf.outputs_guard import empty_folder, is_own_output

    out = Path(out_dir)
    if not empty_folder(out) and (out.exists() or out.is_symlink()):   # an empty one is made for it: taken
        if not is_own_output(out):   # --overwrite was suggested, then refused: it replaces only mvcf's output
            raise MVCFError(f"{out} exists and was not written by mvcf; it is never replaced (choose another --out)")
        if not overwrite:
            raise MVCFError(f"{out} holds an earlier cohort of mvcf (pass --overwrite to replace it, or choose "
                            "another --out)")
    plans = plan_cohort(n_cases, seed, external_fraction, prevalence)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        jobs = [(plan, seed, difficulty, str(tmp / "cases")) for plan in plans]
        records = []
        for done, (plan, result) in enumerate(zip(plans, _run(jobs, workers, should_cancel)), start=1):
            result = dict(result, ct=out / "cases" / Path(result["ct"]).name,
                          mask=out / "cases" / Path(result["mask"]).name)
            records.append(_record(plan, result, difficulty))
            if on_progress is not None:
                on_progress(done, len(plans), f"case {plan.case_id}")
        _write_manifest_into(tmp, out, records)
        if with_previews:
            write_previews(plans, seed, difficulty, tmp / "previews")
    return out / "manifest.csv"


def write_previews(plans: list[CasePlan], seed: int, difficulty: str, folder: Path, per_group: int = 2) -> list[Path]:
    """Regenerate (deterministically) a few cases per class and site and draw them."""
    from mvcf.synth.preview import write_preview

    written = []
    for site in sorted({p.institution for p in plans}):
        for label, name in ((1, "mvcf"), (0, "ovcf")):
            chosen = [p for p in plans if p.institution == site and p.label == label][:per_group]
            if not chosen:
                continue
            cases = [generate_case(p, seed, difficulty) for p in chosen]
            titles = [f"{c.plan.case_id} {name.upper()} {c.plan.level} ({site}): {', '.join(c.signs.names())}"
                      for c in cases]
            written.append(write_preview(cases, folder / f"{name}_{site}.png", titles))
    return written


def _write_manifest_into(tmp: Path, out: Path, records: list[CaseRecord]) -> None:
    """Paths in the manifest are relative (cases/...), so they are the same in the temporary folder."""
    for record in records:
        record.ct = tmp / "cases" / record.ct.name
        record.mask = tmp / "cases" / record.mask.name  # type: ignore[union-attr]
    write_manifest(tmp / "manifest.csv", records)
    for record in records:
        record.ct = out / "cases" / record.ct.name
        record.mask = out / "cases" / record.mask.name  # type: ignore[union-attr]


def _run(jobs: list, workers: int, should_cancel: Optional[CancelCheck]) -> Iterable[dict]:
    if workers <= 1:
        for job in jobs:
            check_cancel(should_cancel)
            yield _generate_and_write(job)
        return
    from mvcf.signals import worker_init

    with ProcessPoolExecutor(max_workers=workers, initializer=worker_init) as pool:
        futures = [pool.submit(_generate_and_write, job) for job in jobs]
        try:
            for future in futures:
                check_cancel(should_cancel)
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

"""Cases for the reader-study tests: tiny CTs (tiny_cohort) under case IDs, patients and institutions that
are long enough to be searched for in a reader package, plus a Van Dyke-shaped manifest (114 cases with the
truth of the Van Dyke study, on copies of the tiny CTs)."""
from __future__ import annotations

import csv
from pathlib import Path

from tiny_cohort import make_tiny_cohort

INSTITUTIONS = ("Northwood General", "Southgate Clinic")


def reader_study_manifest(folder: Path, n_per_site: int = 4) -> Path:
    """2·n_per_site cases, half MVCF, with identifiable IDs (CASE-..., PAT-..., hospital names)."""
    from mvcf.manifest import read_manifest, write_manifest

    tiny = make_tiny_cohort(folder / "ct", n_per_site=n_per_site)
    records = read_manifest(tiny)
    for index, record in enumerate(records):
        site = 0 if record.institution == "A" else 1
        record.case_id = f"CASE-{1000 + index}-QZ"
        record.patient_id = f"PAT-{5000 + index}"
        record.institution = INSTITUTIONS[site]
    return write_manifest(folder / "study_manifest.csv", records)


def van_dyke_truth(csv_path: Path) -> dict[int, int]:
    with open(csv_path, newline="") as handle:
        return {int(row["case"]): int(row["truth"]) for row in csv.DictReader(handle)}


def van_dyke_manifest(folder: Path, vandyke_csv: Path) -> Path:
    """One manifest row per Van Dyke case (VD-001 ... VD-114) with its truth, on copies of the tiny CTs in turn
    (a copy each: one scan may belong to one patient only)."""
    import shutil

    from mvcf.manifest import read_manifest, write_manifest

    tiny = read_manifest(make_tiny_cohort(folder / "ct", n_per_site=2))
    records = []
    for index, (case, truth) in enumerate(sorted(van_dyke_truth(vandyke_csv).items())):
        record = tiny[index % len(tiny)]
        ct = shutil.copyfile(record.ct, folder / "ct" / f"VD-{case:03d}.nii.gz")
        records.append(type(record)(case_id=f"VD-{case:03d}", patient_id=f"VDP-{case:03d}",
                                    institution="Aortic Imaging Centre", label=truth, ct=ct, mask=record.mask,
                                    vertebra_label=record.vertebra_label))
    return write_manifest(folder / "vandyke_manifest.csv", records)


def sample_ct_manifest(folder: Path) -> Path:
    """L1-L4 of the shipped real CT as four 'cases' (labels arbitrary: a test of geometry, not of diagnosis)."""
    from mvcf.manifest import CaseRecord, write_manifest

    sample = Path(__file__).resolve().parents[2] / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"
    records = [CaseRecord(case_id=f"SAMPLE-L{n}", patient_id="PAT-SAMPLE-1", institution="Totalseg Example",
                          label=n % 2, ct=sample / "example_ct.nii.gz", mask=sample / "totalseg.nii.gz",
                          vertebra_label=32 - n) for n in (1, 2, 3, 4)]
    return write_manifest(folder / "sample_manifest.csv", records)

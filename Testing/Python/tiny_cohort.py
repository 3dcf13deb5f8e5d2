"""A tiny two-institution cohort of small NIfTI CTs for the model tests (seconds, not minutes).

Each CT is a 40^3 block at 2 mm of soft tissue with a bony 'vertebral body' (a cortical shell around a
trabecular core) at the centre. MVCF cases get a lytic (low-HU) focus in the body, OVCF cases a denser
impaction band; noise makes the classes overlap a little. It is a test fixture for the training plumbing,
not the synthetic cohort generator (mvcf.synth) that the study uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


VERTEBRA_LABEL = 20


def make_tiny_cohort(out: Path, n_per_site: int = 12, sites=("A", "B"), seed: int = 0,
                     shared_patient: bool = False) -> Path:
    import SimpleITK as sitk

    from mvcf.manifest import CaseRecord, write_manifest

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    k, j, i = np.mgrid[0:40, 0:40, 0:40].astype(np.float32)
    r = np.sqrt((k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2)
    records = []
    for s, site in enumerate(sites):
        for n in range(n_per_site):
            label = n % 2
            hu = 40 + rng.normal(0, 15 + 5 * s, size=r.shape)
            hu[r > 19] = -1000
            hu[r < 9] = 700
            core = r < 7.5
            hu[core] = (90 if label == 0 else 60) + rng.normal(0, 25, size=int(core.sum()))
            focus = np.sqrt((k - 20) ** 2 + (j - 18) ** 2 + (i - 21 + 3 * rng.random()) ** 2) < 4
            hu[focus & core] = 20 if label == 1 else 300
            image = sitk.GetImageFromArray((hu + 10 * s).astype(np.int16))
            image.SetSpacing((2.0, 2.0, 2.0))
            image.SetOrigin((-40.0, -40.0, -40.0))
            path = out / f"{site}_{n:03d}.nii.gz"
            sitk.WriteImage(image, str(path))
            mask = sitk.GetImageFromArray((r < 9.5).astype(np.uint8) * VERTEBRA_LABEL)
            mask.CopyInformation(image)
            mask_path = out / f"{site}_{n:03d}_mask.nii.gz"
            sitk.WriteImage(mask, str(mask_path))
            patient = f"{site}-p{n % 2 if n < 4 else n}"  # cases 0+2 and 1+3: one patient, two levels
            if shared_patient and s == 1 and n == 0:
                patient = f"{sites[0]}-p0"
            records.append(CaseRecord(case_id=f"{site}_{n:03d}", patient_id=patient, institution=site,
                                      label=label, ct=path, mask=mask_path, vertebra_label=VERTEBRA_LABEL))
    return write_manifest(out / "manifest.csv", records)

"""Synthetic two-institution OVCF/MVCF CT cohorts (see docs/synthetic.md).

anatomy (normal segment) -> signs (the fracture, by class and difficulty) -> institutions (acquisition at
a site) -> cohort (seeded plan, NIfTI files, manifest.csv).
"""
from mvcf.synth.cohort import CasePlan, SyntheticCase, generate_case, generate_cohort, plan_cohort
from mvcf.synth.institutions import INSTITUTIONS, InstitutionProfile
from mvcf.synth.signs import DIFFICULTIES, FractureSigns, sample_signs

#: Which generator made a cohort (model cards record it): bump the version when the images change.
GENERATOR = {"version": "6",
             "summary": "real vertebra shape templates (VerSe, TotalSegmentator, TPTBox masks), smoothly deformed; "
                        "external site with thicker slices, softer kernel, coarse noise, HU drift and an older "
                        "population with another tumour mix and prevalence; v3: the internal site a clean protocol and "
                        "an oncology population with advanced lytic metastases found with little collapse, the "
                        "external site osteopenic patients, a larger HU drift, myeloma collapsing like "
                        "osteoporosis, less advanced metastases; v4: the external population a little less osteopenic (MVCF "
                        "osteopenic 45 %, normal-bone MVCF 95-170 HU) with look-alikes x 1.0; v5: its metastases collapse a "
                        "little less (height loss x 0.85), calibrated on the baseline over seeds 1-4; v6: a cortical shell as thin as "
                        "measured (0.3-0.5 mm, Silva et al. 1994), no wasted draws for myeloma"}

__all__ = ["GENERATOR", "CasePlan", "SyntheticCase", "generate_case", "generate_cohort", "plan_cohort", "INSTITUTIONS",
           "InstitutionProfile", "DIFFICULTIES", "FractureSigns", "sample_signs"]

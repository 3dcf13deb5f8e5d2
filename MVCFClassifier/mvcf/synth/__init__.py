"""Synthetic two-institution OVCF/MVCF CT cohorts (see docs/synthetic.md).

anatomy (normal segment) -> signs (the fracture, by class and difficulty) -> institutions (acquisition at
a site) -> cohort (seeded plan, NIfTI files, manifest.csv).
"""
from mvcf.synth.cohort import CasePlan, SyntheticCase, generate_case, generate_cohort, plan_cohort
from mvcf.synth.institutions import INSTITUTIONS, InstitutionProfile
from mvcf.synth.signs import DIFFICULTIES, FractureSigns, sample_signs

__all__ = ["CasePlan", "SyntheticCase", "generate_case", "generate_cohort", "plan_cohort", "INSTITUTIONS",
           "InstitutionProfile", "DIFFICULTIES", "FractureSigns", "sample_signs"]

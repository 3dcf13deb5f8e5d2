"""The transparent baseline: features measured from CT + mask agree with the drawn truth; the
internal -> external logistic regression runs end to end on a small synthetic cohort."""
from __future__ import annotations

import numpy as np
import pytest

from mvcf.baseline import evaluate_baseline, fit_baseline, measure_body
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError
from mvcf.manifest import read_manifest
from mvcf.synth import generate_cohort, plan_cohort
from mvcf.synth.anatomy import level_label, render_anatomy, sample_spine
from mvcf.synth.institutions import INSTITUTIONS, acquire
from mvcf.synth.signs import FractureSigns


def _case(signs: FractureSigns, trabecular_hu: float, site: str = "internal", seed: int = 0):
    rng = np.random.default_rng(seed)
    spine = sample_spine(rng, "L1", 3, trabecular_hu, osteoporotic=trabecular_hu < 110)
    image = acquire(render_anatomy(spine, signs, rng), INSTITUTIONS[site], rng, np.zeros(3))
    ct = CTImage(image.hu, image.spacing, image.origin)
    mask = CTImage(image.labels, image.spacing, image.origin)
    return ct, mask, spine


@pytest.mark.parametrize("site", ["internal", "external"])
def test_intact_vertebra_measures_its_density_and_no_height_loss(site):
    ct, mask, _ = _case(FractureSigns(label=0), trabecular_hu=150.0, site=site)
    m = measure_body(ct, mask, level_label("L1"))
    offset = INSTITUTIONS[site].hu_offset[0]
    assert abs(m.trabecular_hu - (150.0 + offset)) < 3 * INSTITUTIONS[site].hu_offset[1] + 15
    assert abs(m.height_loss) < 0.12
    assert 20 < m.reference_mm < 32


@pytest.mark.parametrize("kind,loss", [("wedge", 0.4), ("crush", 0.3), ("biconcave", 0.35)])
def test_height_loss_is_measured_from_the_mask(kind, loss):
    ct, mask, _ = _case(FractureSigns(label=0, height_kind=kind, height_loss=loss), trabecular_hu=90.0)
    m = measure_body(ct, mask, level_label("L1"))
    assert abs(m.height_loss - loss) < 0.1, (kind, m)


def test_lytic_and_blastic_lesions_move_the_density_feature():
    base = FractureSigns(label=1, lesion_fraction=0.6, lesion_pattern="geographic")
    lytic = measure_body(*_case(FractureSigns(**{**base.as_dict(), "lesion_hu": 30.0}), 180.0)[:2], 31)
    blastic = measure_body(*_case(FractureSigns(**{**base.as_dict(), "lesion_hu": 650.0}), 180.0)[:2], 31)
    intact = measure_body(*_case(FractureSigns(label=1), 180.0)[:2], 31)
    assert lytic.trabecular_hu < intact.trabecular_hu - 40 < blastic.trabecular_hu - 200


def test_missing_label_is_a_user_error():
    ct, mask, _ = _case(FractureSigns(label=0), 120.0)
    with pytest.raises(MVCFError, match="absent"):
        measure_body(ct, mask, 5)
    with pytest.raises(MVCFError, match="both"):
        fit_baseline(np.zeros((4, 2)), np.zeros(4))


def test_internal_to_external_evaluation_end_to_end(tmp_path):
    def external_labels(seed):
        return [p.label for p in plan_cohort(14, seed=seed, external_fraction=0.43) if p.institution == "external"]

    seed = next(s for s in range(50) if min(sum(external_labels(s)), 6 - sum(external_labels(s))) >= 2)
    manifest = generate_cohort(tmp_path / "c", n_cases=14, seed=seed, external_fraction=0.43)
    records = read_manifest(manifest)
    result = evaluate_baseline(records, external="external")
    assert result["n_train"] + result["n_test"] == 14 and result["n_test"] == 6
    assert 0.0 <= result["external_auc"]["auc"] <= 1.0
    assert set(result["coefficients"]) == {"trabecular_hu", "height_loss"}
    assert len(result["cases"]) == 14 and all(0 <= c["probability_malignant"] <= 1 for c in result["cases"])
    with pytest.raises(MVCFError, match="no case from institution"):
        evaluate_baseline(records, external="elsewhere")

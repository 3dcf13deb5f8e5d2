"""Real vertebra templates: what ships, with which attribution, and that synthetic normal vertebrae measure
like the real ones (mvcf.synth.measures, the comparison of docs/synthetic.md)."""
import json

import numpy as np
import pytest

from mvcf.synth import generate_case, plan_cohort
from mvcf.synth.templates import TEMPLATE_FILE, load_templates, place_template, template_fields


def test_templates_cover_t9_to_l5_and_every_source_is_attributed():
    templates = load_templates()
    assert {t.level for t in templates} == {"T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"}
    attribution = (TEMPLATE_FILE.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for source, licence in (("verse004", "CC BY-SA 4.0"), ("totalseg-example", "Apache-2.0"),
                            ("tptbox-ct22", "Apache-2.0")):
        assert any(t.source == source for t in templates)
        assert source.split("_")[0] in attribution and licence in attribution
    for t in templates:   # real bodies: lumbar-sized or thoracic-sized, never a box of fixed size
        assert 14 <= t.measures["body_height_mm"] <= 32 and 28 <= t.measures["body_depth_mm"] <= 45


def test_placed_template_varies_smoothly_and_keeps_the_shape():
    template = next(t for t in load_templates() if t.key == "verse004_L3")
    fields = template_fields(template.key)
    rng = np.random.default_rng(0)
    a, b = place_template(rng, template, 1.0), place_template(rng, template, 1.0)
    x = np.arange(-30, 30, 1.0, dtype=np.float32)[None, None, :]
    y = np.arange(-25, 25, 1.0, dtype=np.float32)[None, :, None]
    z = np.arange(-15, 15, 1.0, dtype=np.float32)[:, None, None]
    flat = np.full((50, 60), a.half_height, np.float32)
    body_a = a.fields(x, y, z, flat, -flat, np.zeros((1, 1, 1), np.float32))["body"] < 0
    flat_b = np.full((50, 60), b.half_height, np.float32)
    body_b = b.fields(x, y, z, flat_b, -flat_b, np.zeros((1, 1, 1), np.float32))["body"] < 0
    overlap = (body_a & body_b).sum() / (body_a | body_b).sum()
    assert 0.6 < overlap < 0.995            # two cases differ, but both are the same real vertebra
    assert abs(body_a.sum() / 1000 - template.measures["body_volume_ml"]) < 0.35 * template.measures["body_volume_ml"]
    assert fields.body.min() < -8           # a solid body, not a shell


def test_synthetic_normal_vertebrae_fall_in_the_real_range(shared_data):
    from mvcf.synth.measures import measure_neighbours

    real = json.loads((shared_data("totalsegmentator") / "spine_report" / "spine_report.json").read_text(encoding="utf-8"))["results"]
    rows = [m for plan in plan_cohort(3, seed=5, external_fraction=0.5) for m in measure_neighbours(generate_case(plan, 5))]
    assert rows
    for m in rows:
        assert 15 <= m["body_height_mm"] <= 33 and 25 <= m["body_depth_mm"] <= 46
        assert 20 <= m["trabecular_hu"] <= 260 and 20 <= m["trabecular_sd_hu"] <= 90
    heights = [v for k, v in real.items() if k.endswith("height_middle_mm")]
    assert min(heights) - 6 <= np.median([m["body_height_mm"] for m in rows]) <= max(heights) + 6


def test_measures_of_the_real_ct_agree_with_its_spine_report(shared_data):
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.synth.measures import vertebra_measures

    folder = shared_data("totalsegmentator")
    report = json.loads((folder / "spine_report" / "spine_report.json").read_text(encoding="utf-8"))["results"]
    m = vertebra_measures(read_ct(folder / "example_ct.nii.gz", warnings=[]),
                          read_mask(folder / "spine_report" / "totalseg.nii.gz"), 30)   # L2
    assert abs(m["body_height_mm"] - report["vertebrae_L2_height_middle_mm"]) < 5
    assert abs(m["trabecular_hu"] - report["vertebrae_L2_intensity_median"]) < 25
    assert 0.3 < m["cortical_apparent_mm"] < 3.0


def test_a_case_is_drawn_from_one_source_spine_where_it_can():
    case = generate_case(plan_cohort(3, seed=2)[0], seed=2)
    assert case.image.hu.dtype == np.int16 and (case.image.labels > 0).any()
    assert pytest.approx(case.image.spacing[0], abs=0.7) == 1.0 or case.plan.institution == "external"

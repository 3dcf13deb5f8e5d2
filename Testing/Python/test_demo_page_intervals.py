"""The demo's front page never prints a zero-width AUC interval without saying why: it takes the study's
Newcombe interval and note where DeLong collapses (perfect separation), as the study report does."""
from mvcf.demo import _brief
from mvcf.metrics import summarize
from mvcf.report.demo_page import _auc


def test_perfect_separation_shows_newcombe_and_the_reason():
    perfect = summarize([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], 0.5, n_bootstrap=50)
    usual = summarize([0, 1, 0, 1, 0, 1], [0.1, 0.2, 0.6, 0.7, 0.3, 0.9], 0.5, n_bootstrap=50)
    row = _brief({"models": [{"name": "3d", "internal_test": perfect, "external_test": usual}]})["3d"]
    low, high = row["internal_auc_ci"]
    assert row["internal_auc"] == 1.0 and high - low > 0.1 and "perfect separation" in row["internal_auc_note"]
    assert "external_auc_note" not in row
    text = _auc(row["internal_auc"], row["internal_auc_ci"], row.get("internal_auc_note"))
    assert "perfect separation" in text and "(1.000-1.000)" not in text

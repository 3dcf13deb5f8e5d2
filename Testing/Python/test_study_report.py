"""The study report's honesty rules: a degenerate AUC interval is replaced by Newcombe's with the reason,
every model gets calibration or the reason it is not estimable, threshold transfer gives the frozen and the
(post hoc) site Youden operating points, and no `nan` or zero-width CI is printed without a reason."""
import json
import re

import numpy as np
import pytest

from mvcf.metrics import format_auc, summarize
from mvcf.stats import delong_ci, newcombe_auc_ci
from mvcf.study import BASELINE, ModelResult, _auc_block, _honest_blocks, paired_delong, write_study_plots
from mvcf.study_report import calibration_block, comparison_rows, threshold_transfer, write_report


def test_newcombe_interval_is_wide_where_delong_collapses_and_close_to_it_elsewhere():
    low, high = newcombe_auc_ci(1.0, 30, 30)
    assert high == 1.0 and 0.85 < low < 0.99
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    p = np.r_[rng.normal(0, 1, 60), rng.normal(1.2, 1, 60)]
    d = delong_ci(y, p)
    n_low, n_high = newcombe_auc_ci(d["auc"], 60, 60)
    assert abs(n_low - d["ci"][0]) < 0.03 and abs(n_high - d["ci"][1]) < 0.03
    assert newcombe_auc_ci(0.0, 5, 5)[0] == 0.0 and newcombe_auc_ci(0.0, 5, 5)[1] > 0.1


@pytest.mark.parametrize("y, p, reason", [
    ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], "perfect separation"),
    ([0, 0, 0, 0, 1], [0.1, 0.6, 0.3, 0.2, 0.5], "a class of one"),
])
def test_degenerate_auc_says_why_and_gives_newcombe(y, p, reason):
    block = summarize(y, p, 0.5, n_bootstrap=50)
    assert reason in block["note"] and "Newcombe" in block["note"]
    low, high = block["auc_ci_newcombe"]
    assert high - low > 0.05
    text = format_auc(block)
    assert "Newcombe" in text and "nan" not in text


def test_calibration_block_gives_numbers_or_the_reason():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    good = calibration_block(y, p)
    assert good["slope"] is not None and "not_estimable" not in good and good["slope_ci"][0] < good["slope"]
    separated = calibration_block([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert separated["slope"] is None and "separate" in separated["not_estimable"]
    assert "one class" in calibration_block([1, 1, 1], [0.2, 0.5, 0.9])["not_estimable"]


def test_threshold_transfer_reports_frozen_and_post_hoc_site_youden():
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    p = np.r_[np.linspace(0.3, 0.7, 50), np.linspace(0.6, 0.95, 50)]   # the site's scores shifted upwards
    t = threshold_transfer(y, p, frozen=0.4)
    assert t["frozen"]["specificity"]["value"] < 0.3 and t["frozen"]["sensitivity"]["value"] == 1.0
    post = t["site_youden_post_hoc"]
    assert post["threshold"] > 0.55
    assert post["sensitivity"]["value"] + post["specificity"]["value"] > 1.7


def _summary(tmp_path):
    """A study summary built by the study's own functions from hand-made predictions: a model that
    separates the external site perfectly, one with a one-class internal set, and an ordinary one."""
    rng = np.random.default_rng(3)
    internal = [f"i{k}" for k in range(40)]
    external = [f"e{k}" for k in range(40)]
    labels = {c: k % 2 for k, c in enumerate(internal)} | {c: k % 2 for k, c in enumerate(external)}
    perfect = {c: 0.9 if labels[c] else 0.1 for c in external}
    noisy = lambda ids: {c: float(np.clip(0.5 + 0.2 * (labels[c] - 0.5) + rng.normal(0, 0.2), 0.01, 0.99))  # noqa
                         for c in ids}
    results = [
        ModelResult(name="2d", internal=noisy(internal), external=perfect, threshold=0.5),
        ModelResult(name="3d", internal={c: noisy([c])[c] for c in internal if labels[c] == 1} | {"i0": 0.4},
                    external=noisy(external), threshold=0.5),
        ModelResult(name=BASELINE, internal=noisy(internal), external=noisy(external), threshold=0.5),
    ]
    models = [{"name": r.name, "bundle": None, "threshold": r.threshold,
               "internal_test": _auc_block(labels, r.internal, r.threshold),
               "external_test": _auc_block(labels, r.external, r.threshold), "train_seconds": 1.0,
               "inference_ms_per_case": 1.0, "parameters": 10, **_honest_blocks(labels, r)} for r in results]
    summary = {"design": {"cases": 80, "patients": 80, "synthetic": True, "external_institution": "external",
                          "n_folds": 5, "folds_trained": 5, "internal_test_cases": 40, "external_test_cases": 40,
                          "reference": "2d", "config": {"train": {"epochs": 3, "arch": "resnet10-tiny"}},
                          "run_seconds": 12.0},
               "models": models, "delong_internal": paired_delong(labels, results, "internal"),
               "delong_external": paired_delong(labels, results, "external")}
    summary["plots"] = write_study_plots(tmp_path, labels, results)
    return summary


def test_report_has_no_silent_nan_or_zero_width_interval(tmp_path):
    summary = _summary(tmp_path)
    json.dumps(summary, allow_nan=False)          # study.json must be strict JSON: no NaN anywhere
    write_report(tmp_path, summary)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    for line in text.splitlines():
        for low, high in re.findall(r"\((\d\.\d+)–(\d\.\d+)", line):
            if low == high:
                pytest.fail(f"zero-width interval printed: {line}")
    assert "perfect separation" in text and "Newcombe" in text and "a class of one" in text
    assert "## Threshold transfer to the external site" in text and "post hoc" in text
    assert "## Limitations" in text and "synthetic" in text
    calibration = text.split("## Calibration")[1].split("##")[0]
    for name in ("2d", "3d", BASELINE):
        row = next(line for line in calibration.splitlines() if line.startswith(f"| {name} |"))
        assert "Brier" in row or "not estimable:" in row
    assert "not estimable" in calibration           # the perfect separator's external slope, with its reason
    assert "calibration_external.png" in summary["plots"] and (tmp_path / "calibration_external.png").is_file()


def test_a_pair_without_variance_is_no_test_in_the_table_and_study_json(tmp_path):
    """Two models that both separate the external site perfectly: the main table printed p < 0.001 (z = inf,
    p = 0 in study.json) where the pairwise list said there is no test; a Wald interval of a difference
    reached +1.118."""
    summary = _summary(tmp_path)
    labels = {f"e{k}": k % 2 for k in range(40)}
    perfect = {c: 0.9 if y else 0.1 for c, y in labels.items()}
    also = {c: 0.8 if y else 0.3 for c, y in labels.items()}
    pairs = paired_delong(labels, [ModelResult(name="2d", internal={}, external=perfect, threshold=0.5),
                                   ModelResult(name="3d", internal={}, external=also, threshold=0.5)],
                          "external")["pairs"]
    assert pairs[0]["p"] is None and pairs[0]["p_holm"] is None and pairs[0]["ci"] is None
    summary["delong_external"]["pairs"] = pairs
    rows = {row[0]: row for row in comparison_rows(summary)}
    assert rows["3d"][4] == "no test"
    json.dumps(summary, allow_nan=False)
    # 8 cases: diff 0.625 with se 0.222, so diff + 1.96 se = 1.06 (the Wald interval, uncut)
    small = {f"c{k}": int(k < 4) for k in range(8)}
    a = dict(zip(small, [.9, .8, .7, .6, .5, .4, .3, .2]))
    b = dict(zip(small, [.25, .75, .5, 0, .75, .5, .75, 0]))
    cut = paired_delong(small, [ModelResult(name="a", internal={}, external=a, threshold=0.5),
                                ModelResult(name="b", internal={}, external=b, threshold=0.5)], "external")["pairs"][0]
    assert cut["diff"] + 1.96 * cut["se"] > 1.0 and cut["ci"][1] == 1.0 and cut["ci"][0] < cut["diff"]

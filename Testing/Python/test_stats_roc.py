"""AUC, DeLong CI / paired test and bootstrap CI: checked against R's pROC, scikit-learn, brute force
and invariants (hypothesis)."""
from __future__ import annotations

import csv
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import roc_auc_score

from mvcf import stats
from mvcf.errors import MVCFError

REFERENCE = Path(__file__).parent / "reference"


def _rows(name: str, folder: Path = REFERENCE) -> list[dict]:
    with open(folder / name, newline="") as handle:
        return list(csv.DictReader(handle))


def _cases(folder: Path = REFERENCE) -> dict:
    data: dict = defaultdict(lambda: {"truth": [], "scores": defaultdict(list)})
    for row in _rows("proc_cases.csv", folder):
        d = data[row["dataset"]]
        d["scores"][row["model"]].append(float(row["score"]))
        if len(d["scores"][row["model"]]) > len(d["truth"]):
            d["truth"].append(int(row["truth"]))
    return data


CASES = _cases()
AUC_ROWS = _rows("proc_auc.csv")
PAIR_ROWS = _rows("proc_pairs.csv")


@pytest.mark.parametrize("row", AUC_ROWS, ids=lambda r: f"{r['dataset']}-{r['model']}")
def test_delong_ci_matches_proc(row):
    data = CASES[row["dataset"]]
    result = stats.delong_ci(data["truth"], data["scores"][row["model"]])
    assert result["auc"] == pytest.approx(float(row["auc"]), abs=1e-12)
    assert result["var"] == pytest.approx(float(row["var"]), abs=1e-12)
    assert result["ci"][0] == pytest.approx(float(row["ci_low"]), abs=1e-9)
    assert result["ci"][1] == pytest.approx(float(row["ci_high"]), abs=1e-9)
    ci90 = stats.delong_ci(data["truth"], data["scores"][row["model"]], alpha=0.10)["ci"]
    assert ci90 == pytest.approx((float(row["ci90_low"]), float(row["ci90_high"])), abs=1e-9)


@pytest.mark.parametrize("dataset", sorted({r["dataset"] for r in PAIR_ROWS}))
def test_paired_delong_matches_proc(dataset):
    data = CASES[dataset]
    names = list(data["scores"])
    result = stats.delong_test(data["truth"], [data["scores"][m] for m in names], names=names)
    expected = {(r["a"], r["b"]): r for r in PAIR_ROWS if r["dataset"] == dataset}
    assert len(result["pairs"]) == len(expected)
    for pair in result["pairs"]:
        ref = expected[(pair["a"], pair["b"])]
        assert pair["diff"] == pytest.approx(float(ref["diff"]), abs=1e-12)
        assert pair["z"] == pytest.approx(float(ref["z"]), abs=1e-8)
        assert pair["p"] == pytest.approx(float(ref["p"]), abs=1e-9)
        assert pair["ci"] == pytest.approx((float(ref["ci_low"]), float(ref["ci_high"])), abs=1e-9)
        a, b = names.index(pair["a"]), names.index(pair["b"])
        assert result["cov"][a][b] == pytest.approx(float(ref["cov"]), abs=1e-12)


@pytest.mark.parametrize("row", _rows("proc_youden.csv"), ids=lambda r: f"{r['dataset']}-{r['model']}")
def test_youden_operating_point_matches_proc(row):
    data = CASES[row["dataset"]]
    score = data["scores"][row["model"]]
    threshold = stats.youden_threshold(data["truth"], score)
    point = stats.metrics_at_threshold(data["truth"], score, threshold)
    assert point["specificity"]["value"] == pytest.approx(float(row["specificity"]), abs=1e-12)
    assert point["sensitivity"]["value"] == pytest.approx(float(row["sensitivity"]), abs=1e-12)


def _proc_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "quit(status = !requireNamespace('pROC', quietly = TRUE))"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _proc_available(), reason="Rscript with pROC not installed")
def test_live_proc_regenerates_the_committed_reference(tmp_path):
    shutil.copy(REFERENCE / "make_proc_reference.R", tmp_path)
    subprocess.run(["Rscript", "make_proc_reference.R"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    live = _cases(tmp_path)
    for row in _rows("proc_auc.csv", tmp_path):
        data = live[row["dataset"]]
        result = stats.delong_ci(data["truth"], data["scores"][row["model"]])
        assert result["var"] == pytest.approx(float(row["var"]), abs=1e-12)
        assert result["ci"] == pytest.approx((float(row["ci_low"]), float(row["ci_high"])), abs=1e-9)
    for name in ("proc_auc.csv", "proc_pairs.csv", "proc_youden.csv", "r_misc.csv", "calibration_cases.csv"):
        committed = _rows(name)
        regenerated = _rows(name, tmp_path)
        assert len(committed) == len(regenerated)
        for old, new in zip(committed, regenerated):
            for key, value in old.items():
                try:
                    assert float(new[key]) == pytest.approx(float(value), abs=1e-12), (name, key)
                except ValueError:
                    assert new[key] == value


def _brute_auc(truth, score):
    truth = np.asarray(truth, bool)
    diff = np.asarray(score)[truth][:, None] - np.asarray(score)[~truth][None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def test_auc_agrees_with_sklearn_and_brute_force():
    rng = np.random.default_rng(3)
    truth = rng.random(300) < 0.3
    score = np.round(rng.normal(size=300) + truth, 1)
    assert stats.auc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    assert stats.auc(truth, score) == pytest.approx(_brute_auc(truth, score), abs=1e-12)


def test_delong_test_accepts_n_by_k_and_k_by_n_arrays():
    rng = np.random.default_rng(4)
    truth = rng.random(80) < 0.5
    scores = rng.normal(size=(3, 80)) + truth
    by_rows = stats.delong_test(truth, scores)
    by_cols = stats.delong_test(truth, scores.T)
    assert np.allclose(by_rows["cov"], by_cols["cov"], atol=1e-15)
    assert [p["z"] for p in by_rows["pairs"]] == pytest.approx([p["z"] for p in by_cols["pairs"]])
    assert [(p["a"], p["b"]) for p in by_rows["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    raw = sorted(p["p"] for p in by_rows["pairs"])
    holm = sorted(p["p_holm"] for p in by_rows["pairs"])
    assert holm[0] == pytest.approx(min(1.0, 3 * raw[0]))
    assert all(h >= r for h, r in zip(holm, raw))
    import pandas as pd

    frame = pd.DataFrame(scores.T, columns=["2d", "2.5d", "3d"])
    for container in (frame, {c: frame[c].to_numpy() for c in frame}):
        named = stats.delong_test(truth, container)
        assert [(p["a"], p["b"]) for p in named["pairs"]] == [("2d", "2.5d"), ("2d", "3d"), ("2.5d", "3d")]
        assert np.allclose(named["cov"], by_rows["cov"], atol=1e-15)


def test_bootstrap_ci_is_seeded_and_close_to_delong():
    rng = np.random.default_rng(5)
    truth = rng.random(400) < 0.4
    score = rng.normal(size=400) + truth
    first = stats.bootstrap_auc_ci(truth, score, n_resamples=1000, seed=7)
    again = stats.bootstrap_auc_ci(truth, score, n_resamples=1000, seed=7)
    other = stats.bootstrap_auc_ci(truth, score, n_resamples=1000, seed=8)
    assert first["ci"] == again["ci"]
    assert first["ci"] != other["ci"]
    delong = stats.delong_ci(truth, score)
    assert first["auc"] == pytest.approx(delong["auc"])
    assert first["se"] == pytest.approx(delong["se"], rel=0.15)
    assert first["ci"][0] < delong["auc"] < first["ci"][1]


def test_the_bootstrap_interval_does_not_depend_on_the_row_order():
    """`mvcf evaluate` of one model on one cohort gave another bootstrap interval when the manifest's rows
    were shuffled ([0.565, 0.902] vs [0.573, 0.894]): the seeded resampling drew cases by position."""
    rng = np.random.default_rng(3)
    truth = rng.random(60) < 0.4
    score = rng.normal(size=60) + truth
    order = rng.permutation(60)
    first = stats.bootstrap_auc_ci(truth, score, n_resamples=500, seed=0)
    shuffled = stats.bootstrap_auc_ci(truth[order], score[order], n_resamples=500, seed=0)
    assert first["ci"] == shuffled["ci"] and first["se"] == shuffled["se"]


def test_bootstrap_resamples_within_each_class():
    truth = np.array([0] * 5 + [1] * 5)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    result = stats.bootstrap_auc_ci(truth, score, n_resamples=200, seed=0)
    assert result["ci"] == (1.0, 1.0)  # every stratified resample keeps perfect separation


@pytest.mark.parametrize("truth, score, message", [
    ([0, 1, 1], [0.1, "x", 0.3], "numeric"),
    ([1, 1, 1], [0.1, 0.2, 0.3], "one class"),
    ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "NaN"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
    ([0, 1], [0.1, 0.2, 0.3], "differ in length"),
])
def test_bad_input_raises_one_line_mvcf_error(truth, score, message):
    with pytest.raises(MVCFError, match=message) as info:
        stats.delong_ci(truth, score)
    assert "\n" not in str(info.value)


def test_delong_needs_two_of_each_class():
    with pytest.raises(MVCFError, match="at least 2 positives"):
        stats.delong_ci([0, 0, 1], [0.1, 0.2, 0.3])


# ---- invariants (hypothesis); example counts kept small so the file runs in seconds ----

def _labelled_scores():
    return st.integers(min_value=4, max_value=40).flatmap(lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda t: 2 <= sum(t) <= len(t) - 2),
        st.lists(st.integers(-20, 20), min_size=n, max_size=n),
    ))


@settings(max_examples=60, deadline=None)
@given(_labelled_scores())
def test_auc_is_invariant_to_monotone_transforms(data):
    truth, raw = data
    score = np.asarray(raw, float)
    base = stats.auc(truth, score)
    assert stats.auc(truth, np.exp(score / 5.0)) == pytest.approx(base, abs=1e-12)
    assert stats.auc(truth, 3.0 * score ** 3 + 1.0) == pytest.approx(base, abs=1e-12)
    assert base == pytest.approx(_brute_auc(truth, score), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_labelled_scores())
def test_auc_of_negated_scores_is_one_minus_auc(data):
    truth, raw = data
    score = np.asarray(raw, float)
    assert stats.auc(truth, -score) == pytest.approx(1.0 - stats.auc(truth, score), abs=1e-12)
    flipped, original = stats.delong_ci(truth, -score), stats.delong_ci(truth, score)
    assert flipped["var"] == pytest.approx(original["var"], abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_labelled_scores(), st.floats(min_value=0.001, max_value=0.5))
def test_delong_variance_nonnegative_and_ci_contains_estimate(data, alpha):
    truth, raw = data
    result = stats.delong_ci(truth, np.asarray(raw, float), alpha=alpha)
    assert result["var"] >= -1e-15
    assert result["ci"][0] <= result["auc"] <= result["ci"][1]
    assert 0.0 <= result["ci"][0] and result["ci"][1] <= 1.0


@settings(max_examples=30, deadline=None)
@given(_labelled_scores(), st.lists(st.integers(-5, 5), min_size=40, max_size=40))
def test_delong_covariance_is_positive_semidefinite(data, other):
    truth, raw = data
    second = np.asarray(other[: len(raw)], float)
    cov = np.asarray(stats.delong_test(truth, [np.asarray(raw, float), second, np.asarray(raw, float) + second])["cov"])
    assert np.allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() >= -1e-12


@settings(max_examples=60, deadline=None)
@given(_labelled_scores())
def test_placement_values_equal_the_pairwise_definition(data):
    from mvcf.stats.roc import _structural_components

    truth, raw = data
    truth = np.asarray(truth, bool)
    score = np.asarray(raw, float)
    kernel = (score[truth][:, None] > score[~truth][None, :]) + 0.5 * (score[truth][:, None] == score[~truth][None, :])
    aucs, v10, v01 = _structural_components(truth, np.vstack([score, -score]))
    assert v10[0] == pytest.approx(kernel.mean(axis=1), abs=1e-12)
    assert v01[0] == pytest.approx(kernel.mean(axis=0), abs=1e-12)
    assert aucs[1] == pytest.approx(1.0 - kernel.mean(), abs=1e-12)

"""Obuchowski–Rockette MRMC analysis: the published Van Dyke results (OR-DBM MRMC 2.51 / RJafroc /
MRMCaov, see ../shared/data/reader_study/SOURCE.txt), brute-force jackknife, and independent algebra."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats as sps

from mvcf import stats
from mvcf.errors import MVCFError
from mvcf.stats.mrmc import auc_covariance, ratings_array

from conftest import shared

PUBLISHED_READER_AUC = {
    "0": [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
    "1": [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169],
}


@pytest.fixture(scope="module")
def vandyke() -> pd.DataFrame:
    return pd.read_csv(shared("reader_study/vandyke_dataset02.csv"))


@pytest.fixture(scope="module")
def result(vandyke):
    return stats.mrmc(vandyke)


def test_vandyke_reader_aucs_and_covariances_match_published(result):
    for modality, aucs in PUBLISHED_READER_AUC.items():
        assert list(result["reader_auc"][modality].values()) == pytest.approx(aucs, abs=5e-9)
    assert result["mean_auc"]["0"] == pytest.approx(0.89703704, abs=5e-9)
    assert result["mean_auc"]["1"] == pytest.approx(0.94083736, abs=5e-9)
    assert result["var_error"] == pytest.approx(0.00080229, abs=5e-9)
    assert result["cov1"] == pytest.approx(0.00034661, abs=5e-9)
    assert result["cov2"] == pytest.approx(0.00034407, abs=5e-9)
    assert result["cov3"] == pytest.approx(0.00023903, abs=5e-9)


def test_vandyke_rrrc_matches_published_to_4_decimals(result):
    rrrc = result["rrrc"]
    assert round(rrrc["F"], 2) == 4.46
    assert (rrrc["df1"], round(rrrc["df2"], 2)) == (1, 15.26)
    assert round(rrrc["p"], 4) == 0.0517
    assert rrrc["diff"] == pytest.approx(-0.04380032, abs=5e-9)
    assert [round(x, 5) for x in rrrc["ci"]] == [-0.08796, 0.00036]
    assert round(rrrc["se"], 5) == 0.02075
    m0, m1 = rrrc["modalities"]
    assert m0["ci"] == pytest.approx([0.82522360, 0.96885048], abs=5e-9)
    assert m1["ci"] == pytest.approx([0.89413783, 0.98753689], abs=5e-9)
    assert (round(m0["df"], 2), round(m1["df"], 2)) == (12.74, 12.71)


def test_vandyke_frrc_rrfc_and_components_match_rjafroc(result):
    """Published RJafroc output for this data set (StSignificanceTesting(dataset02, FOM="Wilcoxon",
    method="OR"); Chakraborty, The RJafroc Book, chapter "OR analysis examples", dpc10ster/RJafrocBook)."""
    assert result["ms_t"] == pytest.approx(0.00479617053, abs=5e-12)
    assert result["ms_r"] == pytest.approx(0.00383619999, abs=5e-12)
    assert result["ms_tr"] == pytest.approx(0.00055103062, abs=5e-12)
    per = result["per_modality"]
    assert [p["ms_r"] for p in per] == pytest.approx([0.0030826287, 0.0013046019], abs=5e-11)
    assert [p["var_error"] for p in per] == pytest.approx([0.00101410277, 0.00059047376], abs=5e-12)
    assert [p["cov2"] for p in per] == pytest.approx([0.00048396180, 0.00020418785], abs=5e-12)
    rrrc, frrc, rrfc = result["rrrc"], result["frrc"], result["rrfc"]
    assert rrrc["denominator"] == pytest.approx(0.0010762629, abs=5e-11)
    assert rrrc["F"] == pytest.approx(4.4563187, abs=5e-8)
    assert rrrc["df2"] == pytest.approx(15.259675, abs=5e-7)
    assert rrrc["p"] == pytest.approx(0.051665686, abs=5e-10)
    assert frrc["denominator"] == pytest.approx(0.00087586039, abs=5e-12)
    assert frrc["chisq"] == pytest.approx(5.4759532, abs=5e-8)
    assert frrc["p"] == pytest.approx(0.019279843, abs=5e-10)
    assert frrc["se"] == pytest.approx(0.018717483, abs=5e-10)
    assert frrc["ci"] == pytest.approx([-0.080485914, -0.0071147303], abs=5e-10)
    assert [m["se"] for m in frrc["modalities"]] == pytest.approx([0.024289710, 0.016776324], abs=5e-10)
    assert frrc["modalities"][0]["ci"] == pytest.approx([0.84943008, 0.94464399], abs=5e-9)
    assert frrc["modalities"][1]["ci"] == pytest.approx([0.90795637, 0.97371835], abs=5e-9)
    readers = frrc["readers"]
    assert [r["se"] for r in readers] == pytest.approx([0.025512133, 0.026301827, 0.031209647, 0.017291289, 0.044057460], abs=5e-10)
    assert [r["p"] for r in readers] == pytest.approx([0.269338854, 0.076831017, 0.566834139, 0.129017153, 0.023000993], abs=5e-10)
    assert readers[4]["ci"] == pytest.approx([-0.186512066, -0.0138099949], abs=5e-10)
    assert rrfc["F"] == pytest.approx(8.704, abs=5e-4)
    assert rrfc["p"] == pytest.approx(0.041958752, abs=5e-10)
    assert rrfc["se"] == pytest.approx(0.014846287, abs=5e-10)
    assert rrfc["ci"] == pytest.approx([-0.085020224, -0.0025804202], abs=5e-10)
    assert rrfc["modalities"][0]["ci"] == pytest.approx([0.82809808, 0.96597599], abs=5e-9)
    assert rrfc["modalities"][1]["ci"] == pytest.approx([0.89598936, 0.98568536], abs=5e-9)
    assert [m["se"] for m in rrfc["modalities"]] == pytest.approx([0.024829936, 0.016153030], abs=5e-10)


def test_jackknife_covariance_equals_brute_force_leave_one_out(vandyke):
    design = ratings_array(vandyke)
    ratings, truth = design["ratings"], design["truth"]
    t, r, c = ratings.shape
    flat = ratings.reshape(t * r, c)
    loo = np.array([[stats.auc(np.delete(truth, k), np.delete(row, k)) for row in flat] for k in range(c)])
    centred = loo - loo.mean(axis=0)
    brute = (c - 1) / c * centred.T @ centred
    _, fast = auc_covariance(ratings, truth, "jackknife")
    assert np.allclose(fast, brute, atol=1e-15)


def test_delong_covariance_option_uses_the_delong_matrix(vandyke):
    design = ratings_array(vandyke)
    flat = design["ratings"].reshape(-1, design["ratings"].shape[-1])
    delong = np.asarray(stats.delong_test(design["truth"], flat)["cov"])
    _, cov = auc_covariance(design["ratings"], design["truth"], "delong")
    assert np.allclose(cov, delong, atol=1e-15)
    result = stats.mrmc(vandyke, cov_method="delong")
    assert result["cov_method"] == "delong"
    assert result["mean_auc"]["0"] == pytest.approx(0.89703704, abs=5e-9)
    # DeLong's covariances are the jackknife ones scaled down slightly (DeLong vs jackknife, Hillis 2014).
    assert 0.9 < result["var_error"] / 0.00080229 < 1.0


def test_rrfc_is_the_paired_t_test_over_readers(result):
    aucs = np.array([list(result["reader_auc"][m].values()) for m in ("0", "1")])
    ttest = sps.ttest_rel(aucs[0], aucs[1])
    assert result["rrfc"]["F"] == pytest.approx(ttest.statistic ** 2, rel=1e-10)
    assert result["rrfc"]["p"] == pytest.approx(ttest.pvalue, rel=1e-10)
    assert result["rrfc"]["df2"] == 4


def test_frrc_variance_is_that_of_the_mean_difference(vandyke, result):
    design = ratings_array(vandyke)
    _, cov = auc_covariance(design["ratings"], design["truth"], "jackknife")
    contrast = np.r_[np.full(5, 0.2), np.full(5, -0.2)]
    se = float(np.sqrt(contrast @ cov @ contrast))
    assert result["frrc"]["se"] == pytest.approx(se, rel=1e-12)
    assert result["frrc"]["chisq"] == pytest.approx((result["frrc"]["diff"] / se) ** 2, rel=1e-12)
    assert result["frrc"]["df2"] is None
    assert len(result["frrc"]["readers"]) == 5


def test_unaided_vs_aided_reports_aided_minus_unaided(vandyke, result):
    paper = stats.unaided_vs_aided(vandyke, unaided=0, aided=1)
    assert paper["rrrc"]["diff"] == pytest.approx(-result["rrrc"]["diff"], abs=1e-15)
    assert paper["rrrc"]["p"] == pytest.approx(result["rrrc"]["p"], abs=1e-15)
    assert paper["rrrc"]["ci"] == pytest.approx([-x for x in result["rrrc"]["ci"][::-1]], abs=1e-15)
    assert paper["design"]["diff"] == "aided - unaided"
    assert paper["modalities"] == [1, 0] and paper["mean_auc"] == result["mean_auc"]
    with pytest.raises(MVCFError, match="must both be present"):
        stats.unaided_vs_aided(vandyke, unaided=0, aided=5)


def test_model_vs_readers(vandyke):
    design = ratings_array(vandyke)
    rng = np.random.default_rng(0)
    model_score = design["ratings"][1].mean(axis=0) + rng.normal(0, 0.5, design["truth"].size)
    model = dict(zip(design["cases"], model_score))
    out = stats.model_vs_readers(vandyke, model, modality=0)
    model_auc = stats.auc(design["truth"], model_score)
    assert out["model_auc"] == pytest.approx(model_auc, abs=1e-15)
    diffs = np.array(PUBLISHED_READER_AUC["0"]) - model_auc
    assert out["rrrc"]["diff"] == pytest.approx(diffs.mean(), abs=5e-9)
    ttest = sps.ttest_1samp(np.array(list(out["reader_auc"].values())) - model_auc, 0.0)
    assert out["rrfc"]["p"] == pytest.approx(ttest.pvalue, rel=1e-10)
    # Fixed readers: the variance of (mean reader AUC - model AUC) from the jackknife covariance.
    stacked = np.concatenate([design["ratings"][0], model_score[None]])[None]
    _, cov = auc_covariance(stacked, design["truth"], "jackknife")
    contrast = np.r_[np.full(5, 0.2), -1.0]
    assert out["frrc"]["se"] == pytest.approx(np.sqrt(contrast @ cov @ contrast), rel=1e-12)
    assert out["rrrc"]["ci"][0] < out["rrrc"]["diff"] < out["rrrc"]["ci"][1]
    assert out["rrrc"]["df"] > 1
    # Kooi et al.'s "2T-RRRC" (the model replicated as a second modality read by every reader) gives the
    # same test as the single-treatment analysis (RJafroc StSignificanceTestingCadVsRad documentation).
    readers0 = vandyke[vandyke.modality == 0]
    as_modality = readers0.assign(modality="model", rating=readers0.case.map(model))
    two = stats.mrmc(pd.concat([readers0, as_modality]), modality_order=[0, "model"])
    assert two["rrrc"]["F"] == pytest.approx((out["rrrc"]["diff"] / out["rrrc"]["se"]) ** 2, rel=1e-10)
    assert two["rrrc"]["df2"] == pytest.approx(out["rrrc"]["df"], rel=1e-10)
    assert two["rrrc"]["p"] == pytest.approx(out["rrrc"]["p"], rel=1e-10)
    assert two["rrrc"]["ci"] == pytest.approx(out["rrrc"]["ci"], rel=1e-10)
    with pytest.raises(MVCFError, match="say which one"):
        stats.model_vs_readers(vandyke, model)
    with pytest.raises(MVCFError, match="no model score"):
        stats.model_vs_readers(vandyke, {k: v for k, v in list(model.items())[1:]}, modality=0)


def test_a_case_the_model_scores_twice_is_refused_not_its_last_score_used(vandyke):
    """A model table naming a case twice (two exports concatenated): the last score was used in silence and
    moved the model AUC (0.7262 -> 0.7291 for one case rescored -100)."""
    cases = vandyke.drop_duplicates("case")
    model = pd.DataFrame({"case": cases.case, "score": cases.truth + np.random.default_rng(0).normal(size=len(cases))})
    twice = pd.concat([model, model.iloc[[0]].assign(score=-100.0)])
    with pytest.raises(MVCFError, match="name case 1 more than once") as info:
        stats.model_vs_readers(vandyke, twice, modality=1)
    assert "\n" not in str(info.value)
    with pytest.raises(MVCFError, match="more than once"):   # 1 and "1" are the same case
        stats.model_vs_readers(vandyke, {**dict(zip(model.case, model.score)), "1": 0.5}, modality=1)


def test_a_reader_written_two_ways_and_model_scores_of_unread_cases_are_refused(vandyke):
    """Readers `R1` and `r1` were analysed as two readers without a word (a manifest or `reader-study plan`
    refuses the same), and a model table holding a case no reader rated was compared on the rest in silence
    (the reader-study report refuses it)."""
    readers = vandyke.reader.astype(str).radd("R")
    spelled = vandyke.assign(reader=readers.where(readers != "R2", "r1"))
    with pytest.raises(MVCFError, match=r"reader 'r1' is written 'R1' elsewhere: one reader needs one spelling"):
        stats.mrmc(spelled)
    cases = vandyke.drop_duplicates("case")
    model = pd.DataFrame({"case": list(cases.case) + [999], "score": list(cases.truth.astype(float)) + [0.5]})
    with pytest.raises(MVCFError, match=r"model scores name case '999', which no reader rated \(1 such case\)"):
        stats.model_vs_readers(vandyke, model, modality=1)


def test_the_positive_value_is_matched_as_the_roc_command_matches_it(vandyke):
    """`--positive 1` on a truth column written 1.0/0.0 matched no case ('needs at least 2 positive ... got 0');
    ' MVCF' with a blank was not 'MVCF'. The same rule as `stats roc --positive`: numbers as numbers, text
    without surrounding blanks."""
    reference = stats.mrmc(vandyke)["mean_auc"]
    assert stats.mrmc(vandyke.assign(truth=vandyke.truth.astype(float)), positive=1)["mean_auc"] == reference
    labels = np.where(vandyke.truth == 1, "MVCF", "OVCF")
    padded = vandyke.assign(truth=np.where(vandyke.case % 2 == 0, labels, pd.Series(labels).radd(" ").to_numpy()))
    assert stats.mrmc(padded, positive="MVCF")["mean_auc"] == reference


def test_three_modalities_gives_every_pair(vandyke):
    third = vandyke[vandyke.modality == 1].assign(modality=2, rating=lambda d: d.rating.sample(frac=1, random_state=1).to_numpy())
    result = stats.mrmc(pd.concat([vandyke, third]))
    assert result["rrrc"]["df1"] == 2
    assert [(p["a"], p["b"]) for p in result["rrrc"]["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    assert len(result["rrrc"]["modalities"]) == 3


def test_records_input_and_string_labels(vandyke):
    records = vandyke.assign(reader=lambda d: "R" + d.reader.astype(str),
                             truth=lambda d: np.where(d.truth == 1, "MVCF", "OVCF")).to_dict("records")
    result = stats.mrmc(records, positive="MVCF")
    assert result["reader_auc"]["0"]["R0"] == pytest.approx(0.91964573, abs=5e-9)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns="rating"), "reader-study column 'rating' not in the CSV"),
    (lambda d: d.drop(index=7), "unbalanced reader design"),
    (lambda d: d.assign(rating=d.rating.astype(object).where(d.index != 3, "high")), "must be finite numbers.*row 5 with 'high'"),
    (lambda d: d.assign(rating=d.rating.where(d.index != 3, np.nan)), "missing values"),
    (lambda d: d.assign(truth=0), "at least 2 positive"),
    (lambda d: d.assign(truth=d.truth.where(d.index != 0, 1)), r"^case \d+ has conflicting truth"),
    (lambda d: pd.concat([d, d.iloc[[0]]]), r"^reader \d+ rated case \d+ twice in modality \d+$"),
    (lambda d: d[d.reader == 0], "at least two readers"),
])
def test_bad_reader_data_raises_one_line_error(vandyke, mutate, message):
    with pytest.raises(MVCFError, match=message) as info:
        stats.mrmc(mutate(vandyke.copy()))
    assert "\n" not in str(info.value)


def test_identical_readers_are_refused_not_reported_as_a_null_result(vandyke):
    """Copies of one reader gave F = 0 on 0 df, p = 1 and CI [0, 0]: numbers for a study that has none."""
    one = vandyke[(vandyke.reader == 0) & (vandyke.modality == 0)]
    copies = pd.concat([one.assign(reader=r, modality=m) for r in range(3) for m in range(2)])
    with pytest.raises(MVCFError, match="all 3 readers gave identical ratings") as info:
        stats.mrmc(copies)
    assert "\n" not in str(info.value)
    stats.mrmc(pd.concat([copies[copies.reader < 2], vandyke[vandyke.reader == 1].assign(reader=2)
                          .query("modality in (0, 1)")]))


def test_a_zero_variance_is_no_test_not_p_0_or_an_f_of_1e28(vandyke):
    """Readers rescaled from one another (rating x (1 + j) + 10 j: the same AUCs, rounding noise where the
    algebra gives 0) passed the identical-ratings guard and got F = 6e28 on (1, 4) df, p = 1e-57 and a
    random-readers df of 1e58; two readers whose AUCs move alike got p = 0 on 0 df. A variance at or below
    ZERO_VARIANCE is now no test, said so; MS(T×R) of zero makes the random-readers df infinite (chi-square)."""
    import math

    from mvcf.stats.mrmc import ZERO_VARIANCE

    base = vandyke[vandyke.reader == 0]
    rescaled = pd.concat([base.assign(reader=j, rating=base.rating * (1 + j) + 10 * j) for j in range(4)])
    out = stats.mrmc(rescaled)
    assert out["rrfc"]["F"] is None and out["rrfc"]["p"] is None and "no test possible" in out["rrfc"]["note"]
    assert out["rrfc"]["pairs"][0]["ci"] is None and out["rrfc"]["denominator"] <= ZERO_VARIANCE
    assert out["rrrc"]["df2"] is None and 0.0 < out["rrrc"]["p"] < 1.0 and "chisq" in out["rrrc"]
    assert all(single["note"].startswith("zero variance") for single in out["rrfc"]["modalities"])
    frame = pd.DataFrame([(r, m, c, t, v) for r, m, c, t, v in (
        ("A", 0, 1, 1, 1), ("A", 0, 2, 1, 3), ("A", 0, 3, 0, 2), ("A", 0, 4, 0, 4), ("A", 1, 1, 1, 3), ("A", 1, 2, 1, 4),
        ("A", 1, 3, 0, 1), ("A", 1, 4, 0, 2), ("B", 0, 1, 1, 3), ("B", 0, 2, 1, 1), ("B", 0, 3, 0, 2), ("B", 0, 4, 0, 4),
        ("B", 1, 1, 1, 4), ("B", 1, 2, 1, 3), ("B", 1, 3, 0, 2), ("B", 1, 4, 0, 1))],
        columns=["reader", "modality", "case", "truth", "rating"])
    out = stats.mrmc(frame)
    for key in ("rrrc", "rrfc"):
        assert out[key]["p"] is None and out[key]["F"] is None and "is zero" in out[key]["note"]
    assert math.isfinite(out["frrc"]["p"]) and out["frrc"]["p"] > 0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 3))
def test_random_designs_are_symmetric_and_well_formed(seed, n_readers, n_modalities):
    rng = np.random.default_rng(seed)
    cases = 16
    truth = np.r_[np.ones(6, int), np.zeros(cases - 6, int)]
    rows = [{"reader": r, "modality": m, "case": c, "truth": truth[c],
             "rating": int(np.clip(np.round(truth[c] * 1.2 + rng.normal(0, 1) + 2), 1, 5))}
            for m in range(n_modalities) for r in range(n_readers) for c in range(cases)]
    frame = pd.DataFrame(rows)
    forward = stats.mrmc(frame)
    backward = stats.mrmc(frame, modality_order=list(range(n_modalities))[::-1])
    for key in ("rrrc", "frrc", "rrfc"):
        if forward[key]["p"] is None:   # e.g. seed 3: both readers' AUCs rise by 0.0417, MS(T×R) = 0 (was p = 0)
            assert "no test possible" in forward[key]["note"] and backward[key]["p"] is None
        else:
            assert 0.0 <= forward[key]["p"] <= 1.0
            assert forward[key]["p"] == pytest.approx(backward[key]["p"], abs=1e-12)
        assert forward[key]["pairs"][0]["diff"] == pytest.approx(-backward[key]["pairs"][-1]["diff"], abs=1e-15)
        for single in forward[key]["modalities"]:
            assert 0.0 <= single["ci"][0] <= single["auc"] <= single["ci"][1] <= 1.0
    design = ratings_array(frame)
    _, cov = auc_covariance(design["ratings"], design["truth"], "jackknife")
    assert np.linalg.eigvalsh(cov).min() >= -1e-15


def test_difference_intervals_stay_within_the_possible_range():
    """Two readers and four cases leave the ORH test a degree of freedom or so: the RRRC interval of the AUC
    difference reached -9.28 to 9.78, outside anything a difference of two AUCs can be."""
    rng = np.random.default_rng(0)
    widest = 0.0
    for _ in range(100):
        rows = [(reader, modality, case, truth, int(rng.integers(1, 6))) for reader in ("a", "b")
                for modality in ("unaided", "aided") for case, truth in enumerate((0, 0, 1, 1))]
        try:
            result = stats.mrmc(pd.DataFrame(rows, columns=["reader", "modality", "case", "truth", "rating"]))
        except MVCFError:
            continue
        for analysis in ("rrrc", "frrc", "rrfc"):
            for pair in result[analysis]["pairs"]:
                if pair["ci"] is not None:
                    assert -1.0 <= pair["ci"][0] <= pair["diff"] <= pair["ci"][1] <= 1.0, (analysis, pair)
                    widest = max(widest, pair["ci"][1] - pair["ci"][0])
    assert widest == pytest.approx(2.0)   # some of them were wider than the whole range before

"""Patient-level splits: no patient in two folds or sets, the external site held out entirely, leakage refused."""
from dataclasses import dataclass

import pytest

from mvcf.errors import MVCFError
from mvcf.splits import Fold, SplitPlan, check_leakage, make_splits


@dataclass
class Row:
    case_id: str
    patient_id: str
    institution: str
    label: int


def cohort(n_patients=40, external=12):
    rows = []
    for p in range(n_patients):
        site = "ext" if p < external else "int"
        for level in range(1 + p % 3):      # 1-3 fractured levels per patient, same label per patient
            rows.append(Row(f"c{p}-{level}", f"p{p}", site, p % 2))
    return rows


def test_patients_never_cross_sets_and_external_is_held_out():
    rows = cohort()
    plan = make_splits(rows, n_folds=4, external="ext", seed=3)
    patient = {r.case_id: r.patient_id for r in rows}
    external = {r.case_id for r in rows if r.institution == "ext"}
    assert set(plan.external) == external
    tests = []
    for fold in plan.folds:
        sets = [set(fold.train), set(fold.val), set(fold.test)]
        groups = [{patient[c] for c in s} for s in sets]
        assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
        assert not (set().union(*sets) & external)
        assert len(set().union(*sets)) == len(rows) - len(external)
        tests += fold.test
    assert sorted(tests) == sorted(r.case_id for r in rows if r.institution == "int")  # each case tested once
    assert check_leakage(rows, plan) == []


def test_splits_are_seeded_and_stratified():
    rows = cohort()
    a, b = make_splits(rows, 4, "ext", seed=1), make_splits(rows, 4, "ext", seed=1)
    assert a.to_dict() == b.to_dict()
    label = {r.case_id: r.label for r in rows}
    for fold in a.folds:
        assert 0 < sum(label[c] for c in fold.test) < len(fold.test)
    assert len(make_splits(rows, 5, "ext", train_folds=1).folds) == 1


def test_patient_in_two_institutions_is_refused():
    rows = cohort()
    rows.append(Row("leak", "p0", "int", 0))   # p0 belongs to 'ext'
    with pytest.raises(MVCFError, match="patient p0 appears in 2 institutions"):
        make_splits(rows, 4, "ext")


def test_check_leakage_reports_a_patient_in_two_sets():
    rows = cohort()
    plan = make_splits(rows, 4, "ext", seed=0)
    fold = plan.folds[0]
    moved = next(c for c in fold.test if c.endswith("-0"))
    leaky = SplitPlan(folds=[Fold(0, fold.train + [moved], fold.val, fold.test)], external=plan.external,
                      external_institution="ext", n_folds=4, seed=0)
    problems = check_leakage(rows, leaky)
    assert problems and "in both train and test" in problems[0]


def test_bad_requests_are_refused():
    rows = cohort()
    with pytest.raises(MVCFError, match="not in the manifest"):
        make_splits(rows, 4, "nowhere")
    with pytest.raises(MVCFError, match="at least 2"):
        make_splits(rows, 1)
    with pytest.raises(MVCFError, match="duplicate case_id"):
        make_splits(rows + [rows[-1]], 4, "ext")
    with pytest.raises(MVCFError, match="too few|patient-level parts"):
        make_splits(cohort(6, 0), 5)
    with pytest.raises(MVCFError, match="--external ext holds every case of the manifest"):   # was "only 0 ..."
        make_splits([r for r in rows if r.institution == "ext"], 4, "ext")


def test_a_fold_whose_training_set_has_one_class_is_refused_before_training(capfd):
    """Every MVCF case from one patient: fold 0 trained, fold 1 then failed ('the training set holds only one
    class') with the run folder made, and --resume failed the same way for good; sklearn's UserWarning went to
    stderr raw. The plan now refuses it, and seeds near 2^32 no longer overflow the inner split."""
    rows = [Row(f"m{k}", "p-mvcf", "int", 1) for k in range(4)] + [Row(f"o{k}", f"p{k}", "int", 0) for k in range(8)]
    with pytest.raises(MVCFError, match=r"fold \d's training set would hold only OVCF cases: .* use fewer folds"):
        make_splits(rows, 2)
    assert "UserWarning" not in capfd.readouterr().err
    assert make_splits(cohort(), 4, "ext", seed=2 ** 32 - 1).folds

"""Patient-level splits: an external institution held out entirely, stratified k-fold on the rest.

Every case of a patient lands in the same fold; a patient who appears in two institutions is refused
(with the external site held out it would leak into training), and `check_leakage` verifies any split.

With K folds the internal cohort is cut into K patient-disjoint, class-stratified parts. Fold i tests on
part i; of the remaining patients a stratified `val_fraction` validates (early stopping, threshold) and the
rest trains. Out-of-fold predictions over all folds cover every internal case exactly once.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError


def _get(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def label_of(record: Any) -> int:
    """1 for MVCF (malignant), 0 for OVCF; accepts 0/1 or the class names."""
    value = _get(record, "label")
    if isinstance(value, str):
        text = value.strip().upper()
        if text in ("MVCF", "MALIGNANT", "1"):
            return 1
        if text in ("OVCF", "OSTEOPOROTIC", "BENIGN", "0"):
            return 0
        raise MVCFError(f"case {_get(record, 'case_id')}: unknown label {value!r} (use MVCF/OVCF or 1/0)")
    return int(value)


@dataclass
class Fold:
    index: int
    train: list[str]
    val: list[str]
    test: list[str]


@dataclass
class SplitPlan:
    """Case ids per fold plus the external test set; `folds` may hold fewer folds than `n_folds` when only
    some are trained (e.g. the demo trains fold 0 of 5: a 60/20/20 split)."""

    folds: list[Fold]
    external: list[str]
    external_institution: Optional[str]
    n_folds: int
    seed: int
    report: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n_folds": self.n_folds, "seed": self.seed, "external_institution": self.external_institution,
                "external": self.external, "report": self.report,
                "folds": [{"index": f.index, "train": f.train, "val": f.val, "test": f.test} for f in self.folds]}


def patient_institutions(records: Sequence[Any]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        seen[str(_get(record, "patient_id"))].add(str(_get(record, "institution")))
    return seen


def check_leakage(records: Sequence[Any], plan: SplitPlan) -> list[str]:
    """Problems that would leak a patient between training and any test/validation set; [] when clean."""
    patient = {str(_get(r, "case_id")): str(_get(r, "patient_id")) for r in records}
    problems: list[str] = []
    external_patients = {patient[c] for c in plan.external}
    for fold in plan.folds:
        groups = {name: {patient[c] for c in getattr(fold, name)} for name in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            for p in sorted(groups[a] & groups[b]):
                problems.append(f"fold {fold.index}: patient {p} is in both {a} and {b}")
        for name, members in groups.items():
            for p in sorted(members & external_patients):
                problems.append(f"fold {fold.index}: patient {p} is in {name} and in the external test set")
    return problems


def _stratified_group_parts(case_ids: list[str], labels: np.ndarray, groups: list[str], n_parts: int,
                            seed: int) -> list[list[str]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_groups < n_parts:
        raise MVCFError(f"cannot make {n_parts} patient-level parts from only {n_groups} patients")
    splitter = StratifiedGroupKFold(n_splits=n_parts, shuffle=True, random_state=seed % 2 ** 32)
    parts = []
    try:
        with warnings.catch_warnings():   # "least populated class has only 1 members": said below, per fold
            warnings.simplefilter("ignore", UserWarning)
            for _, part in splitter.split(np.zeros(len(case_ids)), labels, groups):
                parts.append(sorted(case_ids[i] for i in part))
    except ValueError as exc:
        raise MVCFError(f"cannot make {n_parts} stratified patient-level parts: {exc}") from None
    return parts


def make_splits(records: Sequence[Any], n_folds: int = 5, external: Optional[str] = None, seed: int = 0,
                val_fraction: float = 0.2, train_folds: Optional[int] = None) -> SplitPlan:
    """Build the patient-level plan. `n_folds` >= 2 parts; `train_folds` (default all) folds are returned.
    Refuses (MVCFError) a patient in two institutions, an unknown external institution, and a class with
    too few patients to stratify."""
    if n_folds < 2:
        raise MVCFError("--folds must be at least 2 (use 5 folds and train one for a single 60/20/20 split)")
    if not 0.0 < val_fraction < 0.5:
        raise MVCFError("validation fraction must be between 0 and 0.5")
    ids = [str(_get(r, "case_id")) for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise MVCFError(f"duplicate case_id in the manifest: {', '.join(dupes[:5])}")
    multi = {p: s for p, s in patient_institutions(records).items() if len(s) > 1}
    if multi:
        p, sites = sorted(multi.items())[0]
        raise MVCFError(f"patient {p} appears in {len(sites)} institutions ({', '.join(sorted(sites))}); "
                        f"{len(multi)} such patient(s): patient-level splits would leak, fix the manifest")
    institutions = sorted({str(_get(r, "institution")) for r in records})
    if external is not None and external not in institutions:
        raise MVCFError(f"external institution {external!r} not in the manifest (has: {', '.join(institutions)})")
    internal = [r for r in records if str(_get(r, "institution")) != external]
    if not internal:
        raise MVCFError(f"--external {external} holds every case of the manifest: no internal case is left to train "
                        "on (name the held-out site, or leave --external out)")
    external_ids = sorted(str(_get(r, "case_id")) for r in records if str(_get(r, "institution")) == external)
    labels = np.array([label_of(r) for r in internal])
    for cls, name in ((0, "OVCF"), (1, "MVCF")):
        if int((labels == cls).sum()) < n_folds:
            raise MVCFError(f"only {int((labels == cls).sum())} internal {name} cases: too few for {n_folds} folds"
                            + (f" (--folds 1 trains one of {n_folds} folds)" if train_folds == 1 else ""))
    case_ids = [str(_get(r, "case_id")) for r in internal]
    groups = [str(_get(r, "patient_id")) for r in internal]
    parts = _stratified_group_parts(case_ids, labels, groups, n_folds, seed)
    index = {c: i for i, c in enumerate(case_ids)}
    n_val_parts = max(2, int(round(1.0 / val_fraction)))
    folds = []
    for k in range(n_folds if train_folds is None else min(train_folds, n_folds)):
        rest = [c for j, part in enumerate(parts) if j != k for c in part]
        rest_idx = [index[c] for c in rest]
        rest_labels = labels[rest_idx]
        n_inner = max(2, min(n_val_parts, int(rest_labels.sum()), int((1 - rest_labels).sum())))
        inner = _stratified_group_parts(rest, rest_labels, [groups[i] for i in rest_idx], n_inner,
                                        seed + 1000 + k)
        val = inner[0]
        val_set = set(val)
        train = sorted(c for c in rest if c not in val_set)
        # before anything is written: the fold failed after the earlier ones had trained, and --resume with it
        present = {int(labels[index[c]]) for c in train}
        if len(present) < 2:
            only = "MVCF" if 1 in present else "OVCF"
            raise MVCFError(f"fold {k}'s training set would hold only {only} cases: the internal cases "
                            f"({int(labels.sum())} MVCF, {int((1 - labels).sum())} OVCF in {len(set(groups))} "
                            f"patients) are too few to split {n_folds} ways; use fewer folds or more cases")
        folds.append(Fold(index=k, train=train, val=val, test=parts[k]))
    plan = SplitPlan(folds=folds, external=external_ids, external_institution=external, n_folds=n_folds, seed=seed)
    plan.report = [f"{len(internal)} internal cases ({len(set(groups))} patients), "
                   f"{len(external_ids)} external ({external or 'none'})"]
    problems = check_leakage(records, plan)
    if problems:
        raise MVCFError(f"split leaks patients: {problems[0]}")
    return plan

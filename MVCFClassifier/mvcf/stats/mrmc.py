"""Multi-reader multi-case (MRMC) ROC analysis: Obuchowski–Rockette (OR) with Hillis degrees of freedom.

Model (Obuchowski & Rockette 1995; Hillis 2005, 2007, 2008): reader j's empirical AUC in modality i is
θ_ij. The case-sampling covariance of the AUCs is summarised by Var (same reader, same modality), Cov1
(same reader, different modalities), Cov2 (different readers, same modality) and Cov3 (different readers,
different modalities), estimated by the case jackknife (default; as OR-DBM MRMC) or by DeLong's structural
components. With t modalities, r readers and the mean squares MS(T), MS(R), MS(T×R) of the θ_ij:

- random readers, random cases (RRRC): F = MS(T) / [MS(T×R) + r·max(Cov2−Cov3, 0)] on (t−1, ddf_H) with
  ddf_H = [MS(T×R) + r·max(Cov2−Cov3, 0)]² / [MS(T×R)² / ((t−1)(r−1))] (Hillis 2008);
- fixed readers, random cases (FRRC): χ² = (t−1)·MS(T) / [Var − Cov1 + (r−1)·(Cov2−Cov3)] on t−1 df;
- random readers, fixed cases (RRFC): F = MS(T) / MS(T×R) on (t−1, (t−1)(r−1)).

Every pair of modalities gets a difference with CI, and every modality a CI of its mean AUC (Hillis 2007),
clipped to [0, 1]. These conventions are those of MRMCaov (Smith & Hillis), which OR-DBM MRMC and RJafroc
agree with on the published example.
The designs of a reader study with a model: readers unaided vs aided (two modalities of the same readers:
`mrmc`) and the model alone vs the readers (`model_vs_readers`: the single-treatment analysis of
reader-minus-model AUC differences, random readers and random cases, Hillis/Chakraborty "1T-RRRC").
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as _st

from mvcf.errors import MVCFError, shown, spelling
from mvcf.stats._validate import check_alpha, column_missing, is_positive, numeric_column
from mvcf.stats.roc import _delong_cov, _structural_components

COLUMNS = ("reader", "modality", "case", "truth", "rating")


def _frame(data: Any, columns: Sequence[str]):
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        try:
            frame = pd.DataFrame(data)
        except (TypeError, ValueError) as exc:
            raise MVCFError(f"reader-study data must be a table or records ({exc})") from None
    problem = column_missing(columns, list(frame.columns), "reader-study column")
    if problem:
        raise MVCFError(problem)
    return frame


def _key(values: Any) -> list:
    """Labels as JSON-friendly scalars (numpy ints/floats to Python; whole floats to int)."""
    out = []
    for v in values:
        v = v.item() if hasattr(v, "item") else v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(v)
    return out


def ratings_array(data: Any, reader: str = "reader", modality: str = "modality", case: str = "case",
                  truth: str = "truth", rating: str = "rating", positive: Any = None,
                  modality_order: Optional[Sequence[Any]] = None) -> dict:
    """Validate long-format ratings and return {ratings (t, r, c), truth (c,), modalities, readers, cases}.

    The design must be fully crossed: every reader rates every case once in every modality. Modalities
    are in sorted label order unless `modality_order` lists them."""
    import pandas as pd

    frame = _frame(data, (reader, modality, case, truth, rating)).copy()
    for col in (reader, modality, case, truth, rating):
        if frame[col].isna().any():
            raise MVCFError(f"column '{col}' has missing values")
    frame[rating] = numeric_column(frame, rating, "column")
    if positive is not None:
        frame[truth] = is_positive(frame[truth], positive)
    else:
        values = pd.to_numeric(frame[truth], errors="coerce")
        if values.isna().any() or not values.isin([0, 1]).all():
            raise MVCFError(f"column '{truth}' must be 0/1 (or give the positive value)")
        frame[truth] = values == 1
    per_case = frame.groupby(case)[truth].nunique()
    if (per_case > 1).any():
        raise MVCFError(f"case {shown(per_case[per_case > 1].index[0])} has conflicting truth values")
    if frame.duplicated([reader, modality, case]).any():
        row = frame.loc[frame.duplicated([reader, modality, case])].iloc[0]
        raise MVCFError(f"reader {shown(row[reader])} rated case {shown(row[case])} twice in modality "
                        f"{shown(row[modality])}")
    modalities = sorted(frame[modality].unique(), key=str)
    if modality_order is not None:
        by_label = {str(m): m for m in modalities}
        if sorted(map(str, modality_order)) != sorted(by_label):
            raise MVCFError(f"modality order {', '.join(map(shown, modality_order))} does not list the modalities "
                           f"{', '.join(map(shown, by_label))}")
        modalities = [by_label[str(m)] for m in modality_order]
    readers = sorted(frame[reader].unique(), key=str)
    cases = sorted(frame[case].unique(), key=str)
    for what, values in (("reader", readers), ("modality", modalities)):   # R1 and r1: one person, two readers
        spelled: dict[str, Any] = {}
        for value in values:
            first = spelled.setdefault(spelling(value), value)
            if first != value:
                raise MVCFError(f"{what} {shown(value)} is written {shown(first)} elsewhere: one {what} needs one "
                                "spelling (letter case and blanks aside they are the same)")
    expected = len(modalities) * len(readers) * len(cases)
    index = pd.MultiIndex.from_product([modalities, readers, cases], names=[modality, reader, case])
    if len(frame) != expected:
        gap = index.difference(pd.MultiIndex.from_frame(frame[[modality, reader, case]]))
        example = (f"; e.g. reader {shown(gap[0][1])} has no rating of case {shown(gap[0][2])} in modality "
                   f"{shown(gap[0][0])}" if len(gap) else "")
        raise MVCFError(f"unbalanced reader design: {len(frame)} ratings, a fully crossed design of "
                        f"{len(readers)} readers x {len(modalities)} modalities x {len(cases)} cases needs {expected}"
                        f"{example}")
    cube = frame.set_index([modality, reader, case])[rating].reindex(index).to_numpy(float)
    truth_by_case = frame.groupby(case)[truth].first().reindex(cases).to_numpy(bool)
    n_pos = int(truth_by_case.sum())
    if n_pos < 2 or n_pos > truth_by_case.size - 2:
        raise MVCFError(f"reader study needs at least 2 positive and 2 negative cases "
                        f"(got {n_pos} of {truth_by_case.size})")
    cube = cube.reshape(len(modalities), len(readers), len(cases))
    if len(readers) > 1 and np.all(cube == cube[:, :1, :]):
        raise MVCFError(f"all {len(readers)} readers gave identical ratings in every modality: reader variability "
                        "is zero, so the Obuchowski-Rockette F, its degrees of freedom and the CIs are undefined; "
                        "an MRMC analysis needs independent readers (check that the reader column is right)")
    return {"ratings": cube, "truth": truth_by_case,
            "modalities": _key(modalities), "readers": _key(readers), "cases": _key(cases)}


def auc_covariance(ratings: np.ndarray, truth: np.ndarray, method: str = "jackknife") -> tuple[np.ndarray, np.ndarray]:
    """AUCs (t, r) and the (t·r)×(t·r) case-sampling covariance of the AUCs, rows ordered modality-major.

    jackknife: leave-one-case-out over all cases, (C−1)/C·Σ(θ_(k)−θ̄)(θ_(k)−θ̄)ᵀ; the leave-one-out AUCs
    come exactly from the DeLong placement values (deleting positive i gives (mθ − V10_i)/(m−1)).
    delong: DeLong's structural-components covariance."""
    t, r, c = ratings.shape
    aucs, v10, v01 = _structural_components(truth, ratings.reshape(t * r, c))
    if method == "delong":
        cov = _delong_cov(v10, v01)
    elif method == "jackknife":
        m, n = v10.shape[1], v01.shape[1]
        loo = np.concatenate([(m * aucs[:, None] - v10) / (m - 1), (n * aucs[:, None] - v01) / (n - 1)], axis=1)
        centred = loo - loo.mean(axis=1, keepdims=True)
        cov = (c - 1) / c * centred @ centred.T
    else:
        raise MVCFError(f"unknown covariance method {method!r} (use jackknife or delong)")
    return aucs.reshape(t, r), cov


def _or_covariances(cov: np.ndarray, t: int, r: int, modality: Optional[int] = None) -> dict:
    """Average the AUC covariance matrix into OR's Var, Cov1, Cov2, Cov3 (within one modality if given)."""
    mod = np.repeat(np.arange(t), r)
    rdr = np.tile(np.arange(r), t)
    same_mod = mod[:, None] == mod[None, :]
    same_rdr = rdr[:, None] == rdr[None, :]
    keep = np.ones_like(same_mod) if modality is None else (mod[:, None] == modality) & (mod[None, :] == modality)

    def mean(mask: np.ndarray) -> float:
        mask = mask & keep
        return float(cov[mask].mean()) if mask.any() else float("nan")

    return {"var_error": mean(same_mod & same_rdr), "cov1": mean(~same_mod & same_rdr),
            "cov2": mean(same_mod & ~same_rdr), "cov3": mean(~same_mod & ~same_rdr)}


def _p_f(f: float, df1: float, df2: float) -> float:
    if f == 0.0:
        return 1.0
    if not np.isfinite(f):
        return 0.0 if f > 0 else float("nan")
    return float(_st.f.sf(f, df1, df2))


def _interval(centre: float, se: float, crit: float) -> list:
    """centre ± crit·se of an AUC difference, within its possible range [-1, 1] (as a single AUC's interval is
    kept within [0, 1]: 4 cases gave -6.353 to 6.353); a zero standard error gives a zero-width interval
    whatever the df."""
    if se == 0.0:
        return [float(centre), float(centre)]
    return [float(max(centre - crit * se, -1.0)), float(min(centre + crit * se, 1.0))]


def _p_two_sided(stat: float, df: Optional[float]) -> float:
    if stat == 0.0:
        return 1.0
    return float(2 * (_st.norm.sf(abs(stat)) if df is None else _st.t.sf(abs(stat), df)))


#: A variance of AUCs at or below this is rounding noise (an SE of 1e-7), not a variance to test against: readers
#: rescaled from one another or reading perfectly leave 1e-33 where the algebra gives 0, and an F of 1e28 on
#: 1e58 df followed from it.
ZERO_VARIANCE = 1e-14


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else float("inf")


def mrmc(data: Any, cov_method: str = "jackknife", alpha: float = 0.05, reader: str = "reader",
         modality: str = "modality", case: str = "case", truth: str = "truth", rating: str = "rating",
         positive: Any = None, modality_order: Optional[Sequence[Any]] = None) -> dict:
    """Obuchowski–Rockette MRMC analysis of empirical AUCs (long-format input: one row per rating).

    Returns reader_auc {modality: {reader: auc}}, mean_auc {modality: auc}, the OR covariances
    (var_error, cov1, cov2, cov3, with ms_t, ms_r, ms_tr), and the sections rrrc / frrc / rrfc, each with the
    omnibus test (F, df1, df2, p; FRRC also chisq, df2 = None meaning infinite), `diff` and `ci` of the
    first two modalities (first minus second, in sorted label order or `modality_order`), a `pairs` list
    for all pairs, and `modalities` with the CI of each modality's mean AUC. With one modality only the
    single-modality CIs are computed."""
    alpha = check_alpha(alpha)
    design = ratings_array(data, reader, modality, case, truth, rating, positive, modality_order)
    aucs, cov = auc_covariance(design["ratings"], design["truth"], cov_method)
    return _or_analysis(aucs, cov, design["modalities"], design["readers"], alpha, cov_method,
                        n_cases=len(design["cases"]), n_pos=int(design["truth"].sum()))


def mrmc_arrays(ratings: np.ndarray, truth: np.ndarray, cov_method: str = "jackknife", alpha: float = 0.05,
                modalities: Optional[list] = None, readers: Optional[list] = None) -> dict:
    """`mrmc` on a ratings array (t, r, c) and a truth vector (c,): for simulations that skip the table."""
    t, r, c = ratings.shape
    aucs, cov = auc_covariance(ratings, np.asarray(truth, bool), cov_method)
    return _or_analysis(aucs, cov, list(range(t)) if modalities is None else modalities,
                        list(range(r)) if readers is None else readers, check_alpha(alpha), cov_method,
                        n_cases=c, n_pos=int(np.sum(truth)))


def _or_analysis(aucs: np.ndarray, cov: np.ndarray, modalities: list, readers: list, alpha: float,
                 cov_method: str, n_cases: int, n_pos: int) -> dict:
    t, r = aucs.shape
    if r < 2:
        raise MVCFError("MRMC analysis needs at least two readers")
    covs = _or_covariances(cov, t, r)
    mean_mod = aucs.mean(axis=1)
    mean_rdr = aucs.mean(axis=0)
    grand = aucs.mean()
    ms_t = r * float(np.sum((mean_mod - grand) ** 2)) / (t - 1) if t > 1 else float("nan")
    ms_r = t * float(np.sum((mean_rdr - grand) ** 2)) / (r - 1)
    inter = aucs - mean_mod[:, None] - mean_rdr[None, :] + grand
    ms_tr = float(np.sum(inter ** 2)) / ((t - 1) * (r - 1)) if t > 1 else float("nan")
    excess = max(covs["cov2"] - covs["cov3"], 0.0)

    per_mod = []
    for i in range(t):
        within = _or_covariances(cov, t, r, modality=i)
        ms_r_i = float(np.var(aucs[i], ddof=1))
        per_mod.append({"ms_r": ms_r_i, "var_error": within["var_error"], "cov2": within["cov2"]})

    z = _st.norm.ppf(1 - alpha / 2)
    result = {
        "n_readers": r, "n_modalities": t, "n_cases": n_cases, "n_pos": n_pos, "n_neg": n_cases - n_pos,
        "cov_method": cov_method, "alpha": alpha, "modalities": modalities, "readers": readers,
        "reader_auc": {str(m): {str(rd): float(aucs[i, j]) for j, rd in enumerate(readers)}
                       for i, m in enumerate(modalities)},
        "mean_auc": {str(m): float(mean_mod[i]) for i, m in enumerate(modalities)},
        **covs, "ms_t": ms_t, "ms_r": ms_r, "ms_tr": ms_tr,
        "per_modality": [{"modality": modalities[i], **pm} for i, pm in enumerate(per_mod)],
    }

    def section(stat_den: float, df2: Optional[float], pair_var: float, single: list, terms: str) -> dict:
        """One analysis: omnibus F, pairwise differences and single-modality CIs; none of the tests when its
        variance (`terms`) is zero."""
        out: dict = {"denominator": stat_den}
        if t > 1 and stat_den <= ZERO_VARIANCE:
            out.update(F=None, df1=t - 1, df2=None, chisq=None, p=None,
                       note=f"{terms} is zero (the readers' AUCs and errors leave nothing to test against): no test "
                            "possible")
            out["pairs"] = [{"a": modalities[a], "b": modalities[b], "diff": float(mean_mod[a] - mean_mod[b]),
                             "se": None, "df": None, "p": None, "ci": None} for a, b in combinations(range(t), 2)]
            out["diff"], out["ci"], out["se"] = out["pairs"][0]["diff"], None, None
        elif t > 1:
            f = _ratio(ms_t, stat_den)
            if df2 is None:
                out.update(F=f, df1=t - 1, df2=None, chisq=f * (t - 1), p=float(_st.chi2.sf(f * (t - 1), t - 1)))
            else:
                out.update(F=f, df1=t - 1, df2=df2, p=_p_f(f, t - 1, df2))
            crit = z if df2 is None else float(_st.t.ppf(1 - alpha / 2, df2))
            se = float(np.sqrt(max(pair_var, 0.0)))
            pairs = []
            for a, b in combinations(range(t), 2):
                diff = float(mean_mod[a] - mean_mod[b])
                stat = _ratio(diff, se) if diff >= 0 else -_ratio(-diff, se)
                pairs.append({"a": modalities[a], "b": modalities[b], "diff": diff, "se": se,
                              "t" if df2 is not None else "z": stat, "df": df2, "p": _p_two_sided(stat, df2),
                              "ci": _interval(diff, se, crit)})
            out["pairs"] = pairs
            out["diff"], out["ci"], out["se"] = pairs[0]["diff"], pairs[0]["ci"], se
        out["modalities"] = single
        return out

    def single_ci(i: int, var: float, df: Optional[float]) -> dict:
        if var <= ZERO_VARIANCE:   # the point, said so (the reader-study report then gives Newcombe's interval)
            auc = float(mean_mod[i])
            return {"modality": modalities[i], "auc": auc, "se": 0.0, "df": None, "ci": [auc, auc],
                    "note": "zero variance: the interval collapses to a point"}
        se = float(np.sqrt(var))
        crit = z if df is None or not np.isfinite(df) else float(_st.t.ppf(1 - alpha / 2, df))
        low, high = _interval(mean_mod[i], se, crit)
        return {"modality": modalities[i], "auc": float(mean_mod[i]), "se": se, "df": df,
                "ci": [max(low, 0.0), min(high, 1.0)]}

    # Random readers, random cases (Hillis 2008 ddf; Hillis 2007 single-modality CIs).
    den_rrrc = ms_tr + r * excess
    # MS(T x R) of zero makes Hillis' df infinite: the F is then referred to chi-square (df2 None)
    ddf = _ratio(den_rrrc ** 2, ms_tr ** 2 / ((t - 1) * (r - 1))) if t > 1 and ms_tr > ZERO_VARIANCE else None
    singles = []
    for i, pm in enumerate(per_mod):
        cov2_i = max(pm["cov2"], 0.0)
        df_i = _ratio((pm["ms_r"] + r * cov2_i) ** 2, pm["ms_r"] ** 2 / (r - 1))
        singles.append(single_ci(i, pm["ms_r"] / r + cov2_i, df_i))
    result["rrrc"] = section(den_rrrc, ddf, 2.0 / r * den_rrrc, singles, "MS(T×R) + r·max(Cov2 − Cov3, 0)")

    # Fixed readers, random cases.
    # No truncation here: this is c'Σc, the case-sampling variance of the mean difference (Hillis 2007).
    den_frrc = covs["var_error"] - covs["cov1"] + (r - 1) * (covs["cov2"] - covs["cov3"])
    singles = [single_ci(i, (pm["var_error"] + (r - 1) * max(pm["cov2"], 0.0)) / r, None)
               for i, pm in enumerate(per_mod)]
    result["frrc"] = section(den_frrc, None, 2.0 / r * den_frrc, singles, "Var − Cov1 + (r − 1)(Cov2 − Cov3)")
    if t > 1:
        result["frrc"]["readers"] = _per_reader_tests(aucs, cov, modalities, readers, alpha)

    # Random readers, fixed cases.
    singles = [single_ci(i, pm["ms_r"] / r, r - 1) for i, pm in enumerate(per_mod)]
    result["rrfc"] = section(ms_tr, (t - 1) * (r - 1) if t > 1 else None, 2.0 * ms_tr / r, singles, "MS(T×R)")
    return result


def _per_reader_tests(aucs: np.ndarray, cov: np.ndarray, modalities: list, readers: list, alpha: float) -> list:
    """Fixed-reader analysis of each reader alone: modality 0 minus 1 (z test with the case covariance)."""
    t, r = aucs.shape
    z = _st.norm.ppf(1 - alpha / 2)
    out = []
    for j, rd in enumerate(readers):
        for a, b in combinations(range(t), 2):
            ia, ib = a * r + j, b * r + j
            diff = float(aucs[a, j] - aucs[b, j])
            se = float(np.sqrt(max(cov[ia, ia] + cov[ib, ib] - 2 * cov[ia, ib], 0.0)))
            stat = diff / se if se > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
            out.append({"reader": rd, "a": modalities[a], "b": modalities[b], "diff": diff, "se": se, "z": stat,
                        "p": _p_two_sided(stat, None), "ci": _interval(diff, se, z)})
    return out


def unaided_vs_aided(data: Any, unaided: Any, aided: Any, cov_method: str = "jackknife", alpha: float = 0.05,
                     **columns: Any) -> dict:
    """The paper's reader study: the same readers read the same cases without and with the model.
    Only those two modalities are analysed; `diff` in every section is aided minus unaided."""
    col = columns.get("modality", "modality")
    frame = _frame(data, (col,))
    labels = frame[col].astype(str)
    present = set(labels)
    if str(unaided) == str(aided):
        raise MVCFError(f"--unaided and --aided both name the modality {unaided!r}; give the two modalities of the "
                        "study")
    if str(unaided) not in present or str(aided) not in present:
        raise MVCFError(f"modalities {unaided!r} and {aided!r} must both be present in column '{col}'")
    subset = frame.loc[labels.isin([str(unaided), str(aided)])]
    result = mrmc(subset, cov_method=cov_method, alpha=alpha, modality_order=[aided, unaided], **columns)
    result["design"] = {"kind": "unaided_vs_aided", "unaided": _key([unaided])[0], "aided": _key([aided])[0],
                        "diff": "aided - unaided"}
    return result


def model_vs_readers(data: Any, model_scores: Any, modality: Any = None, cov_method: str = "jackknife",
                     alpha: float = 0.05, reader: str = "reader", case: str = "case", truth: str = "truth",
                     rating: str = "rating", modality_column: str = "modality", positive: Any = None) -> dict:
    """The model alone vs the readers (one modality): mean over readers of (reader AUC − model AUC).

    Single-treatment OR analysis of the differences D_j = θ_j − θ_model with random readers and random
    cases: se² = MS(R)_D / r + max(Cov2_D, 0), Hillis df = (MS(R)_D + r·max(Cov2_D,0))² / (MS(R)_D²/(r−1)),
    where Cov2_D is the mean covariance of the differences between different readers. Fixed readers:
    se² = (Var_D + (r−1)·Cov2_D)/r with a normal reference. `model_scores` maps case → model score
    (a dict or a two-column table case, score)."""
    import pandas as pd

    alpha = check_alpha(alpha)
    frame = _frame(data, (reader, case, truth, rating))
    if modality_column not in frame.columns:
        frame = frame.assign(**{modality_column: "readers"})
    if modality is not None:
        frame = frame.loc[frame[modality_column].astype(str) == str(modality)]
        if frame.empty:
            raise MVCFError(f"no ratings in modality {modality!r}")
    elif frame[modality_column].nunique() != 1:
        raise MVCFError("several modalities in the reader data: say which one to compare with the model")
    design = ratings_array(frame, reader, modality_column, case, truth, rating, positive)
    if isinstance(model_scores, pd.DataFrame):
        pairs = list(zip(model_scores.iloc[:, 0], model_scores.iloc[:, 1]))
    else:
        pairs = list(dict(model_scores).items())
    by_str: dict[str, Any] = {}
    for case_id, score in pairs:   # a case scored twice is refused: the last score would win in silence
        if str(case_id) in by_str:
            raise MVCFError(f"model scores name case {case_id!r} more than once; give one score per case")
        by_str[str(case_id)] = score
    missing = [c for c in design["cases"] if str(c) not in by_str]
    if missing:
        raise MVCFError(f"no model score for case {missing[0]!r} ({len(missing)} cases missing)")
    rated = {str(c) for c in design["cases"]}
    extra = [c for c in by_str if c not in rated]
    if extra:   # another study's scores, or case ids written differently: compared on the rest in silence
        raise MVCFError(f"model scores name case {extra[0]!r}, which no reader rated ({len(extra)} such "
                        f"case{'s' * (len(extra) > 1)}): give the scores of this study's cases")
    try:
        model = np.array([float(by_str[str(c)]) for c in design["cases"]])
    except (TypeError, ValueError):
        raise MVCFError("model scores must be numeric") from None
    if not np.all(np.isfinite(model)):
        raise MVCFError("model scores contain NaN or infinite values")
    ratings = design["ratings"][0]
    r = ratings.shape[0]
    if r < 2:
        raise MVCFError("comparing the model with readers needs at least two readers")
    stacked = np.concatenate([ratings, model[None, :]])[None]
    aucs, cov = auc_covariance(stacked, design["truth"], cov_method)
    aucs = aucs[0]
    contrast = np.hstack([np.eye(r), -np.ones((r, 1))])
    diffs = contrast @ aucs
    cov_d = contrast @ cov @ contrast.T
    var_d = float(np.mean(np.diag(cov_d)))
    cov2_d = float(cov_d[~np.eye(r, dtype=bool)].mean())
    ms_r = float(np.var(diffs, ddof=1))
    mean_diff = float(diffs.mean())

    def test(se2: float, df: Optional[float]) -> dict:
        se = float(np.sqrt(max(se2, 0.0)))
        stat = mean_diff / se if se > 0 else (0.0 if mean_diff == 0 else float(np.sign(mean_diff) * np.inf))
        crit = float(_st.norm.ppf(1 - alpha / 2) if df is None else _st.t.ppf(1 - alpha / 2, df))
        return {"diff": mean_diff, "se": se, "stat": stat, "df": df, "p": _p_two_sided(stat, df),
                "ci": _interval(mean_diff, se, crit)}

    cov2_pos = max(cov2_d, 0.0)
    df_h = _ratio((ms_r + r * cov2_pos) ** 2, ms_r ** 2 / (r - 1))
    readers = design["readers"]
    return {
        "design": {"kind": "model_vs_readers", "diff": "mean reader AUC - model AUC",
                   "modality": _key([modality])[0] if modality is not None else None},
        "cov_method": cov_method, "alpha": alpha, "n_readers": r, "n_cases": len(design["cases"]),
        "model_auc": float(aucs[-1]), "mean_reader_auc": float(aucs[:-1].mean()),
        "reader_auc": {str(rd): float(aucs[j]) for j, rd in enumerate(readers)},
        "var_error": var_d, "cov2": cov2_d, "ms_r": ms_r,
        "rrrc": test(ms_r / r + cov2_pos, df_h),
        "frrc": test((var_d + (r - 1) * cov2_d) / r, None),
        "rrfc": test(ms_r / r, r - 1),
    }

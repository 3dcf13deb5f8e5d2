"""`mvcf stats roc` and `mvcf stats mrmc`: ROC/AUC inference and reader-study analysis from a CSV file."""
from __future__ import annotations

import argparse
from typing import Any

from mvcf.cli import args as A
from mvcf.errors import MVCFError
from mvcf.progress import emit_result, standard_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stats_command", metavar="ANALYSIS", parser_class=type(parser))
    sub.required = True

    roc = sub.add_parser("roc", help="AUC with CI for each score column and paired DeLong tests between them.",
                         description="AUC with CI for each score column (higher score = positive) and the "
                                     "paired DeLong test for every pair of score columns.")
    roc.add_argument("--csv", required=True, help="CSV file, one row per case")
    roc.add_argument("--truth", required=True, help="column with the reference standard")
    roc.add_argument("--positive", default=None,
                     help="value of --truth that means positive (default: the column must be 0/1)")
    roc.add_argument("--score", required=True, action="append", help="score column (repeat for several models)")
    roc.add_argument("--ci-method", choices=["delong", "bootstrap"], default="delong",
                     help="AUC confidence interval: DeLong (default) or stratified percentile bootstrap")
    roc.add_argument("--n-resamples", type=A.ranged("n_resamples"), default=2000, help="bootstrap resamples (default 2000)")
    roc.add_argument("--seed", type=A.ranged("seed"), default=0, help="bootstrap seed (default 0)")
    roc.add_argument("--alpha", type=A.ALPHA, default=0.05, help="1 - confidence level (default 0.05)")
    roc.add_argument("--json", action="store_true", help="print the result as one JSON object")
    roc.add_argument("--plot", default=None, help="write ROC curves with CI bands to this PNG")

    mrmc = sub.add_parser("mrmc", help="Obuchowski-Rockette reader-study analysis (Hillis df).",
                          description="Obuchowski-Rockette MRMC analysis of empirical AUCs with Hillis "
                                      "degrees of freedom. Long-format CSV: reader, modality, case, truth, rating.")
    mrmc.add_argument("--csv", required=True, help="CSV with columns reader, modality, case, truth, rating")
    mrmc.add_argument("--positive", default=None, help="value of truth that means positive (default: 0/1)")
    mrmc.add_argument("--cov-method", choices=["jackknife", "delong"], default="jackknife",
                      help="AUC covariance estimate (default: jackknife, as OR-DBM MRMC)")
    mrmc.add_argument("--alpha", type=A.ALPHA, default=0.05, help="1 - confidence level (default 0.05)")
    mrmc.add_argument("--unaided", default=None,
                      help="with --aided: the two modalities of a reader study with and without the model; "
                           "every difference is then aided minus unaided")
    mrmc.add_argument("--aided", default=None, help="modality label of the reads aided by the model")
    mrmc.add_argument("--model-csv", default=None,
                      help="also compare a model with the readers: CSV with columns case, score")
    mrmc.add_argument("--model-modality", default=None,
                      help="reader modality to compare with the model (required with several modalities)")
    mrmc.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _truth(frame: Any, column: str, positive: Any):
    """The truth column as booleans; refused when missing, not 0/1 (or `positive`), or of one class only, in
    the user's words (the column's name; the checks below named it `y_true`)."""
    truth = _truth_values(frame, column, positive)
    n_pos = int(truth.sum())
    if n_pos in (0, truth.size):
        raise MVCFError(f"truth column '{column}' holds one class only ({n_pos} positive of {truth.size} rows); "
                        "an AUC needs both")
    return truth


def _truth_values(frame: Any, column: str, positive: Any):
    import pandas as pd

    from mvcf.stats._validate import column_missing

    problem = column_missing([column], list(frame.columns), "truth column")
    if problem:
        raise MVCFError(problem)
    values = frame[column]
    if values.isna().any():
        raise MVCFError(f"truth column '{column}' has missing values")
    if positive is not None:
        from mvcf.stats._validate import is_positive

        truth = is_positive(values, positive)
        if not truth.any():
            raise MVCFError(f"no row has {column} == {positive!r}")
        return truth
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or not numeric.isin([0, 1]).all():
        raise MVCFError(f"truth column '{column}' must be 0/1; say which value is positive with --positive")
    return (numeric == 1).to_numpy()


def _scores(frame: Any, columns: list[str]):
    from mvcf.stats._validate import column_missing, numeric_column

    out = {}
    for column in columns:
        problem = column_missing([column], list(frame.columns), "score column")
        if problem:
            raise MVCFError(problem)
        if column in out:
            raise MVCFError(f"score column '{column}' given twice")
        out[column] = numeric_column(frame, column, "score column")
    return out


def run_roc(args: argparse.Namespace) -> dict:
    from mvcf import stats
    from mvcf.stats._validate import read_table

    if args.plot:
        from mvcf.outputs_guard import check_output

        check_output(args.plot, [args.csv], kind="file", overwrite=True, what="--plot")
    frame = read_table(args.csv)
    if len(frame) == 0:
        raise MVCFError(f"{args.csv} has a header but no rows")
    truth = _truth(frame, args.truth, args.positive)
    scores = _scores(frame, args.score)
    entries = []
    for name, score in scores.items():
        if args.ci_method == "bootstrap":
            ci = stats.bootstrap_auc_ci(truth, score, n_resamples=args.n_resamples, seed=args.seed, alpha=args.alpha)
        else:
            ci = stats.delong_ci(truth, score, alpha=args.alpha)
        entry = {"name": name, "auc": ci["auc"], "ci": list(ci["ci"]), "ci_method": ci["method"]}
        fallback = stats.point_interval_fallback(ci["auc"], ci["ci"], int(truth.sum()), int((~truth).sum()),
                                                 alpha=args.alpha)
        if fallback is not None:   # never a zero-width interval without its reason (as the study report)
            interval, reason = fallback
            entry["ci_newcombe"] = list(interval)
            entry["note"] = (f"{reason}{' (a constant score)' if reason == 'zero variance' else ''}: the "
                             f"{ci['method']} interval collapses to a point; Newcombe's score interval given instead")
        entries.append(entry)
    comparisons = []
    if len(scores) > 1:
        test = stats.delong_test(truth, list(scores.values()), alpha=args.alpha, names=list(scores))
        comparisons = [{"a": p["a"], "b": p["b"], "diff": p["diff"], "z": p["z"], "p": p["p"],
                        "p_holm": p["p_holm"], "ci": None if p["ci"] is None else list(p["ci"]),
                        "method": "delong-paired", **({"note": p["note"]} if "note" in p else {})}
                       for p in test["pairs"]]
    payload = {"n_pos": int(truth.sum()), "n_neg": int((~truth).sum()), "alpha": args.alpha,
               "scores": entries, "comparisons": comparisons}
    if args.plot:
        from mvcf.stats.plots import plot_roc

        payload["plot"] = str(plot_roc(args.plot, truth, scores, seed=args.seed, alpha=args.alpha))
    return payload


def run_mrmc(args: argparse.Namespace) -> dict:
    from mvcf import stats
    from mvcf.stats._validate import read_table

    frame = read_table(args.csv)
    if (args.unaided is None) != (args.aided is None):
        raise MVCFError("give both --unaided and --aided, or neither")
    if args.unaided is not None:
        payload = stats.unaided_vs_aided(frame, unaided=args.unaided, aided=args.aided, cov_method=args.cov_method,
                                         alpha=args.alpha, positive=args.positive)
    else:
        payload = stats.mrmc(frame, cov_method=args.cov_method, alpha=args.alpha, positive=args.positive)
    if args.model_csv:
        model = read_table(args.model_csv)
        missing = [c for c in ("case", "score") if c not in model.columns]
        if missing:
            raise MVCFError(f"model CSV is missing column(s): {', '.join(missing)}")
        payload["model_vs_readers"] = stats.model_vs_readers(
            frame, model[["case", "score"]], modality=args.model_modality, cov_method=args.cov_method,
            alpha=args.alpha, positive=args.positive)
    return payload


def _num(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _fmt_ci(ci: Any) -> str:
    return "(n/a)" if ci is None else f"({_num(ci[0])}, {_num(ci[1])})"


def _print_roc(payload: dict) -> None:
    print(f"{payload['n_pos']} positive, {payload['n_neg']} negative cases")
    for entry in payload["scores"]:
        if "ci_newcombe" in entry:
            print(f"{entry['name']}: AUC {_num(entry['auc'])} {_fmt_ci(entry['ci_newcombe'])} [newcombe]; "
                  f"{entry['note']}")
        else:
            print(f"{entry['name']}: AUC {_num(entry['auc'])} {_fmt_ci(entry['ci'])} [{entry['ci_method']}]")
    for c in payload["comparisons"]:
        print(f"{c['a']} - {c['b']}: diff {_num(c['diff'], '+.4f')} {_fmt_ci(c['ci'])}, z {_num(c['z'], '.3f')}, "
              f"p {_num(c['p'], '.4g')}" + (f"; {c['note']}" if "note" in c else ""))


def _print_mrmc(payload: dict) -> None:
    print(f"{payload['n_readers']} readers, {payload['n_modalities']} modalities, {payload['n_cases']} cases "
          f"({payload['n_pos']} positive); covariances by {payload['cov_method']}")
    for modality, readers in payload["reader_auc"].items():
        row = " ".join(f"{r}:{a:.4f}" for r, a in readers.items())
        print(f"modality {modality}: mean AUC {payload['mean_auc'][modality]:.4f}  readers {row}")
    print("  ".join(f"{label} {_num(payload[key], '.8f')}" for key, label in
                    (("var_error", "Var(error)"), ("cov1", "Cov1"), ("cov2", "Cov2"), ("cov3", "Cov3"))))
    for key, label in (("rrrc", "random readers, random cases"), ("frrc", "fixed readers, random cases"),
                       ("rrfc", "random readers, fixed cases")):
        sec = payload[key]
        if "note" in sec:
            print(f"{label}: diff {_num(sec['diff'], '+.5f')}; {sec['note']}")
        elif "F" in sec:
            df2 = "inf" if sec["df2"] is None else f"{sec['df2']:.2f}"
            print(f"{label}: F {_num(sec['F'])} on ({sec['df1']}, {df2}) df, p {_num(sec['p'], '.4g')}; "
                  f"diff {_num(sec['diff'], '+.5f')} {_fmt_ci(sec['ci'])}")
        else:
            print(f"{label}:")
        for single in sec["modalities"]:
            print(f"    modality {single['modality']}: {_num(single['auc'])} {_fmt_ci(single['ci'])}"
                  + (f" ({single['note']})" if "note" in single else ""))
    if "model_vs_readers" in payload:
        mv = payload["model_vs_readers"]
        print(f"model AUC {_num(mv['model_auc'])} vs mean reader AUC {_num(mv['mean_reader_auc'])}: "
              f"diff {_num(mv['rrrc']['diff'], '+.4f')} {_fmt_ci(mv['rrrc']['ci'])}, "
              f"p {_num(mv['rrrc']['p'], '.4g')} (RRRC)")


def run(args: argparse.Namespace, reporter: Any) -> int:
    if args.stats_command == "roc":
        payload = run_roc(args)
        printer = _print_roc
    else:
        payload = run_mrmc(args)
        printer = _print_mrmc
    payload = standard_json(payload)
    emit_result(reporter, payload, args.json, lambda: printer(payload), indent=None)
    return 0

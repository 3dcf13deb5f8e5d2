"""Results of `mvcf train` / `mvcf study` / `mvcf stats mrmc` -> table nodes and ROC plot nodes.

Reads what the core wrote (the bundle's model card `model/model.json`, `predictions.csv`) or the `result`
payload of the child process; metrics come from `mvcf.metrics.summarize`, tables are written with
`MVCFClassifierLib.tables.write_table`. Every function takes the scene explicitly.
"""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from MVCFClassifierLib.tables import write_table
from mvcf.errors import MVCFError

from MVCFTrainingLib.plots import RocCurve, show_roc_curves

SPLITS = ("validation", "internal_test", "external_test")
METRIC_COLUMNS = (
    ("model", str, "view mode / model"),
    ("split", str, "validation, internal_test (out-of-fold) or external_test (held-out institution)"),
    ("institution", str, "institution, or 'all'"),
    ("n", int, "cases"),
    ("n_mvcf", int, "malignant cases"),
    ("n_ovcf", int, "osteoporotic cases"),
    ("auc", float, "area under the ROC curve"),
    ("auc_ci_low", float, "AUC 95% CI lower bound (method in auc_ci_method)"),
    ("auc_ci_high", float, "AUC 95% CI upper bound (method in auc_ci_method)"),
    ("auc_ci_method", str, "DeLong, or Newcombe where DeLong's interval is degenerate (perfect separation, a "
                           "class of one)"),
    ("note", str, "why an interval or the AUC is not DeLong's or missing"),
    ("sensitivity", float, "sensitivity at the frozen threshold"),
    ("sensitivity_ci", str, "95% CI (Wilson)"),
    ("specificity", float, "specificity at the frozen threshold"),
    ("specificity_ci", str, "95% CI (Wilson)"),
    ("f1", float, "F1 score at the frozen threshold"),
    ("f1_ci", str, "95% CI"),
    ("threshold", float, "probability threshold for MVCF (Youden on validation, frozen)"),
)


def _ci_text(ci: Optional[Sequence[Optional[float]]]) -> str:
    if not ci or any(v is None for v in ci):
        return ""
    return f"{ci[0]:.3f}–{ci[1]:.3f}"


def metrics_row(model: str, split: str, institution: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One table row from a `mvcf.metrics.summarize` dict."""
    from mvcf.metrics import auc_interval

    ci, method = auc_interval(summary)
    ci = ci or [None, None]
    row: dict[str, Any] = {"model": model, "split": split, "institution": institution,
                           "n": summary.get("n", 0), "n_mvcf": summary.get("n_mvcf", 0),
                           "n_ovcf": summary.get("n_ovcf", 0), "auc": summary.get("auc"),
                           "auc_ci_low": ci[0], "auc_ci_high": ci[1], "auc_ci_method": method,
                           "note": summary.get("note", ""), "threshold": summary.get("threshold")}
    for key in ("sensitivity", "specificity", "f1"):
        entry = summary.get(key) or {}
        row[key] = entry.get("value")
        row[f"{key}_ci"] = _ci_text(entry.get("ci"))
    return row


def read_predictions(path: Union[str, os.PathLike]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise MVCFError(f"predictions not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _truth(row: dict[str, str]) -> int:
    from mvcf.manifest import parse_label

    return parse_label(row["label"])


def training_metrics_rows(run_dir: Union[str, os.PathLike], model: str = "") -> list[dict[str, Any]]:
    """Rows per split (from the model card) and per split x institution (recomputed from predictions.csv
    with the frozen threshold) for one `mvcf train` output folder."""
    from mvcf.metrics import summarize

    run_dir = Path(run_dir)
    card_path = run_dir / "model" / "model.json"
    if not card_path.is_file():
        raise MVCFError(f"no trained model in {run_dir} (missing model/model.json)")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    model = model or str(card.get("view_spec", {}).get("mode", card.get("name", "model")))
    threshold = float(card["threshold"])
    rows = [metrics_row(model, split, "all", card["validation_metrics"][split])
            for split in SPLITS if split in card.get("validation_metrics", {})]
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    predictions = run_dir / "predictions.csv"
    for row in read_predictions(predictions) if predictions.is_file() else []:
        groups[(row["set"], row["institution"])].append(row)
    for (split, institution), members in sorted(groups.items()):
        truth = [_truth(r) for r in members]
        scores = [float(r["probability_malignant"]) for r in members]
        rows.append(metrics_row(model, split, institution, summarize(truth, scores, threshold, n_bootstrap=0)))
    return rows


def show_metrics_table(scene, rows: Sequence[dict[str, Any]], node=None, name: str = "MVCF metrics"):
    node = write_table(scene, rows, METRIC_COLUMNS, name, node=node)
    node.SetAttribute("MVCF.role", "metrics")
    return node


def roc_curves_from_predictions(path: Union[str, os.PathLike], model: str = "") -> list[RocCurve]:
    """One ROC curve per prediction set (internal_test, external_test) that has both classes."""
    by_set: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_predictions(path):
        by_set[row.get("set") or "evaluation"].append(row)  # evaluate's file has no set column
    curves = []
    for split, members in by_set.items():
        truth = [_truth(r) for r in members]
        if 0 < sum(truth) < len(truth):
            name = f"{model} {split}".strip()
            curves.append(RocCurve.from_scores(name, truth, [float(r["probability_malignant"]) for r in members]))
    return curves


def show_training_results(scene, run_dir: Union[str, os.PathLike], metrics_node=None, roc_chart=None,
                          name: str = "MVCF"):
    """Metrics table + ROC chart of one training run; returns (metrics table node, ROC chart node or None)."""
    run_dir = Path(run_dir)
    table = show_metrics_table(scene, training_metrics_rows(run_dir), node=metrics_node, name=f"{name} metrics")
    chart = None
    if (run_dir / "predictions.csv").is_file():
        curves = roc_curves_from_predictions(run_dir / "predictions.csv")
        if curves:
            chart = show_roc_curves(scene, curves, name=f"{name} ROC", chart=roc_chart)
    return table, chart


def show_evaluation_results(scene, report: dict[str, Any], metrics_node=None, roc_chart=None, name: str = "MVCF"):
    """Metrics table (overall, then per institution) + ROC chart of one `mvcf evaluate` report (its
    predictions.csv in report["out"]); returns (metrics table node, ROC chart node or None)."""
    model = str((report.get("model") or {}).get("name", "model"))
    rows = [metrics_row(model, "evaluation", "all", report.get("overall") or {})]
    rows += [metrics_row(model, "evaluation", site, summary)
             for site, summary in sorted((report.get("per_institution") or {}).items())]
    table = show_metrics_table(scene, rows, node=metrics_node, name=f"{name} evaluation metrics")
    predictions = Path(str(report.get("out", ""))) / "predictions.csv"
    curves = roc_curves_from_predictions(predictions, model) if predictions.is_file() else []
    chart = show_roc_curves(scene, curves, name=f"{name} evaluation ROC", chart=roc_chart) if curves else None
    return table, chart


def mrmc_tables(scene, result: dict[str, Any], reader_node=None, analysis_node=None, name: str = "MVCF reader study"):
    """`mvcf stats mrmc --json` result -> (reader AUC table: one row per reader, one column per modality,
    plus the mean row; analysis table: one row per analysis (random readers & cases, fixed readers, fixed
    cases) and modality pair with the difference, its CI, the test statistic, df and p)."""
    reader_auc = result.get("reader_auc")
    if not isinstance(reader_auc, dict) or not reader_auc:
        raise MVCFError("the reader-study result has no reader AUCs")
    modalities = [str(m) for m in reader_auc]
    readers = list(dict.fromkeys(str(r) for m in modalities for r in reader_auc[m]))
    rows = [{"reader": r, **{f"AUC {m}": reader_auc[m].get(r) for m in modalities}} for r in readers]
    rows.append({"reader": "mean", **{f"AUC {m}": result.get("mean_auc", {}).get(m) for m in modalities}})
    reader_table = write_table(scene, rows, [("reader", str, "reader")]
                               + [(f"AUC {m}", float, f"AUC of the reader in modality {m}") for m in modalities],
                               f"{name} reader AUC", node=reader_node)
    labels = {"rrrc": "random readers, random cases", "frrc": "fixed readers, random cases",
              "rrfc": "random readers, fixed cases"}
    analysis = []
    for key, label in labels.items():
        section = result.get(key)
        if not isinstance(section, dict):
            continue
        for pair in section.get("pairs") or [section]:
            ci = pair.get("ci") or [None, None]
            analysis.append({"analysis": label, "comparison": f"{pair.get('a', '')} vs {pair.get('b', '')}",
                             "diff": pair.get("diff"), "ci_low": ci[0], "ci_high": ci[1],
                             "F": section.get("F"), "df1": section.get("df1"), "df2": section.get("df2"),
                             "p": pair.get("p", section.get("p"))})
    analysis_columns = [("analysis", str, "Obuchowski-Rockette analysis (Hillis df)"),
                        ("comparison", str, "modality a vs b"), ("diff", float, "AUC difference a - b"),
                        ("ci_low", float, "95% CI lower bound"), ("ci_high", float, "95% CI upper bound"),
                        ("F", float, "test statistic"), ("df1", float, "numerator df"),
                        ("df2", float, "denominator df (Hillis); empty for fixed readers"),
                        ("p", float, "p-value")]
    analysis_table = write_table(scene, analysis, analysis_columns, f"{name} analysis", node=analysis_node)
    return reader_table, analysis_table


STUDY_COLUMNS = (
    ("model", str, "view mode, or the logistic baseline on two hand-made features"),
    ("reference", int, "1 for the model the p-values compare against"),
    ("internal_auc", float, "internal test AUC (out-of-fold)"),
    ("internal_auc_ci_low", float, "95% CI lower bound (method in internal_auc_ci_method)"),
    ("internal_auc_ci_high", float, "95% CI upper bound (method in internal_auc_ci_method)"),
    ("internal_auc_ci_method", str, "DeLong, or Newcombe where DeLong's interval is degenerate"),
    ("internal_p_vs_reference", float, "paired DeLong p-value against the reference model, internal test"),
    ("external_auc", float, "external test AUC (held-out institution)"),
    ("external_auc_ci_low", float, "95% CI lower bound (method in external_auc_ci_method)"),
    ("external_auc_ci_high", float, "95% CI upper bound (method in external_auc_ci_method)"),
    ("external_auc_ci_method", str, "DeLong, or Newcombe where DeLong's interval is degenerate"),
    ("external_p_vs_reference", float, "paired DeLong p-value against the reference model, external test"),
    ("external_sensitivity", float, "external sensitivity at the frozen threshold"),
    ("external_specificity", float, "external specificity at the frozen threshold"),
    ("external_f1", float, "external F1 at the frozen threshold"),
    ("train_seconds", float, "training time"),
    ("inference_ms_per_case", float, "inference time per case"),
    ("parameters", int, "trainable parameters"),
    ("bundle", str, "model bundle folder"),
    ("comparison_note", str, "why a p-value against the reference is empty (no test: zero DeLong variance)"),
)


def study_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One numeric row per model of a `mvcf study` summary (its `result` payload or study.json), with the
    paired DeLong p-values against the reference model."""
    from mvcf.metrics import auc_interval

    reference = summary.get("design", {}).get("reference", "")
    p_values: dict[tuple[str, str], float] = {}
    notes: dict[str, list[str]] = {}
    for which in ("internal", "external"):
        for pair in (summary.get(f"delong_{which}") or {}).get("pairs", []):
            if reference in (pair.get("a"), pair.get("b")):
                other = pair["b"] if pair["a"] == reference else pair["a"]
                p_values[(which, other)] = pair.get("p")
                if pair.get("p") is None and pair.get("note"):
                    notes.setdefault(other, []).append(f"{which}: {pair['note']}")
    rows = []
    for model in summary.get("models", []):
        row: dict[str, Any] = {"model": model["name"], "reference": int(model["name"] == reference),
                               "train_seconds": model.get("train_seconds"),
                               "inference_ms_per_case": model.get("inference_ms_per_case"),
                               "parameters": model.get("parameters"), "bundle": model.get("bundle") or "",
                               "comparison_note": "; ".join(notes.get(model["name"], []))}
        for which in ("internal", "external"):
            block = model.get(f"{which}_test") or {}
            ci, method = auc_interval(block)
            ci = ci or [None, None]
            row.update({f"{which}_auc": block.get("auc"), f"{which}_auc_ci_low": ci[0],
                        f"{which}_auc_ci_high": ci[1], f"{which}_auc_ci_method": method,
                        f"{which}_p_vs_reference": p_values.get((which, model["name"]))})
        external = model.get("external_test") or {}
        for key in ("sensitivity", "specificity", "f1"):
            row[f"external_{key}"] = (external.get(key) or {}).get("value")
        rows.append(row)
    return rows


def show_study_results(scene, summary: dict[str, Any], table_node=None, roc_chart=None, name: str = "MVCF study"):
    """Comparison table + one ROC chart (external test when there is one, else internal) with every model;
    returns (table node, chart node or None)."""
    table = write_table(scene, study_rows(summary), STUDY_COLUMNS, f"{name} comparison", node=table_node)
    table.SetAttribute("MVCF.role", "study")
    chart = None
    predictions = Path(summary.get("out", "")) / "predictions.csv"
    if summary.get("out") and predictions.is_file():
        rows = read_predictions(predictions)
        models = [m["name"] for m in summary.get("models", [])]
        for which in ("external_test", "internal_test"):
            members = [r for r in rows if r["set"] == which]
            truth = [_truth(r) for r in members]
            if not members or not 0 < sum(truth) < len(truth):
                continue
            curves = [RocCurve.from_scores(m, truth, [float(r[m]) for r in members]) for m in models
                      if all(r.get(m) not in (None, "") for r in members)]
            if curves:
                chart = show_roc_curves(scene, curves, name=f"{name} ROC ({which.replace('_', ' ')})",
                                        chart=roc_chart)
                break
    return table, chart

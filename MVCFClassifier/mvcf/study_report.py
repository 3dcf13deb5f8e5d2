"""The study's honest statistics and its report (report.md + report.html): the comparison table, threshold
transfer to the external site, calibration of every model (or why it cannot be estimated), every pairwise
DeLong comparison, limitations and the plots.

Rules the report keeps: no confidence interval of zero width and no `nan` is printed without the reason
(a degenerate AUC interval is replaced by Newcombe's score interval, a calibration slope that cannot be
estimated says why), and post hoc numbers (the external site's own Youden point) are labelled as such.
"""
from __future__ import annotations

import html
import math
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mvcf.fileio import atomic_open

HEADER = ["model", "internal AUC (95% CI)", "p vs ref", "external AUC (95% CI)", "p vs ref", "ext. sens",
          "ext. spec", "train s", "infer ms/case", "parameters"]


def calibration_block(labels: Sequence[int], prob: Sequence[float]) -> dict[str, Any]:
    """Brier score, calibration slope and intercept with CIs; a field that cannot be estimated is None and
    `not_estimable` says why (one class, constant predictions, perfect separation)."""
    from mvcf.stats import calibration, default_n_bins

    y, p = np.asarray(labels, dtype=int), np.asarray(prob, dtype=float)
    if y.size == 0:
        return {"n": 0, "not_estimable": "no cases"}
    if not 0 < y.sum() < y.size:
        return {"n": int(y.size), "not_estimable": "one class only: calibration slope and intercept undefined"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibration(y, p, n_bins=default_n_bins(y.size))
    block: dict[str, Any] = {"n": int(y.size), "brier": _finite(cal["brier"])}
    for key in ("slope", "intercept"):
        value, ci = _finite(cal[key]), [_finite(v) for v in cal[f"{key}_ci"]]
        block[key] = value
        block[f"{key}_ci"] = ci if value is not None and None not in ci else None
    if block["slope"] is None or block["slope_ci"] is None:
        block["not_estimable"] = "; ".join(cal.get("notes") or []) or \
            "the logistic recalibration fit did not converge (near-perfect separation)"
    return block


def threshold_transfer(labels: Sequence[int], prob: Sequence[float], frozen: float) -> dict[str, Any]:
    """Sensitivity and specificity (Wilson CIs) at the frozen threshold and, post hoc, at the site's own
    Youden point (a threshold chosen on the very cases it is scored on: optimistic by construction)."""
    from mvcf.stats import metrics_at_threshold, youden_threshold

    y, p = np.asarray(labels, dtype=int), np.asarray(prob, dtype=float)
    if not 0 < y.sum() < y.size:
        return {"not_estimable": "one class only: sensitivity or specificity undefined"}

    def point(threshold: float) -> dict[str, Any]:
        m = metrics_at_threshold(y, p, threshold)
        return {"threshold": float(threshold),
                **{k: {"value": float(m[k]["value"]), "ci": [float(v) for v in m[k]["ci"]]}
                   for k in ("sensitivity", "specificity")}}

    return {"frozen": point(frozen), "site_youden_post_hoc": point(float(youden_threshold(y, p)))}


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _p(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _p_is(value: Optional[float]) -> str:
    text = _p(value)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def _fmt(block: dict[str, Any]) -> str:
    from mvcf.metrics import format_auc

    return format_auc(block)


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The comparison table: one row per model, p-values against the reference model (paired DeLong)."""
    ref = summary["design"]["reference"]
    p_of = {}
    for which in ("internal", "external"):
        for pair in summary[f"delong_{which}"]["pairs"]:
            if ref in (pair["a"], pair["b"]):
                other = pair["b"] if pair["a"] == ref else pair["a"]
                p_of[(which, other)] = "no test" if pair["p"] is None else _p(pair["p"])   # zero variance
    rows = []
    for m in summary["models"]:
        ext = m["external_test"]
        sens = ext.get("sensitivity", {}).get("value")
        spec = ext.get("specificity", {}).get("value")
        rows.append([m["name"] + (" (reference)" if m["name"] == ref else ""), _fmt(m["internal_test"]),
                     p_of.get(("internal", m["name"]), "n/a") if m["name"] != ref else "–", _fmt(ext),
                     p_of.get(("external", m["name"]), "n/a") if m["name"] != ref else "–",
                     "–" if sens is None else f"{sens:.2f}", "–" if spec is None else f"{spec:.2f}",
                     f"{m['train_seconds']:.0f}", f"{m['inference_ms_per_case']:.1f}", f"{m['parameters']:,}"])
    return rows


def _ci(block: dict[str, Any]) -> str:
    low, high = block["ci"]
    return f"{block['value']:.2f} ({low:.2f}–{high:.2f})"


TRANSFER_HEADER = ["model", "frozen threshold", "ext. sensitivity", "ext. specificity",
                   "site Youden threshold (post hoc)", "sensitivity (post hoc)", "specificity (post hoc)"]


def transfer_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in summary["models"]:
        t = m.get("threshold_transfer") or {}
        if "frozen" not in t:
            rows.append([m["name"], f"{m['threshold']:.3f}", t.get("not_estimable", "no external cases"),
                         "–", "–", "–", "–"])
            continue
        f, y = t["frozen"], t["site_youden_post_hoc"]
        rows.append([m["name"], f"{f['threshold']:.3f}", _ci(f["sensitivity"]), _ci(f["specificity"]),
                     f"{y['threshold']:.3f}", _ci(y["sensitivity"]), _ci(y["specificity"])])
    return rows


def _transfer_sentence(summary: dict[str, Any]) -> str:
    pairs = [(m["name"], m["threshold_transfer"]) for m in summary["models"]
             if "frozen" in (m.get("threshold_transfer") or {})]
    if not pairs:
        return "No threshold transfer can be judged: the external set lacks a class."
    sens = [t["frozen"]["sensitivity"]["value"] for _, t in pairs]
    spec = [t["frozen"]["specificity"]["value"] for _, t in pairs]
    gain = [t["site_youden_post_hoc"]["sensitivity"]["value"] + t["site_youden_post_hoc"]["specificity"]["value"]
            - t["frozen"]["sensitivity"]["value"] - t["frozen"]["specificity"]["value"] for _, t in pairs]
    worst = pairs[int(np.argmax(gain))][0]
    return (f"At the thresholds frozen on internal validation data, external sensitivity ranges "
            f"{min(sens):.2f}–{max(sens):.2f} and specificity {min(spec):.2f}–{max(spec):.2f}. The external "
            f"site's own Youden point would raise sensitivity + specificity by up to {max(gain):.2f} "
            f"({worst}); it is chosen on the very cases it is scored on (post hoc, optimistic), so it only "
            f"shows how far the frozen threshold moved with the domain shift: a site adopting a model "
            f"should re-derive its operating point on local validation cases, not on its test set.")


def _cal_cell(block: dict[str, Any]) -> str:
    if not block or block.get("n", 0) == 0:
        return "no cases"
    if "brier" not in block:
        return f"not estimable: {block['not_estimable']}"
    parts = [f"Brier {block['brier']:.3f}"]
    if block.get("slope") is not None and block.get("slope_ci") is not None:
        lo, hi = block["slope_ci"]
        parts.append(f"slope {block['slope']:.2f} ({lo:.2f}–{hi:.2f})")
    else:
        parts.append(f"slope not estimable ({block.get('not_estimable')})")
    if block.get("intercept") is not None and block.get("intercept_ci") is not None:
        lo, hi = block["intercept_ci"]
        parts.append(f"intercept {block['intercept']:.2f} ({lo:.2f}–{hi:.2f})")
    return ", ".join(parts)


CALIBRATION_HEADER = ["model", "internal (out-of-fold)", "external"]


def calibration_rows(summary: dict[str, Any]) -> list[list[str]]:
    return [[m["name"], _cal_cell(m.get("calibration", {}).get("internal", {})),
             _cal_cell(m.get("calibration", {}).get("external", {}))] for m in summary["models"]]


def auc_notes(summary: dict[str, Any]) -> list[str]:
    """One line per AUC whose usual interval is degenerate or missing, with the reason."""
    notes = []
    for m in summary["models"]:
        for which in ("internal_test", "external_test"):
            note = m[which].get("note")
            if note:
                notes.append(f"{m['name']}, {which.replace('_', ' ')}: {note}.")
    return notes


def limitations(summary: dict[str, Any]) -> list[str]:
    d = summary["design"]
    out = []
    if d.get("synthetic"):
        out.append("The cohort is synthetic (`mvcf synth`): real vertebra shapes, simulated lesions and "
                   "acquisition. The numbers show that the pipeline learns and is judged correctly, not how any "
                   "model would perform on patients.")
    out.append(f"One external site ({d['external_test_cases']} cases): a single shift, so the external AUC says "
               "little about other sites; its CI reflects case sampling only, not site-to-site variation.")
    if d.get("folds_trained", 0) < d.get("n_folds", 0):
        out.append(f"Internal results cover {d['internal_test_cases']} of the internal cases ({d['folds_trained']} "
                   f"of {d['n_folds']} folds trained): the internal estimate rests on part of the cohort.")
    else:
        out.append(f"Internal results are out-of-fold predictions of {d['n_folds']} fold models over all "
                   f"{d['internal_test_cases']} internal cases; pooled across folds, they ignore fold-to-fold "
                   "variation of the models themselves.")
    out.append("External predictions average the fold models (an ensemble) while each internal prediction comes "
               "from one fold model trained on fewer cases; the ensemble is usually a little better, which "
               "favours the external estimate in the internal-vs-external comparison.")
    out.append("Thresholds were frozen on internal validation data; sensitivity and specificity at the external "
               "site's own Youden point are post hoc and optimistic.")
    out.append("p-values are unadjusted paired DeLong tests against the reference (Holm-adjusted values in the "
               "pairwise list); the study was not powered for any particular difference.")
    cfg = d.get("config", {}).get("train", {})
    if cfg:
        out.append(f"Each CNN was trained from scratch for at most {cfg.get('epochs')} epochs "
                   f"({cfg.get('arch')}); longer training or other settings may rank the view modes differently.")
    return out


def _table_md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def design_text(summary: dict[str, Any]) -> str:
    d = summary["design"]
    if d["folds_trained"] >= d["n_folds"]:
        internal = (f"internal test = out-of-fold predictions of {d['n_folds']}-fold patient-level cross-validation "
                    f"over all {d['internal_test_cases']} internal cases")
    else:
        internal = (f"internal test = out-of-fold predictions over {d['folds_trained']} of {d['n_folds']} "
                    f"patient-level folds ({d['internal_test_cases']} cases)")
    run = "" if d.get("run_seconds") is None else f" Run time {d['run_seconds'] / 60:.1f} min" + (
        " (a resumed run: the time of this run only; models finished before were read back)." if d.get("resumed")
        else ".")
    return (f"{d['cases']} cases ({d['patients']} patients); {internal}; external test = institution "
            f"'{d['external_institution']}' ({d['external_test_cases']} cases), held out entirely, scored by each "
            f"model's fold ensemble (mean probability of the fold models). AUC CIs: DeLong (Newcombe's score "
            f"interval where DeLong is degenerate, with a note). p: paired DeLong test against the reference "
            f"({d['reference']}) on the same cases. Sensitivity/specificity at each model's threshold frozen from "
            f"validation data (Youden).{run}")


def write_report(out: Path, summary: dict[str, Any]) -> None:
    """report.md and report.html (same content; the plots beside them)."""
    from mvcf import RESEARCH_USE_DISCLAIMER

    intro = design_text(summary)
    rows, transfer, cal = comparison_rows(summary), transfer_rows(summary), calibration_rows(summary)
    notes, limits = auc_notes(summary), limitations(summary)
    pairs = []
    for which in ("internal", "external"):
        for pair in summary[f"delong_{which}"]["pairs"]:
            if pair["p"] is None:
                pairs.append(f"{which}: {pair['a']} vs {pair['b']}: ΔAUC {pair['diff']:+.3f}; no test (the "
                             f"difference has zero DeLong variance: both models rank every pair the same way)")
                continue
            pairs.append(f"{which}: {pair['a']} vs {pair['b']}: ΔAUC {pair['diff']:+.3f} "
                         f"(95% CI {pair['ci'][0]:+.3f} to {pair['ci'][1]:+.3f}), p {_p_is(pair['p'])}"
                         + (f" (Holm-adjusted {_p_is(pair['p_holm'])})" if "p_holm" in pair else ""))
    plots = summary.get("plots", [])
    transfer_text = _transfer_sentence(summary)
    md = ["# MVCF classifier study", "", f"_{RESEARCH_USE_DISCLAIMER}_", "", intro, ""]
    md += _table_md(HEADER, rows)
    if notes:
        md += [""] + [f"Note: {n}" for n in notes]
    md += ["", "## Threshold transfer to the external site", "", transfer_text, ""]
    md += _table_md(TRANSFER_HEADER, transfer)
    md += ["", "## Calibration", "", "Calibration slope and intercept by logistic recalibration (Wald 95% CIs); "
           "slope 1 and intercept 0 are perfect. Reliability diagrams: `calibration_internal.png`, "
           "`calibration_external.png` (every model).", ""]
    md += _table_md(CALIBRATION_HEADER, cal)
    md += ["", "## All pairwise comparisons (paired DeLong)", ""] + [f"- {p}" for p in pairs]
    md += ["", "## Limitations", ""] + [f"- {item}" for item in limits]
    md += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    with atomic_open(out / "report.md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(md) + "\n")
    items = lambda lines: "".join(f"<li>{html.escape(line)}</li>" for line in lines)  # noqa: E731
    images = "".join(f'<figure><img src="{html.escape(p)}" width="480"><figcaption>{html.escape(p)}'
                     f"</figcaption></figure>" for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>MVCF classifier study</title>"
            f"<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{border:1px solid #ccc;"
            f"padding:4px 8px}}table{{border-collapse:collapse}}figure{{display:inline-block}}</style></head><body>"
            f"<h1>MVCF classifier study</h1><p><em>{html.escape(RESEARCH_USE_DISCLAIMER)}</em></p>"
            f"<p>{html.escape(intro)}</p>{_table_html(HEADER, rows)}"
            + "".join(f"<p>Note: {html.escape(n)}</p>" for n in notes)
            + f"<h2>Threshold transfer to the external site</h2><p>{html.escape(transfer_text)}</p>"
            f"{_table_html(TRANSFER_HEADER, transfer)}<h2>Calibration</h2>{_table_html(CALIBRATION_HEADER, cal)}"
            f"<h2>All pairwise comparisons (paired DeLong)</h2><ul>{items(pairs)}</ul>"
            f"<h2>Limitations</h2><ul>{items(limits)}</ul><h2>Plots</h2>{images}</body></html>")
    with atomic_open(out / "report.html", "w", encoding="utf-8") as handle:
        handle.write(page)


def plot_calibration_models(path: Path, labels: np.ndarray, curves: dict[str, np.ndarray], title: str) -> Path:
    """Reliability curves of every model on one set (quantile bins), the diagonal, and per-model Brier."""
    from mvcf.stats import default_n_bins
    from mvcf.stats.plots import _figure, _save

    fig = _figure(6.0, 5.5)
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    n_bins = default_n_bins(labels.size)
    for name, p in curves.items():
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
        xs = [float(p[which == b].mean()) for b in range(len(edges) - 1) if np.any(which == b)]
        ys = [float(labels[which == b].mean()) for b in range(len(edges) - 1) if np.any(which == b)]
        brier = float(np.mean((p - labels) ** 2))
        ax.plot(xs, ys, "o-", label=f"{name} (Brier {brier:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability (quantile bins)")
    ax.set_ylabel("observed fraction MVCF")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)

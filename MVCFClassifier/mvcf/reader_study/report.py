"""The reader-study report: ORH analysis of unaided vs aided reading (all readers and each reader group),
the model vs the readers, per-reader ROC curves and the paper-style table, as report.md, report.html and
report.json. Every statistic comes from mvcf.stats (Obuchowski–Rockette with Hillis df): the same numbers
`mvcf stats mrmc` prints for the same readings.
"""
from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.errors import MVCFError
from mvcf.progress import dumps

REPORT_FILES = ("report.md", "report.html", "report.json", "roc_readers.png")
#: The model's operating point when its scores come without their frozen threshold (probabilities only).
DEFAULT_THRESHOLD = 0.5


def _reader_operating_points(frame, positive_at: float) -> dict:
    """{modality: {reader: {sensitivity, specificity}}} for calling 'malignant' at rating >= positive_at."""
    from mvcf.stats import binary_metrics

    out: dict = {}
    for (modality, reader), part in frame.groupby(["modality", "reader"], sort=True):
        metrics = binary_metrics(part["truth"].astype(int).to_numpy(), (part["rating"] >= positive_at).to_numpy())
        out.setdefault(str(modality), {})[str(reader)] = {"sensitivity": metrics["sensitivity"]["value"],
                                                          "specificity": metrics["specificity"]["value"]}
    return out


def _analyse(frame, unaided: Optional[str], aided: Optional[str], alpha: float) -> dict:
    from mvcf import stats

    if unaided is not None and aided is not None:
        return stats.unaided_vs_aided(frame, unaided=unaided, aided=aided, alpha=alpha)
    return stats.mrmc(frame, alpha=alpha)


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _p(value: Any) -> str:
    return "< 0.0001" if isinstance(value, float) and 0 <= value < 1e-4 else _fmt(value, ".4f")


def _p_eq(value: Any) -> str:
    """'= 0.0517' or '< 0.0001', to follow a 'p'."""
    text = _p(value)
    return text if text.startswith("<") else f"= {text}"


def _ci(ci: Any) -> str:
    return "n/a" if ci is None else f"{_fmt(ci[0])} to {_fmt(ci[1])}"


def _single(analysis: dict, modality: str) -> Optional[dict]:
    for entry in analysis["rrrc"]["modalities"]:
        if str(entry["modality"]) == str(modality):
            return entry
    return None


def build_report(readings, out_dir, plan: Optional[dict] = None, model=None, unaided: Optional[str] = "unaided",
                 aided: Optional[str] = "aided", positive_at: Optional[float] = None, alpha: float = 0.05,
                 title: str = "Reader study") -> dict:
    """Analyse `readings` (long format; a `group` column or the plan's groups name reader groups) and write
    the report files into `out_dir` (atomically). Returns the report.json content."""
    from mvcf import stats
    from mvcf.fileio import atomic_files
    from mvcf.reader_study.figures import plot_reader_rocs
    from mvcf.reader_study.scale import Scale

    frame = readings.copy()
    present = sorted(frame["modality"].astype(str).unique())
    frame["modality"] = frame["modality"].astype(str)
    if unaided is not None and aided is not None and not {str(unaided), str(aided)} <= set(present):
        if len(present) == 1:
            unaided = aided = None
        else:
            raise MVCFError(f"modalities {unaided!r} and {aided!r} are not both in the readings ({', '.join(present)})")
    unaided = None if unaided is None else str(unaided)
    aided = None if aided is None else str(aided)
    modalities = [m for m in (unaided, aided) if m is not None] or present
    scale = Scale.from_dict(plan["scale"]) if plan and plan.get("scale") else None
    if positive_at is None:
        positive_at = scale.positive_at if scale is not None else 4.0
    groups: dict[str, list[str]] = {}
    if plan and plan.get("groups"):
        groups = {g: [str(m) for m in members] for g, members in plan["groups"].items()}
    elif "group" in frame.columns:
        labelled = frame.dropna(subset=["group"])
        labelled = labelled[labelled["group"].astype(str) != ""]
        groups = {str(g): sorted(part["reader"].astype(str).unique()) for g, part in labelled.groupby("group")}

    present_readers = set(frame["reader"].astype(str))
    for group, members in groups.items():
        unknown = [m for m in members if m not in present_readers]
        if unknown:
            raise MVCFError(f"group {group} names reader(s) not in the readings: {', '.join(unknown)}")
    overall = _analyse(frame, unaided, aided, alpha)
    _check_positive_at(frame["rating"].to_numpy(float), positive_at, scale)
    operating = _reader_operating_points(frame, positive_at)
    sections = {"all readers": {"readers": sorted(map(str, frame["reader"].unique())), "analysis": overall}}
    for group, members in groups.items():
        part = frame[frame["reader"].astype(str).isin(members)]
        entry: dict = {"readers": members}
        if len(members) >= 2:
            entry["analysis"] = _analyse(part, unaided, aided, alpha)
        else:
            entry["note"] = "one reader: no between-reader variance, no ORH test"
        sections[group] = entry

    model_section = None
    if model is not None:
        model = _model_table(model)
        truth = frame.drop_duplicates("case").set_index("case")["truth"]
        scores = model.assign(truth=model["case"].map(truth))
        if scores["truth"].isna().any():
            raise MVCFError("model scores name cases that are not in the readings")
        ci = stats.delong_ci(scores["truth"].astype(int).to_numpy(), scores["score"].to_numpy(float), alpha=alpha)
        if "threshold" in scores:
            threshold = float(scores["threshold"].iloc[0])   # one value on every row (_model_table)
        else:
            threshold = DEFAULT_THRESHOLD
            logging.getLogger("mvcf.reader_study").warning(
                f"model scores CSV has no 'threshold' column: the model's sensitivity and specificity are at "
                f"{DEFAULT_THRESHOLD:g}, not at its frozen threshold")
        point = stats.metrics_at_threshold(scores["truth"].astype(int).to_numpy(), scores["score"].to_numpy(float),
                                           threshold, alpha=alpha)
        model_section = {"auc": ci["auc"], **_interval_fields(ci["auc"], ci["ci"], ci["n_pos"], ci["n_neg"], alpha,
                                                              "delong", "the DeLong interval"),
                         "threshold": threshold,
                         "sensitivity": point["sensitivity"]["value"], "specificity": point["specificity"]["value"],
                         "vs_readers": {m: stats.model_vs_readers(frame, model[["case", "score"]], modality=m,
                                                                  alpha=alpha) for m in modalities}}

    reading_time = {}
    if "reading_time_s" in frame.columns and frame["reading_time_s"].notna().any():
        frame["reading_time_s"] = _seconds(frame["reading_time_s"])
        for modality in modalities:
            seconds = frame.loc[frame["modality"] == modality, "reading_time_s"].dropna().to_numpy(float)
            if seconds.size:
                q1, median, q3 = np.percentile(seconds, [25, 50, 75])
                reading_time[modality] = {"median_s": float(median), "q1_s": float(q1), "q3_s": float(q3),
                                          "n": int(seconds.size)}

    table = []
    for name, section in sections.items():
        readers = section["readers"]
        for modality in modalities:
            points = [operating.get(modality, {}).get(r) for r in readers]
            points = [p for p in points if p]
            row = {"readers": name, "n": len(readers), "modality": modality,
                   "sensitivity": float(np.mean([p["sensitivity"] for p in points])),
                   "specificity": float(np.mean([p["specificity"] for p in points]))}
            if "analysis" in section:
                single, analysis = _single(section["analysis"], modality), section["analysis"]
                row.update(auc=single["auc"], **_interval_fields(
                    single["auc"], single["ci"], analysis["n_pos"], analysis["n_cases"] - analysis["n_pos"], alpha,
                    "orh", "the Obuchowski-Rockette interval (every reader's AUC the same)"))
            else:
                row.update(auc=section_auc(frame, readers, modality), ci=None)
            if "analysis" in section and len(modalities) == 2 and modality == modalities[-1]:
                rrrc = section["analysis"]["rrrc"]
                row.update(diff=rrrc["diff"], diff_ci=rrrc["ci"], F=rrrc["F"], df1=rrrc["df1"], df2=rrrc["df2"],
                           p=rrrc["p"])
            table.append(row)
    payload = {"title": title, "alpha": alpha, "positive_at": positive_at, "modalities": modalities,
               "unaided": unaided, "aided": aided, "groups": groups, "sections": sections,
               "operating_points": operating, "model": model_section, "table": table, "reading_time": reading_time,
               "study_id": plan.get("study_id") if plan else None, "disclaimer": RESEARCH_USE_DISCLAIMER}
    out_dir = Path(out_dir)
    with atomic_files(out_dir, list(REPORT_FILES), mark=True) as tmp:
        plot_reader_rocs(tmp / "roc_readers.png", frame, modalities, model, title=title)
        markdown = render_markdown(payload)
        (tmp / "report.md").write_text(markdown, encoding="utf-8")
        (tmp / "report.html").write_text(render_html(payload), encoding="utf-8")
        (tmp / "report.json").write_text(dumps(payload, indent=1), encoding="utf-8")
    return payload


def _interval_fields(auc: float, ci: Any, n_pos: int, n_neg: int, alpha: float, method: str, what: str) -> dict:
    """A table row's CI and how it was made: `method`'s own, or Newcombe's score interval where that one
    collapses to a point (stats.point_interval_fallback), with the reason, so no row shows a zero-width CI."""
    from mvcf import stats

    fallback = stats.point_interval_fallback(auc, ci, n_pos, n_neg, alpha=alpha)
    if fallback is None:
        return {"ci": list(ci), "ci_method": method}
    return {"ci": list(fallback[0]), "ci_method": "newcombe",
            "note": f"{fallback[1]}: {what} collapses to a point; Newcombe's score interval given instead"}


def _check_positive_at(ratings: np.ndarray, positive_at: float, scale: Any = None) -> None:
    """Ratings on the plan's scale, and a reader's call that splits that scale (the ratings' range without a
    plan): at NaN, infinity or past every rating each reader called every case the same, and sensitivity 0 /
    specificity 1 would be reported as a finding."""
    low, high = (float(ratings.min()), float(ratings.max())) if scale is None else scale.bounds
    if scale is not None and not np.all((ratings >= low) & (ratings <= high)):
        odd = ratings[(ratings < low) | (ratings > high)]
        raise MVCFError(f"the readings hold {odd.size} rating(s) outside the plan's {scale.primary} scale "
                        f"{low:g}-{high:g} (first: {odd[0]:g}); were they edited or taken from another study?")
    if not math.isfinite(positive_at) or not low < positive_at <= high:
        what = f"the plan's {scale.primary} scale" if scale is not None else "the ratings"
        raise MVCFError(f"--positive-at {positive_at:g} does not split {what} ({low:g} to {high:g}): every "
                        "reader's call would be the same for every case; give a rating on the study's scale")


def _model_table(model):
    """The model scores table with its columns checked: case, a finite score, and a finite threshold if any."""
    from mvcf.stats._validate import numeric_column

    missing = [c for c in ("case", "score") if c not in model.columns]
    if missing:
        raise MVCFError(f"model scores CSV is missing column(s): {', '.join(missing)}")
    model = model.assign(score=numeric_column(model, "score", "model scores column"))
    if "threshold" in model.columns:
        model = model.assign(threshold=numeric_column(model, "threshold", "model scores column"))
        values = model["threshold"].unique()
        if len(values) > 1:   # the first row's was taken: the model's calls depended on the row order
            raise MVCFError(f"model scores column 'threshold' holds {len(values)} different values ({values[0]:g}, "
                            f"{values[1]:g}, ...): a model has one frozen threshold; give it on every row")
    elif len(model) and not model["score"].between(0.0, 1.0).all():
        raise MVCFError("model scores CSV has no 'threshold' column and its scores are not probabilities "
                        f"({model['score'].min():g} to {model['score'].max():g}): add the model's frozen threshold")
    return model


def _seconds(values):
    """Reading times as numbers; an empty cell is no time, a word or an infinity is refused with its row."""
    import pandas as pd

    seconds = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(values.notna().to_numpy() & ~np.isfinite(seconds.to_numpy(float)))
    if bad.size:
        raise MVCFError(f"readings column 'reading_time_s' must be seconds: row {int(bad[0]) + 2} holds "
                        f"{str(values.iloc[int(bad[0])])[:40]!r}")
    return seconds


def section_auc(frame, readers, modality) -> float:
    from mvcf.stats import auc

    values = []
    for reader in readers:
        part = frame[(frame["reader"].astype(str) == reader) & (frame["modality"] == modality)]
        values.append(auc(part["truth"].astype(int).to_numpy(), part["rating"].to_numpy(float)))
    return float(np.mean(values))


def _round_name(modality: str, payload: dict) -> str:
    """'aided', or '1 (aided)' when the readings label their rounds otherwise."""
    role = "unaided" if modality == payload.get("unaided") else "aided" if modality == payload.get("aided") else ""
    return modality if not role or role == modality else f"{modality} ({role})"


def table_rows(payload: dict) -> list[list[str]]:
    """The paper-style table as text cells (header first)."""
    rows = [["Readers", "n", "Round", "AUC (95% CI)", "Sensitivity", "Specificity", "Δ AUC (95% CI)",
             "F (df)", "p"]]
    model = payload.get("model")
    if model:
        source = ", Newcombe" if model.get("ci_method") == "newcombe" else ""
        rows.append(["Model alone", "–", "–", f"{_fmt(model['auc'])} ({_ci(model['ci'])}{source})",
                     _fmt(model["sensitivity"]), _fmt(model["specificity"]), "", "", ""])
    for row in payload["table"]:
        ci = f" ({_ci(row['ci'])}{', Newcombe' if row.get('ci_method') == 'newcombe' else ''})" \
            if row.get("ci") else ""
        f_df = (f"{_fmt(row['F'], '.2f')} ({row['df1']}, {_fmt(row['df2'], '.2f')})" if "F" in row else "")
        rows.append([row["readers"], str(row["n"]), _round_name(row["modality"], payload), f"{_fmt(row['auc'])}{ci}",
                     _fmt(row["sensitivity"]), _fmt(row["specificity"]),
                     f"{_fmt(row['diff'], '+.3f')} ({_ci(row['diff_ci'])})" if "diff" in row else "",
                     f_df, _p(row["p"]) if "p" in row else ""])
    return rows


def _analysis_lines(name: str, analysis: dict, payload: dict) -> list[str]:
    rrrc = analysis["rrrc"]
    lines = [f"**{name}** ({analysis['n_readers']} readers, {analysis['n_cases']} cases, "
             f"{analysis['n_pos']} MVCF): reader AUCs"]
    for modality in payload["modalities"]:
        readers = analysis["reader_auc"][modality]
        lines.append(f"- {modality}: " + ", ".join(f"{r} {_fmt(a)}" for r, a in readers.items())
                     + f" (mean {_fmt(analysis['mean_auc'][modality])})")
    if "F" in rrrc:
        lines.append(f"- ORH random readers and cases: F = {_fmt(rrrc['F'], '.3f')} on ({rrrc['df1']}, "
                     f"{_fmt(rrrc['df2'], '.2f')}) df, p {_p_eq(rrrc['p'])}; "
                     f"{payload['aided']} − {payload['unaided']} = {_fmt(rrrc['diff'], '+.4f')} "
                     f"(95% CI {_ci(rrrc['ci'])})")
        frrc = analysis["frrc"]
        lines.append(f"- fixed readers, random cases: χ² = {_fmt(frrc.get('chisq'), '.3f')} on {frrc['df1']} df, "
                     f"p {_p_eq(frrc['p'])}")
    return lines


def _model_lines(payload: dict) -> list[str]:
    lines = []
    for modality, mv in payload["model"]["vs_readers"].items():
        r = mv["rrrc"]
        lines.append(f"{modality}: mean reader AUC {_fmt(mv['mean_reader_auc'])} − model AUC "
                     f"{_fmt(mv['model_auc'])} = {_fmt(r['diff'], '+.4f')} (95% CI {_ci(r['ci'])}), "
                     f"df {_fmt(r['df'], '.2f')}, p {_p_eq(r['p'])}")
    return lines


def render_markdown(payload: dict) -> str:
    rows = table_rows(payload)
    out = [f"# {payload['title']}", "", f"> {payload['disclaimer']}", ""]
    if payload.get("study_id"):
        out += [f"Study {payload['study_id']}. Reader calls: malignant at rating ≥ {_fmt(payload['positive_at'], 'g')}.", ""]
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]   # a '|' in a group name split the row
    out += ["## Summary table", "", "| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    out += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    out += ["", "AUCs are empirical (trapezoidal), reader-averaged; CIs and tests: Obuchowski–Rockette with "
            "Hillis degrees of freedom, random readers and random cases (jackknife covariances). The model row "
            "has a DeLong CI and the sensitivity/specificity at its frozen threshold. Where an interval "
            "collapses to a point (every reader, or the model, separating the cases perfectly) Newcombe's "
            "score interval is given instead, marked so.", "",
            "## Analyses", ""]
    for name, section in payload["sections"].items():
        out += (_analysis_lines(name, section["analysis"], payload) if "analysis" in section
                else [f"**{name}** ({', '.join(section['readers'])}): {section['note']}"]) + [""]
    if payload.get("model"):
        out += ["## Model vs readers", ""] + [f"- {line}" for line in _model_lines(payload)] + [""]
    if payload.get("reading_time"):
        out += ["## Reading time", ""]
        out += [f"- {m}: median {_fmt(t['median_s'], '.0f')} s (IQR {_fmt(t['q1_s'], '.0f')}–{_fmt(t['q3_s'], '.0f')} s), "
                f"{t['n']} readings" for m, t in payload["reading_time"].items()] + [""]
    out += ["## Per-reader ROC curves", "", "![per-reader ROC curves](roc_readers.png)", ""]
    return "\n".join(out)


def render_html(payload: dict) -> str:
    rows = table_rows(payload)
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    sections = []
    for name, section in payload["sections"].items():
        lines = (_analysis_lines(name, section["analysis"], payload) if "analysis" in section
                 else [f"{name}: {section['note']}"])
        sections.append("<p>" + "<br>".join(esc(l.replace("**", "")) for l in lines) + "</p>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + esc(payload["title"]) + "</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.note{background:#fff3cd;padding:.6em}"
            "</style></head><body>"
            f"<h1>{esc(payload['title'])}</h1><p class='note'>{esc(payload['disclaimer'])}</p>"
            f"<h2>Summary table</h2><table><tr>{head}</tr>{body}</table>"
            "<h2>Analyses</h2>" + "".join(sections) +
            ("<h2>Model vs readers</h2><p>" + "<br>".join(esc(l) for l in _model_lines(payload)) + "</p>"
             if payload.get("model") else "") +
            "<h2>Per-reader ROC curves</h2><img src='roc_readers.png' alt='per-reader ROC curves' style='max-width:100%'>"
            "</body></html>")

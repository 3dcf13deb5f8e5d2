"""The archive-level index of a `mvcf screen --manifest` run: one row per manifest case (screened, failed or
not yet screened), the cases a reader should open first at the top (the exam-level flag that cleared
products such as Nanox HealthVCF give, plus what only this product adds: whether a collapse looks malignant).

Built from what is on disk (each case's screen.json, errors/<case_id>.txt), not from one process's memory,
so every shard and every rerun rewrites the same complete index: `write_index(out_dir, case_ids)`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mvcf.screen import JSON_NAME, OVERVIEW_NAME, collapsed_levels, exam_density, flagged_levels, table_tsv

INDEX_TSV = "screen_index.tsv"
INDEX_JSON = "screen_index.json"
INDEX_HTML = "screen_index.html"
INDEX_NAMES = (INDEX_TSV, INDEX_JSON, INDEX_HTML)
#: where a failed case's error goes (retried by the next run)
ERRORS_FOLDER = "errors"
#: what `--manifest` writes into --out besides the case folders, so no case_id may take these names (in any
#: letter case: archives live on shares whose file systems ignore it)
RESERVED_NAMES = (ERRORS_FOLDER, *INDEX_NAMES)


def error_file(case_id: str) -> str:
    """A failed case's error file, relative to --out."""
    return f"{ERRORS_FOLDER}/{case_id}.txt"

#: Why a case is read first: the order of the index (a smaller number first).
PRIORITIES = {1: "flagged: a collapsed vertebra at or above the model's threshold",
              2: "collapsed (Genant grade >= 1), none flagged",
              3: "no collapse; bone density says osteoporosis likely",
              4: "none of these"}

#: Index columns and what they hold (written into screen_index.json for whoever reads the TSV).
INDEX_COLUMNS = {
    "case_id": "the manifest's case_id (its folder in --out)",
    "status": "screened | failed (see error; retried by the next run) | pending (not screened yet: another "
              "shard's case, or a run that was stopped)",
    "priority": "; ".join(f"{k} {v}" for k, v in PRIORITIES.items()) + "; empty unless screened",
    "flagged": "levels graded >= 1 with P(MVCF) >= the model's threshold",
    "collapsed": "levels with Genant grade >= 1",
    "worst_grade": "the highest Genant grade of the case",
    "max_probability_collapsed": "the highest P(MVCF) among the collapsed levels (research use only)",
    "density_level": "where the exam's bone density is read: L1, else L2, T12, L3, T11, L4",
    "trabecular_hu": "trabecular HU at that level",
    "density": "osteoporosis likely | low density | normal density (Pickhardt 2013 L1 thresholds)",
    "osteoporosis_flag": "trabecular HU <= 110 at that level",
    "vertebrae": "rows of the case's table (measured or not)",
    "measured": "vertebrae measured (not partial, missing or empty)",
    "contrast_phase": "the CT's contrast phase when known (enhanced phases raise trabecular HU)",
    "model": "the model that screened it: name, version, first 12 hex digits of its weights' sha256",
    "stale": "why a screened case no longer matches the manifest or the last run (its CT or segmentation changed, "
             "another model, other numbering or contrast phase): kept as it is; delete its folder to screen it again",
    "overview": "the case's whole-spine overview picture, relative to --out (when it has one)",
    "error": "why the case failed (first line)",
    "error_file": "the failed case's error file, relative to --out (the next run retries the case)",
}
TSV_COLUMNS = tuple(INDEX_COLUMNS)


def finished_result(path: Union[str, Path]) -> Optional[dict[str, Any]]:
    """A case's screen.json payload when it is one (a JSON object whose `vertebrae` is a list of objects),
    else None: a missing, truncated or foreign file means the case is not finished and is screened again."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("vertebrae"), list) \
            or not all(isinstance(r, dict) and "level" in r for r in payload["vertebrae"]) \
            or not isinstance(payload.get("model") or {}, dict):
        return None
    return payload


def case_row(case_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The index row of one screened case, from its screen.json payload (mvcf.screen.ScreenResult.to_dict)."""
    rows = payload.get("vertebrae") or []
    collapsed, flagged = collapsed_levels(rows), flagged_levels(rows)
    grades = [r["genant_grade"] for r in rows if r.get("genant_grade") is not None]
    probabilities = [r["probability_malignant"] for r in rows
                     if r["level"] in collapsed and r.get("probability_malignant") is not None]
    density = exam_density(rows)
    osteoporosis = bool(density and density.get("osteoporosis_flag"))
    model = payload.get("model") or {}
    return {"case_id": case_id, "status": "screened",
            "priority": 1 if flagged else 2 if collapsed else 3 if osteoporosis else 4,
            "flagged": flagged, "collapsed": collapsed, "worst_grade": max(grades) if grades else None,
            "max_probability_collapsed": round(max(probabilities), 4) if probabilities else None,
            "density_level": density["level"] if density else None,
            "trabecular_hu": density["trabecular_hu"] if density else None,
            "density": density.get("density") if density else None,
            "osteoporosis_flag": osteoporosis if density else None,
            "vertebrae": len(rows), "measured": sum(r.get("status") == "measured" for r in rows),
            "contrast_phase": payload.get("contrast_phase"),
            "model": " ".join(v for v in (model.get("name"), model.get("version"), (model.get("sha256") or "")[:12])
                              if v),
            "warnings": list(payload.get("warnings") or []), "error": None, "error_file": None}


def _unscreened(case_id: str, status: str, error: Optional[str] = None) -> dict[str, Any]:
    return {**{name: None for name in INDEX_COLUMNS}, "case_id": case_id, "status": status, "flagged": [],
            "collapsed": [], "warnings": [], "error": error}


def index_rows(out_dir: Union[str, Path], case_ids: Sequence[str],
               stale: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """Every case of the manifest as it stands in `out_dir`, sorted: screened by priority (flagged ones with
    the higher P(MVCF) of a collapse first, collapsed ones with the worse grade first), then failed, then
    pending. `stale`: {case_id: why} for screened cases kept though they no longer match."""
    out = Path(out_dir)
    stale = stale or {}
    rows = []
    for case_id in case_ids:
        result, error = out / case_id / JSON_NAME, out / error_file(case_id)
        payload = finished_result(result)
        if payload is not None:
            picture = out / case_id / OVERVIEW_NAME
            rows.append(case_row(case_id, payload)
                        | {"overview": f"{case_id}/{OVERVIEW_NAME}" if picture.is_file() else None,
                           "stale": stale.get(case_id)})
        elif result.is_file():
            rows.append(_unscreened(case_id, "failed", f"its {JSON_NAME} is not a screen result (damaged?); "
                                                       f"the next run screens the case again"))
        elif error.is_file():
            text = error.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            rows.append(_unscreened(case_id, "failed", text[0] if text else "failed")
                        | {"error_file": error_file(case_id)})
        else:
            rows.append(_unscreened(case_id, "pending"))
    order = {"screened": 0, "failed": 1, "pending": 2}
    def key(r: dict[str, Any]) -> tuple:
        p, grade = r["max_probability_collapsed"] or 0.0, r["worst_grade"] or 0
        return (order[r["status"]], r["priority"] or 9, *((-grade, -p) if r["priority"] == 2 else (-p, -grade)))
    return sorted(rows, key=key)


def index_tsv(rows: Sequence[dict[str, Any]]) -> str:
    return table_tsv(rows, TSV_COLUMNS)


#: row colours of the HTML index, by priority (screened) or status
_SHADES = {1: "#f8d0cc", 2: "#fde3c2", 3: "#fdf3c4", 4: "#ffffff", "failed": "#dddddd", "pending": "#f2f2f2"}


def index_html(rows: Sequence[dict[str, Any]], summary: dict[str, int]) -> str:
    """The index as a page to look through: one row per case in the index's order, its overview picture
    beside it (loaded lazily, so an archive of thousands of cases still opens), the disclaimer on top."""
    from html import escape
    from urllib.parse import quote

    from mvcf import RESEARCH_USE_DISCLAIMER

    def cell(value: Any) -> str:
        return escape(", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value))

    body = []
    for n, r in enumerate(rows, start=1):
        shade = _SHADES[r["priority"]] if r["status"] == "screened" else _SHADES[r["status"]]
        density = "" if r.get("density_level") is None else \
            f"{r['density_level']} {r['trabecular_hu']:.0f} HU, {r['density']}"
        p = "" if r.get("max_probability_collapsed") is None else f"{r['max_probability_collapsed']:.3f}"
        why = PRIORITIES[r["priority"]] if r["status"] == "screened" else r["status"]
        picture = ""
        if r.get("overview"):
            src = quote(r["overview"])
            picture = f'<a href="{src}"><img src="{src}" loading="lazy" alt="overview of {cell(r["case_id"])}"></a>'
        name = cell(r["case_id"])   # linked to its folder, a failed case to its error file
        if r["status"] == "screened":
            name = f'<a href="{quote(r["case_id"])}/">{name}</a>'
            if r.get("stale"):
                name += f'<br><span class="stale">kept from an earlier run: {cell(r["stale"])}</span>'
        elif r["status"] == "failed" and r.get("error_file"):
            name = f'<a href="{quote(r["error_file"])}">{name}</a>'
        body.append(f'<tr style="background:{shade}"><td>{n}</td><td>{name}</td><td>{escape(why)}</td>'
                    f'<td>{cell(r["flagged"])}</td>'
                    f'<td>{cell(r["collapsed"])}</td><td>{cell(r.get("worst_grade"))}</td><td>{p}</td>'
                    f'<td>{escape(density)}</td><td>{picture}</td><td>{cell(r.get("error"))}</td></tr>')
    tally = (f"{summary['cases']} cases: {summary['flagged']} flagged, {summary['collapsed']} with a collapse, "
             f"{summary['osteoporosis_likely']} osteoporosis likely; {summary['failed']} failed, "
             f"{summary['pending']} not screened yet"
             + (f"; {summary['stale']} kept from an earlier run though they no longer match it (marked)"
                if summary.get("stale") else ""))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mvcf screen: archive index"
            "</title><style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left}"
            "img{height:180px}.disclaimer{font-weight:bold;color:#a00}.stale{color:#a00;font-size:90%}"
            "</style></head><body>"
            f"<h1>Archive screen</h1><p class=\"disclaimer\">{escape(RESEARCH_USE_DISCLAIMER)}</p>"
            f"<p>{escape(tally)}. The cases to read first are at the top.</p><table><thead><tr><th>#</th>"
            "<th>case</th><th>why here</th><th>flagged</th><th>collapsed</th><th>worst grade</th>"
            "<th>highest P(MVCF) of a collapse</th><th>bone density</th><th>overview</th><th>error</th></tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></body></html>\n")


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many cases are screened, flagged, collapsed (flagged included), failed and pending."""
    return {"cases": len(rows), "screened": sum(r["status"] == "screened" for r in rows),
            "flagged": sum(bool(r["flagged"]) for r in rows), "collapsed": sum(bool(r["collapsed"]) for r in rows),
            "osteoporosis_likely": sum(bool(r.get("osteoporosis_flag")) for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "pending": sum(r["status"] == "pending" for r in rows),
            "stale": sum(bool(r.get("stale")) for r in rows)}


def write_index(out_dir: Union[str, Path], case_ids: Sequence[str],
                stale: Optional[dict[str, str]] = None) -> tuple[tuple[Path, Path, Path], dict[str, int]]:
    """screen_index.tsv, .json and .html in `out_dir` (all or none), and the counts; `stale` as index_rows."""
    from mvcf import RESEARCH_USE_DISCLAIMER
    from mvcf.fileio import atomic_files, one_at_a_time
    from mvcf.outputs_guard import INDEX_LOCK
    from mvcf.progress import dumps

    out = Path(out_dir)
    # two shards ending together: the later one reads the cases only after the earlier one's index is in
    # place, so it never writes back rows it read before the other placed its cases
    with one_at_a_time(out / INDEX_LOCK):
        rows = index_rows(out, case_ids, stale)
        summary = counts(rows)
        with atomic_files(out, list(INDEX_NAMES), mark=True) as tmp:
            (tmp / INDEX_TSV).write_text(index_tsv(rows), encoding="utf-8")
            (tmp / INDEX_JSON).write_text(dumps({"counts": summary, "cases": rows, "columns": INDEX_COLUMNS,
                                                 "disclaimer": RESEARCH_USE_DISCLAIMER}, indent=2),
                                          encoding="utf-8")
            (tmp / INDEX_HTML).write_text(index_html(rows, summary), encoding="utf-8")
    return tuple(out / name for name in INDEX_NAMES), summary

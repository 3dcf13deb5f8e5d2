"""The case report: report.html (Jinja2 template), report.pdf (WeasyPrint) and report.json in one folder,
with the key images beside them as PNG.

`case_context` turns per-vertebra results (the dicts `mvcf predict` emits; `level`, `height_*_mm`,
`genant_grade` and `trabecular_hu` rows appear when present) into what the template shows; `write_report`
renders and writes it. `mvcf demo` fills the same template with its own figures and tables.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Optional, Sequence

from mvcf import RESEARCH_USE_DISCLAIMER, __version__
from mvcf.errors import MVCFError
from mvcf.progress import dumps

TEMPLATE = "report.html.j2"
EXTRA_HINT = "pip install 'mvcf[report]'"
#: Shown under every probability.
DISCLAIMER_SHORT = "Research use only; the demo model's weights were trained on synthetic data."
MEASUREMENT_ROWS = (("height_anterior_mm", "Anterior body height", "{:.1f} mm"),
                    ("height_middle_mm", "Middle body height", "{:.1f} mm"),
                    ("height_posterior_mm", "Posterior body height", "{:.1f} mm"),
                    ("genant_grade", "Genant grade", "{}"),
                    ("trabecular_hu", "Trabecular attenuation (mean)", "{:.0f} HU"))


def measurement_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """Label/value rows for the measurements a result carries (known ones first, other height_*_mm after)."""
    known = {key for key, _, _ in MEASUREMENT_ROWS}
    rows = [{"label": label, "value": fmt.format(result[key])} for key, label, fmt in MEASUREMENT_ROWS
            if result.get(key) is not None]
    for key in sorted(result):
        if key.startswith("height_") and key.endswith("_mm") and key not in known and result[key] is not None:
            rows.append({"label": key[len("height_"):-len("_mm")].replace("_", " ") + " height",
                         "value": f"{float(result[key]):.1f} mm"})
    return rows


def model_summary(card: dict[str, Any], digits: int = 3) -> dict[str, str]:
    """Name, version, sha256, what it was trained on, validation AUC with CI (from the bundle's card)."""
    validation = (card.get("validation_metrics") or {}).get("validation") or {}
    from mvcf.metrics import auc_interval

    auc, (ci, method) = validation.get("auc"), auc_interval(validation)
    method = "Newcombe, DeLong degenerate" if method == "Newcombe" else "DeLong"
    data = card.get("training_data") or {}
    if card.get("trained_on_synthetic_data"):
        cohort = card.get("training_cohort") or {}
        trained_on = (f"synthetic data only ({cohort.get('generator', 'mvcf.synth')}, {cohort.get('cases', '?')} "
                      f"cases, seed {cohort.get('seed', '?')}): a software demonstration, no patient data")
    else:
        trained_on = f"{data.get('cases', '?')} cases of {data.get('patients', '?')} patients"
    return {"name": card.get("name", "?"), "version": card.get("version", "?"),
            "sha256": (card.get("weights") or {}).get("sha256", card.get("sha256", "?")),
            "trained_on": trained_on,
            "validation_auc": "n/a" if auc is None else
            f"{auc:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {method}; n = {validation.get('n', '?')})" if ci else ""),
            "threshold": f"{card.get('threshold', float('nan')):.{digits}f} ({card.get('threshold_method', 'frozen')})",
            "intended_use": card.get("intended_use", "Research use only.")}


def source_rows(identity: Optional[dict[str, Any]], ct_path: str) -> list[dict[str, str]]:
    """What the report says about the CT: the file, or the DICOM series; the patient's identifiers only
    when they were asked for, and in either case a line saying which it did."""
    if not identity:
        return [{"label": "CT", "value": ct_path}, {"label": "Patient identifiers",
                "value": "none (the input is not DICOM)"}]
    rows = [{"label": "Study Instance UID", "value": identity["study_instance_uid"] or "(blank)"},
            {"label": "Series Instance UID", "value": identity["series_instance_uid"] or "(blank)"},
            {"label": "Series", "value": f"{identity['modality']} {identity['series_description']} "
                                         f"({identity['instances']} images, {identity['manufacturer']})"}]
    if identity.get("identifiers_included"):
        rows += [{"label": label.capitalize(), "value": value} for label, value in identity["identifiers"].items()]
        rows.append({"label": "Patient identifiers", "value": "included (--include-identifiers)"})
    else:
        rows.append({"label": "Patient identifiers", "value": "left out (name, ID, birth date, accession number; "
                                                             "--include-identifiers adds them)"})
    return rows


def summary_table(results: Sequence[dict[str, Any]], digits: int = 3) -> dict[str, Any]:
    """One line per vertebra (before the per-vertebra sections), with the screening columns some rows have;
    probabilities with `digits` decimals (mvcf.predict.results_decimals)."""
    def cell(r, key, fmt):
        return "-" if r.get(key) is None else fmt.format(r[key])

    columns = ["vertebra", "P(MVCF)", "call"]
    extra = [(key, label, fmt) for key, label, fmt in MEASUREMENT_ROWS if any(r.get(key) is not None for r in results)]
    rows = []
    for index, r in enumerate(results):
        name = r.get("name") or r.get("level") or f"vertebra {index + 1}"
        if r.get("error"):
            rows.append([name, "error", r["error"]] + ["-"] * len(extra))
            continue
        rows.append([name, cell(r, "probability_malignant", f"{{:.{digits}f}}"), r.get("prediction") or "not classified"]
                    + [cell(r, key, fmt) for key, _, fmt in extra])
    return {"title": "Summary", "columns": columns + [label for _, label, _ in extra], "rows": rows,
            "note": DISCLAIMER_SHORT}


def case_context(results: Sequence[dict[str, Any]], images: dict[int, list[dict[str, str]]],
                 card: Optional[dict[str, Any]], source: list[dict[str, str]], title: str = "MVCF case report",
                 subtitle: str = "") -> dict[str, Any]:
    """Template context for a CT's results; `images[i]` are the {src, caption} key images of results[i]."""
    from mvcf.predict import results_decimals

    digits = results_decimals([r for r in results if not r.get("error")])
    vertebrae = []
    for index, r in enumerate(results):
        row = {"name": r.get("name") or r.get("level") or f"vertebra {index + 1}", "level": r.get("level"),
               "error": r.get("error"), "images": images.get(index, [])}
        if not r.get("error"):
            classified = r.get("probability_malignant") is not None
            row.update(probability_malignant=float(r["probability_malignant"]) if classified else None,
                       prediction=r.get("prediction"), threshold=float(r["threshold"]) if classified else None,
                       probability_text=f"{r['probability_malignant']:.{digits}f}" if classified else "",
                       threshold_text=f"{r['threshold']:.{digits}f}" if classified else "",
                       warnings=list(r.get("warnings") or r.get("notes") or []), measurements=measurement_rows(r),
                       center="-" if r.get("center_lps") is None else ", ".join(f"{v:.1f}" for v in r["center_lps"]))
        vertebrae.append(row)
    return {"title": title, "subtitle": subtitle, "vertebrae": vertebrae, "figures": [], "tables": [],
            "summary": summary_table(results, digits) if len(results) > 1 else None,
            "links": [], "model": model_summary(card, digits) if card else None, "source": source}


def render_html(context: dict[str, Any]) -> str:
    try:
        import jinja2
    except ImportError:
        raise MVCFError(f"the report needs the Python package Jinja2: {EXTRA_HINT}") from None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    full = {"generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "software_version": __version__,
            "disclaimer": RESEARCH_USE_DISCLAIMER, "disclaimer_short": DISCLAIMER_SHORT, **context}
    return env.get_template(TEMPLATE).render(**full)


def check_pdf():
    """WeasyPrint, or a one-line MVCFError saying how to install it (asked before anything is written)."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Pango system library is missing
        raise MVCFError(f"the PDF report needs WeasyPrint and its Pango library ({exc.__class__.__name__}): "
                        f"{EXTRA_HINT} (and apt-get install libpango-1.0-0 libpangoft2-1.0-0)") from None
    return weasyprint


def write_pdf(html: str, base_dir: Path, out: Path) -> None:
    check_pdf().HTML(string=html, base_url=str(base_dir)).write_pdf(str(out))


def report_file(path: Path) -> bool:
    """Whether `path`, in a report folder, is one a report writes (report.html/.pdf/.json, its own tagged
    PNGs): what --overwrite may remove; a file the user put there is not."""
    from mvcf.outputs_guard import is_own_output

    return path.name in ("report.html", "report.pdf", "report.json") or \
        (path.name.lower().endswith(".png") and is_own_output(path))


def write_report(out_dir: Path, context: dict[str, Any], pngs: dict[str, bytes], data: dict[str, Any],
                 pdf: bool = True, prune: bool = False, undo: Any = None) -> dict[str, str]:
    """Write report.html (+ report.pdf) + report.json + the PNGs named in `pngs` into `out_dir`, all or none;
    with `prune` (--overwrite of mvcf's own earlier report) the earlier files not written again are removed;
    `undo`: the run's fileio.RunOutputs, told what was written (fileio.atomic_files)."""
    from mvcf.fileio import atomic_files

    out_dir = Path(out_dir)
    names = ["report.html", "report.json", *pngs] + (["report.pdf"] if pdf else [])
    with atomic_files(out_dir, names, mark=True, prune=prune, undo=undo, fresh=not prune, prunable=report_file) as tmp:
        for name, png in pngs.items():
            (tmp / name).write_bytes(png)
        html = render_html(context)
        (tmp / "report.html").write_text(html, encoding="utf-8")
        (tmp / "report.json").write_text(dumps({**data, "disclaimer": RESEARCH_USE_DISCLAIMER}, indent=2)
                                          + "\n", encoding="utf-8")
        if pdf:
            write_pdf(html, tmp, tmp / "report.pdf")
    return {name.split(".")[-1] if name.startswith("report.") else name: str(out_dir / name) for name in names
            if name.startswith("report.")}

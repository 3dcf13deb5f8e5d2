"""`mvcf demo`'s front page (index.html) in the case-report template: pictures first (the real CT's vertebra
with its Grad-CAM heatmap, the study's ROC curves), then the predictions, the study table and the timings."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mvcf.report import DISCLAIMER_SHORT, model_summary, render_html
from mvcf.report.images import key_images

ROC_FILES = (("study/roc_internal.png", "ROC curves, internal test (synthetic cohort)"),
             ("study/roc_external.png", "ROC curves, external test (second synthetic institution)"))


def _auc(value, ci, note=None) -> str:
    """AUC (95% CI); where the usual interval is degenerate or missing, the study's note says why."""
    if value is None:
        return f"n/a ({note})" if note else "n/a"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "") + (f" [{note}]" if note else "")


def _screen_table(screen: dict[str, Any]) -> dict[str, Any]:
    from mvcf.predict import shown_decimals

    digits = shown_decimals(screen["threshold"], [r["probability_malignant"] for r in screen["vertebrae"]])

    def number(value, fmt):
        return "-" if value is None else fmt.format(value)

    heights = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")
    rows = [[r["level"], r["status"], *(number(r[key], "{:.1f}") for key in heights),
             "-" if r["genant_grade"] is None else f"{r['genant_grade']} {r['shape']}",
             number(r["trabecular_hu"], "{:.0f}"), number(r["probability_malignant"], f"{{:.{digits}f}}"),
             r["prediction"] or "-", "yes" if r["flagged"] else ""] for r in screen["vertebrae"]]
    return {"title": "Whole-spine screen of the real CT (TotalSegmentator mask, embedded demo model)",
            "columns": ["level", "status", "Ha mm", "Hm mm", "Hp mm", "Genant grade", "trabecular HU", "P(MVCF)",
                        "call", "flagged"], "rows": rows,
            "note": f"Flagged = Genant grade >= 1 and P(MVCF) >= the threshold ({screen['threshold']:.{digits}f}). "
                    f"Heights, grade and HU are measurements (docs/screening.md); P(MVCF) is the demo model's. "
                    f"{DISCLAIMER_SHORT}"}


def write_demo_page(folder: Path, result: dict[str, Any], ct, center_lps, heat, card: dict[str, Any],
                    level: str = "L1") -> Path:
    """Write index.html (and the key images under prediction/) into the demo folder `folder`."""
    from mvcf.predict import results_decimals

    embedded = result["predictions"]["embedded_demo_model"]
    digits = results_decimals(list(result["predictions"].values()))   # one table, one number of decimals
    footer = (f"P(MVCF) {embedded['probability_malignant']:.{digits}f} -> "
              f"{embedded['prediction']} (embedded demo model)\n"
              f"{DISCLAIMER_SHORT}")
    figures = []
    for image in key_images(ct, center_lps, heat, f"{level} of the real sample CT", footer):
        name = f"prediction/key_{level}_{image.plane}.png"
        (folder / name).write_bytes(image.png)
        figures.append({"src": name, "caption": f"{image.caption}, Grad-CAM of the embedded demo model"})
    screen = result.get("screen") or {}
    overview = next((f for f in screen.get("files", []) if f.endswith(".png")), None)
    if overview is not None:
        figures.append({"src": overview, "caption": "Whole-spine screen of the same CT (embedded demo model): "
                                                    "each vertebra outlined in its Genant grade's colour"})
    figures += [{"src": src, "caption": caption} for src, caption in ROC_FILES if (folder / src).is_file()]
    predictions = [[name.replace("_", " "), f"{p['probability_malignant']:.{digits}f}", p["prediction"],
                    f"{p['threshold']:.{digits}f}",
                    f"{p['model']['name']} {p['model']['version']} ({p['model']['sha256'][:12]})"]
                   for name, p in result["predictions"].items()]
    study = [[name, _auc(r["internal_auc"], r["internal_auc_ci"], r.get("internal_auc_note")),
              _auc(r["external_auc"], r["external_auc_ci"], r.get("external_auc_note"))]
             for name, r in result["study"].items()]
    timings = [[stage.removesuffix("_s").replace("_", " "), f"{seconds:.1f}"]
               for stage, seconds in result["timings_s"].items()]
    context = {
        "title": "MVCF classifier demo", "subtitle": "synthetic cohort, study, and a real CT",
        "figures": figures, "vertebrae": [], "summary": None,
        "tables": [
            {"title": f"Prediction on a real CT (TotalSegmentator example, {level})", "columns":
             ["model", "P(MVCF)", "call", "threshold", "model id"], "rows": predictions,
             "note": f"This CT has no fracture label and both models were trained on synthetic data only: the "
                     f"numbers demonstrate the software, nothing clinical. {DISCLAIMER_SHORT}"},
            *([_screen_table(screen)] if screen else []),
            {"title": "Study (synthetic two-institution cohort)", "columns":
             ["model", "internal test AUC (95% CI)", "external test AUC (95% CI)"], "rows": study,
             "note": "Every view mode and the logistic baseline on identical patient-level splits; details in "
                     "the study report."},
            {"title": "Timings", "columns": ["stage", "seconds"], "rows": timings, "note": ""}],
        "links": [{"href": "study/report.html", "text": "Study report (HTML)"},
                  {"href": "study/report.md", "text": "Study report (Markdown)"},
                  {"href": "study/study.json", "text": "Study results (JSON)"},
                  {"href": result["heatmap"], "text": "Grad-CAM heatmap around L1 on the CT's own voxel grid (NIfTI; overlays the CT in Slicer)"},
                  *[{"href": f, "text": f"Whole-spine screen: {f.split('/')[-1]}"} for f in screen.get("files", [])],
                  {"href": "demo.json", "text": "Everything above as JSON"}],
        "model": model_summary(card), "source": [{"label": "CT", "value": "TotalSegmentator example CT "
                                                   "(shipped in mvcf/resources/sample_ct, Apache-2.0)"}]}
    out = folder / "index.html"
    out.write_text(render_html(context), encoding="utf-8")
    return out

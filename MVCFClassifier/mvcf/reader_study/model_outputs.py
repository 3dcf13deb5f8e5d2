"""The model's output for the aided round, computed once at plan time with the real model.

For every case: probability of malignancy, the call at the bundle's frozen threshold, and (optionally) the
Grad-CAM heatmap, on the CT's own voxel lattice and through the vertebra's height, through the core predict /
explain API (the heatmap from the very view and probability of the prediction). Cases that share a CT and a
location (the same vertebra listed twice) are computed once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mvcf.errors import MVCFError


def _location_key(record) -> tuple:
    center = getattr(record, "center_lps", None)
    return (str(Path(record.ct).resolve()), str(record.mask) if record.mask else "", record.vertebra_label,
            None if center is None else tuple(round(float(v), 3) for v in center))


def compute_model_outputs(records: Sequence[Any], heatmap_dir: Optional[Path], names: Sequence[str],
                          model: Optional[str] = None, device: str = "auto",
                          on_progress: Optional[Callable[[int, int, str], None]] = None) -> tuple[list[dict], dict]:
    """One dict per record {probability, prediction, threshold, warnings[, heatmap]} and the model identity.

    Heatmaps (NIfTI, values 0..1) are written to heatmap_dir/<name>_heatmap.nii.gz under the record's
    opaque `names[i]` when heatmap_dir is given."""
    from mvcf import training_scans
    from mvcf.dataset import locate_record
    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model, resolve_device
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct

    from mvcf.reader_study.blinding import write_blinded_ct

    device = resolve_device(device)
    try:
        bundle = load_model(model, device)
    except (OSError, ValueError) as exc:
        raise MVCFError(f"cannot load the model {model or '(embedded demo)'}: {exc}") from None
    seen = training_scans.report_overlap(bundle.card, records, "mvcf.reader_study",
                                         "the aided round's model outputs are")
    cache: dict[tuple, tuple[dict, Any]] = {}
    outputs = []
    total = len(records)
    for index, (record, name) in enumerate(zip(records, names)):
        if on_progress is not None:
            on_progress(index, total, f"model output {index + 1}/{total}")
        key = _location_key(record)
        if key not in cache:
            ct = read_ct(record.ct)
            location = locate_record(ct, record)
            prediction = predict_ct(ct, location, bundle, device)
            heat = (heatmap_for(bundle, prediction.view, device, probability=prediction.probability_malignant,
                                ct=ct, location=location) if heatmap_dir is not None else None)
            cache[key] = ({"probability": float(prediction.probability_malignant),
                           "prediction": prediction.prediction, "threshold": float(prediction.threshold),
                           "warnings": list(prediction.warnings)}, heat)
        output, heat = cache[key]
        output = dict(output)
        if heat is not None:
            target = Path(heatmap_dir) / f"{name}_heatmap.nii.gz"
            write_blinded_ct(heat, target)
            output["heatmap"] = target.name
        outputs.append(output)
    if on_progress is not None:
        on_progress(total, total, "model outputs done")
    overlap = {"checked": seen["checked"], "cases": len(seen["cases"])}   # a count: the log line names the cases
    return outputs, {**bundle.identity(), "training_overlap": overlap}

"""Whole-spine screening: every vertebra of a multi-label segmentation measured, graded and classified.

read CT + segmentation (same grid) -> numbering (mvcf.numbering) -> morphometry and Genant grade
(mvcf.morphometry) -> trabecular HU (mvcf.bone_density) -> P(MVCF) of every vertebra in one batched forward
pass -> one row per vertebra, cranio-caudal, written as TSV + JSON (docs/screening.md describes the columns).
Missing levels, partial vertebrae at the edge of the field of view and empty labels become rows that say
so; they never stop the screen.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.ctimage import CTImage, on_lattice_of
from mvcf.errors import MVCFError, shown_numbers

#: Table columns and what they mean (also written as the JSON's "columns").
COLUMNS: dict[str, str] = {
    "level": "vertebra level (C3 ... L5; T13 / L6 where the numbering has them)",
    "label": "label value in the segmentation",
    "status": "measured | partial (cut by the field of view) | empty (named, no voxels) | missing (absent "
              "between present levels) | not measured (no body found)",
    "height_anterior_mm": "anterior body height on the mid-sagittal plane of the body's own frame (mm)",
    "height_middle_mm": "middle body height: least height of the central 30 % of the depth (mm)",
    "height_posterior_mm": "posterior body height (mm)",
    "depth_mm": "antero-posterior depth of the body on the mid-sagittal plane (mm)",
    "loss_own": "1 - smallest / tallest of the vertebra's own three heights",
    "loss_neighbours": "1 - tallest own height / mean tallest height of the usable neighbours",
    "height_loss": "the larger of the two losses: what is graded",
    "genant_grade": "Genant semi-quantitative grade: 0 < 20 %, 1 20-25 %, 2 25-40 %, 3 > 40 % height loss",
    "shape": "normal | wedge (anterior) | biconcave (middle) | crush (posterior or uniform)",
    "reference": "neighbours used as the reference height ('own heights' when none was usable)",
    "trabecular_hu": "mean HU of the body eroded by 3 mm (trabecular bone)",
    "trabecular_hu_median": "median HU of the same region",
    "density": "osteoporosis likely (<= 110 HU) | low density (110-160 HU) | normal density (> 160 HU); "
               "Pickhardt 2013 L1 thresholds",
    "osteoporosis_flag": "trabecular HU <= 110 (Pickhardt 2013: > 90 % specific at L1)",
    "probability_malignant": "the classifier's probability of a malignant fracture (research use only)",
    "prediction": "MVCF or OVCF at the model's frozen threshold",
    "flagged": "graded >= 1 and probability_malignant >= threshold: a collapsed vertebra that looks malignant",
    "center_lps": "centroid of the vertebra label, LPS mm (where the classifier looked)",
    "notes": "why a value is missing, and what to keep in mind reading it",
}


@dataclass
class ScreenResult:
    ct: str
    segmentation: str
    numbering: str
    numbering_reason: str
    vertebrae: list[dict[str, Any]]
    model: dict[str, str]
    threshold: float
    device: str
    contrast_phase: Optional[str]
    backend: str = "torch"      # the engine that ran the network (torch or onnxruntime)
    warnings: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    disclaimer: str = RESEARCH_USE_DISCLAIMER
    #: the CT and label map it was computed on, for the overview picture; not serialised
    images: Optional[tuple[CTImage, CTImage]] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, images=None))
        del data["images"]
        data["columns"] = COLUMNS
        return data

    @property
    def collapsed(self) -> list[str]:
        return collapsed_levels(self.vertebrae)

    @property
    def flagged(self) -> list[str]:
        return flagged_levels(self.vertebrae)

    def overview(self) -> Optional[Any]:
        """The whole-spine overview picture (mvcf.report.overview, a KeyImage), None without images, without
        a located vertebra or without matplotlib (said in a warning)."""
        import importlib.util
        import logging

        if self.images is None or not self.vertebrae:
            return None
        if importlib.util.find_spec("matplotlib") is None:
            logging.getLogger("mvcf.screen").warning("no %s: it needs matplotlib (pip install matplotlib)",
                                                     OVERVIEW_NAME)
            return None
        from mvcf.report import DISCLAIMER_SHORT
        from mvcf.report.overview import spine_overview

        digits = self.decimals()
        return spine_overview(*self.images, self.vertebrae,
                              f"{Path(self.ct).name}: model {self.model.get('name', '')} "
                              f"{self.model.get('version', '')}, threshold {self.threshold:.{digits}f}\n"
                              f"{DISCLAIMER_SHORT}", digits=digits)

    def decimals(self) -> int:
        """The decimals this screen's probabilities and threshold are shown with (predict.shown_decimals)."""
        from mvcf.predict import shown_decimals

        return shown_decimals(self.threshold, [r.get("probability_malignant") for r in self.vertebrae])


def collapsed_levels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Levels graded >= 1 (Genant), in the table's order (cranio-caudal)."""
    return [r["level"] for r in rows if (r.get("genant_grade") or 0) >= 1]


def flagged_levels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Levels collapsed and at or above the model's threshold."""
    return [r["level"] for r in rows if r.get("flagged")]


def check_same_grid(ct: CTImage, seg: CTImage) -> None:
    """Refuse a segmentation that does not lie voxel for voxel on the CT's grid."""
    problems = []
    if tuple(seg.voxels.shape) != tuple(ct.voxels.shape):
        problems.append(f"size {seg.size_ijk} vs the CT's {ct.size_ijk}")
    else:
        if not np.allclose(seg.spacing, ct.spacing, rtol=1e-4, atol=1e-4):
            problems.append(f"spacing {shown_numbers(seg.spacing)} vs {shown_numbers(ct.spacing)} mm")
        if not np.allclose(seg.origin, ct.origin, atol=1e-2 + 1e-3 * float(np.max(ct.spacing))):
            problems.append(f"origin {shown_numbers(seg.origin, 2)} vs {shown_numbers(ct.origin, 2)} mm")
        if not np.allclose(seg.direction, ct.direction, atol=1e-4):
            problems.append("another orientation")
    if problems:
        raise MVCFError(f"the segmentation is on another grid than the CT ({'; '.join(problems)}); "
                        f"resample it onto the CT first (e.g. nearest-neighbour in 3D Slicer or SimpleITK)")


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(float(value), digits)


#: How far (mm) a level's centroid may lie below the next caudal one's before the order is refused: adjacent
#: vertebrae lie 20-40 mm apart head to foot, a sharp kyphosis brings them closer, never below each other.
ORDER_SLACK_MM = 10.0


#: Levels holding fewer voxels than this share of the median level are left out of the order check.
ORDER_MIN_SHARE = 0.1


def check_level_order(seg: CTImage, levels: dict[int, str], numbering: str) -> None:
    """Refuse levels out of head-to-foot order (LPS +z is the head): a swapped pair of labels, a numbering
    read backwards, or a header that does not say where the head is were measured and classified as named,
    the real L1 flagged as "L3"."""
    from scipy import ndimage

    from mvcf.numbering import LEVEL_ORDER

    values = sorted(levels, key=lambda v: LEVEL_ORDER.index(levels[v]))   # cranial first
    counts = np.asarray(ndimage.sum_labels(seg.voxels, seg.voxels, values), float) / np.asarray(values, float)
    # a level cut to a fragment by the field of view (T11's arch alone, 76 voxels) has its centroid anywhere:
    # a spine tilted 40 degrees was refused as "T11 lies 12 mm below T12"
    values = [v for v, n in zip(values, counts) if n >= ORDER_MIN_SHARE * float(np.median(counts))]
    centres = ndimage.center_of_mass(seg.voxels, seg.voxels, values)   # one label, one weight: its centroid
    z = {levels[v]: float(seg.index_to_lps(np.asarray(c, float)[::-1])[2]) for v, c in zip(values, centres)}
    ordered = [levels[v] for v in values]
    for upper, lower in zip(ordered, ordered[1:]):
        if z[upper] < z[lower] - ORDER_SLACK_MM:
            raise MVCFError(f"the segmentation's levels are out of head-to-foot order: {upper} lies "
                            f"{z[lower] - z[upper]:.0f} mm below {lower} (LPS z {z[upper]:.0f} vs {z[lower]:.0f} mm): "
                            f"labels swapped, the wrong numbering ({numbering}; give --numbering), or a CT header "
                            "that does not say where the head is")


def screen_ct(ct: CTImage, seg: CTImage, numbering: str = "auto", names: Optional[dict[int, str]] = None,
              model: Union[str, Path, None, Any] = None, device: str = "auto", contrast: Optional[str] = None,
              on_progress: Optional[Callable[[int, int, str], None]] = None,
              should_cancel: Optional[Callable[[], bool]] = None, backend: str = "auto") -> ScreenResult:
    """Screen every vertebra of `seg` (a label map on `ct`'s grid, or on the same voxels with its axes
    flipped or permuted, as a TotalSegmentator NIfTI beside a DICOM CT). `numbering` is 'auto' or one of
    mvcf.numbering.NUMBERINGS; `names` the segment names (label value -> name) where the file has them;
    `contrast` the CT's contrast phase, if known (mvcf.bone_density.contrast_phase); `backend` as
    mvcf.inference.load_model's (auto: ONNX Runtime when the bundle has a graph, so no torch is needed)."""
    from mvcf import bone_density, morphometry
    from mvcf import numbering as numbering_module
    from mvcf import inference
    from mvcf.locate import from_mask
    from mvcf.predict import bundle_warnings, call
    from mvcf.progress import check_cancel
    from mvcf.training_scans import trained_on
    from mvcf.views import ViewSpec, build_views

    timing: dict[str, float] = {}
    started = time.perf_counter()
    reordered = on_lattice_of(seg, ct)   # the same voxels listed in another axis order: taken as they are
    if reordered is None:
        check_same_grid(ct, seg)         # raises: another grid
    else:
        seg = reordered
    values = np.unique(seg.voxels)
    if numbering == "auto":
        scheme = numbering_module.detect_numbering(values, names)
    else:
        scheme = numbering_module.resolve_numbering(numbering, values)
    present = {v: lv for v, lv in scheme.levels.items() if np.any(seg.voxels == v)}
    empty = {v: lv for v, lv in scheme.levels.items() if v not in present}
    if not present:
        raise MVCFError("the label map has no vertebra labels with voxels in it")
    check_level_order(seg, present, scheme.name)
    bundle = inference.load_model(model, device, backend)
    device = bundle.device
    steps = 4
    progress = on_progress or (lambda done, total, message: None)
    progress(0, steps, "measuring vertebral bodies")
    beyond = morphometry.field_of_view_edge(ct.voxels, np.isin(seg.voxels, list(present)))
    morph = morphometry.measure_spine(seg, present, numbering_module.LEVEL_ORDER, beyond)
    timing["morphometry"] = 1000 * (time.perf_counter() - started)
    check_cancel(should_cancel)
    screened = [lv for lv in morph if lv in numbering_module.SCREENED_LEVELS]
    rows: dict[str, dict[str, Any]] = {}
    label_of = {lv: v for v, lv in present.items()}
    progress(1, steps, "grading and bone density")
    t = time.perf_counter()
    for level in screened:
        m = morph[level]
        above, below = numbering_module.adjacent_levels(level, morph)
        grade = morphometry.grade_vertebra(m, [morph[x] for x in (above, below) if x is not None])
        # a cut body's interior is not its trabecular bone: the cut face is not eroded, the endplate near it is
        density = bone_density.trabecular_density(ct, m.region, level) \
            if m.region is not None and not m.partial else None
        status = "measured" if m.measured else ("partial" if m.partial else "not measured")
        notes = list(m.notes) + (density.notes if density is not None else []) + \
            (["no trabecular HU: the body is cut by the field of view"] if m.partial else [])
        if m.measured and level not in ("T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2",
                                        "L3", "L4"):
            notes.append("Genant's method was defined for T4-L4")
        if m.measured:   # L3 left out: L4's axis ran through L2, and its loss read 7 % instead of 22 %
            notes.extend(_gap_notes(level, above, below, morph))
        if level == "L5" and m.measured and "S1" not in morph:   # the sample without S1: a normal L5 read grade 2
            notes.append("no S1 label below L5: its cranio-caudal axis runs through L4 alone, which the lordosis "
                         "tilts against L5, so its heights and grade may be off (segment the sacrum or S1 too)")
        heights = m.heights_mm or (None, None, None)
        rows[level] = {
            "level": level, "label": label_of[level], "status": status,
            "height_anterior_mm": _round(heights[0]) if m.measured else None,
            "height_middle_mm": _round(heights[1]) if m.measured else None,
            "height_posterior_mm": _round(heights[2]) if m.measured else None,
            "depth_mm": _round(m.depth_mm) if m.measured else None,
            "loss_own": _round(grade.loss_own, 3), "loss_neighbours": _round(grade.loss_neighbours, 3),
            "height_loss": _round(grade.height_loss, 3), "genant_grade": grade.grade, "shape": grade.shape,
            "reference": grade.reference,
            "trabecular_hu": _round(density.trabecular_hu, 1) if density else None,
            "trabecular_hu_median": _round(density.median_hu, 1) if density else None,
            "density": density.category if density else "",
            "osteoporosis_flag": bool(density.osteoporosis_flag) if density else False,
            "probability_malignant": None, "prediction": None, "flagged": False, "center_lps": None,
            "notes": notes,
        }
    timing["grade_density"] = 1000 * (time.perf_counter() - t)
    check_cancel(should_cancel)
    progress(2, steps, f"classifying {len(rows)} vertebrae in one batch")
    t = time.perf_counter()
    spec = ViewSpec.from_dict(bundle.view_spec)
    arrays, order, view_warnings = [], [], {}
    for level, row in rows.items():
        if morph[level].several:   # its centroid lies between the vertebrae: a probability of neither
            row["notes"].append("not classified: the label seems to hold more than one vertebra")
            continue
        try:
            location = from_mask(ct, seg, row["label"], name=level)
            view = build_views(ct, location, spec)
        except MVCFError as exc:
            row["notes"].append(f"not classified: {exc}")
            continue
        row["center_lps"] = [round(float(v), 2) for v in location.center_lps]
        arrays.append(view.array)
        order.append(level)
        view_warnings[level] = view.warnings
    timing["views"] = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    probabilities = [float(p) for p in inference.forward(bundle, arrays, device, batch_size=max(1, len(arrays)),
                                                          should_cancel=should_cancel)]
    timing["inference"] = 1000 * (time.perf_counter() - t)
    threshold = bundle.threshold
    for level, probability in zip(order, probabilities):
        row = rows[level]
        row["probability_malignant"] = float(probability)   # as called: a rounded 0.661 was "MVCF" at 0.66104
        row["prediction"] = call(probability, threshold)
        row["flagged"] = bool((row["genant_grade"] or 0) >= 1 and probability >= threshold)
        row["notes"].extend(view_warnings[level])
    progress(3, steps, "collecting the table")
    for value, level in empty.items():
        if level in numbering_module.SCREENED_LEVELS:
            rows[level] = _blank_row(level, value, "empty", "the segment is named but has no voxels")
    for level in numbering_module.missing_levels(list(morph) + list(empty.values())):
        if level in numbering_module.SCREENED_LEVELS:
            rows[level] = _blank_row(level, None, "missing", "level absent from the segmentation between "
                                                             "present levels")
    ordered = sorted(rows.values(), key=lambda r: numbering_module.level_index(r["level"]))
    warnings = bundle_warnings(bundle.card) + trained_on(bundle.card, ct.source)
    doubt = numbering_module.numbering_doubt(numbering, values) if numbering != "auto" else None
    if doubt:
        warnings.append(doubt)
    contrast_note = bone_density.contrast_warning(contrast)
    if contrast_note:
        warnings.append(contrast_note)
    turned = morphometry.turned_degrees(morph)
    if turned is not None and turned > TURNED_WARN_DEG:
        warnings.append(f"the patient lies turned about {turned:.0f} degrees from supine about the long axis (from "
                        "the vertebrae's shape; or the CT's orientation is labelled wrong): heights and bone "
                        "density are measured in each vertebra's own frame, but the classifier sees its views in "
                        "the scanner's axes, on which it was trained, so P(MVCF) and the flags may be off")
    timing["total"] = 1000 * (time.perf_counter() - started)
    progress(steps, steps, "done")
    return ScreenResult(ct=ct.source, segmentation=seg.source, numbering=scheme.name,
                        numbering_reason=scheme.reason, vertebrae=ordered, model=bundle.identity(),
                        threshold=float(threshold), device=device, contrast_phase=contrast,
                        backend=bundle.backend, warnings=warnings,
                        timing_ms={k: round(v, 1) for k, v in timing.items()}, images=(ct, seg))


def _gap_notes(level: str, above: Optional[str], below: Optional[str], present: Sequence[str]) -> list[str]:
    """A note for each side where the next level is absent but a farther one is there: the cranio-caudal axis
    runs through that one, across the gap, and the missing level is no reference for the grade."""
    from mvcf import numbering as numbering_module

    index = numbering_module.level_index(level)
    notes = []
    for side, adjacent, farther in (
            ("above", above, [x for x in present if numbering_module.level_index(x) < index]),
            ("below", below, [x for x in present if numbering_module.level_index(x) > index])):
        if adjacent is None and farther:
            through = max(farther, key=numbering_module.level_index) if side == "above" else \
                min(farther, key=numbering_module.level_index)
            notes.append(f"the level {side} is missing from the segmentation: the cranio-caudal axis runs through "
                         f"{through}, across the gap, and the grade has one neighbour fewer, so heights and grade "
                         "may be off")
    return notes


#: A patient turned farther than this from supine (degrees about the long axis) is warned of: the classifier's
#: views are built in the scanner's axes (a 90-degree turn moved L4's P(MVCF) from 0.59 to 0.99 on the sample).
TURNED_WARN_DEG = 30.0


def _blank_row(level: str, label: Optional[int], status: str, note: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in COLUMNS}
    row.update(level=level, label=label, status=status, shape="", reference="", density="",
               osteoporosis_flag=False, flagged=False, notes=[note])
    return row


def screen_files(ct_path: Union[str, Path], seg_path: Union[str, Path], numbering: str = "auto",
                 model: Union[str, Path, None, Any] = None, device: str = "auto",
                 contrast_phase: Optional[str] = None,
                 on_progress: Optional[Callable[[int, int, str], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None,
                 series_uid: Optional[str] = None, backend: str = "auto") -> ScreenResult:
    """read_ct + read_mask (+ segment names of a .seg.nrrd) -> screen_ct. `series_uid`: which series of a
    DICOM folder holding several (read_ct)."""
    from mvcf.bone_density import contrast_phase as find_phase
    from mvcf.numbering import check_numbering, segment_names
    from mvcf.read_ct import read_ct, read_mask

    if numbering != "auto":
        numbering = check_numbering(numbering)
    warnings: list[str] = []
    t = time.perf_counter()
    ct = read_ct(ct_path, warnings=warnings, series_uid=series_uid)
    seg = read_mask(seg_path)
    read_ms = 1000 * (time.perf_counter() - t)
    result = screen_ct(ct, seg, numbering, segment_names(seg_path), model, device,
                       find_phase(ct_path, contrast_phase), on_progress, should_cancel, backend)
    result.warnings = warnings + result.warnings
    result.timing_ms = {"read": round(read_ms, 1), **result.timing_ms,
                        "total": round(read_ms + result.timing_ms["total"], 1)}
    return result


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) if value and isinstance(value[0], str) else \
            ",".join(f"{v:g}" for v in value)
    return str(value)


def table_tsv(rows: Sequence[dict[str, Any]], columns: Sequence[str] = tuple(COLUMNS)) -> str:
    """A TSV of `rows` (the screen's table, or another of the same kind of cells: the archive index)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
    return buffer.getvalue()


TABLE_NAME = "screen.tsv"
JSON_NAME = "screen.json"
OVERVIEW_NAME = "screen_overview.png"
#: every file write_outputs may write into a screen's folder
OUTPUT_NAMES = (TABLE_NAME, JSON_NAME, OVERVIEW_NAME)


#: write_outputs' default: render the overview there (a caller that rendered it already passes it, or None)
RENDER_OVERVIEW = object()


def write_outputs(result: ScreenResult, out_dir: Union[str, Path], overview: Any = RENDER_OVERVIEW,
                  undo=None) -> tuple[Path, ...]:
    """screen.tsv, screen.json and (when the result has its images) screen_overview.png in `out_dir`, all or
    none (fileio.atomic_files); `overview`: the picture already rendered (ScreenResult.overview; None: none);
    `undo`: the run's fileio.RunOutputs, told of the files (an earlier table comes back if the run is undone)."""
    from mvcf.fileio import atomic_files
    from mvcf.progress import dumps

    out = Path(out_dir)
    overview = result.overview() if overview is RENDER_OVERVIEW else overview
    names = [TABLE_NAME, JSON_NAME] + ([OVERVIEW_NAME] if overview is not None else [])
    with atomic_files(out, names, mark=True, undo=undo) as tmp:
        (tmp / TABLE_NAME).write_text(table_tsv(result.vertebrae), encoding="utf-8")
        (tmp / JSON_NAME).write_text(dumps(result.to_dict(), indent=2), encoding="utf-8")
        if overview is not None:
            (tmp / OVERVIEW_NAME).write_bytes(overview.png)
    return tuple(out / name for name in names)


def summary_text(result: ScreenResult) -> str:
    """One screen: a line per vertebra, the flagged ones and the bone density called out, the disclaimer."""
    digits = result.decimals()
    lines = [f"{Path(result.ct).name}: {len([r for r in result.vertebrae if r['status'] == 'measured'])} "
             f"vertebrae measured; numbering {result.numbering} ({result.numbering_reason})",
             f"{'level':<6}{'Ha':>6}{'Hm':>6}{'Hp':>6}{'loss':>7}  {'grade':<14}{'HU':>7}  {'P(MVCF)':>8}  call"]
    for r in result.vertebrae:
        if r["status"] in ("missing", "empty"):
            lines.append(f"{r['level']:<6}{r['status']}")
            continue
        h = [f"{r[k]:6.1f}" if r[k] is not None else "     -" for k in
             ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")]
        loss = f"{100 * r['height_loss']:6.0f}%" if r["height_loss"] is not None else "      -"
        grade = f"{r['genant_grade']} {r['shape']}" if r["genant_grade"] is not None else r["status"]
        hu = f"{r['trabecular_hu']:7.0f}" if r["trabecular_hu"] is not None else "      -"
        p = f"{r['probability_malignant']:8.{digits}f}" if r["probability_malignant"] is not None else "       -"
        call = (r["prediction"] or "-") + ("  <- FLAG" if r["flagged"] else "")
        lines.append(f"{r['level']:<6}{''.join(h)}{loss}  {grade:<14}{hu}  {p}  {call}")
    lines.append(f"collapsed (Genant >= 1): {', '.join(result.collapsed) or 'none'}; flagged (collapsed and "
                 f"P(MVCF) >= {result.threshold:.{digits}f}): {', '.join(result.flagged) or 'none'}")
    lines.append(f"bone density: {density_summary(result.vertebrae)}")
    lines.append(f"model {result.model.get('name', '')} {result.model.get('version', '')}; device "
                 f"{result.device} ({result.backend}); {result.timing_ms.get('total', 0):.0f} ms")
    lines.extend(f"warning: {w}" for w in result.warnings)
    lines.append(result.disclaimer)
    return "\n".join(lines)


#: where the exam's bone density is read: L1 (the level the thresholds come from), else the nearest measured
EXAM_DENSITY_LEVELS = ("L1", "L2", "T12", "L3", "T11", "L4")


def exam_density(rows: Sequence[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The row the exam-level bone density is read from (EXAM_DENSITY_LEVELS), None when none is measured."""
    by_level = {r["level"]: r for r in rows if r.get("trabecular_hu") is not None}
    return next((by_level[level] for level in EXAM_DENSITY_LEVELS if level in by_level), None)


def density_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The exam-level reading in words."""
    r = exam_density(rows)
    if r is None:
        return "no lumbar or lower thoracic body measurable"
    return f"{r['level']} {r['trabecular_hu']:.0f} HU: {r['density']}" + \
        ("" if r["level"] == "L1" else " (L1 not measurable; thresholds are for L1)")


def result_payload(result: ScreenResult, outputs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The result as `--json` prints it, with where the case report / DICOM outputs went when there are any."""
    return {**result.to_dict(), **({"outputs": outputs} if outputs else {})}


def load_result(path: Union[str, Path]) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))

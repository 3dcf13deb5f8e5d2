"""The classifier's logic without any GUI: scene inputs -> temporary files (CT, segment masks, a locations
file) -> one `mvcf predict --locations` child process for all vertebrae -> result rows -> nodes in the scene.

Runs the same way from the module's Apply button (the widget calls `PredictionRun.poll()` from a QTimer, so
Slicer stays responsive and Cancel kills the child) and from a batch script (`PredictionLogic.process`
blocks). One child (MVCFClassifierLib.process.ChildRun) pays the torch import and model load once for every
vertebra. Nodes are created only once every vertebra has its result, so a cancelled or killed run leaves no
half-written node behind. Prediction itself lives in the core (`mvcf predict`); nothing here imports torch.
Every decision the panel makes (is Apply possible, which model folder, which segments are vertebrae) is a
function here, so it is tested without Slicer's GUI.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf.ctimage import lps_to_ras
from mvcf.errors import MVCFError
from mvcf.locate import VertebraLocation
from mvcf.locations_file import VertebraQuery, write_locations
from mvcf.numbering import SCREENED_LEVELS, level_index

from MVCFClassifierLib import markups, tables, volumes
from MVCFClassifierLib.choices import DEVICES
from MVCFClassifierLib.process import ChildRun, mvcf_command, slicer_python

LOCATION_SOURCES = ("Point list", "ROI", "Segmentation")
#: Why an automatically chosen C1, C2 or S1 segment is skipped (choose the segment to classify it anyway).
NOT_SCREENED = "not a level the classifier reads unasked (C1, C2 and S1, as in the whole-spine screen)"
DISCLAIMER = ("Research use only; not a medical device. The embedded model is a demo trained on synthetic data.")

#: Result table columns: (name, type, description).
RESULT_COLUMNS = [
    ("vertebra", str, "Vertebra: the point's label, the ROI's or the segment's name"),
    ("probability_malignant", float, "Probability that the fracture is malignant (MVCF), 0-1. " + DISCLAIMER),
    ("prediction", str, "Predicted class at the model's threshold: MVCF (malignant) or OVCF (osteoporotic)"),
    ("threshold", float, "Decision threshold on the probability, frozen in the model bundle"),
    ("model_name", str, "Model bundle name"),
    ("model_version", str, "Model bundle version"),
    ("model_sha256", str, "SHA-256 of the model weights (identifies the exact model)"),
    ("device", str, "Device the model ran on (cpu or cuda)"),
    ("run_time_s", float, "Seconds of the run's wall-clock time (one process for all vertebrae, start-up "
     "included) attributed to this vertebra, in proportion to its own prediction time"),
    ("center_ras_mm", str, "Vertebra centre used by the model, RAS millimetres (Slicer's coordinates)"),
    ("status", str, "ok, or the error that prevented a prediction for this vertebra"),
    ("warnings", str, "Warnings from the prediction (e.g. view partly outside the CT), separated by ';'"),
]


@dataclass
class Target:
    """One vertebra to classify and how `mvcf predict` is told where it is. A target with `skipped` set
    (an empty segment, a vertebra cut by the CT's edge) is not sent to the child: its row reports why."""

    name: str
    location: Optional[VertebraLocation]
    segment_id: str = ""  # set when the vertebra is a segment: its mask is written and passed to predict
    mask: Any = None  # the segment's 0/1 CTImage on the CT grid (read once, written for the child)
    mask_path: Optional[Path] = None
    skipped: str = ""

    def query(self, heatmap: Optional[Path] = None, views: Optional[Path] = None) -> VertebraQuery:
        """This vertebra as an entry of the child's locations file: its segment's mask (label 1), its ROI's
        box or its centre in LPS mm, and where the child writes its heatmap and its model-input volumes."""
        if self.mask_path is not None:
            return VertebraQuery(name=self.name, mask=self.mask_path, label=1, heatmap=heatmap, views=views)
        if self.location.extent_mm is not None:   # an ROI: its box sets how deep a plane's heatmap reaches
            center, half = self.location.center_lps, self.location.extent_mm / 2
            return VertebraQuery(name=self.name, box=(tuple(float(v) for v in center - half),
                                                      tuple(float(v) for v in center + half)),
                                 heatmap=heatmap, views=views)
        return VertebraQuery(name=self.name, point=tuple(float(v) for v in self.location.center_lps),
                             unit="lps", heatmap=heatmap, views=views)


@dataclass
class PredictionOutputs:
    """What one run added to the scene."""

    table_node: Any
    rows: list[dict]
    volume_nodes: list[Any] = field(default_factory=list)
    results: list[Optional[dict]] = field(default_factory=list)
    dicom: Any = None  # a dicom_export.DicomImport when DICOM output was asked for


def model_dir_or_default(model_dir: Optional[str]) -> Path:
    """The bundle folder a run uses: the user's, or the embedded demo bundle."""
    if model_dir:
        return Path(model_dir)
    from mvcf.predict import default_model_path

    return default_model_path()


def model_card(model_dir: Optional[str] = None) -> dict:
    """The model card (model.json) of a bundle, checked but without loading weights (no torch)."""
    from mvcf.models.bundle import read_card

    return read_card(model_dir_or_default(model_dir))


def _number(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value")
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _metrics_line(split: str, metrics: dict) -> str:
    """'internal_test: n=28, AUC 0.93 (0.83-1.00), sensitivity 0.87, specificity 0.92'."""
    parts = [f"n={metrics['n']}"] if "n" in metrics else []
    if "auc" in metrics:
        ci = metrics.get("auc_ci_delong") or metrics.get("auc_ci_bootstrap")
        parts.append(f"AUC {_number(metrics['auc'])}" + (f" ({_number(ci[0])}-{_number(ci[1])})" if ci else ""))
    for key in ("sensitivity", "specificity"):
        if key in metrics:
            parts.append(f"{key} {_number(metrics[key])}")
    return f"{split}: {', '.join(parts)}"


def model_card_html(card: dict) -> str:
    """A short rich-text model card for the module panel: identity, intended use, input and threshold,
    training data, validation metrics per split, and the synthetic-data warning."""
    from html import escape

    lines = [f"<b>{escape(str(card.get('name', 'model')))}</b> {escape(str(card.get('version', '')))}"]
    if card.get("intended_use"):
        lines.append(f"Intended use: {escape(str(card['intended_use']))}")
    network = card.get("network") or {}
    if network:
        lines.append(f"Input: {escape(str(network.get('mode', '')))} {escape(str(network.get('input_shape', '')))}"
                     f"; threshold {float(card.get('threshold', float('nan'))):.3f}")
    data = card.get("training_data")
    if isinstance(data, dict):
        summary = [f"{data[k]} {k}" for k in ("cases", "patients") if k in data]
        if "external_cases" in data:
            summary.append(f"{data['external_cases']} external-site cases")
        lines.append("Training data: " + escape(", ".join(summary) or str(data)))
    metrics = card.get("validation_metrics")
    if isinstance(metrics, dict):
        lines += [escape(_metrics_line(split, m)) for split, m in metrics.items() if isinstance(m, dict)]
    if card.get("trained_on_synthetic_data"):
        lines.append("<b>Trained on synthetic data only: its probabilities are a software demonstration.</b>")
    if card.get("weights", {}).get("sha256"):
        lines.append(f"Weights sha256: {escape(str(card['weights']['sha256'])[:16])}...")
    return "<br>".join(lines)


def _total_ms(timing: Any) -> Optional[float]:
    if isinstance(timing, (int, float)):
        return float(timing)
    if isinstance(timing, dict):
        if "total" in timing:
            return float(timing["total"])
        numbers = [float(v) for v in timing.values() if isinstance(v, (int, float))]
        return sum(numbers) if numbers else None
    return None


def time_shares(wall_s: float, totals_ms: Sequence[Optional[float]]) -> list[float]:
    """Split one child's wall time between its vertebrae in proportion to each one's own time (equally
    when any is unknown)."""
    if not totals_ms:
        return []
    if all(t is not None and t > 0 for t in totals_ms):
        whole = float(sum(totals_ms))  # type: ignore[arg-type]
        return [wall_s * float(t) / whole for t in totals_ms]  # type: ignore[arg-type]
    return [wall_s / len(totals_ms)] * len(totals_ms)


def child_error(child: ChildRun) -> str:
    """The one-line reason a child gave no result: its error event, else its last stderr error line."""
    if child.returncode == 0 and not child.error:
        return "the prediction returned no result for this vertebra"
    return child.error_line()


def result_row(target: Target, result: Optional[dict], wall_s: float, error: str = "") -> dict:
    """One table row from an `mvcf predict --json` result (or from the error that replaced it)."""
    own_warnings = list(target.location.warnings) if target.location is not None else []
    row: dict[str, Any] = {"vertebra": target.name, "run_time_s": round(wall_s, 3),
                           "warnings": "; ".join(own_warnings)}
    center = target.location.center_lps if target.location is not None else None
    if target.skipped:
        row.update(status=f"skipped: {target.skipped}")
    elif result is None:
        row.update(status=f"error: {error or 'no result'}")
    else:
        model = result.get("model") or {}
        center = np.asarray(result.get("center_lps", center), dtype=float)
        warnings = own_warnings + [str(w) for w in result.get("warnings") or []]
        row.update(probability_malignant=result.get("probability_malignant"),
                   prediction=str(result.get("prediction", "")), threshold=result.get("threshold"),
                   model_name=str(model.get("name", "")), model_version=str(model.get("version", "")),
                   model_sha256=str(model.get("sha256", "")), device=str(result.get("device", "")),
                   status="ok", warnings="; ".join(dict.fromkeys(warnings)))
    row["center_ras_mm"] = "" if center is None else ", ".join(f"{v:.1f}" for v in lps_to_ras(center))
    return row


def results_html(rows: Sequence[dict]) -> str:
    """The results as a small rich-text table for the module panel, the threshold and the disclaimer under it.
    Probabilities and threshold share the decimals at which every shown P lies on its call's side of the shown
    threshold (2 decimals showed P = t + 0.0007 and P = t - 0.0004 as "0.66 MVCF" and "0.66 OVCF")."""
    from html import escape

    from mvcf.predict import results_decimals

    digits = results_decimals(rows)
    lines = ["<table><tr><th align='left'>Vertebra</th><th>P(MVCF)</th><th>Class</th><th align='left'>Notes</th></tr>"]
    for row in rows:
        probability = row.get("probability_malignant")
        shown = f"{float(probability):.{digits}f}" if isinstance(probability, (int, float)) else "-"
        notes = row.get("status", "") if row.get("status") != "ok" else row.get("warnings", "")
        lines.append(f"<tr><td>{escape(str(row.get('vertebra', '')))}</td><td align='center'>{shown}</td>"
                     f"<td align='center'><b>{escape(str(row.get('prediction', '')))}</b></td>"
                     f"<td>{escape(str(notes))}</td></tr>")
    thresholds = sorted({float(r["threshold"]) for r in rows if isinstance(r.get("threshold"), (int, float))})
    lines.append("</table>" + "".join(f"MVCF at P(MVCF) &ge; {t:.{digits}f}<br>" for t in thresholds) +
                 f"<i>{escape(DISCLAIMER)}</i>")
    return "".join(lines)


#: How often the module panel polls a run: a warm Apply takes a few tens of ms, so a coarse tick would be most
#: of what the user waits for (a poll that finds nothing costs microseconds).
APPLY_POLL_MS = 20


class ChildDrivenRun:
    """Drives one child run for an Apply: `poll()` without blocking or `wait()`, tracking its progress in
    `_child_fraction` and `message`. Subclasses provide `finished`, `_start_child()` and `_collect(child)`."""

    _child: Optional[ChildRun] = None
    _child_fraction = 0.0
    message = ""
    dicom: Any = None  # a dicom_export.DicomExport: its arguments go to the child, its results to the database

    def dicom_arguments(self) -> list[str]:
        return self.dicom.arguments() if self.dicom is not None else []

    def import_dicom(self):
        """After the child: its DICOM output into the database (None when none was asked for)."""
        return self.dicom.import_results() if self.dicom is not None else None

    def drop_dicom(self) -> None:
        if self.dicom is not None:
            self.dicom.cleanup()

    def _track(self, event: dict) -> None:
        if event.get("event") == "progress" and event.get("total"):
            self._child_fraction = float(event["done"]) / float(event["total"])
            self.message = str(event.get("message", ""))

    def poll(self) -> list[dict]:
        """Advance without blocking; returns the child events that arrived (progress, log, result, error)."""
        if self.finished:
            return []
        child = self._child or self._start_child()
        exited = child.finished()  # checked first, so this poll() holds all its output once it exited
        events = child.poll()
        for event in events:
            self._track(event)
        if exited:
            self._collect(child)
        return events

    def wait(self, on_event: Optional[Callable[[dict], None]] = None) -> None:
        """Block until the run is done (batch use); each child event goes to `on_event` too."""
        if self.finished:
            return
        child = self._child or self._start_child()

        def handle(event: dict) -> None:
            self._track(event)
            if on_event:
                on_event(event)

        child.wait(on_event=handle)
        self._collect(child)


class PredictionRun(ChildDrivenRun):
    """One Apply: the CT, segment masks and a locations file in a temporary folder, and one `mvcf predict`
    child for all vertebrae not skipped. Drive it with `poll()` until `finished` (or `wait()`); then
    `finish(scene)` creates the nodes.
    """

    LOCATIONS_FILE = "locations.json"

    def __init__(self, logic: "PredictionLogic", ct_node, targets: list[Target], workdir: Path,
                 common_args: list[str], want_views: bool, want_heatmap: bool, ct_path: Path) -> None:
        self.logic = logic
        self.ct_node = ct_node
        self.targets = targets
        self.active = [target for target in targets if not target.skipped]
        self.workdir = workdir
        self.common_args = common_args
        self.want_views = want_views
        self.want_heatmap = want_heatmap
        self.ct_path = ct_path  # in workdir, or the logic's CTFileCache file for a warm worker
        self.results: list[Optional[dict]] = []
        self.rows: list[dict] = []
        self.cancelled = False
        self.message = "starting"
        self._child: Optional[ChildRun] = None
        self._child_fraction = 0.0

    @property
    def finished(self) -> bool:
        return self.cancelled or len(self.rows) == len(self.targets)

    @property
    def fraction(self) -> float:
        """Overall progress 0-1: the child's own (reading, model loading, then one step per vertebra)."""
        return 1.0 if not self.targets or self.rows else min(1.0, self._child_fraction)

    def write_locations(self) -> Path:
        """The child's locations file: every target not skipped, and where its heatmap and model-input
        volumes go when wanted."""
        queries = [target.query(self.workdir / f"heatmap_{index}.nii.gz" if self.want_heatmap else None,
                                self.workdir / f"views_{index}" if self.want_views else None)
                   for index, target in enumerate(self.active)]
        return write_locations(self.workdir / self.LOCATIONS_FILE, queries)

    def _command(self) -> list[str]:
        return self.logic.command(["predict", "--ct", str(self.ct_path), "--locations",
                                   str(self.workdir / self.LOCATIONS_FILE), *self.common_args,
                                   *self.dicom_arguments(), "--json"])

    def _start_child(self) -> ChildRun:
        self.message = f"starting ({len(self.active)} vertebra{'e' if len(self.active) > 1 else ''})"
        if self.logic.worker is not None and self.dicom is None:
            # the warm worker (MVCFClassifierLib.worker): no start-up after the first Apply; DICOM output still
            # goes through a one-off `mvcf predict` child, which takes the --dicom-out/--dicom-source options
            options = dict(zip(self.common_args[::2], self.common_args[1::2]))
            self._child = self.logic.worker.submit({  # type: ignore[assignment]
                "command": "predict", "ct": str(self.ct_path),
                "locations": str(self.workdir / self.LOCATIONS_FILE), "device": options.get("--device", "auto"),
                **({"model": options["--model"]} if "--model" in options else {}),
                **({"heatmap_method": options["--heatmap-method"]} if "--heatmap-method" in options else {})})
        else:
            self._child = ChildRun(self._command(), cwd=str(self.workdir)).start()
        self._child_fraction = 0.0
        return self._child

    def _collect(self, child: ChildRun) -> None:
        """One row per target, in order: skipped ones say why; the others come from the child's `results`
        list (an entry with `error` becomes an error row); when the child gave no such list (bad bundle,
        unreadable CT, crash) every row carries its error."""
        self._child = None
        wall = time.monotonic() - (child.started_at or time.monotonic())
        entries = (child.result or {}).get("results")
        by_target: dict[int, tuple[Optional[dict], float, str]] = {}
        if isinstance(entries, list) and len(entries) == len(self.active):
            entries = [e if isinstance(e, dict) else {"error": f"malformed result {e!r:.60}"} for e in entries]
            shares = time_shares(wall, [_total_ms(e.get("timing_ms")) for e in entries])
            for target, entry, share in zip(self.active, entries, shares):
                failed = "error" in entry
                by_target[id(target)] = (None if failed else entry, share, str(entry.get("error", "")))
        else:
            error = child_error(child)
            for target in self.active:
                by_target[id(target)] = (None, wall / max(1, len(self.active)), error)
        self.results, self.rows = [], []
        for target in self.targets:
            result, share, error = by_target.get(id(target), (None, 0.0, ""))
            self.results.append(result)
            self.rows.append(result_row(target, result, share, error))
        done = sum(result is not None for result in self.results)
        self.message = f"done: {done} of {len(self.targets)} classified"

    def cancel(self) -> None:
        """Kill the running child; nothing is added to the scene."""
        self.cancelled = True
        if self._child is not None:
            self._child.cancel()
            self._child = None
        self.message = "cancelled"
        self.cleanup()
        self.drop_dicom()

    def finish(self, scene, table_node=None) -> PredictionOutputs:
        """Create the result nodes (views and heatmap volumes, then the table) under the CT's study.
        All or nothing: if any of them fails, the nodes already added are removed again."""
        if self.cancelled:
            raise MVCFError("the prediction was cancelled; nothing was added to the scene")
        if not self.finished:
            raise RuntimeError("finish() before every vertebra has a result")
        before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
        try:
            volume_nodes = []
            for target, result in zip(self.targets, self.results):
                if result is None:
                    continue
                for path in (result.get("views") or []) if self.want_views else []:
                    grid_and_window = Path(str(path)).name.split(".")[0].replace("_", " ", 1)
                    volume_nodes.append(self._load_volume(scene, Path(str(path)),
                                                          f"{target.name} model input {grid_and_window}"))
                if self.want_heatmap and result.get("heatmap"):
                    volume_nodes.append(self._load_heatmap(scene, Path(str(result["heatmap"])),
                                                           f"{target.name} heatmap"))
            table_node = tables.table_for(table_node, self.ct_node, "prediction")
            refilled = table_node is not None and table_node.GetAttribute("MVCFClassifier.kind") is not None
            name = table_node.GetName() if table_node is not None else f"{self.ct_node.GetName()} MVCF results"
            table = tables.write_table(scene, self.rows, RESULT_COLUMNS, name, node=table_node)
            tables.stamp(table, self.ct_node, "prediction", DISCLAIMER)
            volumes.place_beside(table, self.ct_node)
            if refilled:   # the rows they belonged to are gone: so are they (each Apply added another set)
                _remove_earlier_outputs(scene, before, self.ct_node, {n.GetName() for n in volume_nodes})
        except BaseException:
            _remove_nodes_added_since(scene, before)
            self.drop_dicom()
            raise
        finally:
            self.cleanup()
        return PredictionOutputs(table_node=table, rows=self.rows, volume_nodes=volume_nodes,
                                 results=self.results, dicom=self.import_dicom())

    def _load_volume(self, scene, path: Path, name: str):
        """An image file the child wrote, as a volume node placed beside the CT (it keeps the file's
        geometry, so it overlays the CT)."""
        import SimpleITK as sitk

        from mvcf.ctimage import CTImage

        path = path if path.is_absolute() else self.workdir / path
        image = CTImage.from_sitk(sitk.ReadImage(str(path)), source=str(path))
        node = volumes.volume_node_from_ct_image(scene, image, name, reference_node=self.ct_node)
        node.SetAttribute("MVCFClassifier.ct", self.ct_node.GetID())
        node.SetAttribute("MVCFClassifier.output", name)
        return node

    def _load_heatmap(self, scene, path: Path, name: str):
        """The Grad-CAM file the child wrote, as a volume node on its view grid with a fixed 0-1 colour range
        (so heatmaps of several vertebrae compare)."""
        node = self._load_volume(scene, path, name)
        display = node.GetDisplayNode()
        if display is not None:
            display.SetAutoWindowLevel(False)
            display.SetWindowLevelMinMax(0.0, 1.0)
            for color_name in ("Inferno", "ColdToHotRainbow", "Rainbow"):
                color = scene.GetFirstNodeByName(color_name)
                if color is not None:
                    display.SetAndObserveColorNodeID(color.GetID())
                    break
        return node

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _requirements(torch: bool) -> list[str]:
    from MVCFClassifierLib.dependencies import read_requirements, torch_free_requirements

    return read_requirements() if torch else torch_free_requirements()


def _default_ensure(torch: bool = True) -> bool:
    from MVCFClassifierLib.dependencies import ensure_dependencies

    return ensure_dependencies(requirements=_requirements(torch), torch=torch)


def _default_ensure_dicom(torch: bool = True) -> bool:
    from MVCFClassifierLib.dependencies import ensure_dependencies
    from MVCFClassifierLib.dicom_export import DICOM_REQUIREMENTS, PYDICOM_REQUIREMENT, check_pydicom

    check_pydicom()
    return ensure_dependencies(requirements=[*_requirements(torch), *DICOM_REQUIREMENTS, PYDICOM_REQUIREMENT],
                               torch=torch)


def dicom_summary(outputs: Any) -> str:
    """The status line's word on the DICOM output ('' when none was asked for)."""
    found = getattr(outputs, "dicom", None)
    return found.summary() if found is not None else ""


def segment_ids_from_text(text: str) -> list[str]:
    """The parameter node keeps the selected segment IDs comma-separated."""
    return [s for s in (text or "").split(",") if s]


def chosen_model_dir(use_demo_model: bool, model_directory: Any) -> Optional[str]:
    """The bundle folder the panel asks for: None (the embedded demo) when the demo box is checked or no
    folder is set (an unset Path parameter reads '.')."""
    text = str(model_directory) if model_directory is not None else ""
    return None if use_demo_model or text in ("", ".") else text


def marked_input(source: str, points=None, roi=None, segmentation=None):
    """The node the chosen source refers to (None when it is not selected)."""
    return dict(zip(LOCATION_SOURCES, (points, roi, segmentation))).get(source)


def apply_state(ct_node, source: str, points=None, roi=None, segmentation=None) -> tuple[bool, str]:
    """(enabled, tooltip) of the Apply button when no run is going on."""
    if ct_node is not None and marked_input(source, points, roi, segmentation) is not None:
        return True, "Classify the marked vertebrae"
    return False, "Select a CT volume and mark the vertebrae to classify"


def unique_names(targets: list[Target]) -> list[Target]:
    """Number repeated names ('L1', 'L1 (2)'): two points both labelled L1 gave two rows and two sets of
    nodes ('L1 heatmap', ...) that could not be told apart."""
    taken = {target.name for target in targets}
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            number = 2
            while f"{target.name} ({number})" in taken:
                number += 1
            target.name = f"{target.name} ({number})"
            taken.add(target.name)
        seen.add(target.name)
    return targets


def skipped_summary(targets: Sequence[Target]) -> str:
    """'Skipped 2 of 8: T12 (cut by the edge of the CT), T11 (...)' or '' when none was skipped."""
    skipped = [t for t in targets if t.skipped]
    if not skipped:
        return ""
    return (f"Skipped {len(skipped)} of {len(targets)}: "
            + ", ".join(f"{t.name} ({t.skipped})" for t in skipped))


class PredictionLogic:
    """Scene in, nodes out; no Qt. `process()` is the whole thing for batch scripts; `apply()` is the
    module's Apply (installs missing packages first, after asking)."""

    def __init__(self, python_executable: Optional[str] = None, temp_root: Optional[str] = None,
                 ensure_dependencies: Optional[Callable[[], bool]] = None,
                 dicom_database: Optional[Callable[[], Any]] = None,
                 ensure_dicom_dependencies: Optional[Callable[[], bool]] = None, warm_worker: bool = False) -> None:
        self.python_executable = python_executable or slicer_python()
        self.temp_root = temp_root
        self.ensure_dependencies = ensure_dependencies or _default_ensure
        self.dicom_database = dicom_database or (lambda: None)  # Slicer: lambda: slicer.dicomDatabase
        self.ensure_dicom_dependencies = ensure_dicom_dependencies or _default_ensure_dicom
        self.worker = None
        self.ct_files = None
        if warm_worker:  # one `mvcf worker` child kept between Applies (ended by Cancel and close_worker)
            from MVCFClassifierLib.worker import CTFileCache, WarmWorker

            self.worker = WarmWorker(self.python_executable, cwd=temp_root)
            self.ct_files = CTFileCache(temp_root)

    def close_worker(self) -> None:
        """End the warm worker, if any (scene close, module cleanup), and delete its CT file; the next Apply
        starts a fresh one."""
        if self.worker is not None:
            self.worker.stop()
        if self.ct_files is not None:
            self.ct_files.clear()

    def ready(self, ct_node, dicom: bool = False, torch: bool = True) -> bool:
        """Before an Apply: with `dicom`, is the CT from the DICOM database (an MVCFError if not, before any
        question), then are the packages installed (asking first; False when the user declined). Without
        `torch` (dependencies.classification_needs_torch) only what the ONNX Runtime path needs."""
        from MVCFClassifierLib.dependencies import torch_installed

        if dicom:
            self.prepare_dicom(ct_node, dicom).cleanup()
        had_torch = torch_installed()
        ok = (self.ensure_dicom_dependencies if dicom else self.ensure_dependencies)(torch=torch)
        if ok and not had_torch and self.worker is not None and torch_installed():
            self.worker.stop()  # started before torch was installed: the next request gets a fresh one
        return ok

    def prepare_dicom(self, ct_node, dicom: bool):
        """With `dicom`: the CT's source series from the DICOM database, staged for the child (an MVCFError
        before anything runs when the CT is not from DICOM); else None."""
        from MVCFClassifierLib.dicom_export import DicomExport

        return DicomExport.prepare(ct_node, self.dicom_database(), self.temp_root) if dicom else None

    def command(self, args: Sequence[str]) -> list[str]:
        """The child's command line for `mvcf <args>` (the JSON-lines progress protocol is switched on)."""
        return mvcf_command(args, python_executable=self.python_executable)

    @staticmethod
    def targets(ct_node, source: str = "", points=None, roi=None, segmentation=None,
                segment_ids: Sequence[str] = ()) -> list[Target]:
        """The vertebrae to classify, from whichever input `source` names (or the only one given)."""
        given = [s for s, node in zip(LOCATION_SOURCES, (points, roi, segmentation)) if node is not None]
        if not source:
            if len(given) != 1:
                raise MVCFError("mark the vertebra with exactly one of: a point list, an ROI or a segmentation")
            source = given[0]
        if source not in LOCATION_SOURCES:
            raise MVCFError(f"vertebra source must be one of {', '.join(LOCATION_SOURCES)}, got {source!r}")
        if source == "Point list":
            locations = markups.locations_from_point_list(points)
        elif source == "ROI":
            locations = [markups.location_from_roi(roi)]
        else:
            return unique_names(PredictionLogic.segment_targets(ct_node, segmentation, segment_ids))
        return unique_names([Target(name=loc.name, location=loc) for loc in locations])

    @staticmethod
    def segment_targets(ct_node, segmentation, segment_ids: Sequence[str] = ()) -> list[Target]:
        """Targets from a segmentation. With no segment chosen: its vertebra segments as the whole-spine
        screen finds them (TotalSegmentator's `vertebrae_L1`..., else segments named by level such as `L1`;
        cranial first; a second segment of a level left out, its row warned) when it has any, else every
        segment; a vertebra cut by the CT's edge is then skipped, since its centre would be wrong, and so are
        C1, C2 and S1, which the whole-spine screen does not classify either (mvcf.numbering.SCREENED_LEVELS).
        Segments empty within the CT are always skipped; each skipped target says why."""
        if segmentation is None:
            raise MVCFError("no segmentation selected")
        if ct_node is None:
            raise MVCFError("a reference CT volume is needed to read the segmentation")
        automatic = not segment_ids
        duplicates: list[str] = []
        if automatic:
            from MVCFClassifierLib.screening import vertebra_segments

            try:   # the screen's rule: TotalSegmentator's vertebrae, else segments named by level ("L1")
                levels = vertebra_segments(segmentation, duplicates)
            except MVCFError:
                levels = {}
            chosen = sorted(((segment_id, level) for level, segment_id in levels.items()),
                            key=lambda pair: level_index(pair[1]))
            if not chosen:
                every = segmentation.GetSegmentation()
                chosen = [(every.GetNthSegmentID(i), "") for i in range(every.GetNumberOfSegments())]
        else:
            chosen = [(segment_id, "") for segment_id in segment_ids]
        if not chosen:
            raise MVCFError(f"segmentation '{segmentation.GetName()}' has no segments")
        targets = []
        for segment_id, level in chosen:
            location, mask = markups.segment_location(segmentation, segment_id, ct_node, name=level)
            name = level or segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            target = Target(name=name, location=location, segment_id=segment_id, mask=mask)
            if automatic and level and level not in SCREENED_LEVELS:
                target.skipped = NOT_SCREENED
            elif location is None:
                target.skipped = "empty within the CT"
            elif automatic and markups.touches_edge(mask):
                target.skipped = "cut by the edge of the CT"
            mine = [note for note in duplicates if level and f" is a second {level};" in note]
            if mine and target.location is not None:
                target.location.warnings = [*target.location.warnings, *mine]
            targets.append(target)
        return targets

    def start(self, ct_node, targets: list[Target], model_dir: Optional[str] = None, device: str = "auto",
              views: bool = True, heatmap: bool = True, segmentation=None, dicom: bool = False,
              heatmap_method: str = "gradcam") -> PredictionRun:
        """Write the inputs to a temporary folder and return a run ready to be polled (no child yet)."""
        from mvcf.explain import check_method

        if device not in DEVICES:
            raise MVCFError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        check_method(heatmap_method)
        if not targets:
            raise MVCFError("no vertebra to classify")
        if all(target.skipped for target in targets):
            raise MVCFError("no vertebra to classify: " + skipped_summary(targets))
        if model_dir and not Path(model_dir).is_dir():
            raise MVCFError(f"model bundle folder not found: {model_dir}")
        warm = self.ct_files is not None and not dicom  # what PredictionRun sends to the warm worker
        ct = None if warm else volumes.input_ct_from_volume_node(ct_node)
        export = self.prepare_dicom(ct_node, dicom)
        workdir = Path(tempfile.mkdtemp(prefix="mvcf-predict-", dir=self.temp_root))
        try:
            if warm:  # written once per volume state, read once by the worker
                ct_path = self.ct_files.ct_path(
                    ct_node, lambda path: write_image(volumes.input_ct_from_volume_node(ct_node), path))
            else:
                ct_path = workdir / "ct.nrrd"
                write_image(ct, ct_path)
            for index, target in enumerate(targets):
                if target.segment_id and not target.skipped:
                    if target.mask is None:
                        if segmentation is None:
                            raise MVCFError(f"'{target.name}' is a segment: pass its segmentation node")
                        target.mask = markups.segment_labelmap(segmentation, target.segment_id, ct_node)
                    target.mask_path = workdir / f"mask_{index}.nrrd"
                    write_image(target.mask, target.mask_path, compress=True)
            common = ["--device", device] + (["--model", str(model_dir)] if model_dir else []) + \
                (["--heatmap-method", heatmap_method] if heatmap and heatmap_method != "gradcam" else [])
            run = PredictionRun(self, ct_node, targets, workdir, common, views, heatmap, ct_path=ct_path)
            run.dicom = export
            run.write_locations()
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            if export is not None:
                export.cleanup()
            raise
        return run

    def apply(self, ct_node, source: str, points=None, roi=None, segmentation=None,
              segment_ids: Sequence[str] = (), model_dir: Optional[str] = None, device: str = "auto",
              views: bool = True, heatmap: bool = True, dicom: bool = False,
              heatmap_method: str = "gradcam") -> Optional[PredictionRun]:
        """The module's Apply: read the marked vertebrae, make sure the packages are installed (asking
        first), and write the inputs. None when the user declined the installation (nothing was written)."""
        if ct_node is None:
            raise MVCFError("no CT volume selected")
        targets = self.targets(ct_node, source, points=points, roi=roi, segmentation=segmentation,
                               segment_ids=segment_ids)
        from MVCFClassifierLib.dependencies import classification_needs_torch

        if not self.ready(ct_node, dicom, torch=classification_needs_torch(heatmap, model_dir, device,
                                                                           heatmap_method)):
            return None
        return self.start(ct_node, targets, model_dir=model_dir, device=device, views=views, heatmap=heatmap,
                          segmentation=segmentation if source == "Segmentation" else None, dicom=dicom,
                          heatmap_method=heatmap_method)

    def apply_screen(self, ct_node, segmentation_node, model_dir: Optional[str] = None, device: str = "auto",
                     dicom: bool = False, colour_by: str = "grade", heatmap_method: str = "gradcam"):
        """The module's Apply for a whole spine: one `mvcf screen` child for every vertebra segment
        (screening.ScreenRun; None when the user declined the package installation). `dicom` adds its DICOM
        output to Slicer's DICOM database, with heatmaps made by `heatmap_method`: its only heatmaps, so
        torch is asked for only when they need it (dependencies.classification_needs_torch). The segments
        are coloured by `colour_by` ("grade" or "probability")."""
        from MVCFClassifierLib import screening
        from MVCFClassifierLib.dependencies import classification_needs_torch
        from mvcf.explain import check_method

        screening.check_colour_by(colour_by)
        check_method(heatmap_method)
        if ct_node is None:
            raise MVCFError("no CT volume selected")
        screening.vertebra_segments(segmentation_node)   # a missing or vertebra-less segmentation: say so first,
        # not after the user has been asked to install packages for a run that cannot start
        if not self.ready(ct_node, dicom, torch=classification_needs_torch(dicom, model_dir, device, heatmap_method)):
            return None
        return screening.start_screen(ct_node, segmentation_node, self.python_executable, model_dir, device,
                                      self.temp_root, colour_by=colour_by, dicom=self.prepare_dicom(ct_node, dicom),
                                      heatmap_method=heatmap_method)

    def process(self, ct_node, points=None, roi=None, segmentation=None, segment_ids: Sequence[str] = (),
                model_dir: Optional[str] = None, device: str = "auto", table_node=None, views: bool = True,
                heatmap: bool = True, source: str = "", on_event: Optional[Callable[[dict], None]] = None,
                dicom: bool = False, heatmap_method: str = "gradcam") -> PredictionOutputs:
        """Classify every marked vertebra and put the results in the scene; blocks (batch use)."""
        if ct_node is None:
            raise MVCFError("no CT volume given")
        targets = self.targets(ct_node, source, points=points, roi=roi, segmentation=segmentation,
                               segment_ids=segment_ids)
        run = self.start(ct_node, targets, model_dir=model_dir, device=device, views=views, heatmap=heatmap,
                         segmentation=segmentation, dicom=dicom, heatmap_method=heatmap_method)
        try:
            run.wait(on_event)
        except BaseException:
            run.cancel()
            raise
        return run.finish(ct_node.GetScene(), table_node=table_node)


def _remove_earlier_outputs(scene, before: set, ct_node, names: set) -> None:
    """Remove the volumes an earlier Apply on `ct_node` made under one of `names` (heatmaps, model inputs),
    with their display and storage nodes; nodes of other CTs, other names or the user's are left alone."""
    old = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in old:
        if node is None or node.GetID() not in before or not node.IsA("vtkMRMLVolumeNode"):
            continue
        if node.GetAttribute("MVCFClassifier.ct") != ct_node.GetID() or \
                node.GetAttribute("MVCFClassifier.output") not in names:
            continue
        helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] + \
            [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and scene.IsNodePresent(helper):
                scene.RemoveNode(helper)


def _remove_nodes_added_since(scene, before: set) -> None:
    for index in reversed(range(scene.GetNumberOfNodes())):
        node = scene.GetNthNode(index)
        if node is not None and node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
            scene.RemoveNode(node)


def write_image(image, path: Path, compress: bool = False) -> None:
    """Write a CTImage for the child (SimpleITK picks the format from the name); a full or read-only
    temporary folder is one MVCFError line (fileio.write_errors), not ITK's multi-line RuntimeError."""
    import SimpleITK as sitk

    from mvcf.fileio import write_errors

    with write_errors(path):
        sitk.WriteImage(image.to_sitk(), str(path), compress)

"""The classifier's logic without any GUI: scene inputs -> temporary files (CT, segment masks, a locations
file) -> one `mvcf predict --locations` child process for all vertebrae -> result rows -> nodes in the scene.

Runs the same way from the module's Apply button (the widget calls `PredictionRun.poll()` from a QTimer, so
Slicer stays responsive and Cancel kills the child) and from a batch script (`PredictionLogic.process`
blocks). One child pays the torch import and model load once for every vertebra. Nodes are created only
once every vertebra has its result, so a cancelled or killed run leaves no half-written node behind.
Prediction itself lives in the core (`mvcf predict`); nothing here imports torch.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf.ctimage import lps_to_ras
from mvcf.errors import MVCFError
from mvcf.locate import VertebraLocation
from mvcf.locations_file import HEATMAP_SUFFIXES, VertebraQuery, write_locations

from MVCFClassifierLib import markups, tables, volumes
from MVCFClassifierLib.process import ChildProcess, mvcf_command

LOCATION_SOURCES = ("Point list", "ROI", "Segmentation")
DEVICES = ("auto", "cpu", "cuda")
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
    """One vertebra to classify and how `mvcf predict` is told where it is."""

    name: str
    location: VertebraLocation
    segment_id: str = ""  # set when the vertebra is a segment: its mask is written and passed to predict
    mask_path: Optional[Path] = None

    def query(self, heatmap: Optional[Path] = None) -> VertebraQuery:
        """This vertebra as an entry of the child's locations file: its segment's mask (label 1) or its
        centre in LPS mm."""
        if self.mask_path is not None:
            return VertebraQuery(name=self.name, mask=self.mask_path, label=1, heatmap=heatmap)
        return VertebraQuery(name=self.name, point=tuple(float(v) for v in self.location.center_lps),
                             unit="lps", heatmap=heatmap)


@dataclass
class PredictionOutputs:
    """What one run added to the scene."""

    table_node: Any
    rows: list[dict]
    volume_nodes: list[Any] = field(default_factory=list)
    results: list[Optional[dict]] = field(default_factory=list)


def slicer_python() -> str:
    """The interpreter for the child: PythonSlicer inside Slicer (same packages as Slicer), else this one."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    beside = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(beside) if beside.exists() else sys.executable


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


def _image_files(value: Any, workdir: Path) -> list[Path]:
    """NIfTI/NRRD files named by a result field (a path, a folder, a list or a dict of those)."""
    if value is None:
        return []
    if isinstance(value, dict):
        found: list[Path] = []
        for key in ("path", "file", "files", "out", "nifti"):
            found += _image_files(value.get(key), workdir)
        return found
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in _image_files(item, workdir)]
    path = Path(str(value))
    if not path.is_absolute():
        path = workdir / path
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.name.endswith(HEATMAP_SUFFIXES))
    return [path] if path.is_file() and path.name.endswith(HEATMAP_SUFFIXES) else []


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


def child_error(child: ChildProcess) -> str:
    """The one-line reason a child gave no result: its error event, else its last stderr line."""
    tail = [line for line in child.stderr_tail.splitlines() if line.strip()]
    if child.returncode == 0 and not child.error:
        return "the prediction returned no result for this vertebra"
    error = child.error or (tail[-1] if tail else f"exit code {child.returncode}")
    return error[len("error: "):] if error.startswith("error: ") else error


def result_row(target: Target, result: Optional[dict], wall_s: float, error: str = "") -> dict:
    """One table row from an `mvcf predict --json` result (or from the error that replaced it)."""
    row: dict[str, Any] = {"vertebra": target.name, "run_time_s": round(wall_s, 3),
                           "warnings": "; ".join(target.location.warnings)}
    center = target.location.center_lps
    if result is None:
        row.update(status=f"error: {error or 'no result'}")
    else:
        model = result.get("model") or {}
        center = np.asarray(result.get("center_lps", center), dtype=float)
        warnings = list(target.location.warnings) + [str(w) for w in result.get("warnings") or []]
        row.update(probability_malignant=result.get("probability_malignant"),
                   prediction=str(result.get("prediction", "")), threshold=result.get("threshold"),
                   model_name=str(model.get("name", "")), model_version=str(model.get("version", "")),
                   model_sha256=str(model.get("sha256", "")), device=str(result.get("device", "")),
                   status="ok", warnings="; ".join(dict.fromkeys(warnings)))
    ras = lps_to_ras(center)
    row["center_ras_mm"] = ", ".join(f"{v:.1f}" for v in ras)
    return row


def results_html(rows: Sequence[dict]) -> str:
    """The results as a small rich-text table for the module panel, with the disclaimer under it."""
    from html import escape

    lines = ["<table><tr><th align='left'>Vertebra</th><th>P(MVCF)</th><th>Class</th><th align='left'>Notes</th></tr>"]
    for row in rows:
        probability = row.get("probability_malignant")
        shown = f"{float(probability):.2f}" if isinstance(probability, (int, float)) else "-"
        notes = row.get("status", "") if row.get("status") != "ok" else row.get("warnings", "")
        lines.append(f"<tr><td>{escape(str(row.get('vertebra', '')))}</td><td align='center'>{shown}</td>"
                     f"<td align='center'><b>{escape(str(row.get('prediction', '')))}</b></td>"
                     f"<td>{escape(str(notes))}</td></tr>")
    lines.append(f"</table><i>{escape(DISCLAIMER)}</i>")
    return "".join(lines)


class PredictionRun:
    """One Apply: the CT, segment masks and a locations file in a temporary folder, and one `mvcf predict`
    child for all vertebrae. Drive it with `poll()` until `finished`; then `finish(scene)` creates the nodes.
    """

    LOCATIONS_FILE = "locations.json"

    def __init__(self, logic: "PredictionLogic", ct_node, targets: list[Target], workdir: Path,
                 common_args: list[str], want_views: bool, want_heatmap: bool) -> None:
        self.logic = logic
        self.ct_node = ct_node
        self.targets = targets
        self.workdir = workdir
        self.common_args = common_args
        self.want_views = want_views
        self.want_heatmap = want_heatmap
        self.results: list[Optional[dict]] = []
        self.rows: list[dict] = []
        self.cancelled = False
        self.message = "starting"
        self._child: Optional[ChildProcess] = None
        self._child_started = 0.0
        self._child_fraction = 0.0
        self.ct_image = None  # set by PredictionLogic.start: the CT as the core sees it (for the QC views)
        self.view_spec: Optional[dict] = None

    @property
    def finished(self) -> bool:
        return self.cancelled or len(self.rows) == len(self.targets)

    @property
    def fraction(self) -> float:
        """Overall progress 0-1: the child's own (reading, model loading, then one step per vertebra)."""
        return 1.0 if not self.targets or self.rows else min(1.0, self._child_fraction)

    def write_locations(self) -> Path:
        """The child's locations file: every target, and where its heatmap goes when one is wanted."""
        queries = [target.query(self.workdir / f"heatmap_{index}.nii.gz" if self.want_heatmap else None)
                   for index, target in enumerate(self.targets)]
        return write_locations(self.workdir / self.LOCATIONS_FILE, queries)

    def _command(self) -> list[str]:
        return self.logic.command(["predict", "--ct", str(self.workdir / "ct.nrrd"), "--locations",
                                   str(self.workdir / self.LOCATIONS_FILE), *self.common_args, "--json"])

    def _start_child(self) -> None:
        self.message = f"starting ({len(self.targets)} vertebra{'e' if len(self.targets) > 1 else ''})"
        if self.logic.worker is not None:  # the warm worker (MVCFClassifierLib.worker): no start-up after the first
            options = dict(zip(self.common_args[::2], self.common_args[1::2]))
            self._child = self.logic.worker.submit({  # type: ignore[assignment]
                "command": "predict", "ct": str(self.workdir / "ct.nrrd"),
                "locations": str(self.workdir / self.LOCATIONS_FILE), "device": options.get("--device", "auto"),
                **({"model": options["--model"]} if "--model" in options else {})})
        else:
            self._child = ChildProcess(self._command(), cwd=str(self.workdir)).start()
        self._child_started = time.monotonic()
        self._child_fraction = 0.0

    def poll(self) -> list[dict]:
        """Advance without blocking; returns the child events that arrived (progress, log, result, error)."""
        if self.finished:
            return []
        if self._child is None:
            self._start_child()
        assert self._child is not None
        exited = self._child.finished()  # checked first, so this poll() holds all its output once it exited
        events = self._child.poll()
        for event in events:
            if event.get("event") == "progress" and event.get("total"):
                self._child_fraction = float(event["done"]) / float(event["total"])
                self.message = str(event.get("message", ""))
        if exited:
            self._collect(self._child)
            self._child = None
        return events

    def _collect(self, child: ChildProcess) -> None:
        """One row per target from the child's `results` list (an entry with `error` becomes an error row);
        when the child gave no such list (bad bundle, unreadable CT, crash) every row carries its error."""
        wall = time.monotonic() - self._child_started
        entries = (child.result or {}).get("results")
        if isinstance(entries, list) and len(entries) == len(self.targets):
            entries = [e if isinstance(e, dict) else {"error": f"malformed result {e!r:.60}"} for e in entries]
            shares = time_shares(wall, [_total_ms(e.get("timing_ms")) for e in entries])
            for target, entry, share in zip(self.targets, entries, shares):
                failed = "error" in entry
                self.results.append(None if failed else entry)
                self.rows.append(result_row(target, None if failed else entry, share,
                                            str(entry.get("error", ""))))
        else:
            error = child_error(child)
            self.results = [None] * len(self.targets)
            self.rows = [result_row(target, None, wall / len(self.targets), error) for target in self.targets]
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

    def wait(self, on_event: Optional[Callable[[dict], None]] = None, poll_s: float = 0.05) -> None:
        """Block until every vertebra is done (batch use)."""
        while not self.finished:
            for event in self.poll():
                if on_event:
                    on_event(event)
            time.sleep(poll_s)

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
                if self.want_views:
                    volume_nodes += (self._load_images(scene, result.get("views"), f"{target.name} model input")
                                     or self._view_nodes(scene, target, result))
                if self.want_heatmap:
                    volume_nodes += self._load_images(scene, result.get("heatmap"), f"{target.name} heatmap",
                                                      heatmap=True)
            name = table_node.GetName() if table_node is not None else f"{self.ct_node.GetName()} MVCF results"
            table = tables.write_table(scene, self.rows, RESULT_COLUMNS, name, node=table_node)
            table.SetAttribute("MVCFClassifier.disclaimer", DISCLAIMER)
            volumes.place_beside(table, self.ct_node)
        except BaseException:
            _remove_nodes_added_since(scene, before)
            raise
        finally:
            self.cleanup()
        return PredictionOutputs(table_node=table, rows=self.rows, volume_nodes=volume_nodes,
                                 results=self.results)

    def _view_nodes(self, scene, target: Target, result: dict) -> list:
        """The model's input around this vertebra as volume nodes (one per sampled grid and window), built
        here with the bundle's view spec at the centre the model used, so it overlays the CT."""
        from mvcf.views import ViewSpec, build_views

        if self.ct_image is None or self.view_spec is None:
            return []
        view = build_views(self.ct_image, np.asarray(result.get("center_lps", target.location.center_lps), float),
                           ViewSpec.from_dict(self.view_spec))
        nodes = []
        for grid, window, values in view.grid_volumes():
            image = grid.to_ctimage(values.reshape(grid.size[::-1]).astype(np.float32))
            nodes.append(volumes.volume_node_from_ct_image(
                scene, image, f"{target.name} model input {grid.name} {window}", reference_node=self.ct_node))
        return nodes

    def _load_images(self, scene, value: Any, name: str, heatmap: bool = False) -> list:
        import SimpleITK as sitk

        from mvcf.ctimage import CTImage

        nodes = []
        files = _image_files(value, self.workdir)
        for path in files:
            image = CTImage.from_sitk(sitk.ReadImage(str(path)), source=str(path))
            suffix = "" if len(files) == 1 else " " + path.name.split(".")[0]
            node = volumes.volume_node_from_ct_image(scene, image, name + suffix, reference_node=self.ct_node)
            if heatmap and node.GetDisplayNode() is not None:
                display = node.GetDisplayNode()  # Grad-CAM is 0..1: a fixed range keeps heatmaps comparable
                display.SetAutoWindowLevel(False)
                display.SetWindowLevelMinMax(0.0, 1.0)
                for color_name in ("Inferno", "ColdToHotRainbow", "Rainbow"):
                    color = scene.GetFirstNodeByName(color_name)
                    if color is not None:
                        display.SetAndObserveColorNodeID(color.GetID())
                        break
            nodes.append(node)
        return nodes

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class PredictionLogic:
    """Scene in, nodes out; no Qt. `process()` is the whole thing for batch scripts."""

    def __init__(self, python_executable: Optional[str] = None, temp_root: Optional[str] = None,
                 warm_worker: bool = False) -> None:
        self.python_executable = python_executable or slicer_python()
        self.temp_root = temp_root
        self.worker = None
        if warm_worker:  # one `mvcf worker` child kept between Applies (ended by Cancel and close_worker)
            from MVCFClassifierLib.worker import WarmWorker

            self.worker = WarmWorker(self.python_executable, cwd=temp_root)

    def close_worker(self) -> None:
        """End the warm worker, if any (scene close, module cleanup); the next Apply starts a fresh one."""
        if self.worker is not None:
            self.worker.stop()

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
            if segmentation is None:
                raise MVCFError("no segmentation selected")
            segmentation_ = segmentation.GetSegmentation()
            ids = list(segment_ids) or [segmentation_.GetNthSegmentID(i)
                                        for i in range(segmentation_.GetNumberOfSegments())]
            locations = markups.locations_from_segmentation(segmentation, ids, ct_node)
            return [Target(name=loc.name, location=loc, segment_id=sid) for sid, loc in zip(ids, locations)]
        return [Target(name=loc.name, location=loc) for loc in locations]

    def start(self, ct_node, targets: list[Target], model_dir: Optional[str] = None, device: str = "auto",
              views: bool = True, heatmap: bool = True, segmentation=None) -> PredictionRun:
        """Write the inputs to a temporary folder and return a run ready to be polled (no child yet)."""
        if device not in DEVICES:
            raise MVCFError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if not targets:
            raise MVCFError("no vertebra to classify")
        if model_dir and not Path(model_dir).is_dir():
            raise MVCFError(f"model bundle folder not found: {model_dir}")
        ct = volumes.ct_image_from_volume_node(ct_node)
        workdir = Path(tempfile.mkdtemp(prefix="mvcf-predict-", dir=self.temp_root))
        try:
            write_image(ct, workdir / "ct.nrrd")
            for index, target in enumerate(targets):
                if target.segment_id:
                    if segmentation is None:
                        raise MVCFError(f"'{target.name}' is a segment: pass its segmentation node")
                    mask = markups.segment_labelmap(segmentation, target.segment_id, ct_node)
                    target.mask_path = workdir / f"mask_{index}.nrrd"
                    write_image(mask, target.mask_path, compress=True)
            common = ["--device", device] + (["--model", str(model_dir)] if model_dir else [])
            run = PredictionRun(self, ct_node, targets, workdir, common, views, heatmap)
            run.write_locations()
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        run.ct_image = ct
        if views:
            try:
                run.view_spec = dict(model_card(model_dir)["view_spec"])
            except MVCFError:
                run.view_spec = None  # the child reports the bad bundle for every vertebra
        return run

    def process(self, ct_node, points=None, roi=None, segmentation=None, segment_ids: Sequence[str] = (),
                model_dir: Optional[str] = None, device: str = "auto", table_node=None, views: bool = True,
                heatmap: bool = True, source: str = "",
                on_event: Optional[Callable[[dict], None]] = None) -> PredictionOutputs:
        """Classify every marked vertebra and put the results in the scene; blocks (batch use)."""
        if ct_node is None:
            raise MVCFError("no CT volume given")
        targets = self.targets(ct_node, source, points=points, roi=roi, segmentation=segmentation,
                               segment_ids=segment_ids)
        run = self.start(ct_node, targets, model_dir=model_dir, device=device, views=views, heatmap=heatmap,
                         segmentation=segmentation)
        try:
            run.wait(on_event)
        except BaseException:
            run.cancel()
            raise
        return run.finish(ct_node.GetScene(), table_node=table_node)


def _remove_nodes_added_since(scene, before: set) -> None:
    for index in reversed(range(scene.GetNumberOfNodes())):
        node = scene.GetNthNode(index)
        if node is not None and node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
            scene.RemoveNode(node)


def write_image(image, path: Path, compress: bool = False) -> None:
    """Write a CTImage for the child (SimpleITK picks the format from the name)."""
    import SimpleITK as sitk

    sitk.WriteImage(image.to_sitk(), str(path), compress)

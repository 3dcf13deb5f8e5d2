"""Whole-spine screening in Slicer: a segmentation node (e.g. from TotalSegmentator) -> one `mvcf screen`
child run -> one table node, segments coloured by Genant grade or P(MVCF), slice views centred on a row.

Every function takes the scene or nodes as arguments (no global slicer.mrmlScene), so pytest drives it with
slicer-core's real MRML. The widget only calls these and ChildProcess.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from MVCFClassifierLib.logic import DISCLAIMER, ChildDrivenRun
from mvcf.ctimage import CTImage, lps_to_ras
from mvcf.errors import MVCFError
from mvcf.explain import check_method

#: Table columns (name, type, description): what the reader needs on one screen.
TABLE_COLUMNS = [
    ("level", str, "vertebra level"),
    ("status", str, "measured, partial (cut by the field of view), missing or empty"),
    ("height_anterior_mm", float, "anterior body height (mm)"),
    ("height_middle_mm", float, "middle body height (mm)"),
    ("height_posterior_mm", float, "posterior body height (mm)"),
    ("height_loss", float, "graded height loss (fraction)"),
    ("genant_grade", str, "Genant grade 0-3 (empty: not graded)"),
    ("shape", str, "normal, wedge, biconcave or crush"),
    ("trabecular_hu", float, "trabecular HU of the eroded body"),
    ("density", str, "Pickhardt 2013 L1 category"),
    ("probability_malignant", float, "Probability that the fracture is malignant (MVCF), 0-1. " + DISCLAIMER),
    ("prediction", str, "MVCF or OVCF at the model's threshold"),
    ("flagged", str, "collapsed (Genant >= 1) and P(MVCF) >= threshold"),
    ("notes", str, "why a value is missing"),
]

#: Segment colours (RGB 0..1) by Genant grade; grey for not graded.
GRADE_COLOURS = {0: (0.30, 0.69, 0.29), 1: (1.00, 0.85, 0.20), 2: (1.00, 0.50, 0.05), 3: (0.85, 0.10, 0.10)}
UNGRADED_COLOUR = (0.6, 0.6, 0.6)
#: What the segments can be coloured by (the panel's "Colour segments by" choice).
COLOUR_BY = ("grade", "probability")
#: the child's --out inside the run's temporary folder: its overview picture is read from there for the panel
OUT_FOLDER = "out"


def vertebra_segments(segmentation_node, notes: Optional[list[str]] = None) -> dict[str, str]:
    """{level: segment id} of the vertebra segments: TotalSegmentator's (`vertebrae_L1` ids or names, see
    MVCFClassifierLib.totalsegmentator), else segments named by level ('L1', 'Vertebra T13', ...). A second
    segment for a level is left out, and `notes` gets a line naming it (it was dropped without a word)."""
    from MVCFClassifierLib.totalsegmentator import vertebra_segments as totalsegmentator_vertebrae
    from mvcf.numbering import level_from_name

    if segmentation_node is None:
        raise MVCFError("no segmentation selected: choose the spine segmentation (e.g. from TotalSegmentator)")
    segmentation = segmentation_node.GetSegmentation()
    named = [(segment_id, level) for segment_id, level in totalsegmentator_vertebrae(segmentation_node)]
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        level = level_from_name(segmentation.GetSegment(segment_id).GetName())
        if level is not None and all(segment_id != known for known, _ in named):
            named.append((segment_id, level))
    found: dict[str, str] = {}
    for segment_id, level in named:
        if level not in found:
            found[level] = segment_id
        elif notes is not None:
            notes.append(f"segment '{segmentation.GetSegment(segment_id).GetName()}' is a second {level}; only "
                         f"'{segmentation.GetSegment(found[level]).GetName()}' is used")
    if not found:
        raise MVCFError(f"segmentation '{segmentation_node.GetName()}' has no vertebra segments (names such as "
                        f"vertebrae_L1 or L1)")
    return found


def spine_label_map(segmentation_node, reference_volume_node,
                    notes: Optional[list[str]] = None) -> tuple[CTImage, dict[int, str]]:
    """All vertebra segments as one label map on the CT's grid, TotalSegmentator v2 values (L1 = 31, VerSe's
    T13/L6 kept with VerSe values 28/25 would collide, so they get 51/52 and their names), and the names.
    Where two segments overlap the later one takes the shared voxels; `notes` gets one line per such pair."""
    from MVCFClassifierLib.markups import segment_labelmap
    from mvcf.numbering import TABLES, segment_name

    if reference_volume_node is None:
        raise MVCFError("select the CT volume the segmentation belongs to")
    value_of = {level: value for value, level in TABLES["totalsegmentator"].items()}
    value_of.update({"T13": 51, "L6": 52})
    labels: Optional[np.ndarray] = None
    geometry = None
    names: dict[int, str] = {}
    for level, segment_id in vertebra_segments(segmentation_node, notes).items():
        mask = segment_labelmap(segmentation_node, segment_id, reference_volume_node)
        if labels is None:
            labels = np.zeros(mask.voxels.shape, np.uint8)
            geometry = mask
        inside = mask.voxels > 0
        if notes is not None:
            shared = labels[inside]
            for value, count in zip(*np.unique(shared[shared > 0], return_counts=True)):
                notes.append(f"segments {names[int(value)]} and {segment_name(level)} overlap in {int(count)} "
                             f"voxels; they were given to {segment_name(level)}")
        labels[inside] = value_of[level]
        names[value_of[level]] = segment_name(level)
    assert labels is not None and geometry is not None
    return CTImage(labels, geometry.spacing, geometry.origin, geometry.direction, source="segmentation"), names


def screen_arguments(ct_path: Path, seg_path: Path, model_dir: Optional[str] = None,
                     device: str = "auto", heatmap_method: str = "gradcam", out: Optional[Path] = None) -> list[str]:
    """`mvcf screen` arguments of the child run (the JSON-lines protocol is added by mvcf_command);
    `heatmap_method` makes the heatmaps of its DICOM output (the default, Grad-CAM, is not spelled out);
    `out`: the folder its table and whole-spine overview picture go to."""
    args = ["screen", "--ct", str(ct_path), "--seg", str(seg_path), "--device", device]
    return (args + (["--model", str(model_dir)] if model_dir else []) + (["--out", str(out)] if out else [])
            + (["--heatmap-method", check_method(heatmap_method)] if heatmap_method != "gradcam" else []))


def write_seg_nrrd(labels: CTImage, names: dict[int, str], path: Path) -> Path:
    """The label map as a .seg.nrrd-style NRRD whose header names each label (Segment<N>_Name /
    _LabelValue), so `mvcf screen` reads the levels from the names."""
    import SimpleITK as sitk

    from mvcf.fileio import write_errors

    image = labels.to_sitk()
    for n, (value, name) in enumerate(sorted(names.items())):
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_LabelValue", str(value))
        image.SetMetaData(f"Segment{n}_Layer", "0")
    with write_errors(path):
        sitk.WriteImage(image, str(path), True)
    return path


def _cell(row: dict, name: str) -> Any:
    value = row.get(name)
    if name == "genant_grade":
        return "" if value is None else str(value)
    if name == "flagged":
        return "FLAG" if value else ""
    if name == "notes":
        return "; ".join(value or [])
    return value


def write_screen_table(scene, vertebrae: Sequence[dict], node=None, name: str = "MVCF screen"):
    """One row per vertebra of a screen result (`mvcf screen --json`'s "vertebrae") in a table node."""
    from MVCFClassifierLib.tables import write_table

    rows = [{column: _cell(row, column) for column, _, _ in TABLE_COLUMNS} for row in vertebrae]
    return write_table(scene, rows, TABLE_COLUMNS, name, node=node)


def probability_colour(probability: float) -> tuple[float, float, float]:
    """Blue (0) through white (0.5) to red (1)."""
    p = float(np.clip(probability, 0.0, 1.0))
    if p < 0.5:
        t = p / 0.5
        return (0.13 + 0.87 * t, 0.4 + 0.6 * t, 0.8 + 0.2 * t)
    t = (p - 0.5) / 0.5
    return (1.0, 1.0 - 0.9 * t, 1.0 - 0.9 * t)


def colour_segments(segmentation_node, vertebrae: Sequence[dict], by: str = "grade") -> dict[str, tuple]:
    """Colour each vertebra's segment by Genant grade (green/yellow/orange/red, grey not graded) or by
    P(MVCF) (blue-white-red); returns {level: colour}. Called again with the other `by`, it recolours."""
    check_colour_by(by)
    segments = vertebra_segments(segmentation_node)
    segmentation = segmentation_node.GetSegmentation()
    colours = {}
    for row in vertebrae:
        segment_id = segments.get(row["level"])
        if segment_id is None:
            continue
        if by == "grade":
            colour = GRADE_COLOURS.get(row.get("genant_grade"), UNGRADED_COLOUR)
        else:
            p = row.get("probability_malignant")
            colour = UNGRADED_COLOUR if p is None else probability_colour(p)
        segmentation.GetSegment(segment_id).SetColor(*colour)
        colours[row["level"]] = colour
    return colours


def check_colour_by(by: str) -> str:
    if by not in COLOUR_BY:
        raise MVCFError(f"colour segments by 'grade' or 'probability', not {by!r}")
    return by


def row_center_ras(row: dict) -> Optional[np.ndarray]:
    center = row.get("center_lps")
    return None if center is None else lps_to_ras(np.asarray(center, float))


def center_slices_on(scene, row: dict) -> Optional[np.ndarray]:
    """Centre every slice view of `scene` on the vertebra of a table row; returns the RAS point (None when
    the row has no position, e.g. a missing level)."""
    import slicer

    ras = row_center_ras(row)
    if ras is None:
        return None
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, float(ras[0]), float(ras[1]), float(ras[2]),
                                          slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return ras


#: The module's input choice for screening every vertebra of a segmentation.
SOURCE = "Whole spine"


@dataclass
class ScreenOutputs:
    table_node: Any
    rows: list[dict]
    result: dict
    dicom: Any = None  # a dicom_export.DicomImport when DICOM output was asked for
    segmentation_node: Any = None
    colour_by: str = COLOUR_BY[0]
    overview_png: Optional[bytes] = None   # the whole-spine overview picture (mvcf.report.overview), for the panel
    #: the exam's own warnings (a synthetic-data model, a contrast phase that makes HU unreliable, a numbering
    #: that contradicts the labels): the table's notes hold only each vertebra's
    warnings: list[str] = field(default_factory=list)

    def recolour(self, by: str) -> dict[str, tuple]:
        """Colour the screened segments by `by` ("grade" or "probability") now; returns {level: colour}."""
        colours = colour_segments(self.segmentation_node, self.rows, by=by)
        self.colour_by = by
        return colours


class ScreenRun(ChildDrivenRun):
    """One whole-spine Apply: the CT and the named label map in a temporary folder, one `mvcf screen` child.
    Poll it (`poll()`, `fraction`, `message`) until `finished`, or `wait()`; `finish(scene)` fills the table
    and colours the segments; `cancel()` kills the child and adds nothing."""

    def __init__(self, ct_node, segmentation_node, workdir: Path, command: list[str], colour_by: str = "grade"):
        self.ct_node = ct_node
        self.segmentation_node = segmentation_node
        self.workdir = workdir
        self.command = command
        self.colour_by = colour_by
        self.targets: list = []              # the prediction run's skipped-target summary has nothing to say
        self.notes: list[str] = []           # what building the label map found (overlapping segments)
        self.cancelled = False
        self.message = "starting"
        self._child = None
        self._child_fraction = 0.0
        self._result: Optional[dict] = None
        self._error = ""
        self._done = False

    @property
    def finished(self) -> bool:
        return self.cancelled or self._done

    @property
    def fraction(self) -> float:
        return 1.0 if self._done else min(1.0, self._child_fraction)

    def _start_child(self):
        from MVCFClassifierLib.process import ChildRun

        self._child = ChildRun(self.command, cwd=str(self.workdir)).start()
        return self._child

    def _collect(self, child) -> None:
        from MVCFClassifierLib.logic import child_error

        self._result = child.result if isinstance(child.result, dict) else None
        self._error = "" if self._result is not None else child_error(child)
        self._done = True
        self.message = "done" if self._result is not None else f"failed: {self._error}"

    def cancel(self) -> None:
        import shutil

        self.cancelled = True
        if self._child is not None:
            self._child.cancel()
        self.message = "cancelled"
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.drop_dicom()

    def finish(self, scene, table_node=None) -> ScreenOutputs:
        import shutil

        if self.cancelled:
            raise MVCFError("the screen was cancelled; nothing was added to the scene")
        if not self._done:
            raise RuntimeError("finish() before the screen has ended")
        from mvcf.screen import OVERVIEW_NAME

        picture = self.workdir / OUT_FOLDER / OVERVIEW_NAME
        overview = picture.read_bytes() if self._result is not None and picture.is_file() else None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._result is None:
            self.drop_dicom()
            raise MVCFError(self._error or "the screen gave no result")
        from MVCFClassifierLib import tables, volumes

        vertebrae = list(self._result.get("vertebrae", []))
        table_node = tables.table_for(table_node, self.ct_node, "screen")
        table = write_screen_table(scene, vertebrae, node=table_node,
                                   name=f"{self.ct_node.GetName()} MVCF screen" if table_node is None
                                   else table_node.GetName())
        tables.stamp(table, self.ct_node, "screen", DISCLAIMER)
        volumes.place_beside(table, self.ct_node)
        outputs = ScreenOutputs(table, vertebrae, self._result, dicom=self.import_dicom(),
                                segmentation_node=self.segmentation_node, overview_png=overview,
                                warnings=self.notes + [str(w) for w in self._result.get("warnings") or []])
        outputs.recolour(self.colour_by)
        return outputs


def start_screen(ct_node, segmentation_node, python_executable: Optional[str] = None,
                 model_dir: Optional[str] = None, device: str = "auto", temp_root: Optional[str] = None,
                 colour_by: str = "grade", dicom=None, heatmap_method: str = "gradcam") -> ScreenRun:
    """Write the CT and the spine label map (segment names in the header) and return a run to poll;
    `dicom` (a dicom_export.DicomExport) adds the DICOM output and its import into the database, with its
    heatmaps made by `heatmap_method` (only the DICOM output has heatmaps, so without it the method is moot)."""
    import shutil
    import tempfile

    from MVCFClassifierLib.logic import write_image
    from MVCFClassifierLib.process import mvcf_command
    from MVCFClassifierLib.volumes import input_ct_from_volume_node

    if ct_node is None:
        raise MVCFError("no CT volume selected")
    check_colour_by(colour_by)
    check_method(heatmap_method)
    if model_dir and not Path(model_dir).is_dir():
        raise MVCFError(f"model bundle folder not found: {model_dir}")
    workdir = Path(tempfile.mkdtemp(prefix="mvcf-screen-", dir=temp_root))
    try:
        notes: list[str] = []
        labels, names = spine_label_map(segmentation_node, ct_node, notes)
        write_image(input_ct_from_volume_node(ct_node), workdir / "ct.nrrd")
        write_seg_nrrd(labels, names, workdir / "spine.seg.nrrd")
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        if dicom is not None:
            dicom.cleanup()
        raise
    method = heatmap_method if dicom is not None else "gradcam"
    command = mvcf_command(screen_arguments(workdir / "ct.nrrd", workdir / "spine.seg.nrrd", model_dir, device, method,
                                            out=workdir / OUT_FOLDER)
                           + (dicom.arguments() if dicom is not None else []), python_executable=python_executable)
    run = ScreenRun(ct_node, segmentation_node, workdir, command, colour_by)
    run.dicom = dicom
    run.notes = notes
    return run

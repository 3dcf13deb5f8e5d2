"""A reading session: one reader works through their package, case by case, in the planned order.

The scene gets only neutral names ("Reading case", "Model heatmap"), no attributes and no file names, so
nothing in it reveals a case ID, a file name, the label or the institution. Each rating is saved by the
core's RatingsStore before the next case loads; a new session on the same package resumes where the last
one stopped. Takes the scene explicitly, so pytest drives it with slicer-core's real vtkMRMLScene.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mvcf import RESEARCH_USE_DISCLAIMER
from mvcf.errors import MVCFError
from mvcf.reader_study.packages import open_package
from mvcf.reader_study.ratings import NextCase, RatingsStore

CT_NODE_NAME = "Reading case"
HEATMAP_NODE_NAME = "Model heatmap"
BONE_WINDOW = (1800.0, 400.0)  # window, level (HU)


@dataclass
class ShownCase:
    step: NextCase
    ct_node: object
    center_ras: np.ndarray
    model: Optional[dict]  # aided round only: probability, prediction, threshold, warnings, disclaimer
    heatmap_node: Optional[object] = None

    @property
    def progress_text(self) -> str:
        return f"{self.step.round_name} round: case {self.step.position} of {self.step.total}"

    @property
    def model_text(self) -> str:
        if self.model is None:
            return ""
        return (f"Model: probability of malignancy {100 * self.model['probability']:.0f}% -> "
                f"{self.model['prediction']} (threshold {100 * self.model['threshold']:.0f}%). "
                f"{RESEARCH_USE_DISCLAIMER}")


class ReadingSession:
    """Open `package_folder` for `reader` in `scene`; `clock` (unix seconds) is injectable for tests."""

    def __init__(self, scene, package_folder, reader: str, clock: Callable[[], float] = time.time) -> None:
        self.scene = scene
        self.clock = clock
        self.package = open_package(Path(package_folder), reader)
        self.store = RatingsStore(self.package, clock)
        self.shown: Optional[ShownCase] = None
        self._shown_at = 0.0

    @property
    def finished(self) -> bool:
        return self.store.next_case() is None

    def status_text(self) -> str:
        done, total = self.store.progress()
        step = self.store.next_case()
        if step is None:
            return f"All {total} readings done. Thank you; return answers.json to the study coordinator."
        return f"{done} of {total} readings done; next: {step.round_name} round, case {step.position} of {step.total}"

    def show_next(self) -> Optional[ShownCase]:
        """Load the next case into the scene (the previous one is removed); None when all are rated."""
        from mvcf.ctimage import ras_to_lps
        from mvcf.read_ct import read_ct
        from MVCFClassifierLib.volumes import volume_node_from_ct_image

        step = self.store.next_case()
        if step is None:
            self.close_case()
            return None
        self.store.check_open(step)
        model = self.package.model_output(step.case) if step.aided else None
        self.close_case()
        ct_node = volume_node_from_ct_image(self.scene, read_ct(self.package.ct_path(step.case)), CT_NODE_NAME)
        display = ct_node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(*BONE_WINDOW)
        center_ras = ras_to_lps(self.package.center_lps(step.case))  # the flip is its own inverse
        heatmap_node = None
        if model is not None and model.get("heatmap"):
            heatmap_node = volume_node_from_ct_image(self.scene, read_heatmap(model["heatmap"]), HEATMAP_NODE_NAME)
        self.shown = ShownCase(step, ct_node, np.asarray(center_ras, float), model, heatmap_node)
        center_slice_views(self.scene, self.shown.center_ras)
        self._shown_at = self.clock()
        return self.shown

    def submit(self, confidence=None, probability=None, note: str = "") -> dict:
        """Save the rating of the case on screen (atomically, before anything else) and clear it."""
        if self.shown is None:
            raise MVCFError("no case is being read: show the next case first")
        reading = self.store.submit(self.shown.step.case, confidence, probability, note,
                                    reading_time_s=self.clock() - self._shown_at)
        self.close_case()
        return reading

    @property
    def can_revise(self) -> bool:
        """True when the plan allows changing a rating and the current round has one to change."""
        return self.package.allow_revision and self._last_of_current_round() is not None

    def _last_of_current_round(self) -> Optional[dict]:
        step = self.store.next_case()
        if step is None:
            return None
        same = [r for r in self.store.readings if r["round"] == step.round_name]
        return same[-1] if same else None

    def revise_last(self, confidence=None, probability=None, note: str = "") -> dict:
        """Change the rating of the previous case of this round (only if the plan allows it; saved at once)."""
        last = self._last_of_current_round()
        if not self.package.allow_revision:
            raise MVCFError("this study does not allow changing a submitted rating")
        if last is None:
            raise MVCFError("no rating of this round to change yet")
        return self.store.revise(last["round"], last["case"], confidence, probability, note)

    def pause(self) -> None:
        """Stop without rating the case on screen; it comes back first on resume."""
        self.close_case()

    def close_case(self) -> None:
        if self.shown is None:
            return
        for node in (self.shown.heatmap_node, self.shown.ct_node):
            if node is not None and node.GetScene() is self.scene:
                for index in range(node.GetNumberOfDisplayNodes()):
                    display = node.GetNthDisplayNode(index)
                    if display is not None:
                        self.scene.RemoveNode(display)
                if node.GetStorageNode() is not None:
                    self.scene.RemoveNode(node.GetStorageNode())
                self.scene.RemoveNode(node)
        self.shown = None


@dataclass(frozen=True)
class PanelState:
    """What the reading panel shows and which controls are live; decided here (Qt-free), copied by the widget."""

    open_enabled: bool
    rating_enabled: bool
    confidence_enabled: bool
    probability_enabled: bool
    progress_text: str
    model_visible: bool
    model_text: str
    revise_visible: bool
    revise_enabled: bool
    status_text: str


def panel_state(session: Optional[ReadingSession], package_folder: str = "", reader: str = "") -> PanelState:
    """The panel for `session` (None before a package is open); `package_folder`/`reader` are the fields."""
    can_open = bool(str(package_folder) not in ("", ".") and str(reader).strip())
    if session is None:
        return PanelState(can_open, False, False, False, "", False, "", False, False,
                          "Open your package to start reading." if can_open
                          else "Choose your package folder and type your reader name.")
    shown, scale = session.shown, session.package.scale
    return PanelState(can_open, shown is not None, shown is not None and scale.asks_confidence,
                      shown is not None and scale.asks_probability, shown.progress_text if shown else "",
                      bool(shown and shown.model is not None), shown.model_text if shown else "",
                      session.package.allow_revision, session.can_revise, session.status_text())


def read_heatmap(path):
    """The model's heatmap (values 0..1 on the view grid) as a CTImage; not a CT, so no HU checks."""
    import SimpleITK as sitk

    from mvcf.ctimage import CTImage

    try:
        return CTImage.from_sitk(sitk.ReadImage(str(path)), source="heatmap")
    except RuntimeError as exc:
        raise MVCFError(f"cannot read the model heatmap {Path(path).name}: {str(exc).splitlines()[0]}") from None


def center_slice_views(scene, center_ras) -> None:
    """Centre every slice view of the scene on the vertebra (RAS mm)."""
    r, a, s = (float(v) for v in center_ras)
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    for index in range(nodes.GetNumberOfItems()):
        nodes.GetItemAsObject(index).JumpSliceByCentering(r, a, s)

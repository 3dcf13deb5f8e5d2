"""MVCFReaderStudy: the reading panel of a blinded reader study (unaided, then aided by the model) in
3D Slicer. Research use only.

Thin by design: the Widget binds the .ui to a parameter node and calls the Logic; the Logic holds one
MVCFReaderStudyLib.session.ReadingSession, which reads the package and saves every rating through the core
(mvcf.reader_study). Plan, collect and report run on the command line: `mvcf reader-study ...`.
"""
import logging
from pathlib import Path

import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from MVCFClassifierLib.panel import ParameterNodePanel
from MVCFReaderStudyLib.session import center_slice_views, panel_state

HEATMAP_COLORS = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"


class MVCFReaderStudy(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MVCF Reader Study"
        self.parent.categories = ["Spine"]
        self.parent.dependencies = ["MVCFClassifier"]  # the core (mvcf) and MVCFClassifierLib come with it
        self.parent.contributors = ["MVCF developers"]
        self.parent.helpText = (
            "Read the cases of your reader-study package one by one, in the planned order, blinded to case "
            "identity; rate each (1-5 confidence and/or 0-100 probability of a malignant fracture). In the aided "
            "round the model's probability, call and heatmap are shown. Every rating is saved at once; close "
            "Slicer any time and resume later. Research use only: not a medical device. See "
            "<a href='https://github.com/mvcf/MVCFClassifier/blob/main/docs/reader_study.md'>the documentation</a>.")
        self.parent.acknowledgementText = ("Design after Huang et al., Spine 2025; analysis by the Obuchowski-"
                                           "Rockette-Hillis method (mvcf stats mrmc).")


@parameterNodeWrapper
class MVCFReaderStudyParameterNode:
    """The package and the reader name (saved with the scene; neither names a case)."""

    packageFolder: Path
    readerName: str = ""


class MVCFReaderStudyWidget(ParameterNodePanel, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI only: the buttons call the logic; what is shown and live comes from MVCFReaderStudyLib.panel_state."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.loadPanel("UI/MVCFReaderStudy.ui")
        self.logic = MVCFReaderStudyLogic()
        self.ui.openButton.connect("clicked(bool)", self.onOpen)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.pauseButton.connect("clicked(bool)", self.onPause)
        self.ui.reviseButton.connect("clicked(bool)", self.onRevise)
        self.ui.disclaimerLabel.text = self.logic.disclaimer()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None:
            self.logic.pause()
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.pause()  # the case on screen stays unrated; every submitted rating is already on disk
        ParameterNodePanel.onSceneStartClose(self, caller, event)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self._showState()

    def onOpen(self) -> None:
        with slicer.util.tryWithErrorDisplay("The package could not be opened.", waitCursor=True):
            p = self._parameterNode
            self.logic.open(str(p.packageFolder or ""), p.readerName)
            self._showNext()

    def _answer(self):
        scale = self.logic.scale()
        return (self.ui.confidenceSpinBox.value if scale.asks_confidence else None,
                self.ui.probabilitySpinBox.value if scale.asks_probability else None,
                self.ui.noteTextEdit.toPlainText())

    def onSubmit(self) -> None:
        with slicer.util.tryWithErrorDisplay("The rating was not saved.", waitCursor=True):
            self.logic.submit(*self._answer())
            self.ui.noteTextEdit.clear()
            self._showNext()

    def onRevise(self) -> None:
        with slicer.util.tryWithErrorDisplay("The previous rating was not changed.", waitCursor=True):
            reading = self.logic.reviseLast(*self._answer())
            self._showState()
            self.ui.statusLabel.text = f"Changed the rating of case {reading['position']} of this round."

    def onPause(self) -> None:
        self.logic.pause()
        self._showState()
        self.ui.statusLabel.text = "Paused: this case was not rated. Open the package again to resume."

    def _showNext(self) -> None:
        shown = self.logic.showNext()
        if shown is not None:
            slicer.util.setSliceViewerLayers(background=shown.ct_node, foreground=shown.heatmap_node,
                                             foregroundOpacity=0.35 if shown.heatmap_node else 0.0, fit=True)
            if shown.heatmap_node is not None and shown.heatmap_node.GetDisplayNode() is not None:
                shown.heatmap_node.GetDisplayNode().SetAndObserveColorNodeID(HEATMAP_COLORS)
            center_slice_views(slicer.mrmlScene, shown.center_ras)
        self._showState()

    def _showState(self) -> None:
        p = self._parameterNode
        state = panel_state(self.logic.session if self.logic else None, str(p.packageFolder or "") if p else "",
                            p.readerName if p else "")
        self.ui.openButton.enabled = state.open_enabled
        self.ui.ratingCollapsibleButton.enabled = state.rating_enabled
        self.ui.confidenceSpinBox.enabled = state.confidence_enabled
        self.ui.probabilitySpinBox.enabled = state.probability_enabled
        self.ui.progressLabel.text = state.progress_text
        self.ui.modelCollapsibleButton.visible = state.model_visible
        self.ui.modelLabel.text = state.model_text
        self.ui.reviseButton.visible = state.revise_visible
        self.ui.reviseButton.enabled = state.revise_enabled
        self.ui.statusLabel.text = state.status_text


class MVCFReaderStudyLogic(ScriptedLoadableModuleLogic):
    """The reading session, callable from scripts as well as from the panel."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None

    def getParameterNode(self):
        return MVCFReaderStudyParameterNode(super().getParameterNode())

    @staticmethod
    def disclaimer() -> str:
        from mvcf import RESEARCH_USE_DISCLAIMER

        return RESEARCH_USE_DISCLAIMER

    def open(self, package_folder: str, reader: str, scene=None) -> None:
        from MVCFReaderStudyLib.session import ReadingSession

        if str(package_folder) in ("", "."):  # "." is the parameter node's unset Path
            raise ValueError("Choose your package folder first.")
        self.pause()
        self.session = ReadingSession(scene or slicer.mrmlScene, package_folder, reader)

    def scale(self):
        return self.session.package.scale

    def showNext(self):
        return self.session.show_next()

    def submit(self, confidence, probability, note: str) -> dict:
        reading = self.session.submit(confidence, probability, note)
        logging.info(f"rating saved ({reading['round']} {reading['position']})")
        return reading

    def reviseLast(self, confidence, probability, note: str) -> dict:
        return self.session.revise_last(confidence, probability, note)

    def pause(self) -> None:
        if self.session is not None:
            self.session.pause()


class MVCFReaderStudyTest(ScriptedLoadableModuleTest):
    """Runs under Slicer's ctest: plan an unaided study of four small synthetic CTs, read one package
    through the logic (resuming once), and check the answers file. The full pytest suite
    (Testing/Python/test_reader_study*.py) covers the rest on slicer-core."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_read_a_package_with_a_resume()

    def _plan(self, folder: Path) -> Path:
        import shutil

        import numpy as np
        import SimpleITK as sitk

        from mvcf.manifest import CaseRecord, write_manifest
        from mvcf.reader_study.plan import PlanSettings, make_plan

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        records = []
        for i in range(4):
            voxels = np.full((32, 32, 32), 40, np.int16)
            voxels[8:24, 8:24, 8:24] = 300 if i % 2 else 150
            image = sitk.GetImageFromArray(voxels)
            image.SetSpacing((2.0, 2.0, 2.0))
            sitk.WriteImage(image, str(folder / f"ct{i}.nii.gz"))
            records.append(CaseRecord(case_id=f"CASE-{i}-XY", patient_id=f"PAT-{i}", institution="Test Hospital",
                                      label=i % 2, ct=folder / f"ct{i}.nii.gz", center_lps=np.array([32.0, 32.0, 32.0])))
        manifest = write_manifest(folder / "manifest.csv", records)
        make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"]), folder / "plan")
        return folder / "plan" / "packages" / "r1"

    def test_read_a_package_with_a_resume(self):
        import json

        package = self._plan(Path(slicer.app.temporaryPath) / "MVCFReaderStudyTest")
        logic = MVCFReaderStudyLogic()
        with self.assertRaises(Exception):
            logic.open(str(package), "r2")
        logic.open(str(package), "r1")
        shown = logic.showNext()
        self.assertEqual(shown.ct_node.GetName(), "Reading case")
        self.assertIsNone(shown.model)
        logic.submit(4, None, "first")
        logic.showNext()
        logic.pause()
        logic = MVCFReaderStudyLogic()
        logic.open(str(package), "r1")
        while (shown := logic.showNext()) is not None:
            self.assertGreater(shown.step.position, 1)
            logic.submit(2, None, "")
        answers = json.loads((package / "answers.json").read_text(encoding="utf-8"))
        self.assertEqual(len(answers["readings"]), 4)
        self.delayDisplay("Test passed")

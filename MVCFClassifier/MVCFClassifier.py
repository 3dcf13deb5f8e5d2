"""MVCFClassifier: classify a vertebral compression fracture on CT as malignant (MVCF) or osteoporotic (OVCF).

Thin Slicer module: the widget binds the GUI to a parameter node and drives MVCFClassifierLib.logic, which
runs `mvcf predict` in a child process and writes the results into the scene. Research use only.
"""
import logging
import pathlib
from typing import Annotated, Optional

import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)

from MVCFClassifierLib.choices import DEVICES, HEATMAP_METHODS
from MVCFClassifierLib.panel import ParameterNodePanel
from MVCFClassifierLib.logic import (APPLY_POLL_MS, DISCLAIMER, LOCATION_SOURCES, PredictionLogic, apply_state,
                                     chosen_model_dir, dicom_summary, segment_ids_from_text, skipped_summary)
from MVCFClassifierLib import screening

#: The inputs offered: the marked vertebrae, or every vertebra of a spine segmentation (screening).
SOURCES = LOCATION_SOURCES + (screening.SOURCE,)


class MVCFClassifier(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MVCF Classifier")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["MVCFClassifier developers"]
        self.parent.helpText = _(
            "Estimates the probability that a vertebral compression fracture on CT is malignant (MVCF) rather "
            "than osteoporotic (OVCF). Mark each fractured vertebra with a point (named by its level), a box "
            "ROI or a segment, press Apply, and read the results table; a heatmap and the model's input "
            "views are added over the CT. <b>Research use only</b>: not a medical device, and the embedded "
            "model is a demo trained on synthetic data. See the "
            '<a href="https://github.com/mvcf-classifier/SlicerMVCFClassifier/blob/main/docs/slicer.md">'
            "documentation</a>.")
        self.parent.acknowledgementText = _(
            "Follows Huang et al., Spine 2025 (doi 10.1097/BRS.0000000000005438). Sample CT: TotalSegmentator "
            "example data (Apache-2.0).")


@parameterNodeWrapper
class MVCFClassifierParameterNode:
    """The module's state, saved with the scene. Field names match the SlicerParameterName of the .ui."""

    inputVolume: vtkMRMLScalarVolumeNode
    locationSource: Annotated[str, Choice(list(SOURCES))] = SOURCES[0]
    inputPoints: vtkMRMLMarkupsFiducialNode
    inputROI: vtkMRMLMarkupsROINode
    inputSegmentation: vtkMRMLSegmentationNode
    segmentIds: str = ""  # comma-separated; bound by hand to the multi-select segment selector
    useDemoModel: bool = True
    modelDirectory: pathlib.Path
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    createViewsVolume: bool = True
    createHeatmap: bool = True
    heatmapMethod: Annotated[str, Choice(list(HEATMAP_METHODS))] = HEATMAP_METHODS[0]
    outputTable: vtkMRMLTableNode
    dicomOutput: bool = False
    colourSegmentsBy: Annotated[str, Choice(list(screening.COLOUR_BY))] = screening.COLOUR_BY[0]


class MVCFClassifierWidget(ParameterNodePanel, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI only: parameter node <-> widgets, Apply/Cancel, progress. The work and the decisions are in the
    logic (MVCFClassifierLib.logic)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._run = None
        self._screen = None   # the last whole-spine result, recoloured when "Colour segments by" changes
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.loadPanel("UI/MVCFClassifier.ui")
        self.logic = MVCFClassifierLogic()

        self._timer = self.pollTimer(self.onTimer, APPLY_POLL_MS)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.inputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                                  self.ui.segmentsSelector.setCurrentNode)
        self.ui.segmentsSelector.connect("segmentSelectionChanged(QStringList)", self.onSegmentsChanged)
        self.ui.runTotalSegmentatorButton.connect("clicked(bool)", self.onRunTotalSegmentator)
        self.ui.runTotalSegmentatorButton.visible = hasattr(slicer.modules, "totalsegmentator")
        self.ui.progressBar.visible = False
        self.ui.disclaimerLabel.text = f"<b>{DISCLAIMER}</b>"
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.cancel()
        if self.logic is not None:
            self.logic.close_worker()
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:
            self._run.cancel()
            self._endRun("Cancelled: the scene was closed.")
        if self.logic is not None:
            self.logic.close_worker()
        ParameterNodePanel.onSceneStartClose(self, caller, event)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        source = p.locationSource
        for widget, label, wanted in ((self.ui.inputPointsSelector, self.ui.label_inputPointsSelector, "Point list"),
                                      (self.ui.inputROISelector, self.ui.label_inputROISelector, "ROI"),
                                      (self.ui.inputSegmentationSelector, self.ui.label_inputSegmentationSelector,
                                       "Segmentation"),
                                      (self.ui.segmentsSelector, self.ui.label_segmentsSelector, "Segmentation")):
            widget.visible = label.visible = source == wanted
        wholeSpine = source == screening.SOURCE
        if wholeSpine:
            self.ui.inputSegmentationSelector.visible = self.ui.label_inputSegmentationSelector.visible = True
        self.ui.modelDirectoryPathLineEdit.enabled = not p.useDemoModel
        # a screen makes heatmaps only for its DICOM output
        self.ui.heatmapMethodComboBox.enabled = p.dicomOutput if wholeSpine else p.createHeatmap
        self.ui.colourSegmentsByComboBox.visible = self.ui.label_colourSegmentsByComboBox.visible = wholeSpine
        self._recolourScreen(p.colourSegmentsBy)
        wantedSegments = segment_ids_from_text(p.segmentIds)
        if (self.ui.segmentsSelector.currentNode() is p.inputSegmentation and p.inputSegmentation
                and list(self.ui.segmentsSelector.selectedSegmentIDs()) != wantedSegments):
            self.ui.segmentsSelector.setSelectedSegmentIDs(wantedSegments)  # restore a saved selection
        self._showModelCard()
        if self._run is not None:
            return
        ready, tip = apply_state(p.inputVolume, "Segmentation" if wholeSpine else source, p.inputPoints,
                                 p.inputROI, p.inputSegmentation)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = tip

    def _recolourScreen(self, by: str) -> None:
        """The last screen's segments follow the "Colour segments by" choice without a new Apply."""
        screen = self._screen
        if screen is None or screen.colour_by == by:
            return
        if screen.segmentation_node is None or screen.segmentation_node.GetScene() is not slicer.mrmlScene:
            self._screen = None   # the segmentation was deleted or the scene closed
            return
        screen.recolour(by)

    def _modelDirectory(self) -> Optional[str]:
        return chosen_model_dir(self._parameterNode.useDemoModel, self._parameterNode.modelDirectory)

    def _showModelCard(self) -> None:
        try:
            self.ui.modelCardLabel.text = self.logic.modelCardHtml(self._modelDirectory())
        except Exception as exc:  # a half-typed folder path: show why, never raise from a GUI update
            self.ui.modelCardLabel.text = _("Model card unavailable: {error}").format(error=exc)

    def onSegmentsChanged(self, segmentIds) -> None:
        if self._parameterNode:
            self._parameterNode.segmentIds = ",".join(segmentIds)

    def onRunTotalSegmentator(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("TotalSegmentator failed."), waitCursor=True):
            segmentation = self.logic.runTotalSegmentator(self._parameterNode.inputVolume)
            self._parameterNode.locationSource = "Segmentation"
            self._parameterNode.inputSegmentation = segmentation
            self._parameterNode.segmentIds = ""  # none chosen: Apply takes its vertebrae_* segments

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self._endRun(_("Cancelled; nothing was added to the scene."))
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the classification."), waitCursor=True):
            if p.locationSource == screening.SOURCE:
                self._run = self.logic.apply_screen(p.inputVolume, p.inputSegmentation, self._modelDirectory(),
                                                   p.device, dicom=p.dicomOutput, colour_by=p.colourSegmentsBy,
                                                   heatmap_method=p.heatmapMethod)
            else:
                self._run = self.logic.apply(p.inputVolume, p.locationSource, points=p.inputPoints, roi=p.inputROI,
                                         segmentation=p.inputSegmentation,
                                         segment_ids=segment_ids_from_text(p.segmentIds),
                                         model_dir=self._modelDirectory(), device=p.device,
                                         views=p.createViewsVolume, heatmap=p.createHeatmap, dicom=p.dicomOutput,
                                         heatmap_method=p.heatmapMethod)
            if self._run is None:
                self.ui.statusLabel.text = _("Packages not installed; nothing was run.")
                return
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            self.ui.progressBar.visible = True
            self.ui.progressBar.value = 0
            self.ui.resultsLabel.text = ""
            self._timer.start()
            self.onTimer()  # the request goes out now, not one tick later

    def onTimer(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        try:
            for event in run.poll():
                if event.get("event") == "log" and event.get("level") == "warning":
                    logging.warning(event.get("message", ""))
            self.ui.progressBar.value = int(100 * run.fraction)
            self.ui.statusLabel.text = run.message
            if not run.finished:
                return
            outputs = run.finish(slicer.mrmlScene, table_node=self._parameterNode.outputTable)
            if isinstance(run, screening.ScreenRun):
                self._parameterNode.outputTable = outputs.table_node
                done = _("Done: {n} vertebra(e) screened.").format(n=len(outputs.rows))
                for warning in outputs.warnings:
                    logging.warning(warning)
                warned = " ".join(_("Warning: {w}.").format(w=w) for w in outputs.warnings)
                self._endRun(f"{done} {dicom_summary(outputs)} {warned}".strip())
                self.logic.showScreen(outputs)
                self.showPicture(self.ui.resultsLabel, outputs.overview_png, _(
                    "Whole-spine overview: each vertebra outlined in its Genant grade's colour and labelled with "
                    "level, grade, trabecular HU and P(MVCF). Research use only; demo weights are trained on "
                    "synthetic data."))
                self._screen = outputs
                return
        except Exception as exc:
            run.cancel()
            self._endRun(_("Failed: {error}").format(error=exc))
            slicer.util.errorDisplay(_("Classification failed: {error}").format(error=exc))
            return
        self._parameterNode.outputTable = outputs.table_node
        done = _("Done: {n} vertebra(e).").format(n=len(outputs.rows))
        self._endRun(f"{done} {skipped_summary(run.targets)} {dicom_summary(outputs)}".strip())
        self.ui.resultsLabel.text = self.logic.resultsHtml(outputs.rows)
        self.logic.showResults(outputs, self._parameterNode.inputVolume)

    def _endRun(self, message: str) -> None:
        self._timer.stop()
        self._run = None
        self.ui.applyButton.text = _("Apply")
        self.ui.progressBar.visible = False
        self.ui.statusLabel.text = message
        self.onParameterNodeModified()


class MVCFClassifierLogic(ScriptedLoadableModuleLogic, PredictionLogic):
    """Batch entry point: `MVCFClassifierLogic().process(ctNode, points=pointListNode)` (see docs/slicer.md)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        PredictionLogic.__init__(self, temp_root=slicer.app.temporaryPath if hasattr(slicer, "app") else None,
                                 dicom_database=lambda: getattr(slicer, "dicomDatabase", None),
                                 warm_worker=True)

    def getParameterNode(self):
        return MVCFClassifierParameterNode(super().getParameterNode())

    def modelCardHtml(self, model_dir: Optional[str]) -> str:
        from MVCFClassifierLib.logic import model_card, model_card_html

        return model_card_html(model_card(model_dir))

    @staticmethod
    def resultsHtml(rows) -> str:
        from MVCFClassifierLib.logic import results_html

        return results_html(rows)

    @staticmethod
    def showResults(outputs, ctNode) -> None:
        """Show the table and overlay the first heatmap on the CT (GUI only)."""
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(outputs.table_node.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        heatmaps = [n for n in outputs.volume_nodes if n.GetName().endswith("heatmap")]
        if heatmaps:
            slicer.util.setSliceViewerLayers(background=ctNode, foreground=heatmaps[0], foregroundOpacity=0.4)

    def showScreen(self, outputs) -> None:
        """Show the screen's table; selecting a row centres the slice views on that vertebra (GUI only)."""
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(outputs.table_node.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        layout = slicer.app.layoutManager()
        if layout is not None and not layout.tableViewCount:
            layout.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        view = layout.tableWidget(0).tableView() if layout is not None and layout.tableViewCount else None
        if view is not None:
            rows = outputs.rows
            view.selectionModel().connect(
                "currentRowChanged(QModelIndex,QModelIndex)",
                lambda current, previous: 0 <= current.row() < len(rows)
                and screening.center_slices_on(slicer.mrmlScene, rows[current.row()]))

    @staticmethod
    def runTotalSegmentator(ctNode):
        """Segment the vertebrae with the TotalSegmentator extension (only offered when it is installed);
        Apply then classifies only its `vertebrae_*` segments."""
        import TotalSegmentator

        from MVCFClassifierLib.totalsegmentator import segment_vertebrae

        return segment_vertebrae(ctNode, TotalSegmentator.TotalSegmentatorLogic(), slicer.mrmlScene)


class MVCFClassifierTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test, ctest): the adapters on a synthetic CT, Cancel, and the whole
    pipeline on the shipped sample CT on the CPU (skipped, and said so, until the packages are installed)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_adapters_on_synthetic_ct()
        self.setUp()
        self.test_cancel_adds_nothing()
        self.setUp()
        self.test_sample_ct_end_to_end()

    def _ctAndPoint(self):
        import numpy as np

        from MVCFClassifierLib.volumes import volume_node_from_array

        k, j, i = np.mgrid[0:60, 0:100, 0:100]
        voxels = np.full((60, 100, 100), -1000, dtype=np.int16)  # air
        voxels[((i - 50) / 45.0) ** 2 + ((j - 50) / 35.0) ** 2 <= 1] = 40  # soft tissue
        voxels[((i - 50) / 14.0) ** 2 + ((j - 45) / 12.0) ** 2 <= 1] = 250  # a vertebral body column
        ijkToRas = np.diag([-0.8, -0.8, 2.0, 1.0])
        ijkToRas[:3, 3] = [30.0, 30.0, -60.0]
        ct = volume_node_from_array(slicer.mrmlScene, voxels, ijkToRas, "synthetic CT")
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "vertebrae")
        center = ijkToRas @ np.array([50.0, 45.0, 30.0, 1.0])
        points.AddControlPoint(vtk.vtkVector3d(*center[:3]), "L1")
        return ct, points, center[:3]

    def test_adapters_on_synthetic_ct(self) -> None:
        import numpy as np

        from MVCFClassifierLib.volumes import ct_image_from_volume_node

        ct, points, centerRas = self._ctAndPoint()
        image = ct_image_from_volume_node(ct)
        self.assertEqual(image.size_ijk, (100, 100, 60))
        (target,) = self.logic().targets(ct, "Point list", points=points)
        self.assertEqual(target.name, "L1")
        np.testing.assert_allclose(target.location.center_lps, centerRas * [-1, -1, 1])

    def test_cancel_adds_nothing(self) -> None:
        ct, points, _center = self._ctAndPoint()
        logic = self.logic()
        run = logic.start(ct, logic.targets(ct, "Point list", points=points), device="cpu")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        run.poll()  # starts the child process
        run.cancel()
        self.assertTrue(run.cancelled and not run.workdir.exists())
        with self.assertRaises(Exception):
            run.finish(slicer.mrmlScene)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

    def test_sample_ct_end_to_end(self) -> None:
        from MVCFClassifierLib.dependencies import torch_installed, unmet_requirements
        from MVCFClassifierLib.selftest import run_self_test

        if not torch_installed() or unmet_requirements():
            # Reload & Test shows a skipTest as a failure: say why and pass instead.
            self.delayDisplay("torch or the requirements are not installed yet: press Apply once to install "
                              "them; the sample-CT test was not run")
            return
        self.delayDisplay("Classifying L1 and L2 of the sample CT on the CPU")
        outputs, problems = run_self_test(slicer.mrmlScene, self.logic(), device="cpu")
        self.assertEqual(problems, [], problems)
        self.delayDisplay(f"Test passed: {self.logic().resultsHtml(outputs.rows)}")

    @staticmethod
    def logic() -> MVCFClassifierLogic:
        return MVCFClassifierLogic()

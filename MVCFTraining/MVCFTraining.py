"""MVCFTraining: build a cohort, train and validate MVCF/OVCF models, run the 2D vs 2.5D vs 3D study and a
reader study, inside 3D Slicer. Research use only.

Thin by design: the Widget binds the .ui to a parameter node, the Logic calls MVCFTrainingLib (cohort,
runner, plots, results), which calls the `mvcf` core in a child process (PythonSlicer) so the GUI stays
live. torch/MONAI are never imported here.
"""
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLPlotChartNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

VIEW_MODE_CHOICES = ["2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d"]
ARCH_CHOICES = ["resnet10-tiny", "resnet10", "resnet18", "densenet-tiny", "densenet121"]
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
POLL_INTERVAL_MS = 200


class MVCFTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MVCF Training"
        self.parent.categories = ["Spine"]
        self.parent.dependencies = []
        self.parent.contributors = ["MVCF developers"]
        self.parent.helpText = (
            "Train and validate 2D / 2.5D / 3D classifiers of vertebral compression fractures (malignant "
            "MVCF vs osteoporotic OVCF) on your own biopsy-proven cohort, compare them on identical splits, "
            "and analyse reader studies. Research use only: not a medical device. "
            "See <a href='https://github.com/mvcf/MVCFClassifier/blob/main/docs/training_module.md'>the "
            "module documentation</a>.")
        self.parent.acknowledgementText = (
            "Follows Huang et al., Spine 2025 (doi 10.1097/BRS.0000000000005438). Networks from MONAI; "
            "statistics follow pROC (DeLong) and the Obuchowski-Rockette-Hillis MRMC method.")


@parameterNodeWrapper
class MVCFTrainingParameterNode:
    """Every user choice, saved with the scene. Names match the SlicerParameterName of the .ui widgets."""

    manifestPath: Path
    cohortTable: vtkMRMLTableNode
    viewMode: Annotated[str, Choice(VIEW_MODE_CHOICES)] = "2.5d-orthogonal"
    architecture: Annotated[str, Choice(ARCH_CHOICES)] = "resnet10"
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 1e-3
    folds: Annotated[int, WithinRange(1, 20)] = 1
    externalInstitution: str = ""
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    viewSize: Annotated[int, WithinRange(16, 256)] = 64
    outputFolder: Path
    resume: bool = False
    metricsTable: vtkMRMLTableNode
    studyTable: vtkMRMLTableNode
    rocChart: vtkMRMLPlotChartNode
    bundleFolder: Path
    readerCsv: Path
    readerTable: vtkMRMLTableNode
    readerAnalysisTable: vtkMRMLTableNode


def _path_text(path) -> str:
    """'' for an unset Path parameter (the wrapper's default Path() prints as '.')."""
    text = str(path) if path is not None else ""
    return "" if text in ("", ".") else text


class MVCFTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._runKind = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MVCFTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MVCFTrainingLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.checkManifestButton.connect("clicked(bool)", self.onCheckManifest)
        self.ui.buildCohortButton.connect("clicked(bool)", self.onBuildCohort)
        self.ui.saveManifestButton.connect("clicked(bool)", self.onSaveManifest)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.studyButton.connect("clicked(bool)", self.onStudyButton)
        self.ui.saveBundleButton.connect("clicked(bool)", self.onSaveBundle)
        self.ui.useInClassifierButton.connect("clicked(bool)", self.onUseInClassifier)
        self.ui.readerStudyButton.connect("clicked(bool)", self.onReaderStudyButton)
        self.ui.disclaimerLabel.text = self.logic.disclaimer()
        self.ui.progressBar.setVisible(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None:
            self.logic.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[MVCFTrainingParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self.logic.running
        has_manifest = bool(p and _path_text(p.manifestPath))
        self.ui.trainButton.text = "Cancel" if running and self._runKind == "train" else "Train"
        self.ui.studyButton.text = "Cancel" if running and self._runKind == "study" else "Run study"
        self.ui.readerStudyButton.text = "Cancel" if running and self._runKind == "mrmc" else "Run MRMC analysis"
        self.ui.trainButton.enabled = (running and self._runKind == "train") or (not running and has_manifest)
        self.ui.studyButton.enabled = (running and self._runKind == "study") or (not running and has_manifest)
        self.ui.readerStudyButton.enabled = (running and self._runKind == "mrmc") or (
            not running and bool(p and _path_text(p.readerCsv)))
        self.ui.saveManifestButton.enabled = bool(p and p.cohortTable and not running)
        done = self.logic.lastRunFolder is not None and (self.logic.lastRunFolder / "model").is_dir()
        self.ui.saveBundleButton.enabled = done and bool(p and _path_text(p.bundleFolder))
        self.ui.useInClassifierButton.enabled = done
        self.ui.resumeCheckBox.enabled = bool(p and _path_text(p.outputFolder)) and not running

    # Cohort
    def onCheckManifest(self) -> None:
        with slicer.util.tryWithErrorDisplay("The manifest is not valid.", waitCursor=True):
            summary, table = self.logic.checkManifest(self._parameterNode.manifestPath, slicer.mrmlScene)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            self.ui.cohortStatusLabel.text = f"Valid: {summary}"

    def onBuildCohort(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not build the cohort table.", waitCursor=True):
            table = self.logic.buildCohortTable(slicer.mrmlScene, self._parameterNode.cohortTable)
            self._parameterNode.cohortTable = table
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            problems = self.logic.cohortProblems(slicer.mrmlScene, table)
            self.ui.cohortStatusLabel.text = (f"{table.GetNumberOfRows()} rows; fill in label, institution and "
                                              f"patient, then save. {len(problems)} rows still incomplete.")

    def onSaveManifest(self) -> None:
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Save cohort manifest",
                                              _path_text(self._parameterNode.manifestPath) or "manifest.csv",
                                              "CSV files (*.csv)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("The manifest was not saved.", waitCursor=True):
            summary = self.logic.saveManifest(slicer.mrmlScene, self._parameterNode.cohortTable, path)
            self._parameterNode.manifestPath = Path(path)
            self.ui.cohortStatusLabel.text = f"Saved {path}: {summary}"

    # Runs
    def onTrainButton(self) -> None:
        self._startOrCancel("train")

    def onStudyButton(self) -> None:
        self._startOrCancel("study")

    def onReaderStudyButton(self) -> None:
        self._startOrCancel("mrmc")

    def _startOrCancel(self, kind: str) -> None:
        if self.logic.running:
            self.logic.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        with slicer.util.tryWithErrorDisplay("Could not start.", waitCursor=True):
            p = self._parameterNode
            if kind == "mrmc":
                self.logic.startReaderStudy(_path_text(p.readerCsv), self.onProgress, self.onLog)
            else:
                out = self.logic.startTraining(p, study=(kind == "study"), on_progress=self.onProgress,
                                               on_log=self.onLog)
                p.outputFolder = out
                chart = self.logic.curves.chart if self.logic.curves else None
                if chart is not None:
                    slicer.modules.plots.logic().ShowChartInLayout(chart)
            self._runKind = kind
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setValue(0)
            self.ui.statusLabel.text = "Starting (loading PyTorch in the background)..."
            self._timer.start()
            self._updateButtons()

    def onProgress(self, done: int, total: int, message: str, eta) -> None:
        from MVCFTrainingLib.runner import describe_progress

        self.ui.progressBar.setMaximum(max(1, total))
        self.ui.progressBar.setValue(min(done, max(1, total)))
        self.ui.statusLabel.text = describe_progress(done, total, message, eta)

    def onLog(self, message: str, level: str) -> None:
        (logging.warning if level in ("warning", "error") else logging.info)(message)
        if level in ("warning", "error"):
            self.ui.statusLabel.text = message

    def onPollTimer(self) -> None:
        if self.logic.poll():
            return
        self._timer.stop()
        self.ui.progressBar.setVisible(False)
        outcome = self.logic.lastOutcome
        kind, self._runKind = self._runKind, ""
        if outcome is None:
            return
        if outcome.status == "succeeded":
            with slicer.util.tryWithErrorDisplay("Results could not be shown.", waitCursor=True):
                self.ui.statusLabel.text = self.logic.showResults(slicer.mrmlScene, self._parameterNode, kind)
        elif outcome.status == "cancelled":
            self.ui.statusLabel.text = ("Cancelled. Check 'Resume' and press the button again to continue."
                                        if kind != "mrmc" else "Cancelled.")
        else:
            self.ui.statusLabel.text = f"Failed: {outcome.error}"
            slicer.util.errorDisplay(f"{kind} failed: {outcome.error}")
        self._updateButtons()

    # Results
    def onSaveBundle(self) -> None:
        with slicer.util.tryWithErrorDisplay("The bundle was not saved.", waitCursor=True):
            target = self.logic.saveBundle(_path_text(self._parameterNode.bundleFolder))
            self.ui.statusLabel.text = f"Model bundle saved to {target}"

    def onUseInClassifier(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not hand the model to MVCFClassifier."):
            self.logic.useInClassifier()


class MVCFTrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the GUI does, callable from scripts (`Slicer --no-main-window --python-script`)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.run = None
        self.curves = None
        self.lastOutcome = None
        self.lastResult = None
        self.lastRunFolder: Optional[Path] = None

    def getParameterNode(self):
        return MVCFTrainingParameterNode(super().getParameterNode())

    @staticmethod
    def disclaimer() -> str:
        from mvcf import RESEARCH_USE_DISCLAIMER

        return RESEARCH_USE_DISCLAIMER

    # Cohort
    def checkManifest(self, path, scene):
        """Validate a manifest (MVCFError naming every bad row); show it as a table node. (summary, node)"""
        from mvcf.manifest import read_manifest
        from MVCFTrainingLib.cohort import manifest_summary, manifest_table

        records = read_manifest(path)
        node = scene.GetFirstNodeByName("MVCF manifest")
        return manifest_summary(records), manifest_table(scene, records, node=node)

    def buildCohortTable(self, scene, node=None):
        from MVCFTrainingLib.cohort import cohort_table_from_scene

        return cohort_table_from_scene(scene, node=node)

    def cohortProblems(self, scene, table) -> list:
        from MVCFTrainingLib.cohort import check_cohort_table

        return check_cohort_table(scene, table)

    def saveManifest(self, scene, table, path) -> str:
        from MVCFTrainingLib.cohort import manifest_summary, save_manifest_from_table

        return manifest_summary(save_manifest_from_table(scene, table, path))

    # Runs
    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    def trainConfig(self, p):
        from MVCFTrainingLib.runner import TrainConfig

        return TrainConfig(view=p.viewMode, arch=p.architecture, epochs=p.epochs, learning_rate=p.learningRate,
                           folds=p.folds, external=p.externalInstitution.strip(), device=p.device, seed=p.seed,
                           size_px=p.viewSize)

    def startTraining(self, p, study: bool = False, on_progress=None, on_log=None) -> Path:
        """Start `mvcf train` (or `mvcf study`) for the parameter node's settings; returns the output folder."""
        from MVCFTrainingLib.plots import LiveCurves
        from MVCFTrainingLib.runner import MvcfRun, resumable, study_arguments, train_arguments

        manifest = _path_text(p.manifestPath)
        if not manifest:
            raise ValueError("Choose a cohort manifest first.")
        out = _path_text(p.outputFolder)
        resume = bool(p.resume) and bool(out) and resumable(out)
        if not out or (not resume and Path(out).exists() and any(Path(out).iterdir())):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = str(Path(manifest).resolve().parent / "mvcf_runs" / f"{'study' if study else 'train'}-{stamp}")
        config = self.trainConfig(p)
        args = (study_arguments if study else train_arguments)(manifest, out, config, resume=resume)
        if self.curves is not None:
            self.curves.remove()
        self.curves = LiveCurves(slicer.mrmlScene, "MVCF study" if study else "MVCF training")
        self.lastRunFolder, self.lastOutcome, self.lastResult = Path(out), None, None
        self.run = MvcfRun(args, on_progress=on_progress, on_metrics=self.curves.add,
                           on_result=self._keepResult, on_log=on_log).start()
        return Path(out)

    def startReaderStudy(self, csv_path: str, on_progress=None, on_log=None) -> None:
        from MVCFTrainingLib.runner import MvcfRun, mrmc_arguments

        if not csv_path:
            raise ValueError("Choose a reader-score CSV first.")
        self.lastOutcome, self.lastResult = None, None
        self.run = MvcfRun(mrmc_arguments(csv_path), on_progress=on_progress, on_result=self._keepResult,
                           on_log=on_log).start()

    def _keepResult(self, result: dict) -> None:
        self.lastResult = result

    def poll(self) -> bool:
        """Route the child's events; False once it has ended (then `lastOutcome` is set)."""
        if self.run is None:
            return False
        alive = self.run.poll()
        if not alive:
            self.lastOutcome = self.run.outcome
        return alive

    def cancel(self) -> None:
        if self.running:
            self.run.cancel()

    def showResults(self, scene, p, kind: str) -> str:
        """Put the finished run's results in the scene (nodes recorded in the parameter node); a status line."""
        from MVCFTrainingLib import results

        if kind == "mrmc":
            reader, analysis = results.mrmc_tables(scene, self.lastResult or {}, reader_node=p.readerTable,
                                                   analysis_node=p.readerAnalysisTable)
            p.readerTable, p.readerAnalysisTable = reader, analysis
            means = ", ".join(f"{m}: {auc:.3f}" for m, auc in (self.lastResult.get("mean_auc") or {}).items())
            return f"Reader study: mean AUC per modality {means}; see '{analysis.GetName()}'."
        if kind == "study":
            table, chart = results.show_study_results(scene, self.lastResult or {}, table_node=p.studyTable,
                                                      roc_chart=p.rocChart)
            p.studyTable = table
            if chart is not None:
                p.rocChart = chart
            return f"Study finished: report in {self.lastRunFolder / 'report.html'}. {self.disclaimer()}"
        table, chart = results.show_training_results(scene, self.lastRunFolder, metrics_node=p.metricsTable,
                                                     roc_chart=p.rocChart)
        p.metricsTable = table
        if chart is not None:
            p.rocChart = chart
        return f"Training finished: model bundle in {self.lastRunFolder / 'model'}. {self.disclaimer()}"

    def saveBundle(self, target: str) -> Path:
        """Copy the last run's model bundle to `target` (a new folder, written atomically)."""
        from mvcf.fileio import atomic_dir

        if self.lastRunFolder is None or not (self.lastRunFolder / "model").is_dir():
            raise ValueError("No trained model yet.")
        destination = Path(target)
        if destination.exists() and any(destination.iterdir()):
            destination = destination / f"{self.lastRunFolder.name}-model"
        with atomic_dir(destination) as tmp:
            shutil.copytree(self.lastRunFolder / "model", tmp, dirs_exist_ok=True)
        return destination

    def useInClassifier(self) -> None:
        """Open MVCFClassifier with the last trained bundle as its model (its parameter node's
        `useDemoModel` / `modelDirectory`)."""
        if self.lastRunFolder is None or not (self.lastRunFolder / "model").is_dir():
            raise ValueError("No trained model yet.")
        slicer.util.selectModule("MVCFClassifier")
        classifier = slicer.util.getModuleLogic("MVCFClassifier").getParameterNode()
        classifier.useDemoModel = False
        classifier.modelDirectory = self.lastRunFolder / "model"


class MVCFTrainingTest(ScriptedLoadableModuleTest):
    """Runs under Slicer's ctest: cohort table from a synthetic scene and a tiny training when torch exists."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_cohort_table_and_manifest()
        self.test_tiny_training()

    def _syntheticCase(self, name: str, label: str, institution: str):
        import numpy as np

        from MVCFClassifierLib.volumes import volume_node_from_array

        voxels = np.full((40, 40, 40), 40, np.int16)
        voxels[12:28, 12:28, 12:28] = 700
        voxels[15:25, 15:25, 15:25] = 60 if label == "MVCF" else 110
        ijk_to_ras = np.diag([-2.0, -2.0, 2.0, 1.0])
        ijk_to_ras[:3, 3] = [40.0, 40.0, -40.0]
        volume = volume_node_from_array(slicer.mrmlScene, voxels, ijk_to_ras, name)
        volume.SetAttribute("MVCF.label", label)
        volume.SetAttribute("MVCF.institution", institution)
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{name} point")
        points.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), "L1")
        return volume

    def test_cohort_table_and_manifest(self):
        for i in range(4):
            self._syntheticCase(f"case{i}", "MVCF" if i % 2 else "OVCF", "A")
        logic = MVCFTrainingLogic()
        table = logic.buildCohortTable(slicer.mrmlScene)
        self.assertEqual(table.GetNumberOfRows(), 4)
        self.assertEqual(logic.cohortProblems(slicer.mrmlScene, table), [])
        folder = Path(slicer.app.temporaryPath) / "MVCFTrainingTest"
        shutil.rmtree(folder, ignore_errors=True)
        summary = logic.saveManifest(slicer.mrmlScene, table, folder / "manifest.csv")
        self.assertTrue(summary.startswith("4 cases"))

    def test_tiny_training(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            self.skipTest("PyTorch is not installed (install the PyTorch extension); training skipped")
        self.delayDisplay("Tiny training run")
        logic = MVCFTrainingLogic()
        p = logic.getParameterNode()
        for i in range(24):
            self._syntheticCase(f"tiny{i}", "MVCF" if i % 2 else "OVCF", "A" if i < 16 else "B")
        folder = Path(slicer.app.temporaryPath) / "MVCFTrainingTestRun"
        shutil.rmtree(folder, ignore_errors=True)
        table = logic.buildCohortTable(slicer.mrmlScene)
        logic.saveManifest(slicer.mrmlScene, table, folder / "manifest.csv")
        p.manifestPath, p.outputFolder = folder / "manifest.csv", folder / "run"
        p.viewMode, p.architecture, p.epochs, p.viewSize, p.externalInstitution = "2d", "resnet10-tiny", 1, 32, "B"
        logic.startTraining(p)
        while logic.poll():
            slicer.app.processEvents()
            time.sleep(0.1)
        self.assertEqual(logic.lastOutcome.status, "succeeded", logic.lastOutcome.error)
        logic.showResults(slicer.mrmlScene, p, "train")
        self.assertGreater(p.metricsTable.GetNumberOfRows(), 0)
        self.delayDisplay("Test passed")

"""The training module's logic without any GUI: every decision the panel makes (which folder a run writes
to, whether it resumes, which buttons are live), the first-use package installation, the child run
(MVCFClassifierLib.process.ChildRun) and the results into the scene.

`parameters` is the module's parameter node, or any object with the same fields (tests pass a
SimpleNamespace), and every scene is passed in, so pytest drives all of it on slicer-core's real MRML.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from MVCFClassifierLib.process import ChildRun, RunOutcome
from MVCFTrainingLib.runner import (EventRouter, LogHandler, ProgressHandler, RunSettings, module_training,
                                    mrmc_arguments, resumable, study_arguments, train_arguments)

from mvcf.errors import MVCFError

KINDS = ("train", "study", "evaluate", "mrmc")
IDLE_LABELS = {"train": "Train", "study": "Run study", "evaluate": "Evaluate model", "mrmc": "Run MRMC analysis"}


def path_text(path) -> str:
    """'' for an unset Path parameter (the parameter-node wrapper's default Path() prints as '.')."""
    text = str(path) if path is not None else ""
    return "" if text in ("", ".") else text


def _in_use(folder: Path) -> bool:
    """True for a folder a run must not write into: one holding files, a file in its place, or one that
    cannot be listed (a file there gave NotADirectoryError, a locked folder PermissionError)."""
    try:
        return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    except OSError:
        return True


def _default_ensure() -> bool:
    from MVCFClassifierLib.dependencies import ensure_dependencies

    return ensure_dependencies(requester="MVCFTraining")


@dataclass
class ButtonState:
    text: str
    enabled: bool


class TrainingLogic:
    """Train / study / reader-study runs and their results; no Qt. One run at a time."""

    def __init__(self, ensure_dependencies: Optional[Callable[[], bool]] = None,
                 python_executable: Optional[str] = None) -> None:
        self.ensure_dependencies = ensure_dependencies or _default_ensure
        self.python_executable = python_executable
        self.run: Optional[ChildRun] = None
        self.router: Optional[EventRouter] = None
        self.kind = ""
        self.curves = None
        self.lastOutcome: Optional[RunOutcome] = None
        self.lastResult: Optional[dict] = None
        self.lastRunFolder: Optional[Path] = None
        self.lastEvaluation: Optional[Path] = None
        self.worker = None  # MVCFClassifierLib.worker.WarmWorker: evaluations share one `mvcf worker` child

    @staticmethod
    def disclaimer() -> str:
        from mvcf import RESEARCH_USE_DISCLAIMER

        return RESEARCH_USE_DISCLAIMER

    # Cohort
    @staticmethod
    def checkManifest(path, scene):
        """Validate a manifest (MVCFError naming every bad row); show it as a table node. (summary, node)"""
        from mvcf.manifest import read_manifest
        from MVCFTrainingLib.cohort import manifest_summary, manifest_table

        records = read_manifest(path, allow_outside_root=True)  # the panel shows every path it will use
        node = scene.GetFirstNodeByName("MVCF manifest")
        return manifest_summary(records), manifest_table(scene, records, node=node)

    @staticmethod
    def buildCohortTable(scene, node=None):
        from MVCFTrainingLib.cohort import cohort_table_from_scene

        return cohort_table_from_scene(scene, node=node)

    @staticmethod
    def cohortProblems(scene, table) -> list:
        from MVCFTrainingLib.cohort import check_cohort_table

        return check_cohort_table(scene, table)

    @staticmethod
    def cohortStatus(scene, table) -> str:
        problems = TrainingLogic.cohortProblems(scene, table)
        return (f"{table.GetNumberOfRows()} rows; fill in label, institution and patient, then save. "
                f"{len(problems)} rows still incomplete.")

    @staticmethod
    def saveManifest(scene, table, path) -> str:
        from MVCFTrainingLib.cohort import manifest_summary, save_manifest_from_table

        return manifest_summary(save_manifest_from_table(scene, table, path))

    # Runs
    @property
    def running(self) -> bool:
        return self.run is not None and self.lastOutcome is None

    @staticmethod
    def settings(parameters, study: bool = False) -> RunSettings:
        """The run the panel asks for (the core's own TrainConfig inside). The slice count and gap reach a
        training run only when its view mode is a stacked one (the panel says so beside them); a study
        trains every mode, the stacked ones among them, so it always takes them."""
        from MVCFClassifierLib.choices import stacked_view_modes

        p = parameters
        training = module_training(arch=p.architecture, epochs=p.epochs, lr=p.learningRate, device=p.device,
                                   seed=p.seed)
        stack = study or p.viewMode in stacked_view_modes()
        return RunSettings(view=p.viewMode, folds=p.folds, external=p.externalInstitution.strip(),
                           size_px=p.viewSize, n_slices=p.nSlices if stack else 0,
                           slice_gap_mm=p.sliceGap if stack else 0.0, training=training)

    @staticmethod
    def outputFolder(parameters, study: bool, now: Callable[[], str] = lambda: time.strftime("%Y%m%d-%H%M%S")
                     ) -> tuple[Path, bool]:
        """(folder, resume): the chosen folder when it is new or empty, or when Resume is checked and it holds
        a run of that kind to continue; otherwise a new time-stamped folder beside the manifest, so nothing is
        overwritten."""
        manifest = path_text(parameters.manifestPath)
        out = path_text(parameters.outputFolder)
        resume = bool(parameters.resume) and bool(out) and resumable(out, study)
        if not out or (not resume and _in_use(Path(out))):
            out = str(Path(manifest).resolve().parent / "mvcf_runs" / f"{'study' if study else 'train'}-{now()}")
        return Path(out), resume

    def _start(self, kind: str, args: list[str], router: EventRouter) -> None:
        self.kind, self.lastOutcome, self.lastResult = kind, None, None
        self.router = router
        self.run = ChildRun(python_executable=self.python_executable).start(args)

    def startTraining(self, scene, parameters, study: bool = False, on_progress: Optional[ProgressHandler] = None,
                      on_log: Optional[LogHandler] = None) -> Optional[Path]:
        """Start `mvcf train` (or `mvcf study`) for the panel's settings, after making sure the packages it
        needs are installed (asking first). Returns the output folder, or None when the user declined the
        installation (then nothing runs)."""
        from MVCFTrainingLib.plots import LiveCurves

        if self.running:
            raise ValueError("A run is already in progress; cancel it first.")
        manifest = path_text(parameters.manifestPath)
        if not manifest:
            raise ValueError("Choose a cohort manifest first.")
        settings = self.settings(parameters, study)
        out, resume = self.outputFolder(parameters, study)
        # the cohort is the one the panel showed (checkManifest / saveManifest): its CTs may stay where the user
        # loaded them from, outside the manifest's folder
        args = (study_arguments if study else train_arguments)(manifest, out, settings, resume=resume,
                                                               allow_outside_root=True)
        if not self.ensure_dependencies():
            return None
        if self.curves is not None:
            self.curves.remove()
        self.curves = LiveCurves(scene, "MVCF study" if study else "MVCF training")
        self.lastRunFolder = out
        self._start("study" if study else "train", args,
                    EventRouter(on_progress=on_progress, on_metrics=self.curves.add, on_result=self._keepResult,
                                on_log=on_log))
        return out

    @staticmethod
    def evaluationBundle(parameters, trained: Optional[Path] = None) -> Optional[Path]:
        """The bundle Evaluate runs: the bundle folder field when it holds a bundle, else the last trained one."""
        chosen = path_text(getattr(parameters, "bundleFolder", None))
        if chosen and (Path(chosen) / "model.json").is_file():
            return Path(chosen)
        return trained

    def startEvaluation(self, parameters, on_progress: Optional[ProgressHandler] = None,
                        on_log: Optional[LogHandler] = None,
                        now: Callable[[], str] = lambda: time.strftime("%Y%m%d-%H%M%S")) -> Optional[Path]:
        """`mvcf evaluate` of evaluationBundle() on the manifest, as a request to the module's warm worker
        (started by the first evaluation: torch and the bundle stay loaded, so later evaluations pay only
        the work). Writes a new time-stamped folder beside the manifest; returns it, or None when the user
        declined the package installation."""
        from MVCFClassifierLib.worker import WarmWorker

        if self.running:
            raise ValueError("A run is already in progress; cancel it first.")
        manifest = path_text(parameters.manifestPath)
        if not manifest:
            raise ValueError("Choose a cohort manifest first.")
        bundle = self.evaluationBundle(parameters, self.trainedBundle())
        if bundle is None:
            raise ValueError("No model to evaluate: train one, or set the bundle folder to a model bundle.")
        if not self.ensure_dependencies():
            return None
        out = Path(manifest).resolve().parent / "mvcf_runs" / f"evaluate-{now()}"
        if self.worker is None:
            self.worker = WarmWorker(self.python_executable, args=["--device", "cpu"])
        self.kind, self.lastOutcome, self.lastResult, self.lastEvaluation = "evaluate", None, None, out
        self.router = EventRouter(on_progress=on_progress, on_result=self._keepResult, on_log=on_log)
        self.run = self.worker.submit({"command": "evaluate", "model": str(bundle), "manifest": manifest,
                                       "out": str(out), "device": parameters.device, "allow_outside_root": True})
        return out

    def close(self, scene_only: bool = False) -> None:
        """End the warm worker and cancel the run: any run (module cleanup), or with `scene_only` (scene
        close) only an evaluation, whose results belong to the scene; training and studies go on."""
        if not scene_only or self.kind == "evaluate":
            self.cancel()
        if self.worker is not None:
            self.worker.stop()

    def startReaderStudy(self, csv_path: str, on_progress: Optional[ProgressHandler] = None,
                         on_log: Optional[LogHandler] = None) -> bool:
        """Start `mvcf stats mrmc`; False when the user declined the package installation."""
        if self.running:
            raise ValueError("A run is already in progress; cancel it first.")
        if not csv_path:
            raise ValueError("Choose a reader-score CSV first.")
        if not self.ensure_dependencies():
            return False
        self._start("mrmc", mrmc_arguments(csv_path),
                    EventRouter(on_progress=on_progress, on_result=self._keepResult, on_log=on_log))
        return True

    def _keepResult(self, result: dict) -> None:
        self.lastResult = result

    def poll(self) -> bool:
        """Route the child's events; False once it has ended (then `lastOutcome` is set)."""
        if self.run is None or self.lastOutcome is not None:
            return False
        done = self.run.finished()
        for event in self.run.poll():
            self.router(event)
        if done:
            self.lastOutcome = self.run.outcome()
        return not done

    def wait(self, timeout: Optional[float] = None) -> RunOutcome:
        """Block until the run has ended (scripts and the self-test); callbacks run in this thread."""
        if self.run is None:
            raise RuntimeError("nothing was started")
        self.run.wait(on_event=self.router, timeout=timeout)
        self.lastOutcome = self.run.outcome()
        return self.lastOutcome

    def cancel(self) -> None:
        if self.running:
            self.run.cancel()

    def endMessage(self) -> str:
        """The status line for a run that just ended without results to show (cancelled or failed)."""
        outcome = self.lastOutcome
        if outcome is None:
            return ""
        if outcome.status == "cancelled":
            return ("Cancelled. Check 'Resume' and press the button again to continue." if self.kind != "mrmc"
                    else "Cancelled.")
        return f"Failed: {outcome.error}"

    def showResults(self, scene, parameters, kind: str = "") -> str:
        """Put the finished run's results in the scene (nodes recorded in the parameter node); a status line."""
        from MVCFTrainingLib import results
        from mvcf.training_scans import overlap_warning

        p, kind = parameters, kind or self.kind
        if kind == "mrmc":
            reader, analysis = results.mrmc_tables(scene, self.lastResult or {}, reader_node=p.readerTable,
                                                   analysis_node=p.readerAnalysisTable)
            p.readerTable, p.readerAnalysisTable = reader, analysis
            means = ", ".join(f"{m}: {auc:.3f}" for m, auc in ((self.lastResult or {}).get("mean_auc") or {}).items())
            return f"Reader study: mean AUC per modality {means}; see '{analysis.GetName()}'."
        if kind == "evaluate":
            report = (self.lastResult or {}).get("report") or {}
            table, chart = results.show_evaluation_results(scene, report, metrics_node=p.metricsTable,
                                                           roc_chart=p.rocChart)
            p.metricsTable = table
            if chart is not None:
                p.rocChart = chart
            from mvcf.metrics import format_auc

            overall = report.get("overall") or {}
            n = overall.get("n", 0)
            seen = overlap_warning(report.get("training_overlap") or {"cases": []}, n)
            # the model's own warnings (e.g. trained on synthetic data only) as `mvcf evaluate` prints them
            warned = list(dict.fromkeys(([seen] if seen else []) + [str(w) for w in report.get("warnings") or []]))
            return (f"Evaluation finished: AUC {format_auc(overall, reason=True)} on {n} cases; results in "
                    f"{self.lastEvaluation}. " + "".join(f"Warning: {w}. " for w in warned) + self.disclaimer())
        if kind == "study":
            table, chart = results.show_study_results(scene, self.lastResult or {}, table_node=p.studyTable,
                                                      roc_chart=p.rocChart)
            p.studyTable = table
            done = f"Study finished: report in {self.lastRunFolder / 'report.html'}."
        else:
            table, chart = results.show_training_results(scene, self.lastRunFolder, metrics_node=p.metricsTable,
                                                         roc_chart=p.rocChart)
            p.metricsTable = table
            done = f"Training finished: model bundle in {self.lastRunFolder / 'model'}."
        if chart is not None:
            p.rocChart = chart
        return f"{done} {self.disclaimer()}"

    def trainedBundle(self) -> Optional[Path]:
        """The last run's model bundle folder, when it has one."""
        if self.lastRunFolder is None or not (self.lastRunFolder / "model").is_dir():
            return None
        return self.lastRunFolder / "model"

    def saveBundle(self, target: str) -> Path:
        """Copy the last run's model bundle to `target` (a new folder, written atomically; a folder holding
        files gets the bundle in a subfolder named after the run). Refused, in one line: no folder given, a
        file, the bundle itself or a folder inside it (it was copied into itself, a half copy left there), a
        folder holding a model, and a name already taken."""
        from mvcf.fileio import atomic_dir

        bundle = self.trainedBundle()
        if bundle is None:
            raise ValueError("No trained model yet.")
        if not str(target or "").strip():
            raise MVCFError("choose a folder to save the model in")
        destination = Path(target).expanduser().resolve()
        if destination.exists() and not destination.is_dir():
            raise MVCFError(f"{destination} is a file, not a folder to save the model in")
        if destination == Path(bundle).resolve() or Path(bundle).resolve() in destination.parents:
            raise MVCFError(f"{destination} is the trained model itself (or inside it): choose another folder")
        if destination.is_dir() and any(destination.iterdir()):
            if (destination / "model.json").is_file():
                raise MVCFError(f"{destination} holds a model already: choose an empty or new folder")
            destination = destination / f"{self.lastRunFolder.name}-model"
            if destination.exists():
                raise MVCFError(f"{destination} exists already: choose another folder")
        with atomic_dir(destination) as tmp:
            shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        return destination

    def buttonStates(self, parameters) -> dict[str, ButtonState]:
        """What each button of the panel says and whether it is live: the running kind's button cancels, the
        others wait; a run needs its input file; saving needs a finished bundle and a target folder."""
        p = parameters
        running = self.running
        has_manifest = bool(p and path_text(p.manifestPath))
        needs = {"train": has_manifest, "study": has_manifest, "mrmc": bool(p and path_text(p.readerCsv)),
                 "evaluate": has_manifest and self.evaluationBundle(p, self.trainedBundle()) is not None}
        states = {}
        for kind in KINDS:
            mine = running and self.kind == kind
            states[kind] = ButtonState("Cancel" if mine else IDLE_LABELS[kind], mine or (not running and needs[kind]))
        done = self.trainedBundle() is not None
        states["saveManifest"] = ButtonState("", bool(p and p.cohortTable) and not running)
        states["saveBundle"] = ButtonState("", done and bool(p and path_text(p.bundleFolder)))
        states["useInClassifier"] = ButtonState("", done)
        states["resume"] = ButtonState("", bool(p and path_text(p.outputFolder)) and not running)
        return states

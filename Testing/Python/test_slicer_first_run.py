"""The first-run defects of issue 14, each with the test that would have caught it, on slicer-core's real
MRML where a scene is involved: packages asked for before the first training, the torch bound, the
TotalSegmentator segmentation (117 segments, some empty: only the vertebrae become targets), the Windows
console window, Reload & Test without torch, the pip path, the CMake minimum, and the module dependency."""
from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from MVCFClassifierLib import dependencies, process, totalsegmentator

REPO = Path(__file__).resolve().parents[2]
MISSING = "mvcf-no-such-package>=1.0"


def declined_install(asked: list, requester: str = "MVCFClassifier"):
    """The real ensure_dependencies with a requirement that is not installed, and a user who says no."""
    return functools.partial(dependencies.ensure_dependencies, requirements=[MISSING], requester=requester,
                             confirm=lambda message: asked.append(message) or False)


def training_parameters(tmp_path: Path, **overrides) -> SimpleNamespace:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,patient_id,institution,label,ct,center_lps\n")
    fields = dict(manifestPath=manifest, outputFolder=Path("."), resume=False, viewMode="2d",
                  architecture="resnet10-tiny", epochs=1, learningRate=1e-3, folds=1, externalInstitution="",
                  device="cpu", seed=0, viewSize=32, nSlices=0, sliceGap=0.0, readerCsv=Path("."), cohortTable=None, bundleFolder=Path("."))
    return SimpleNamespace(**{**fields, **overrides})


# 1. MVCFTraining installs its dependencies before its first run
def test_a_training_start_with_a_missing_package_asks_for_installation_first(tmp_path):
    slicer = pytest.importorskip("slicer")
    from MVCFTrainingLib.logic import TrainingLogic

    asked: list = []
    logic = TrainingLogic(ensure_dependencies=declined_install(asked, "MVCFTraining"))
    scene = slicer.vtkMRMLScene()
    nodes_before = scene.GetNumberOfNodes()
    assert logic.startTraining(scene, training_parameters(tmp_path)) is None
    assert len(asked) == 1 and MISSING in asked[0] and asked[0].startswith("MVCFTraining needs")
    assert logic.run is None and not logic.running, "no child may start before the packages are there"
    assert scene.GetNumberOfNodes() == nodes_before and not (tmp_path / "mvcf_runs").exists()
    assert logic.startTraining(scene, training_parameters(tmp_path), study=True) is None
    assert not logic.startReaderStudy(str(tmp_path / "readers.csv"))
    assert len(asked) == 3 and logic.run is None


def test_the_training_logic_installs_through_the_shared_installer(monkeypatch, tmp_path):
    from MVCFTrainingLib.logic import TrainingLogic

    calls: list = []
    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda **kw: calls.append(kw) or False)
    assert TrainingLogic().startReaderStudy(str(tmp_path / "r.csv")) is False
    assert calls == [{"requester": "MVCFTraining"}]


def blank_ct_and_point():
    """A slicer-core scene's 8^3 blank CT node and a point list with one point (nothing to classify in it:
    for the checks that run before any child)."""
    slicer = pytest.importorskip("slicer")
    import vtk

    from MVCFClassifierLib.volumes import volume_node_from_array

    scene = slicer.vtkMRMLScene()
    ct = volume_node_from_array(scene, np.zeros((8, 8, 8), np.int16), np.eye(4), "ct")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    points.AddControlPoint(vtk.vtkVector3d(3.0, 3.0, 3.0), "L1")
    return ct, points


def test_the_classifier_apply_asks_before_writing_anything(tmp_path):
    from MVCFClassifierLib.logic import PredictionLogic

    ct, points = blank_ct_and_point()
    asked: list = []
    logic = PredictionLogic(temp_root=str(tmp_path), ensure_dependencies=declined_install(asked))
    assert logic.apply(ct, "Point list", points=points) is None
    assert asked and MISSING in asked[0] and not list(tmp_path.iterdir())


# 2. torch < 2.13 in one place, with its reason
def test_the_torch_bound_keeps_2_13_out_and_reaches_pytorchutils(monkeypatch):
    assert dependencies.torch_requirement_allows("2.12.1+cpu") and dependencies.torch_requirement_allows("2.1.0")
    assert not dependencies.torch_requirement_allows("2.13.0") and not dependencies.torch_requirement_allows("2.13.1")
    asked: dict = {}

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            asked.update(ask=askConfirmation, requirement=torchVersionRequirement)
            return types.ModuleType("torch")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", SimpleNamespace(PyTorchUtilsLogic=Logic))
    dependencies._install_torch()
    assert asked == {"ask": False, "requirement": dependencies.TORCH_REQUIREMENT}
    source = (REPO / "MVCFClassifier" / "MVCFClassifierLib" / "dependencies.py").read_text(encoding="utf-8")
    assert "light-the-torch issue 176" in source
    slicer_files = [*REPO.glob("MVCF*/**/*.py"), *REPO.glob("MVCF*/**/*.txt"), *REPO.glob("scripts/slicer_*.py")]
    with_bound = sorted(str(p.relative_to(REPO)) for p in slicer_files
                        if "/mvcf/" not in p.as_posix() and ".egg-info/" not in p.as_posix() and "2.13" in p.read_text(encoding="utf-8"))
    assert with_bound == ["MVCFClassifier/MVCFClassifierLib/dependencies.py"]


# 3. TotalSegmentator: only the vertebrae, empty and cut ones skipped and reported
def totalsegmentator_scene():
    """The sample CT and a segmentation shaped like TotalSegmentator's `total` output: 117 segments whose
    IDs are its class names and whose names are standard terminology names ('L1 vertebra'); S1-T11 carry
    the sample's masks (T12 and T11 reach the top of the scan), two organs are non-empty, the rest empty."""
    slicer = pytest.importorskip("slicer")
    from mvcf.ctimage import CTImage
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths
    from MVCFClassifierLib import markups, volumes

    scene = slicer.vtkMRMLScene()
    paths = sample_ct_paths()
    ct_node = volumes.volume_node_from_ct_image(scene, read_ct(paths["ct"]), "CT")
    mask = read_mask(paths["mask"])
    voxels = mask.voxels.copy()
    voxels[5:15, 5:15, 5:15], voxels[20:30, 5:15, 5:15] = 1, 2  # 'liver' and 'spleen' blobs
    labels = {f"vertebrae_{level}": value for level, value in SAMPLE_VERTEBRA_LABELS.items()}
    labels.update(liver=1, spleen=2)
    image = CTImage(voxels=voxels, spacing=mask.spacing, origin=mask.origin, direction=mask.direction)
    segmentation, ids = markups.segmentation_from_label_mask(scene, image, labels, ct_node, name="TotalSegmentator")
    contents = segmentation.GetSegmentation()
    for segment_id, class_name in zip(ids, labels):  # IDs are class names in TotalSegmentator's output
        segment = contents.GetSegment(segment_id)
        contents.RemoveSegment(segment_id)
        level = totalsegmentator.vertebra_level(class_name)
        segment.SetName(f"{level} vertebra" if level else class_name.replace("_", " "))
        contents.AddSegment(segment, class_name)
    for class_name in totalsegmentator.VERTEBRA_CLASSES:
        if contents.GetSegment(class_name) is None:
            level = totalsegmentator.vertebra_level(class_name)
            contents.AddEmptySegment(class_name, f"{level} vertebra")
    index = 0
    while contents.GetNumberOfSegments() < 117:
        index += 1
        contents.AddEmptySegment(f"structure_{index}", f"structure {index}")
    return scene, ct_node, segmentation


def test_a_totalsegmentator_segmentation_yields_only_vertebrae_and_reports_empty_and_cut_ones(tmp_path):
    from MVCFClassifierLib.logic import NOT_SCREENED, PredictionLogic, result_row, skipped_summary

    scene, ct_node, segmentation = totalsegmentator_scene()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 117
    targets = PredictionLogic.targets(ct_node, "Segmentation", segmentation=segmentation)
    assert len(targets) == 25, "every vertebra segment, and nothing else"
    assert all(t.segment_id.startswith("vertebrae_") for t in targets)
    assert [t.name for t in targets][:3] == ["C1", "C2", "C3"] and targets[-1].name == "S1", "cranial first"
    classified = [t.name for t in targets if not t.skipped]
    assert classified == ["L1", "L2", "L3", "L4", "L5"], "S1 (in the CT) is not classified, as in the screen"
    skipped = {t.name: t.skipped for t in targets if t.skipped}
    assert skipped["T12"] == skipped["T11"] == "cut by the edge of the CT"
    assert skipped["C3"] == skipped["T10"] == "empty within the CT" and len(skipped) == 20
    assert skipped["C1"] == skipped["C2"] == skipped["S1"] == NOT_SCREENED
    assert "Skipped 20 of 25: " in skipped_summary(targets) and "T11 (cut by the edge of the CT)" in skipped_summary(targets)
    row = result_row(next(t for t in targets if t.name == "C3"), None, 0.0)
    assert row["status"] == "skipped: empty within the CT" and row["center_ras_mm"] == ""

    # Only the classified ones reach the child; the skipped ones are rows of the table all the same.
    run = PredictionLogic(temp_root=str(tmp_path)).start(ct_node, targets, views=False, heatmap=False)
    import json

    entries = json.loads((run.workdir / run.LOCATIONS_FILE).read_text(encoding="utf-8"))
    assert sorted(e["name"] for e in entries) == sorted(classified) and all(e["label"] == 1 for e in entries)
    run.cleanup()


def test_an_empty_segment_chosen_by_hand_is_reported_not_fatal():
    from MVCFClassifierLib.logic import PredictionLogic

    _scene, ct_node, segmentation = totalsegmentator_scene()
    targets = PredictionLogic.targets(ct_node, "Segmentation", segmentation=segmentation,
                                      segment_ids=["vertebrae_C3", "vertebrae_L1", "vertebrae_T11"])
    assert [(t.name, t.skipped) for t in targets] == [("C3 vertebra", "empty within the CT"), ("L1 vertebra", ""),
                                                      ("T11 vertebra", "")]
    assert "cut by the edge of the CT" in targets[2].location.warnings[-1], "chosen by hand: kept, with a warning"


def process_with(signature: str):
    namespace: dict = {}
    exec(f"def process({signature}):\n    return None", namespace)
    return namespace["process"]


def test_totalsegmentator_options_follow_the_installed_signature():
    today = process_with("inputVolume, outputSegmentation, quality=None, cpu=False, task=None, subset=None, "
                         "interactive=False, sequenceBrowserNode=None")
    before_2026 = process_with("inputVolume, outputSegmentation, fast=True, cpu=False, task=None, subset=None")
    first = process_with("inputVolume, outputSegmentation, fast=True, task=None")
    assert totalsegmentator.process_options(today) == {
        "task": "total", "quality": "fast", "subset": list(totalsegmentator.VERTEBRA_CLASSES)}
    assert totalsegmentator.process_options(before_2026)["fast"] is True
    assert totalsegmentator.process_options(first) == {"task": "total", "fast": True}
    assert len(totalsegmentator.VERTEBRA_CLASSES) == 25 and totalsegmentator.vertebra_level("vertebrae_T12") == "T12"
    assert totalsegmentator.vertebra_level("vertebrae_T13") is None and totalsegmentator.vertebra_level("liver") is None


def test_segment_vertebrae_calls_the_extension_with_those_options_and_cleans_up_on_failure():
    slicer = pytest.importorskip("slicer")
    from MVCFClassifierLib.volumes import volume_node_from_array

    scene = slicer.vtkMRMLScene()
    ct = volume_node_from_array(scene, np.zeros((4, 4, 4), np.int16), np.eye(4), "patient CT")
    calls: list = []

    class Logic:
        def setupPythonRequirements(self, upgrade=False):
            calls.append("setup")

        def process(self, inputVolume, outputSegmentation, quality=None, cpu=False, task=None, subset=None,
                    interactive=False, sequenceBrowserNode=None):
            calls.append((inputVolume.GetName(), quality, task, len(subset)))
            if cpu:
                raise RuntimeError("no")

    segmentation = totalsegmentator.segment_vertebrae(ct, Logic(), scene)
    assert segmentation.GetName() == "patient CT TotalSegmentator"
    assert calls == ["setup", ("patient CT", "fast", "total", 25)]

    class Failing(Logic):
        def process(self, inputVolume, outputSegmentation, quality=None, task=None, subset=None):
            raise RuntimeError("TotalSegmentator failed")

    before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(RuntimeError):
        totalsegmentator.segment_vertebrae(ct, Failing(), scene, setup=False)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before


# 5. No console window per child on Windows
def test_children_get_no_console_window_on_windows(monkeypatch):
    flags = process.popen_options("nt")["creationflags"]
    assert flags & process.CREATE_NO_WINDOW and flags & process.CREATE_NEW_PROCESS_GROUP
    assert process.popen_options("posix") == {"start_new_session": True}
    seen: dict = {}

    def fake_popen(command, **kwargs):
        seen.update(kwargs)
        raise OSError("not started")

    on_windows = process.popen_options
    monkeypatch.setattr(process, "popen_options", lambda os_name=None: on_windows("nt"))  # as on Windows
    monkeypatch.setattr(process.subprocess, "Popen", fake_popen)
    with pytest.raises(OSError):
        process.ChildRun(["python", "-c", "pass"]).start()
    assert seen["creationflags"] & process.CREATE_NO_WINDOW


def test_one_interpreter_lookup():
    def which(name):
        return "/opt/Slicer/bin/PythonSlicer" if name == "PythonSlicer" else None

    assert process.slicer_python(in_slicer=True, which=which) == "/opt/Slicer/bin/PythonSlicer"
    assert process.slicer_python(in_slicer=False, which=which, executable=sys.executable) == sys.executable
    assert process.mvcf_command(["predict"], "py")[:5] == ["py", "-m", "mvcf", "--progress", "jsonl"]
    for lib in ("MVCFClassifier/MVCFClassifierLib", "MVCFTraining/MVCFTrainingLib"):
        for path in (REPO / lib).glob("*.py"):
            if path.name != "process.py":
                text = path.read_text(encoding="utf-8")
                assert "PythonSlicer\"" not in text and "shutil.which" not in text, path


# 6. Reload & Test passes (and says why) without torch
@pytest.mark.parametrize("module", ["MVCFClassifier", "MVCFTraining"])
def test_reload_and_test_never_uses_skiptest(module):
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    tests = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Test"]
    assert tests
    calls = {n.func.attr for n in ast.walk(tests[0]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "skipTest" not in calls, "Slicer's runTest() shows a skipped test as a failure"
    assert "torch_installed" in ast.unparse(tests[0])


# 7. The pip path: pip_ensure on Slicer >= 5.12, pip_install on 5.4-5.10, nothing speculative
def test_pip_route_by_slicer_version(monkeypatch):
    def import_without(name):
        raise ImportError(name)

    assert dependencies.pip_route(import_without) == "pip_install"
    assert dependencies.pip_route(lambda name: SimpleNamespace(pip_ensure=lambda *a, **k: None)) == "pip_ensure"
    assert dependencies.pip_route(lambda name: SimpleNamespace()) == "pip_install"
    source = (REPO / "MVCFClassifier" / "MVCFClassifierLib" / "dependencies.py").read_text(encoding="utf-8")
    assert "pydeps" not in source and "TypeError" not in source and "skip_packages=" not in source


def test_pip_ensure_is_called_once_with_its_real_keywords(monkeypatch):
    slicer = pytest.importorskip("slicer")
    calls: list = []

    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        calls.append((list(requirements), requester, prompt_install, skip_packages))
        raise TypeError("a failure inside pip_ensure must not be retried as a signature problem")

    monkeypatch.setitem(sys.modules, "slicer.packaging", SimpleNamespace(pip_ensure=pip_ensure))
    monkeypatch.setattr(slicer, "packaging", sys.modules["slicer.packaging"], raising=False)
    with pytest.raises(TypeError):
        dependencies._pip_ensure(["monai>=1.3"], requester="MVCFTraining")
    assert calls == [(["monai>=1.3"], "MVCFTraining", False, None)]


def test_pip_install_on_older_slicer(monkeypatch):
    slicer = pytest.importorskip("slicer")
    import slicer.util

    installed: list = []
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.4-5.10: no such module
    monkeypatch.setattr(slicer.util, "pip_install", installed.append, raising=False)
    dependencies._pip_ensure(["monai>=1.3", "scipy>=1.10"])
    assert installed == [["monai>=1.3", "scipy>=1.10"]]


# 8. CMake minimum as in Slicer's extension template
def test_cmake_minimum_is_the_extension_templates():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r"cmake_minimum_required\(VERSION ([0-9.]+)\.\.\.([0-9.]+) FATAL_ERROR\)", text)
    assert match, "cmake_minimum_required(VERSION min...max FATAL_ERROR) expected"
    low = tuple(int(p) for p in match.group(1).split("."))
    assert low >= (3, 20, 6) and match.groups() == ("3.28.0", "3.28.0")
    assert "cmake_minimum_required" not in (REPO / "MVCFClassifier" / "CMakeLists.txt").read_text(encoding="utf-8")


def test_the_training_module_declares_its_dependency_on_the_classifier():
    tree = ast.parse((REPO / "MVCFTraining" / "MVCFTraining.py").read_text(encoding="utf-8"))
    values = [ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
              and any(ast.unparse(t) == "self.parent.dependencies" for t in n.targets)]
    assert values == [["MVCFClassifier"]]
    imports = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "MVCFClassifierLib" in imports


def test_the_study_script_reports_a_user_error_through_the_shared_child(tmp_path):
    """The batch path uses the same ChildRun: a user error of the real core comes back as exit code 2."""
    script = REPO / "scripts" / "slicer_study.py"
    proc = subprocess.run([sys.executable, str(script), "--manifest", str(tmp_path / "missing.csv"), "--out",
                           str(tmp_path / "out"), "--epochs", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr

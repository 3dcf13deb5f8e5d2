"""Static checks of the MVCFTraining module that would otherwise fail only inside Slicer: files compile,
.ui widget names and SlicerParameterName bindings match the code, CMake lists are complete, no heavy import
at module scope, the icon is a real icon."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "MVCFTraining"
MODULE_PY = MODULE / "MVCFTraining.py"
UI = MODULE / "Resources" / "UI" / "MVCFTraining.ui"
HEAVY = ("torch", "monai", "pandas", "matplotlib", "sklearn")
OWN_SCRIPTS = [REPO / "scripts" / n for n in ("slicer_train.py", "slicer_study.py", "make_training_icon.py")]


def _python_files() -> list[Path]:
    return sorted(p for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameter_fields() -> dict[str, str]:
    """name -> annotation source of the @parameterNodeWrapper class in MVCFTraining.py."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in MVCFTraining.py")


def test_every_module_file_compiles():
    for path in _python_files() + [p for p in OWN_SCRIPTS if p.exists()]:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_widget_names_used_by_the_code_exist_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert used, "the widget uses no .ui widgets?"
    missing = used - set(_ui_widgets())
    assert not missing, f"widgets used in MVCFTraining.py but absent from the .ui: {sorted(missing)}"


def test_slicer_parameter_names_match_the_parameter_node():
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    fields = _parameter_fields()
    assert set(bound) == set(fields), (f"in the .ui only: {sorted(set(bound) - set(fields))}; "
                                       f"in the parameter node only: {sorted(set(fields) - set(bound))}")
    for name, annotation in fields.items():
        widget = bound[name]
        if annotation.startswith("vtkMRML"):
            assert widget.get("class") == "qMRMLNodeComboBox", name
            types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                     for s in p.iter("string")]
            assert types == [annotation], f"{name}: selector shows {types}, parameter holds {annotation}"
        elif annotation == "Path":
            assert widget.get("class") == "ctkPathLineEdit", name
        elif annotation == "bool":
            assert widget.get("class") == "QCheckBox", name
        elif "Choice" in annotation:
            assert widget.get("class") == "QComboBox", name
        elif annotation.startswith("Annotated[int") or annotation == "int":
            assert widget.get("class") == "QSpinBox", name
        elif annotation.startswith("Annotated[float") or annotation == "float":
            assert widget.get("class") == "QDoubleSpinBox", name
        elif annotation == "str":
            assert widget.get("class") == "QLineEdit", name
        else:
            raise AssertionError(f"{name}: no known widget for {annotation}")


def test_every_node_selector_gets_the_scene():
    root = ET.parse(UI).getroot()
    selectors = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert selectors and selectors <= connected, sorted(selectors - connected)


def test_choices_come_from_the_core():
    """No Slicer file keeps its own list of view modes, network sizes or devices: the panels read them from
    the core (MVCFClassifierLib.choices), so a mode added there appears in both modules."""
    from mvcf import modes
    from mvcf.inference import DEVICES
    from mvcf.models.architectures import ARCHITECTURES

    from MVCFClassifierLib import choices

    assert choices.view_modes() == modes.names() and choices.architectures() == tuple(ARCHITECTURES)
    assert choices.DEVICES == DEVICES
    files = [MODULE_PY, REPO / "MVCFClassifier" / "MVCFClassifier.py",
             *(REPO / "MVCFClassifier" / "MVCFClassifierLib").glob("*.py"), *(MODULE / "MVCFTrainingLib").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                items = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                assert not ({"2d", "3d"} <= items or {"resnet10", "resnet18"} <= items), \
                    f"{path.relative_to(REPO)}:{node.lineno} lists view modes or networks itself"
    assert "Choice(list(view_modes()))" in MODULE_PY.read_text(encoding="utf-8")


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, variable
    return [entry.replace("${MODULE_NAME}", "MVCFTraining") for entry in match.group(1).split()]


def test_cmake_lists_every_file():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text and "set(MODULE_NAME MVCFTraining)" in text
    scripts = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    on_disk = {p.relative_to(MODULE).as_posix() for p in _python_files() if "Testing" not in p.parts}
    assert on_disk == scripts, f"missing: {sorted(on_disk - scripts)}, stale: {sorted(scripts - on_disk)}"
    resources = set(_cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    assert {"Resources/UI/MVCFTraining.ui", "Resources/Icons/MVCFTraining.png"} <= resources
    for entry in resources | scripts:
        assert (MODULE / entry).is_file(), entry
    script = REPO / "scripts" / "update_cmake_lists.py"
    if script.exists():
        check = subprocess.run([sys.executable, str(script), "--check", "MVCFTraining"], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stderr


def test_no_heavy_import_at_module_scope():
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body]
        for node in list(top):  # also imports inside top-level if/try blocks
            if isinstance(node, (ast.If, ast.Try)):
                top += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in HEAVY, f"{path.relative_to(REPO)} imports {name} at module scope"


def test_importing_the_adapters_loads_no_heavy_package():
    code = ("import sys; import MVCFTrainingLib.runner, MVCFTrainingLib.plots, MVCFTrainingLib.cohort, "
            "MVCFTrainingLib.results; "
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; print(loaded); sys.exit(1 if loaded else 0)")
    env_path = f"{MODULE}:{REPO / 'MVCFClassifier'}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_icon_is_a_real_128_px_png():
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(MODULE / "Resources" / "Icons" / "MVCFTraining.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
        colors = icon.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colors is None or len(colors) > 16  # drawn, not a flat placeholder


def test_a_mode_registered_in_the_core_is_offered_by_the_panels():
    from mvcf import modes

    from MVCFClassifierLib import choices
    from MVCFTrainingLib.runner import RunSettings

    class Throwaway(type(modes.get("2d"))):
        name = "test-panel-mode"

    modes.register(Throwaway())
    try:
        assert "test-panel-mode" in choices.view_modes()
        assert RunSettings(view="test-panel-mode").arguments()[:2] == ["--view", "test-panel-mode"]
    finally:
        modes.unregister("test-panel-mode")
    assert "test-panel-mode" not in choices.view_modes()

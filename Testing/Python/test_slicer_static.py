"""Static checks of the Slicer extension that would otherwise fail only inside Slicer (which cannot be
installed here): module files compile, .ui and code agree, CMake lists every installed file, startup imports
stay light, and the Extensions Index catalog entry agrees with the CMake metadata."""
from __future__ import annotations

import ast
import json
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import update_cmake_lists  # noqa: E402

MODULES = [m for m in ("MVCFClassifier", "MVCFTraining", "MVCFReaderStudy") if (REPO / m / f"{m}.py").exists()]
HEAVY = {"torch", "monai", "pandas"}
PACKAGE_ROOTS = {"mvcf": REPO / "MVCFClassifier", "MVCFClassifierLib": REPO / "MVCFClassifier",
                 "MVCFTrainingLib": REPO / "MVCFTraining", "MVCFReaderStudyLib": REPO / "MVCFReaderStudy"}


def cmake_sets(text: str) -> dict[str, list[str]]:
    """set(NAME value...) calls of a CMakeLists.txt: quoted arguments (which may hold '(', ')' or '#') kept
    whole, comments dropped."""
    token = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*|\(|\)|[^\s()#"]+')
    out: dict[str, list[str]] = {}
    tokens = [t for t in token.findall(text) if not t.startswith("#")]
    i = 0
    while i < len(tokens):
        if tokens[i].lower() == "set" and i + 2 < len(tokens) and tokens[i + 1] == "(":
            j = i + 3
            while j < len(tokens) and tokens[j] != ")":
                j += 1
            out[tokens[i + 2]] = tokens[i + 3:j]
            i = j
        i += 1
    return out


def module_py_files(module: str) -> set[str]:
    scripts, _ = update_cmake_lists.module_files(REPO / module)
    return set(scripts)


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_of_the_module_is_listed_in_its_cmakelists(module):
    cmake = REPO / module / "CMakeLists.txt"
    assert cmake.exists(), f"{module}/CMakeLists.txt is missing"
    sets = cmake_sets(cmake.read_text(encoding="utf-8"))
    listed = {p.replace("${MODULE_NAME}", module) for p in sets.get("MODULE_PYTHON_SCRIPTS", [])}
    on_disk = module_py_files(module)
    missing = sorted(on_disk - listed)
    assert not missing, (f"{module}/CMakeLists.txt does not install {missing}: run "
                         "python scripts/update_cmake_lists.py")
    resources = {p.replace("${MODULE_NAME}", module) for p in sets.get("MODULE_PYTHON_RESOURCES", [])}
    for path in sorted(listed | resources):
        assert (REPO / module / path).is_file(), f"{module}/CMakeLists.txt lists {path}, which does not exist"
    for needed in (f"Resources/UI/{module}.ui", f"Resources/Icons/{module}.png"):
        assert needed in resources, f"{module}/CMakeLists.txt does not install {needed}"


def test_the_generated_lists_are_current_and_the_check_catches_a_new_file(tmp_path, monkeypatch):
    assert update_cmake_lists.run(MODULES, check=True) == 0, \
        "a module's CMakeLists.txt is out of date: run python scripts/update_cmake_lists.py"
    # The same check on a copy with one more Python file must fail, and the update must fix it.
    module = tmp_path / "MVCFClassifier"
    (module / "MVCFClassifierLib").mkdir(parents=True)
    (module / "MVCFClassifier.py").write_text("")
    (module / "MVCFClassifierLib" / "__init__.py").write_text("")
    cmake_text = (REPO / "MVCFClassifier" / "CMakeLists.txt").read_text(encoding="utf-8")
    monkeypatch.setattr(update_cmake_lists, "REPO", tmp_path)
    (module / "CMakeLists.txt").write_text(cmake_text)
    assert update_cmake_lists.run(["MVCFClassifier"], check=False) == 0
    assert update_cmake_lists.run(["MVCFClassifier"], check=True) == 0
    (module / "MVCFClassifierLib" / "new_step.py").write_text("")
    assert update_cmake_lists.run(["MVCFClassifier"], check=True) == 1
    update_cmake_lists.run(["MVCFClassifier"], check=False)
    assert "MVCFClassifierLib/new_step.py" in (module / "CMakeLists.txt").read_text(encoding="utf-8")


def all_module_python_files() -> list[Path]:
    files = []
    for module in ("MVCFClassifier", "MVCFTraining", "MVCFReaderStudy"):
        files += [REPO / module / p for p in module_py_files(module)] if (REPO / module).exists() else []
    return files


def test_module_files_compile(tmp_path):
    files = all_module_python_files()
    assert any(f.name == "MVCFClassifier.py" for f in files)
    for index, path in enumerate(files):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{index}.pyc"), doraise=True)


def ui_tree(module: str) -> ET.Element:
    return ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()


def ui_widget_names(root: ET.Element) -> set[str]:
    return {w.get("name") for w in root.iter("widget")}


def ui_parameter_names(root: ET.Element) -> dict[str, str]:
    names = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[widget.get("name")] = prop.findtext("string")
    return names


def module_ast(module: str) -> ast.Module:
    return ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))


def parameter_node_fields(tree: ast.Module) -> dict[str, set[str]]:
    """{class name: annotated field names} of every @parameterNodeWrapper class."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper")
                or (isinstance(d, ast.Attribute) and d.attr == "parameterNodeWrapper") for d in node.decorator_list):
            found[node.name] = {s.target.id for s in node.body
                                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return found


def ui_attribute_uses(tree: ast.Module) -> set[str]:
    """Names X in `self.ui.X` anywhere in the module file."""
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_code_uses_exists_in_the_ui(module):
    if not (REPO / module / "Resources" / "UI" / f"{module}.ui").exists():
        pytest.fail(f"{module} has no Resources/UI/{module}.ui")
    used = ui_attribute_uses(module_ast(module))
    missing = sorted(used - ui_widget_names(ui_tree(module)))
    assert not missing, f"{module}.py uses self.ui.{missing} which the .ui does not define"


@pytest.mark.parametrize("module", MODULES)
def test_every_slicer_parameter_name_matches_a_parameter_node_field(module):
    fields = set().union(*parameter_node_fields(module_ast(module)).values())
    assert fields, f"{module}.py has no @parameterNodeWrapper class"
    bound = ui_parameter_names(ui_tree(module))
    assert bound, f"{module}.ui binds no widget with SlicerParameterName"
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName without a parameter-node field: {unknown}"


def test_the_classifier_ui_binds_its_selectors_and_sets_their_scene():
    root = ui_tree("MVCFClassifier")
    assert root.findtext("class") == "MVCFClassifier"
    assert root.find("widget").get("class") == "qMRMLWidget"
    combos = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos and combos <= connected, f"selectors without setMRMLScene: {sorted(combos - connected)}"
    bound = ui_parameter_names(root)
    assert combos <= set(bound), "every node selector is saved in the parameter node"


def module_scope_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported: top-level statements and class bodies, not function bodies."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def repo_module_file(name: str) -> Path | None:
    root = PACKAGE_ROOTS.get(name.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def startup_import_closure(start: Path) -> dict[str, Path]:
    """Every repo module imported (transitively, at module scope) when Slicer loads `start`."""
    seen: dict[str, Path] = {}
    queue = [(start.stem, start)]
    heavy_hits = []
    while queue:
        name, path = queue.pop()
        for imported in module_scope_imports(path):
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                prefix = ".".join(parts[:i])
                target = repo_module_file(prefix)
                if target is not None and prefix not in seen:
                    seen[prefix] = target
                    queue.append((prefix, target))
            if parts[0] in HEAVY:
                heavy_hits.append((path.relative_to(REPO).as_posix(), imported))
    seen["__heavy__"] = heavy_hits  # type: ignore[assignment]
    return seen


@pytest.mark.parametrize("module", MODULES)
def test_no_torch_monai_or_pandas_import_at_startup(module):
    closure = startup_import_closure(REPO / module / f"{module}.py")
    heavy = closure.pop("__heavy__")
    assert not heavy, f"imported at module scope when Slicer starts (move into the function): {heavy}"
    if module == "MVCFClassifier":
        assert "MVCFClassifierLib.logic" in closure  # the walk really follows the module's imports


def test_the_startup_check_sees_a_heavy_import(tmp_path):
    bad = tmp_path / "Bad.py"
    bad.write_text("import os\ntry:\n    import torch\nexcept ImportError:\n    pass\n"
                   "class A:\n    import pandas as pd\n    def f(self):\n        import monai\n")
    assert {"torch", "pandas"} <= module_scope_imports(bad) and "monai" not in module_scope_imports(bad)


def extension_metadata() -> dict[str, list[str]]:
    return cmake_sets((REPO / "CMakeLists.txt").read_text(encoding="utf-8"))


def unquote(values: list[str]) -> str:
    return " ".join(v.strip('"') for v in values)


def test_top_level_cmakelists_is_a_slicer_extension_with_both_modules():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(MVCFClassifier\)", text, flags=re.M)
    meta = extension_metadata()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_DEPENDS"):
        assert unquote(meta.get(key, [])), f"{key} is not set"
    assert unquote(meta["EXTENSION_DEPENDS"]).split() == ["PyTorch"]
    assert "Research use only" in unquote(meta["EXTENSION_DESCRIPTION"])
    assert unquote(meta["EXTENSION_ICONURL"]).endswith("/MVCFClassifier.png")
    subdirs = re.findall(r"^add_subdirectory\((\w+)\)", text, flags=re.M)
    assert subdirs == ["MVCFClassifier", "MVCFTraining", "MVCFReaderStudy"]
    assert "find_package(Slicer REQUIRED)" in text and "${Slicer_EXTENSION_CPACK}" in text


SCHEMA_1_0_1 = {
    "required": {"$schema", "category", "scm_url"},
    "types": {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
              "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int},
}


def test_catalog_entry_follows_schema_1_0_1_and_matches_the_cmake_metadata():
    entry = json.loads((REPO / "MVCFClassifier.json").read_text(encoding="utf-8"))
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert SCHEMA_1_0_1["required"] <= set(entry), "required fields missing"
    unknown = set(entry) - set(SCHEMA_1_0_1["types"])
    assert not unknown, f"schema 1.0.1 allows no other fields: {unknown}"
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_1_0_1["types"][key]), f"{key} must be {SCHEMA_1_0_1['types'][key]}"
    assert all(isinstance(v, str) for v in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in ("git", "local") and entry.get("tier", 5) in (1, 3, 5)
    meta = extension_metadata()
    assert entry["category"] == unquote(meta["EXTENSION_CATEGORY"])
    assert sorted(entry.get("build_dependencies", [])) == sorted(unquote(meta["EXTENSION_DEPENDS"]).split())
    assert entry["scm_url"].startswith("https://")
    repo_url = entry["scm_url"].removesuffix(".git")
    assert unquote(meta["EXTENSION_HOMEPAGE"]).startswith(repo_url)


def test_icons_are_real_128_pixel_pngs():
    from PIL import Image

    for path in (REPO / "MVCFClassifier.png", REPO / "MVCFClassifier" / "Resources" / "Icons" / "MVCFClassifier.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
            colours = image.convert("RGB").getcolors(maxcolors=128 * 128)
            assert len(colours) > 50, "an icon, not a flat placeholder"


def test_requirements_use_lower_bounds_and_leave_torch_to_pytorchutils():
    from MVCFClassifierLib.dependencies import NEVER_PIP, read_requirements

    requirements = read_requirements()
    assert requirements
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9][0-9A-Za-z.]*", requirement), requirement
        assert requirement.split(">=")[0].lower() not in {n.lower() for n in NEVER_PIP}, requirement

"""docs/slicer.md keeps a checked list of the Slicer / extension APIs the modules call, each with the
version that has it: every slicer.util / slicer.app / slicer.packaging / slicer.modules call in the module
files, their libraries and the slicer_* scripts must be in that list, and every row must name a version."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "slicer.md"
NAMESPACES = ("util", "app", "packaging", "modules")
SOURCES = [REPO / "MVCFClassifier" / "MVCFClassifier.py", REPO / "MVCFTraining" / "MVCFTraining.py",
           REPO / "MVCFReaderStudy" / "MVCFReaderStudy.py", *(REPO / "MVCFReaderStudy" / "MVCFReaderStudyLib").glob("*.py"),
           *(REPO / "MVCFClassifier" / "MVCFClassifierLib").glob("*.py"),
           *(REPO / "MVCFTraining" / "MVCFTrainingLib").glob("*.py"), *(REPO / "scripts").glob("slicer_*.py")]


def api_table() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Slicer, CTK and extension APIs the modules call (checked)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| API")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def slicer_calls(path: Path) -> set[str]:
    """'util.tryWithErrorDisplay', 'app.temporaryPath', ... used in one file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "slicer"
                and node.value.attr in NAMESPACES):
            found.add(f"{node.value.attr}.{node.attr}")
    return found


def test_every_call_into_slicer_is_in_the_checked_list():
    documented = " ".join(row[0] for row in api_table())
    used = set().union(*(slicer_calls(p) for p in SOURCES))
    assert {"util.tryWithErrorDisplay", "packaging.pip_ensure", "app.temporaryPath"} <= used
    missing = sorted(call for call in used if call.split(".")[1] not in documented)
    assert not missing, f"add these to the API table of docs/slicer.md, with the version that has them: {missing}"


def test_every_row_names_where_and_since_when():
    rows = api_table()
    assert len(rows) >= 15
    for api, used_for, where, since in rows:
        assert api and used_for and where, api
        assert re.search(r"\d", since), f"{api}: no minimum version"
    text = DOC.read_text(encoding="utf-8")
    assert "**Minimum Slicer: 5.4**" in text and "5.12.0" in text and "<2.13" in text

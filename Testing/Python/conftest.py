"""Shared pytest fixtures: paths to the real data in ../shared/data (read-only)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared test data missing: {path}")
    return path


@pytest.fixture
def shared_data():
    return shared

import sys as _sys

# The Slicer-side adapter packages live beside the core in the module folders (as Slicer installs them).
for _module_dir in (REPO / "MVCFClassifier", REPO / "MVCFTraining", REPO / "MVCFReaderStudy"):
    if str(_module_dir) not in _sys.path:
        _sys.path.insert(0, str(_module_dir))

import os as _os

# Child processes (`python -m mvcf ...`) import this checkout's code too, not whatever copy is installed.
_os.environ["PYTHONPATH"] = _os.pathsep.join(
    [str(REPO / "MVCFClassifier"), str(REPO / "MVCFTraining")]
    + ([_os.environ["PYTHONPATH"]] if _os.environ.get("PYTHONPATH") else []))

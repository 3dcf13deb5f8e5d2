"""Run the study (2D vs 2.5D vs 3D and the logistic baseline on identical splits), headless.

    Slicer --no-main-window --python-script scripts/slicer_study.py --manifest cohort/manifest.csv \
        --out runs/study1 --epochs 10 --external external --tables runs/study1/tables
    python scripts/slicer_study.py --manifest cohort/manifest.csv --out runs/study1   # slicer-core or none

The study runs in a child process (PythonSlicer inside Slicer) with progress, ETA and per-epoch metrics on
stdout; `--resume` continues an interrupted study, `-- --modes 2d,3d` passes options through to
`mvcf study`. Exit code 0 done, 2 bad input, 130 cancelled.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO / "MVCFTraining", REPO / "MVCFClassifier"):  # a source checkout; installed Slicer has them
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from MVCFTrainingLib.batch import run_script  # noqa: E402

run_script(sys.argv[1:], "study")

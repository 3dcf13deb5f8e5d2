"""Train an MVCF/OVCF model from a cohort manifest, headless.

    Slicer --no-main-window --python-script scripts/slicer_train.py --manifest cohort/manifest.csv \
        --out runs/train1 --view 2.5d-orthogonal --epochs 10 --external external --tables runs/train1/tables
    python scripts/slicer_train.py --manifest cohort/manifest.csv --out runs/train1   # slicer-core or none

Training runs in a child process (PythonSlicer inside Slicer) with progress, ETA and per-epoch metrics on
stdout; `--resume` continues an interrupted run. Exit code 0 done, 2 bad input, 130 cancelled.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO / "MVCFTraining", REPO / "MVCFClassifier"):  # a source checkout; installed Slicer has them
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from MVCFTrainingLib.batch import run_script  # noqa: E402

run_script(sys.argv[1:], "train")

"""The fixed set of runs whose outputs must not change under a refactor (issue: one home per decision).

`record()` runs them through the public CLI and returns a JSON-able dict; `make_golden.py` writes it to
`golden/outputs.json` once, before a refactor, and `test_golden_outputs.py` compares a fresh run with it.
Arrays are compared by sha256 of their float32 bytes (identical), probabilities to 1e-6, weights by sha256
(training is deterministic on CPU with one thread and a seed).

Training and the heatmap's float sums are deterministic on one kind of CPU only: torch picks other kernels
for another instruction set (AVX2 vs AVX-512), and the same seeded run then gives weights that differ in
their last bits (trained probabilities ~3e-4 apart). So those parts (MACHINE_PARTS) are also recorded per
CPU kind in `golden/machines.json` (`make_golden.py --machine`), and compared bit for bit where this
machine has a record; outputs.json holds them for every machine within CROSS_CPU tolerances.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"
REFERENCE = HERE / "reference"
VIEW_MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")
LUMBAR = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27}
#: The parts of record() whose last bits depend on the CPU's instruction set.
MACHINE_PARTS = ("predict", "train", "study")
#: Absolute tolerance per part against outputs.json on another kind of CPU (trained models: float round-off
#: through two epochs; measured 4.2e-4 at most between an AVX2 and an AVX-512 machine).
CROSS_CPU = {"predict": 1e-4, "train": 5e-3, "study": 5e-3}


def machine() -> str:
    """The kind of CPU a bit-exact record holds for: architecture, torch's vector ISA, the CPU's model name."""
    import torch

    name = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {name}".strip()


def _cli(*argv: str) -> tuple[int, str]:
    from mvcf.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--progress", "none", *argv])
    return code, out.getvalue()


def _array_sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _views(work: Path) -> dict[str, Any]:
    found = {}
    for mode in VIEW_MODES:
        out = work / f"views_{mode}"
        code, _ = _cli("views", "--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask", str(SAMPLE / "totalseg.nii.gz"),
                       "--label", "31", "--mode", mode, "--size", "48", "--windows", "bone,soft", "--out", str(out))
        assert code == 0, mode
        array = np.load(out / "views.npy")
        found[mode] = {"shape": list(array.shape), "sha256": _array_sha(array)}
    return found


def _predict(work: Path) -> dict[str, Any]:
    import nibabel as nib

    labels = [a for level in LUMBAR.values() for a in ("--label", str(level))]
    code, text = _cli("predict", "--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask", str(SAMPLE / "totalseg.nii.gz"),
                      *labels, "--device", "cpu", "--json")
    assert code == 0
    results = json.loads(text)["results"]
    heat = work / "l1_heat.nii.gz"
    code, text = _cli("predict", "--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask", str(SAMPLE / "totalseg.nii.gz"),
                      "--label", "31", "--device", "cpu", "--heatmap", str(heat), "--json")
    assert code == 0
    image = nib.load(str(heat))
    return {"probabilities": {level: r["probability_malignant"] for level, r in zip(LUMBAR, results)},
            "calls": {level: r["prediction"] for level, r in zip(LUMBAR, results)},
            "centers_lps": {level: r["center_lps"] for level, r in zip(LUMBAR, results)},
            "l1_heatmap": {"shape": list(image.shape), "sum": float(np.asarray(image.dataobj, dtype=np.float64).sum()),
                           "affine": np.asarray(image.affine).round(6).tolist()}}


def _train(work: Path) -> dict[str, Any]:
    from tiny_cohort import make_tiny_cohort

    manifest = make_tiny_cohort(work / "cohort", n_per_site=12)
    out = work / "train"
    code, text = _cli("train", "--manifest", str(manifest), "--out", str(out), "--view", "2.5d-orthogonal",
                      "--size", "24", "--arch", "resnet10-tiny", "--epochs", "2", "--batch-size", "4",
                      "--folds", "2", "--external", "B", "--device", "cpu", "--seed", "3", "--json")
    assert code == 0
    weights = out / "model" / "weights.safetensors"
    card = json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    return {"weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "threshold": card["threshold"]}


def _study(work: Path) -> dict[str, Any]:
    import csv

    from tiny_cohort import make_tiny_cohort

    manifest = make_tiny_cohort(work / "study_cohort", n_per_site=12, seed=1)
    out = work / "study"
    code, _ = _cli("study", "--manifest", str(manifest), "--out", str(out), "--modes", "2d,2.5d-orthogonal",
                   "--size", "24", "--size-3d", "16", "--arch", "resnet10-tiny", "--epochs", "1", "--batch-size", "4",
                   "--folds", "2", "--external", "B", "--device", "cpu", "--seed", "5")
    assert code == 0
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = ("2d", "2.5d-orthogonal", "baseline-logistic")
    return {"predictions": {r["case_id"]: {k: float(r[k]) for k in keep if r.get(k)} for r in rows}}


def _stats(work: Path) -> dict[str, Any]:
    import pandas as pd

    from conftest import SHARED_DATA

    cases = pd.read_csv(REFERENCE / "proc_cases.csv")
    cases = cases[cases.dataset == cases.dataset.iloc[0]]
    wide = cases.pivot_table(index=["case", "truth"], columns="model", values="score").reset_index()
    wide.to_csv(work / "roc_wide.csv", index=False)
    scores = [a for name in sorted(set(cases.model)) for a in ("--score", name)]
    code, roc = _cli("stats", "roc", "--csv", str(work / "roc_wide.csv"), "--truth", "truth", "--positive", "1",
                     *scores, "--json")
    assert code == 0, "stats roc"
    found = {"roc": json.loads(roc)}
    vandyke = SHARED_DATA / "reader_study" / "vandyke_dataset02.csv"
    if vandyke.is_file():
        code, mrmc = _cli("stats", "mrmc", "--csv", str(vandyke), "--json")
        assert code == 0, "stats mrmc"
        found["mrmc"] = json.loads(mrmc)
    return found


def record(work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    return {"views": _views(work), "predict": _predict(work), "train": _train(work), "study": _study(work),
            "stats": _stats(work)}

"""The Classifier's first Apply without a heatmap needs only ONNX Runtime (and scipy) beyond what Slicer
ships: torch is not asked for, not installed, and a `mvcf predict` child in a Python that has nothing else
classifies the vertebra (issue 11)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mvcf.inference import default_model_path
from mvcf.models import ort_backend
from mvcf.models.bundle import CARD_FILE
from MVCFClassifierLib import dependencies

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"


def never(*_args, **_kwargs):
    raise AssertionError("must not be called")


def test_only_a_heatmap_a_graphless_bundle_or_a_gpu_onnx_runtime_cannot_drive_needs_torch(tmp_path, monkeypatch):
    needs = dependencies.classification_needs_torch
    monkeypatch.setattr(ort_backend, "cuda_devices_by_driver", lambda: 0)
    assert not needs(False, None, "cpu") and not needs(False, None, "auto")
    assert needs(True, None, "cpu") and not needs(True, None, "cpu", "occlusion")
    graphless = tmp_path / "bundle"
    shutil.copytree(default_model_path(), graphless)
    card = json.loads((graphless / CARD_FILE).read_text(encoding="utf-8"))
    card.pop("onnx")
    (graphless / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    assert needs(False, str(graphless), "cpu") and needs(True, str(graphless), "cpu", "occlusion")
    assert needs(False, str(tmp_path / "no-bundle-here"), "cpu")  # the run itself says what is wrong
    monkeypatch.setattr(ort_backend, "cuda_devices_by_driver", lambda: 1)
    monkeypatch.setattr(ort_backend, "ort_has_cuda", lambda: False)
    assert needs(False, None, "auto") and needs(False, None, "cuda") and not needs(False, None, "cpu")
    monkeypatch.setattr(ort_backend, "ort_has_cuda", lambda: True)
    assert not needs(False, None, "auto")


def test_without_torch_only_the_onnx_runtime_packages_are_asked_for(monkeypatch):
    light = dependencies.torch_free_requirements()
    assert sorted(r.split(">")[0] for r in light) == ["onnxruntime", "scipy"]
    assert set(light) < set(dependencies.read_requirements())
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)  # a Slicer without torch
    assert dependencies.ensure_dependencies(confirm=never, install_torch=never, pip_ensure=never,
                                            requirements=light, torch=False)
    asked: list = []
    assert not dependencies.ensure_dependencies(confirm=lambda m: asked.append(m) or False, install_torch=never,
                                                pip_ensure=never, requirements=light)
    assert "torch" in asked[0]


def test_the_apply_asks_for_torch_only_with_a_heatmap(tmp_path):
    from test_slicer_first_run import blank_ct_and_point

    from MVCFClassifierLib.logic import PredictionLogic

    ct, points = blank_ct_and_point()
    calls: list = []
    logic = PredictionLogic(temp_root=str(tmp_path), ensure_dependencies=lambda **kw: calls.append(kw) or False)
    for heatmap in (False, True):
        assert logic.apply(ct, "Point list", points=points, device="cpu", views=heatmap, heatmap=heatmap) is None
    assert logic.apply(ct, "Point list", points=points, device="cpu", heatmap=True,
                       heatmap_method="occlusion") is None
    assert calls == [{"torch": False}, {"torch": True}, {"torch": False}] and not list(tmp_path.iterdir())


# A child Python that can import only the standard library, mvcf, Slicer's numpy and SimpleITK, and the
# torch-free requirements with what they depend on: every other installed distribution raises ImportError.
ONLY = """
import importlib.abc, importlib.metadata as md, re, sys
allowed, todo = set(), [n.lower() for n in sys.argv.pop(1).split(",")]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop())
    if name in allowed:
        continue
    allowed.add(name)
    try:
        todo += [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in (md.requires(name) or []) if "extra ==" not in r]
    except md.PackageNotFoundError:
        pass
owners = md.packages_distributions()
class Only(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        dists = {re.sub(r"[-_.]+", "-", d.lower()) for d in owners.get(top, [])}
        if top == "mvcf" or not dists or dists & allowed:
            return None
        raise ImportError(f"{fullname} is not installed here (blocked: {sorted(dists)})")
sys.meta_path.insert(0, Only())
from mvcf.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(REPO / "MVCFClassifier"), os.environ.get("PYTHONPATH", "")])}


def _torch_free(argv: list[str]) -> subprocess.CompletedProcess:
    """`mvcf <argv>` in a child Python that can import only the torch-free requirements (ONLY)."""
    names = ",".join([*(r.split(">")[0] for r in dependencies.torch_free_requirements()), "numpy", "SimpleITK"])
    return subprocess.run([sys.executable, "-c", ONLY, names, *argv], capture_output=True, text=True, env=ENV)


def test_a_python_with_only_onnx_runtime_and_scipy_classifies_a_vertebra(tmp_path):
    argv = ["--progress", "none", "predict", "--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask",
            str(SAMPLE / "totalseg.nii.gz"), "--label", "31", "--json"]
    only = _torch_free(argv)
    assert only.returncode == 0, only.stderr[-2000:]
    everything = subprocess.run([sys.executable, "-m", "mvcf", *argv], capture_output=True, text=True, env=ENV)
    light, full = json.loads(only.stdout), json.loads(everything.stdout)
    assert light["backend"] == "onnxruntime"
    assert light["probability_malignant"] == full["probability_malignant"]
    blocked = _torch_free([*argv[:-1], "--heatmap", str(tmp_path / "h.nii.gz")])
    assert blocked.returncode != 0 and "torch" in blocked.stderr, "the blocker must really block torch"
    assert not (tmp_path / "h.nii.gz").exists()
    occlusion = _torch_free([*argv, "--heatmap", str(tmp_path / "o.nii.gz"), "--heatmap-method", "occlusion"])
    assert occlusion.returncode == 0, occlusion.stderr[-2000:]
    assert json.loads(occlusion.stdout)["heatmap"] == str(tmp_path / "o.nii.gz") and (tmp_path / "o.nii.gz").is_file()


def test_a_python_with_only_onnx_runtime_and_scipy_screens_a_whole_spine(tmp_path):
    """`mvcf screen` (the Classifier's whole-spine Apply) runs its network on ONNX Runtime too, with the
    same probabilities as torch; before, it resolved the device through torch and stopped with a traceback."""
    argv = ["--progress", "none", "screen", "--ct", str(SAMPLE / "example_ct.nii.gz"), "--seg",
            str(SAMPLE / "totalseg.nii.gz"), "--device", "cpu", "--json"]
    only = _torch_free(argv)
    assert only.returncode == 0, only.stderr[-2000:]
    full = subprocess.run([sys.executable, "-m", "mvcf", *argv, "--backend", "torch"], capture_output=True,
                          text=True, env=ENV)
    light, heavy = json.loads(only.stdout), json.loads(full.stdout)
    assert (light["backend"], heavy["backend"]) == ("onnxruntime", "torch")
    probabilities = [[(v["level"], v["probability_malignant"]) for v in r["vertebrae"]] for r in (light, heavy)]
    assert [lv for lv, _ in probabilities[0]] == [lv for lv, _ in probabilities[1]] and len(probabilities[0]) >= 5
    assert [p for _, p in probabilities[0]] == pytest.approx([p for _, p in probabilities[1]], abs=1e-3)

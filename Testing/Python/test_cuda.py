"""The CUDA paths: mixed-precision training, GPU inference agreeing with the CPU, and DDP over NCCL under
torchrun. Skipped where no CUDA device is present (CI); run on a GPU machine with
`pytest Testing/Python/test_cuda.py`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from tiny_cohort import make_tiny_cohort  # noqa: E402

TRAIN = ["--view", "2.5d-orthogonal", "--size", "32", "--arch", "resnet10-tiny", "--epochs", "8",
         "--batch-size", "8", "--folds", "2", "--external", "B", "--seed", "1"]


def _mvcf(*args, launcher=(sys.executable, "-m", "mvcf.cli.main")):
    done = subprocess.run([*launcher, "--progress", "none", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_tiny_cohort(tmp_path_factory.mktemp("cohort"), n_per_site=16)


def _card(out):
    return json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))


def _bundle_agrees_on_cpu_and_cuda(bundle_dir, manifest, tmp_path):
    from mvcf.dataset import ViewCache
    from mvcf.manifest import read_manifest
    from mvcf.models.bundle import load_bundle
    from mvcf.inference import forward_arrays
    from mvcf.views import ViewSpec

    bundle = load_bundle(bundle_dir)
    spec = ViewSpec.from_dict(bundle.view_spec)
    views = next(iter(ViewCache(tmp_path / "cache").views(read_manifest(manifest), [spec]).values()))
    arrays = list(views.values())
    cpu = forward_arrays(bundle.model.to("cpu"), arrays, "cpu", logits=False)
    gpu = forward_arrays(bundle.model.to("cuda"), arrays, "cuda", logits=False)
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)   # float16 autocast on the GPU, float32 on the CPU


def test_amp_training_on_cuda_learns_and_its_bundle_runs_on_both_devices(cohort, tmp_path):
    out = tmp_path / "run"
    _mvcf("train", "--manifest", str(cohort), "--out", str(out), "--device", "cuda", *TRAIN)
    card = _card(out)
    assert card["training"]["device"] == "cuda" and card["training"]["amp"] is True
    assert card["training"]["distributed_backend"] is None
    assert card["validation_metrics"]["external_test"]["auc"] > 0.8
    _bundle_agrees_on_cpu_and_cuda(out / "model", cohort, tmp_path)


def test_torchrun_ddp_over_nccl_trains_and_only_rank0_writes(cohort, tmp_path):
    out = tmp_path / "ddp"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={torch.cuda.device_count()}", "-m", "mvcf.cli.main")
    _mvcf("train", "--manifest", str(cohort), "--out", str(out), "--device", "cuda", *TRAIN, launcher=launcher)
    card = _card(out)
    assert card["training"]["distributed_backend"] == "nccl"
    assert card["training"]["world_size"] == torch.cuda.device_count()
    assert card["validation_metrics"]["external_test"]["auc"] > 0.8
    assert sorted(p.name for p in (out / "folds").iterdir()) == ["fold0", "fold1"]


def test_predict_on_cuda_matches_cpu_on_the_real_ct():
    from mvcf.resources import sample_ct_paths

    paths = sample_ct_paths()
    if not paths["ct"].is_file():
        pytest.skip("sample CT not shipped")
    args = ["predict", "--ct", str(paths["ct"]), "--mask", str(paths["mask"]), "--label", "31", "--json"]
    gpu = json.loads(_mvcf(*args, "--device", "cuda").stdout)
    cpu = json.loads(_mvcf(*args, "--device", "cpu").stdout)
    assert gpu["device"] == "cuda" and cpu["device"] == "cpu"
    assert abs(gpu["probability_malignant"] - cpu["probability_malignant"]) < 5e-3
    assert gpu["prediction"] == cpu["prediction"] or \
        abs(cpu["probability_malignant"] - cpu["threshold"]) < 5e-3

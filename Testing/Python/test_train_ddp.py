"""`mvcf train` under torchrun: two CPU processes join one gloo group (the code path NCCL takes on GPUs),
split the training set with DistributedSampler, and only rank 0 writes the bundle, log and predictions."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from tiny_cohort import make_tiny_cohort  # noqa: E402


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_one_bundle(tmp_path):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=12)
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "mvcf.cli.main", "--progress", "none", "train", "--manifest", str(manifest),
               "--out", str(out), "--view", "2d", "--size", "24", "--arch", "resnet10-tiny", "--epochs", "2",
               "--batch-size", "4", "--folds", "2", "--external", "B", "--device", "cpu", "--seed", "2"]
    # utf-8 explicitly: an earlier test (VTK) may have set this process's locale to C, i.e. ASCII
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    assert card["training"]["distributed_backend"] == "gloo"
    assert card["training"]["world_size"] == 2
    assert card["training_data"]["cases"] == 24
    assert (out / "predictions.csv").is_file() and (out / "log.csv").is_file()
    assert not list(out.rglob("*.tmp*"))

"""A `mvcf train` process killed (SIGKILL) mid-training and then run again with --resume ends with exactly the
weights of an uninterrupted run (same sha256 of weights.safetensors)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from tiny_cohort import make_tiny_cohort  # noqa: E402

ARGS = ["--view", "2d", "--size", "24", "--arch", "resnet10-tiny", "--epochs", "5", "--batch-size", "4",
        "--folds", "2", "--external", "B", "--device", "cpu", "--seed", "3"]


def _train(manifest, out, *extra):
    command = [sys.executable, "-m", "mvcf.cli.main", "--progress", "none", "train", "--manifest", str(manifest),
               "--out", str(out)] + ARGS + list(extra)
    return command


def _sha(out):
    return json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))["weights"]["sha256"]


@pytest.mark.slow
def test_killed_then_resumed_run_has_the_uninterrupted_weights(tmp_path):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=16)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train(manifest, tmp_path / "full"), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train(manifest, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    log = killed / "folds" / "fold0" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text(encoding="utf-8").splitlines()) >= 3:   # header + 2 epochs done
            break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "model").exists()

    subprocess.run(_train(manifest, killed, "--resume"), check=True, env=env, capture_output=True)
    assert _sha(killed) == _sha(tmp_path / "full")

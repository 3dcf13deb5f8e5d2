"""Training loop: same seed -> identical result on CPU; a run cancelled mid-epoch and resumed ends with the
weights of an uninterrupted run; progress, cancel, metrics and the CSV log behave as documented."""
import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mvcf.errors import Cancelled, MVCFError  # noqa: E402
from mvcf.models.networks import network_config  # noqa: E402
from mvcf.train import TrainConfig, train_fold  # noqa: E402

SHAPE = (3, 24, 24)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = [(rng.random(SHAPE) * 0.6 + 0.3 * label).astype(np.float32) for label in y]
    return x, y


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return _data(16, 0) + _data(8, 1)


def _run(data, work, **kwargs):
    tx, ty, vx, vy = data
    config = TrainConfig(arch="resnet10-tiny", epochs=3, batch_size=4, seed=7, device="cpu")
    net = network_config("2.5d-adjacent", SHAPE, "resnet10-tiny")
    return train_fold(tx, ty, vx, vy, net, config, work, mode="2.5d-adjacent", **kwargs)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _strip_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_same_seed_gives_identical_weights_and_metrics(data, tmp_path):
    steps, rows = [], []
    first = _run(data, tmp_path / "a", on_step=lambda d, t, m: steps.append((d, t)),
                 on_metrics=lambda **row: rows.append(row))
    second = _run(data, tmp_path / "b")
    assert _same_weights(first.model, second.model)
    assert _strip_time(first.history) == _strip_time(second.history)
    np.testing.assert_array_equal(first.val_prob, second.val_prob)
    assert steps == [(i, 12) for i in range(1, 13)]           # 16 cases / batch 4 = 4 steps x 3 epochs
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    with open(tmp_path / "a" / "log.csv", newline="") as handle:
        logged = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in logged] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_auc", "lr"} <= set(logged[0])


def test_cancelled_mid_epoch_then_resumed_matches_uninterrupted(data, tmp_path):
    reference = _run(data, tmp_path / "ref")
    calls = {"n": 0}

    def cancel_in_epoch_two():
        calls["n"] += 1
        return calls["n"] == 6  # the second step of epoch 2

    with pytest.raises(Cancelled):
        _run(data, tmp_path / "run", should_cancel=cancel_in_epoch_two)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    resumed = _run(data, tmp_path / "run", resume=True)
    assert _same_weights(reference.model, resumed.model)
    assert _strip_time(reference.history) == _strip_time(resumed.history)


def test_resume_with_other_settings_is_refused(data, tmp_path):
    with pytest.raises(Cancelled):
        _run(data, tmp_path / "run", should_cancel=lambda: len(list((tmp_path / "run").glob("checkpoint.pt"))) > 0)
    tx, ty, vx, vy = data
    other = TrainConfig(arch="resnet10-tiny", epochs=5, batch_size=4, seed=7, device="cpu")
    with pytest.raises(MVCFError, match=r"other settings \(epochs\)"):
        train_fold(tx, ty, vx, vy, network_config("2.5d-adjacent", SHAPE, "resnet10-tiny"), other, tmp_path / "run",
                   resume=True, mode="2.5d-adjacent")
    wider = network_config("2.5d-adjacent", (4,) + SHAPE[1:], "resnet10-tiny")
    with pytest.raises(MVCFError, match="network/view"):
        train_fold([np.zeros((4,) + SHAPE[1:], np.float32)] * len(tx), ty, [np.zeros((4,) + SHAPE[1:], np.float32)]
                   * len(vx), vy, wider, TrainConfig(arch="resnet10-tiny", epochs=3, batch_size=4, seed=7,
                                                     device="cpu"), tmp_path / "run", resume=True,
                   mode="2.5d-adjacent")


def test_one_class_training_set_is_refused(data, tmp_path):
    tx, ty, vx, vy = data
    with pytest.raises(MVCFError, match="one class"):
        _run((tx, np.zeros_like(ty), vx, vy), tmp_path)


def test_bad_config_is_refused():
    with pytest.raises(MVCFError):
        TrainConfig(epochs=0)
    with pytest.raises(MVCFError):
        TrainConfig(device="tpu")

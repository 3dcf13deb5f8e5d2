"""Behaviour is unchanged by refactoring: a fresh run of the fixed set in golden_runs.py against
golden/outputs.json (recorded before the refactor). Views identical to the bit, probabilities to 1e-6,
trained weights identical (sha256), the last two on a CPU kind recorded in golden/machines.json; on another,
trained outputs within golden_runs.CROSS_CPU of outputs.json. Regenerate only for an intended change of
behaviour, and say so."""
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from golden_runs import CROSS_CPU, machine, record  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "golden" / "outputs.json").read_text(encoding="utf-8"))
MACHINES = json.loads((Path(__file__).parent / "golden" / "machines.json").read_text(encoding="utf-8"))


def exact(part: str):
    """This CPU kind's bit-exact record of `part`, or None when it has none (then only CROSS_CPU holds)."""
    return MACHINES.get(machine(), {}).get(part)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return record(tmp_path_factory.mktemp("golden"))


def _close(a, b, tol=1e-6, where="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _close(a[key], b[key], tol, f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, tol, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=tol, nan_ok=True), where
    else:
        assert a == b, where


def test_views_of_every_mode_are_identical(fresh):
    assert fresh["views"] == GOLDEN["views"]


def test_predictions_on_l1_to_l5_are_unchanged(fresh):
    if exact("predict") is not None:
        _close(fresh["predict"], exact("predict"), where="predict")
    _close(fresh["predict"], GOLDEN["predict"], tol=CROSS_CPU["predict"], where="predict")


def test_seeded_training_gives_identical_weights(fresh):
    _close(fresh["train"]["threshold"], GOLDEN["train"]["threshold"], tol=CROSS_CPU["train"])
    expected = exact("train") or GOLDEN["train"]
    if exact("train") is None and fresh["train"]["weights_sha256"] != expected["weights_sha256"]:
        pytest.skip(f"no bit-exact record for this CPU kind ({machine()}), whose weights differ from the "
                    f"reference's in their last bits; the threshold is within {CROSS_CPU['train']} of it. "
                    "Record one: golden/make_golden.py --machine")
    assert fresh["train"]["weights_sha256"] == expected["weights_sha256"]
    _close(fresh["train"]["threshold"], expected["threshold"])


def test_seeded_study_fold_predictions_are_unchanged(fresh):
    if exact("study") is not None:
        _close(fresh["study"], exact("study"), where="study")
    _close(fresh["study"], GOLDEN["study"], tol=CROSS_CPU["study"], where="study")


def test_statistics_on_the_reference_data_are_unchanged(fresh):
    expected = GOLDEN["stats"]
    if "mrmc" not in fresh["stats"]:
        expected = {k: v for k, v in expected.items() if k != "mrmc"}
    _close(fresh["stats"], expected, tol=1e-9, where="stats")

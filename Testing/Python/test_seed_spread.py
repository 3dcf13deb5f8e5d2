"""scripts/seed_spread.py: the per-seed table behind docs/synthetic.md's seed-spread figure."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spread():
    spec = importlib.util.spec_from_file_location("seed_spread", REPO / "scripts" / "seed_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _study(folder: Path, aucs: dict[str, tuple[float, float]]) -> Path:
    """A study.json as mvcf study writes it, with {model: (internal AUC, external AUC)}."""
    def test(auc: float) -> dict:
        return {"n": 160, "auc": auc, "auc_ci_delong": [auc - 0.05, min(auc + 0.05, 1.0)]}

    folder.mkdir(parents=True)
    path = folder / "study.json"
    path.write_text(json.dumps({"design": {}, "models": [
        {"name": name, "internal_test": test(i), "external_test": test(e)} for name, (i, e) in aucs.items()]}))
    return path


def test_records_and_summary(spread, tmp_path):
    work = tmp_path / "work"
    # seed 3: the 2D model is the best CNN externally although 2.5D is better internally; inside both windows
    _study(work / "study_seed3_2d+2.5d-orthogonal", {"2d": (0.90, 0.86), "2.5d-orthogonal": (0.95, 0.84),
                                                     "baseline-logistic": (0.80, 0.70)})
    # seed 4: best CNN above its window, baseline better externally than internally
    _study(work / "study_seed4_2d+2.5d-orthogonal", {"2d": (0.90, 0.85), "2.5d-orthogonal": (0.97, 0.93),
                                                     "baseline-logistic": (0.70, 0.72)})
    _study(work / "study_seed5_all", {"2d": (0.9, 0.8), "baseline-logistic": (0.8, 0.7)})   # not the two-mode study
    found = spread.find_studies([work], docs=False)
    assert sorted(found) == [3, 4]
    three, four = (spread.seed_record(seed, *found[seed]) for seed in (3, 4))
    assert (three["best_cnn"], three["best_cnn_external_auc"]) == ("2d", 0.86)
    assert three["best_cnn_in_window"] and three["baseline_in_window"]
    assert three["external_below_internal_every_model"]
    assert four["best_cnn"] == "2.5d-orthogonal" and not four["best_cnn_in_window"] and four["baseline_in_window"]
    assert not four["external_below_internal_every_model"]
    summary = spread.summarise([three, four])
    assert summary["both_windows"] == 1 and summary["external_below_internal_every_model"] == 1
    assert summary["best_cnn_external_auc"]["mean"] == pytest.approx(0.895)


def test_main_writes_json_and_plot(spread, tmp_path):
    _study(tmp_path / "w" / "study_seed0_2d+2.5d-orthogonal", {"2d": (0.9, 0.82), "2.5d-orthogonal": (0.95, 0.88),
                                                               "baseline-logistic": (0.8, 0.72)})
    out_json, out_png = tmp_path / "seeds.json", tmp_path / "spread.png"
    assert spread.main(["--work", str(tmp_path / "w"), "--no-docs", "--json", str(out_json),
                        "--plot", str(out_png)]) == 0
    data = json.loads(out_json.read_text())
    assert [r["seed"] for r in data["seeds"]] == [0] and data["summary"]["both_windows"] == 1
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert spread.main(["--work", str(tmp_path / "none"), "--no-docs", "--json", str(out_json)]) == 2
    # a later run with another work folder keeps seed 0, whose folder is gone; --fresh drops it
    _study(tmp_path / "w2" / "study_seed7_2d+2.5d-orthogonal", {"2d": (0.9, 0.70), "2.5d-orthogonal": (0.95, 0.75),
                                                                "baseline-logistic": (0.8, 0.60)})
    args = ["--work", str(tmp_path / "w2"), "--no-docs", "--json", str(out_json), "--plot", str(out_png)]
    assert spread.main(args) == 0
    data = json.loads(out_json.read_text())
    assert [r["seed"] for r in data["seeds"]] == [0, 7] and data["summary"]["both_windows"] == 1
    assert spread.main([*args, "--fresh"]) == 0
    assert [r["seed"] for r in json.loads(out_json.read_text())["seeds"]] == [7]


def test_committed_seeds_are_read(spread):
    """The committed studies of docs/study_synthetic_standard/ are the seeds the figure starts from."""
    found = spread.find_studies([], docs=True)
    assert 0 in found and len(found) >= 2
    record = spread.seed_record(0, *found[0])
    assert record["best_cnn"] in ("2d", "2.5d-orthogonal")

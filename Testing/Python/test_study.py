"""`mvcf study` on a tiny cohort: every requested mode and the baseline on identical splits, paired DeLong,
the report files."""
import csv
import json

import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from tiny_cohort import make_tiny_cohort  # noqa: E402


def test_study_compares_modes_and_baseline_on_identical_cases(tmp_path, capsys):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=16)
    out = tmp_path / "study"
    code = main(["--progress", "none", "study", "--manifest", str(manifest), "--out", str(out),
                 "--modes", "2d,2.5d-orthogonal,3d", "--size", "24", "--size-3d", "16", "--arch", "resnet10-tiny",
                 "--epochs", "1", "--batch-size", "4", "--folds", "2", "--external", "B", "--device", "cpu",
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in summary["models"]]
    assert names == ["2d", "2.5d-orthogonal", "3d", "baseline-logistic"]
    assert summary["design"]["reference"] == "2.5d-orthogonal"
    for m in summary["models"]:
        assert m["internal_test"]["n"] == 16 and m["external_test"]["n"] == 16
        assert m["parameters"] > 0 and m["train_seconds"] >= 0
    pairs = summary["delong_external"]["pairs"]
    assert len(pairs) == 6 and all(0.0 <= p["p"] <= 1.0 for p in pairs)
    for mode in ("2d", "2.5d-orthogonal", "3d"):
        assert (out / mode / "model" / "model.json").is_file()
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and all(r["baseline-logistic"] and r["3d"] for r in rows)
    report = (out / "report.md").read_text()
    assert "p vs ref" in report and "Research use only" in report
    assert (out / "report.html").is_file() and (out / "roc_external.png").is_file()

"""`mvcf demo` end to end at a toy size: cohort -> study -> prediction on the real CT -> report folder."""
import json

import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402


@pytest.mark.slow
def test_demo_writes_a_complete_report_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["--progress", "none", "demo", "--out", str(out), "--cases", "20", "--epochs", "1",
                 "--size", "24", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["study"]) == {"2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d",
                                    "baseline-logistic"}
    for name in ("study_reference_model", "embedded_demo_model"):
        assert 0.0 <= result["predictions"][name]["probability_malignant"] <= 1.0
    for path in ("index.html", "demo.json", "cohort/manifest.csv", "study/report.html", "study/report.md",
                 "study/study.json", "prediction/heatmap_L1.nii.gz", "prediction/prediction_L1.json",
                 "prediction/key_L1_axial.png", "prediction/key_L1_sagittal.png", "screen/screen.tsv",
                 "screen/screen_overview.png"):
        assert (out / path).is_file(), path
    screen = result["screen"]
    assert [r["level"] for r in screen["vertebrae"]] == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert screen["vertebrae"][2]["probability_malignant"] == pytest.approx(
        result["predictions"]["embedded_demo_model"]["probability_malignant"], abs=1e-3)   # L1: the same model
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "synthetic" in index
    assert index.index('src="prediction/key_L1_axial.png"') < index.index("<table")  # pictures first
    assert not (out / "cache").exists()
    assert main(["--progress", "none", "demo", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    (out / "index.html").write_text("stale")                 # `make demo` again: its own folder is replaced
    assert main(["--progress", "none", "demo", "--out", str(out), "--cases", "20", "--epochs", "1", "--size",
                 "24", "--device", "cpu", "--overwrite"]) == 0
    assert "synthetic" in (out / "index.html").read_text(encoding="utf-8")

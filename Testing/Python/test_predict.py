"""`mvcf predict` on the shipped real CT (TotalSegmentator example, L1) with the embedded demo bundle."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from mvcf.resources import sample_ct_paths  # noqa: E402

FIELDS = {"probability_malignant", "prediction", "threshold", "model", "device", "center_lps", "timing_ms",
          "warnings"}


@pytest.fixture(scope="module")
def sample():
    paths = sample_ct_paths()
    if not paths["ct"].is_file():
        pytest.skip("sample CT not shipped")
    return paths


def test_embedded_demo_bundle_loads_and_says_it_is_synthetic():
    from mvcf.models.bundle import load_bundle
    from mvcf.predict import default_model_path

    bundle = load_bundle(default_model_path())
    assert bundle.card["trained_on_synthetic_data"] is True
    assert "synthetic" in bundle.card["description"].lower()
    assert "research use only" in bundle.card["intended_use"].lower()
    size = sum(p.stat().st_size for p in default_model_path().iterdir())
    assert size < 5_000_000


def test_predict_json_on_L1_of_the_real_ct(sample, capsys):
    from mvcf.locate import from_mask
    from mvcf.read_ct import read_ct, read_mask

    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert FIELDS <= set(result)
    assert 0.0 <= result["probability_malignant"] <= 1.0
    assert result["prediction"] == ("MVCF" if result["probability_malignant"] >= result["threshold"] else "OVCF")
    assert set(result["model"]) == {"name", "version", "sha256"} and len(result["model"]["sha256"]) == 64
    assert result["device"] == "cpu"
    assert any("synthetic" in w for w in result["warnings"])
    assert "Research use only" in result["disclaimer"]
    assert result["timing_ms"]["total"] >= result["timing_ms"]["inference"] > 0
    ct = read_ct(sample["ct"])
    centroid = from_mask(ct, read_mask(sample["mask"]), 31).center_lps
    np.testing.assert_allclose(result["center_lps"], centroid, atol=1e-6)


def test_same_point_in_ras_gives_the_same_probability(sample, capsys):
    from mvcf.locate import from_mask
    from mvcf.predict import predict_file
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(sample["ct"])
    lps = from_mask(ct, read_mask(sample["mask"]), 31).center_lps
    by_mask = predict_file(sample["ct"], mask_path=sample["mask"], label=31, device="cpu")
    by_ras = predict_file(sample["ct"], point=[-lps[0], -lps[1], lps[2]], unit="ras", device="cpu")
    assert by_ras.probability_malignant == pytest.approx(by_mask.probability_malignant, abs=1e-6)


def test_heatmap_is_written_on_the_view_grid_inside_the_ct(sample, tmp_path, capsys):
    import SimpleITK as sitk

    from mvcf.explain import explain
    from mvcf.locate import from_mask
    from mvcf.read_ct import read_ct, read_mask

    out = tmp_path / "heat.nii.gz"
    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--device", "cpu", "--heatmap", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    image = sitk.ReadImage(str(out))
    values = sitk.GetArrayFromImage(image)
    assert np.isfinite(values).all() and values.max() <= 1.0 + 1e-6 and values.min() >= 0.0
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    np.testing.assert_allclose(centre, result["center_lps"], atol=1.0)
    ct = read_ct(sample["ct"])
    location = from_mask(ct, read_mask(sample["mask"]), 31)
    peaks = [float(explain(ct, location, target=t)[0].voxels.max()) for t in ("MVCF", "OVCF")]
    assert max(peaks) == pytest.approx(1.0)   # evidence for one class or the other, scaled to [0, 1]


def test_bad_model_and_missing_location_fail_cleanly(sample, tmp_path, capsys):
    (tmp_path / "model.json").write_text("{}")
    assert main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a model bundle" in err and "Traceback" not in err
    assert main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"])]) == 2
    assert "--label" in capsys.readouterr().err

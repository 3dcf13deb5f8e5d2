"""`views` in a locations file: `mvcf predict` writes the model input it used for that vertebra (one NIfTI
per grid and window, the same files `mvcf views` writes for the bundle's view spec), so the Slicer module
shows what the model saw instead of building the view a second time."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from mvcf.resources import sample_ct_paths  # noqa: E402


def test_predict_writes_the_view_it_used_where_the_entry_asks(tmp_path, capsys):
    import SimpleITK as sitk

    from mvcf.models.bundle import read_card
    from mvcf.predict import default_model_path

    paths = sample_ct_paths()
    locations = tmp_path / "vertebrae.json"
    locations.write_text(json.dumps([{"name": "L1", "mask": str(paths["mask"]), "label": 31, "views": "L1_views"},
                                     {"name": "L2", "mask": str(paths["mask"]), "label": 30}]))
    assert main(["predict", "--ct", str(paths["ct"]), "--locations", str(locations), "--device", "cpu",
                 "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)["results"]
    assert "views" not in second
    written = [Path(p) for p in first["views"]]
    assert all(p.parent == tmp_path / "L1_views" and p.is_file() for p in written)

    spec = read_card(default_model_path())["view_spec"]
    windows = ",".join(w if isinstance(w, str) else f"{w[0]}:{w[1]}" for w in spec["windows"])
    out = tmp_path / "mvcf_views"
    assert main(["views", "--ct", str(paths["ct"]), "--mask", str(paths["mask"]), "--label", "31", "--mode",
                 spec["mode"], "--size", str(spec["size_px"]), "--spacing", str(spec["spacing_mm"]),
                 "--windows", windows, "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in written) == sorted(p.name for p in out.glob("*.nii.gz"))
    for path in written:
        mine, theirs = sitk.ReadImage(str(path)), sitk.ReadImage(str(out / path.name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs))
        np.testing.assert_allclose(mine.GetOrigin(), theirs.GetOrigin())
        np.testing.assert_allclose(mine.GetDirection(), theirs.GetDirection())


def test_a_views_entry_round_trips_through_the_locations_file(tmp_path):
    from mvcf.locate import VertebraQuery
    from mvcf.locations_file import read_locations, write_locations

    path = write_locations(tmp_path / "l.json", [VertebraQuery(name="L1", point=(1.0, 2.0, 3.0), unit="lps",
                                                               views=tmp_path / "v")])
    (query,) = read_locations(path)
    assert query.views == tmp_path / "v" and query.heatmap is None

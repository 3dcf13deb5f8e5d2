"""A location with no vertebra is never classified: air, soft tissue or a wrong label are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from mvcf.cli.main import main
from mvcf.errors import MVCFError
from mvcf.resources import sample_ct_paths

SAMPLE = sample_ct_paths()


def test_air_at_the_corner_is_refused(capsys):
    code = main(["--progress", "none", "predict", "--ct", str(SAMPLE["ct"]), "--point-ijk", "0,0,0", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no vertebral bone at the location") and err.count("\n") == 1
    assert "0.0 %" in err


def test_every_route_checks_for_bone(tmp_path, capsys):
    from mvcf import locate
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(SAMPLE["ct"])
    l1 = locate.from_mask(ct, read_mask(SAMPLE["mask"]), 31)
    assert locate.bone_fraction(ct, l1.center_lps) > 0.05
    soft = l1.center_lps + [0, -60, 0]                           # 6 cm in front of L1
    assert locate.bone_fraction(ct, soft) == 0.0
    box = locate.resolve(ct, locate.VertebraQuery(box=(tuple(soft - 15), tuple(soft + 15))))
    with pytest.raises(MVCFError, match="no vertebral bone"):
        predict_ct(ct, box, device="cpu")
    # a mask label drawn in soft tissue
    image = sitk.ReadImage(str(SAMPLE["ct"]))
    mask = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    i, j, k = np.round(ct.lps_to_index(soft)).astype(int)
    mask[k - 2:k + 3, j - 2:j + 3, i - 2:i + 3] = 7
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(tmp_path / "soft.nii.gz"))
    (tmp_path / "where.json").write_text(json.dumps([
        {"name": "L1", "point_lps": list(l1.center_lps)},
        {"name": "soft", "mask": "soft.nii.gz", "label": 7},
        {"name": "air", "point_ijk": [0, 0, 0]}]))
    code = main(["--progress", "none", "predict", "--ct", str(SAMPLE["ct"]), "--locations",
                 str(tmp_path / "where.json"), "--json"])
    results = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and "probability_malignant" in results[0]
    assert all("no vertebral bone" in r["error"] for r in results[1:])

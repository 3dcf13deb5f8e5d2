"""The vertebra options of `mvcf views` and `mvcf predict` share one parser (mvcf.cli.location) and one
resolver (mvcf.locate.resolve): a negative first coordinate is a value (`--point-ras -5.7,10,3`) in both,
and the point, mask and IJK forms land where the mask's centroid says."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mvcf.cli.main import main
from mvcf.ctimage import lps_to_ras
from mvcf.locate import VertebraQuery, from_mask, resolve
from mvcf.read_ct import read_ct, read_mask
from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths

SAMPLE = sample_ct_paths()


@pytest.fixture(scope="module")
def ras_point():
    """The L1 centroid in RAS with its first coordinate made negative (1 mm off to the patient's right is
    still inside the vertebra), written as `mvcf` users type it."""
    ct = read_ct(SAMPLE["ct"])
    lps = from_mask(ct, read_mask(SAMPLE["mask"]), SAMPLE_VERTEBRA_LABELS["L1"]).center_lps
    ras = lps_to_ras(lps)
    ras[0] = -abs(ras[0]) - 1.0
    return ras, ",".join(f"{v:.2f}" for v in ras)


def test_views_takes_a_negative_ras_point_as_a_value(tmp_path, capsys, ras_point):
    ras, text = ras_point
    assert text.startswith("-")
    code = main(["--progress", "none", "views", "--ct", str(SAMPLE["ct"]), "--point-ras", text, "--mode", "2d",
                 "--size", "16", "--out", str(tmp_path / "v"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    centre = json.loads(out)["center_lps"]
    np.testing.assert_allclose(centre, [-ras[0], -ras[1], ras[2]], atol=0.01)


def test_predict_takes_a_negative_ras_point_as_a_value(capsys, ras_point):
    ras, text = ras_point
    code = main(["--progress", "none", "predict", "--ct", str(SAMPLE["ct"]), "--point-ras", text, "--device", "cpu",
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out)
    np.testing.assert_allclose(payload["center_lps"], [-ras[0], -ras[1], ras[2]], atol=0.01)
    assert 0.0 <= payload["probability_malignant"] <= 1.0


def test_one_query_resolves_every_kind_the_same_way():
    ct = read_ct(SAMPLE["ct"])
    by_mask = resolve(ct, VertebraQuery(mask=SAMPLE["mask"], label=31))
    lps = by_mask.center_lps
    by_point = resolve(ct, VertebraQuery(point="{:.6f},{:.6f},{:.6f}".format(*lps), unit="LPS"))
    by_ras = resolve(ct, VertebraQuery(point=tuple(lps_to_ras(lps)), unit="ras"))
    by_ijk = resolve(ct, VertebraQuery(point=tuple(ct.lps_to_index(lps)), unit="ijk"))
    by_box = resolve(ct, VertebraQuery(box=(tuple(lps - 10), tuple(lps + 10))))
    for location in (by_point, by_ras, by_ijk, by_box):
        np.testing.assert_allclose(location.center_lps, lps, atol=1e-4)
    masks: dict = {}
    resolve(ct, VertebraQuery(mask=SAMPLE["mask"], label=31), masks)
    assert len(masks) == 1   # a run's mask cache: each file read once


@pytest.mark.parametrize("kwargs,message", [
    ({}, "exactly one of"),
    ({"point": (1, 2, 3), "unit": "lps", "mask": "m.nii.gz", "label": 1}, "exactly one of"),
    ({"mask": "m.nii.gz"}, "needs a label"),
    ({"point": (1, 2, 3), "unit": "lps", "label": 3}, "only with a mask"),
    ({"point": (1, 2, 3), "unit": "mm"}, "point unit"),
    ({"point": "1,2", "unit": "ras"}, "three finite numbers"),
])
def test_a_malformed_query_is_refused_in_one_line(kwargs, message):
    from mvcf.errors import MVCFError

    with pytest.raises(MVCFError, match=message):
        VertebraQuery(**kwargs)


def test_a_point_on_the_far_edge_of_the_ct_is_outside_it():
    """I = size - 0.5 passed `contains` (<=) while ITK counts it outside the buffer: the axial plane there came
    out all air and P moved by 0.06 for 0.003 mm. The far edge is now outside, as the near one is inside."""
    from mvcf.errors import MVCFError
    from mvcf.locate import from_point

    ct = read_ct(SAMPLE["ct"])
    i, j, k = (s - 0.5 for s in ct.size_ijk)
    with pytest.raises(MVCFError, match="is outside the CT"):
        from_point(ct, (57.4, 33.5, k), "ijk")
    assert from_point(ct, (57.4, 33.5, k - 0.001), "ijk").center_lps is not None
    assert from_point(ct, (-0.5, 33.5, 60), "ijk").center_lps is not None

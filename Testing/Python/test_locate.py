"""Locating a vertebra: points in three units, boxes, mask centroids, and the optional body refinement."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import shared
from mvcf import locate
from mvcf.ctimage import CTImage, lps_to_ras
from mvcf.errors import MVCFError
from mvcf.read_ct import read_ct, read_mask

FIXTURES = {
    "totalseg_L1": ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/spine_report/totalseg.nii.gz", 31,
                    "totalsegmentator/spine_report/totalseg_vertebrae_body.nii.gz", [1]),
    "tptbox_L3": ("tptbox_sample_ct/sub-ct_label-22_ct.nii.gz", "tptbox_sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz",
                  22, "tptbox_sample_ct/sub-ct_seg-subreg_label-22_msk.nii.gz", [49, 50]),
}


def nibabel_centroid_lps(mask_path, label, also=None) -> np.ndarray:
    """Independent reference: label centroid through nibabel's RAS affine (voxel centres), in LPS."""
    image = nib.load(str(mask_path))
    data = np.asanyarray(image.dataobj)
    selected = data == label
    if also is not None:
        selected &= also
    ijk = np.argwhere(selected).mean(axis=0)
    ras = image.affine[:3, :3] @ ijk + image.affine[:3, 3]
    return lps_to_ras(ras)


@pytest.fixture(scope="module")
def totalseg():
    ct_rel, mask_rel, *_ = FIXTURES["totalseg_L1"]
    return read_ct(shared(ct_rel)), read_mask(shared(mask_rel))


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_from_mask_is_the_label_centroid(key):
    ct_rel, mask_rel, label, *_ = FIXTURES[key]
    ct, mask = read_ct(shared(ct_rel)), read_mask(shared(mask_rel))
    loc = locate.from_mask(ct, mask, label)
    np.testing.assert_allclose(loc.center_lps, nibabel_centroid_lps(shared(mask_rel), label), atol=1e-3)
    assert loc.source == f"mask label {label}"
    # a lumbar vertebra with its posterior elements is a few cm in each direction
    assert np.all(loc.extent_mm > 25) and np.all(loc.extent_mm < 110)


def test_label_absent_from_mask(totalseg):
    ct, mask = totalseg
    with pytest.raises(MVCFError, match=r"label 22 is absent .*labels present: 26, 27, 28, 29, 30, 31, 32, 33"):
        locate.from_mask(ct, mask, 22)


def test_mask_on_another_grid_uses_its_own_geometry(totalseg):
    ct, mask = totalseg
    shifted = read_mask(shared(FIXTURES["totalseg_L1"][1]))
    shifted.voxels = shifted.voxels[:, :, 10:]  # crop 10 columns: index (0,0,0) moves by 10 voxels
    shifted.origin = mask.index_to_lps([10, 0, 0])
    np.testing.assert_allclose(locate.from_mask(ct, shifted, 31).center_lps,
                               locate.from_mask(ct, mask, 31).center_lps, atol=1e-6)


def test_mask_label_outside_the_ct(totalseg):
    ct, mask = totalseg
    far = read_mask(shared(FIXTURES["totalseg_L1"][1]))
    far.origin = far.origin + np.array([0.0, 0.0, 1000.0])
    with pytest.raises(MVCFError, match="outside the CT"):
        locate.from_mask(ct, far, 31)


def test_a_label_in_pieces_far_apart_is_refused_and_strays_are_left_out(totalseg):
    """A label holding two vertebrae (L1 and L3 both 31) was located at their centroid, on L2, and L2 was
    classified under L1's name without a word; a few stray voxels far off pulled the centroid off the
    vertebra. A vertebra whose arch is cut off from its body by one voxel stays one vertebra."""
    from scipy import ndimage

    ct, mask = totalseg

    def relabelled(voxels: np.ndarray) -> CTImage:
        return CTImage(voxels, mask.spacing, mask.origin, mask.direction, source=mask.source)

    whole = locate.from_mask(ct, mask, 31)
    assert whole.warnings == []
    for value in (26, 27, 28, 29, 30, 32):   # no real vertebra's body has a gap head to foot
        assert locate.from_mask(ct, mask, value).warnings == [], value
    touching = mask.voxels.copy()   # L1 and L2 under one label touch through the facets: one piece
    touching[touching == 30] = 31
    merged = locate.from_mask(ct, relabelled(touching), 31, name="L1")
    assert [w.split(":")[0] for w in merged.warnings] == ["'L1' (label 31)"], merged.warnings
    assert "split by a gap of 6 mm head to foot, as by a disc" in merged.warnings[0]
    two = mask.voxels.copy()
    two[two == 29] = 31
    with pytest.raises(MVCFError, match=r"^label 31 of the mask lies in pieces \d+ mm apart \(\d+ % of its voxels "
                                        r"away from the largest piece\): one label must hold one vertebra"):
        locate.from_mask(ct, relabelled(two), 31)
    with pytest.raises(MVCFError, match=r"^label 31 of the mask lies"):   # predict's default name, not twice
        locate.from_mask(ct, relabelled(two), 31, name="label 31")
    with pytest.raises(MVCFError, match=r"^'L1' \(label 31\) of the mask lies"):
        locate.from_mask(ct, relabelled(two), 31, name="L1")
    stray = mask.voxels.copy()
    stray[:3, :3, :3] = 31   # 27 voxels in the CT's corner
    located = locate.from_mask(ct, relabelled(stray), 31)
    np.testing.assert_allclose(located.center_lps, whole.center_lps, atol=1e-6)
    np.testing.assert_allclose(located.extent_mm, whole.extent_mm, atol=1e-6)
    assert len(located.warnings) == 1 and located.warnings[0].startswith("label 31: left out 27 voxels")
    split = mask.voxels.copy()
    j = np.argwhere(split == 31)[:, 1]
    plane = split[:, int(np.median(j)), :]
    plane[plane == 31] = 0
    assert ndimage.label(split == 31, structure=np.ones((3, 3, 3)))[1] >= 2
    assert locate.from_mask(ct, relabelled(split), 31).warnings == []


def test_a_manifest_row_whose_centre_and_mask_label_disagree_is_refused(totalseg, tmp_path):
    """A row with mask + label 31 (L1) and a center_lps on L3 was located by the label in silence."""
    from types import SimpleNamespace

    from mvcf.dataset import locate_record

    ct, mask = totalseg
    path = shared(FIXTURES["totalseg_L1"][1])
    l1, l3 = (locate.from_mask(ct, mask, label).center_lps for label in (31, 29))
    row = SimpleNamespace(mask=path, vertebra_label=31, center_lps=l3)
    with pytest.raises(MVCFError, match=r"^its centre lies \d+ mm from the centroid of label 31 of its mask \(at "
                                        r"most 25 mm\): the two name different places"):
        locate_record(ct, row)
    body = l1 + np.array([0.0, -15.0, 0.0])   # the body's centre, in front of the whole vertebra's centroid
    np.testing.assert_allclose(locate_record(ct, SimpleNamespace(mask=path, vertebra_label=31, center_lps=body))
                               .center_lps, l1)


def test_point_units_agree(totalseg):
    ct, _ = totalseg
    ijk = np.array([60.3, 40.7, 55.2])
    lps = ct.index_to_lps(ijk)
    ras = lps_to_ras(lps)
    a = locate.from_point(ct, ras, "ras")
    b = locate.from_point(ct, lps, "LPS")
    c = locate.from_point(ct, ijk, "ijk")
    np.testing.assert_allclose(a.center_lps, lps)
    np.testing.assert_allclose(b.center_lps, lps)
    np.testing.assert_allclose(c.center_lps, lps)
    # the same numbers read as RAS are another place (here outside the CT): the unit matters
    with pytest.raises(MVCFError, match="RAS point"):
        locate.from_point(ct, lps, "ras")


@pytest.mark.parametrize("point,unit,pattern", [
    ((0, 0, 5000), "lps", "outside the CT"),
    ((-1, 5, 5), "ijk", "outside the CT"),
    ((122, 5, 5), "ijk", "outside the CT"),
    ((1, 2), "lps", "three finite numbers"),
    ((1, np.nan, 2), "ras", "three finite numbers"),
    (("a", 1, 2), "ras", "three finite numbers"),
    ((True, 1, 2), "ras", "three finite numbers"),
    ("1;2", "lps", "three finite numbers"),
    ((1, 2, 3), "mm", "unit must be one of"),
    # a numpy overflow warning, then "voxel (nan, nan, nan)" for a point given as 1e308 voxels
    ((1e308, 1e308, 1e308), "ijk", r"^IJK point \(1e\+308, 1e\+308, 1e\+308\) is outside the CT"),
    ((1e308, 0, 0), "lps", r"^LPS point LPS \(1e\+308, 0.0, 0.0\) mm = voxel \(-3.33e\+307, "),
])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_bad_points(totalseg, point, unit, pattern):
    ct, _ = totalseg
    with pytest.raises(MVCFError, match=pattern):
        locate.from_point(ct, point, unit)


def test_point_on_the_outer_voxel_edge_is_inside(totalseg):
    ct, _ = totalseg
    assert locate.from_point(ct, (121.4, 0, 0), "ijk").center_lps is not None


def test_boxes(totalseg):
    ct, mask = totalseg
    centre = locate.from_mask(ct, mask, 31).center_lps
    a = locate.from_box(ct, centre + [20, -15, 12], centre - [20, -15, 12])
    np.testing.assert_allclose(a.center_lps, centre)
    np.testing.assert_allclose(a.extent_mm, [40, 30, 24])
    b = locate.resolve(ct, locate.VertebraQuery(box=(tuple(centre - [20, 15, 12]), tuple(centre + [20, 15, 12]))))
    np.testing.assert_allclose(b.center_lps, centre)
    np.testing.assert_allclose(b.extent_mm, [40, 30, 24])
    with pytest.raises(MVCFError, match="outside"):
        locate.from_box(ct, centre + [0, 0, 900], centre + [10, 10, 910])
    assert a.warnings == []


def test_a_flat_box_is_refused_and_one_larger_than_a_vertebra_is_said(totalseg):
    """A box from T12 to L5 (200 mm tall) was classified at its centre, the L2/L3 disc, and a flat box was
    taken, both without a word."""
    ct, mask = totalseg
    centre = locate.from_mask(ct, mask, 31).center_lps
    with pytest.raises(MVCFError, match=r"^the box is flat \(40.0 x 0.0 x 24.0 mm along L, P, S\)"):
        locate.from_box(ct, centre - [20, 0, 12], centre + [20, 0, 12])
    tall = locate.from_box(ct, centre - [35, 40, 100], centre + [35, 40, 100])
    np.testing.assert_allclose(tall.center_lps, centre)
    assert len(tall.warnings) == 1 and tall.warnings[0].startswith(
        "the box is 70 x 80 x 200 mm (L, P, S), larger than one vertebra (at most 160 x 160 x 80 mm)")
    # 1 mm thick (a Slicer ROI left at its depth): its centre need not lie on the body (P 0.956 against 0.801)
    thin = locate.from_box(ct, centre - [20, 15, 0.5], centre + [20, 15, 0.5])
    assert len(thin.warnings) == 1 and thin.warnings[0].startswith(
        "the box is 40.0 x 30.0 x 1.0 mm (L, P, S), thinner than a vertebral body (under 10 mm along an axis)")


def test_a_label_too_small_for_a_vertebra_is_said(totalseg):
    """A label of one voxel was classified at it without a word (P 0.329)."""
    ct, mask = totalseg
    voxels = np.zeros_like(mask.voxels)
    voxels[50, 50, 60] = 31
    tiny = locate.from_mask(ct, CTImage(voxels, mask.spacing, mask.origin, mask.direction), 31)
    assert len(tiny.warnings) == 1 and tiny.warnings[0].startswith(
        "label 31 holds 0.027 cm3, less than any whole vertebra (at least 2 cm3)"), tiny.warnings
    assert locate.from_mask(ct, mask, 31).warnings == []


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_refine_moves_a_mask_centroid_onto_the_vertebral_body(key):
    """The whole-vertebra centroid sits behind the body (posterior elements); refining must move it
    towards the body centroid given by the fixture's body segmentation."""
    ct_rel, mask_rel, label, body_rel, body_labels = FIXTURES[key]
    ct, mask = read_ct(shared(ct_rel)), read_mask(shared(mask_rel))
    body = np.isin(np.asanyarray(nib.load(str(shared(body_rel))).dataobj), body_labels)
    truth = nibabel_centroid_lps(shared(mask_rel), label, also=body)
    start = locate.from_mask(ct, mask, label)
    refined = locate.refine_on_body(ct, start)
    before = np.linalg.norm((start.center_lps - truth)[:2])
    after = np.linalg.norm((refined.center_lps - truth)[:2])
    assert before > 8
    assert after < 0.6 * before
    assert refined.center_lps[2] == start.center_lps[2]
    assert "refined" in refined.source


def test_refine_refuses_a_far_jump(totalseg):
    ct, _ = totalseg
    loc = locate.VertebraLocation(center_lps=ct.index_to_lps([20, 50, 56]))  # beside the body, in the flank
    refined = locate.refine_on_body(ct, loc, max_shift_mm=1.0)
    if not np.allclose(refined.center_lps, loc.center_lps):
        pytest.fail("a shift beyond max_shift_mm must be refused")
    assert any("refine" in w for w in refined.warnings)


def test_one_point_parser_for_text_and_sequences():
    for value in ("1.5,-2,30", " (1.5; -2; 3e1) ", "[1.5 -2 30]", [1.5, -2, 30], ("1.5", "-2", "30"),
                  np.array([1.5, -2.0, 30.0])):
        np.testing.assert_allclose(locate.parse_point(value), [1.5, -2, 30])
    with pytest.raises(MVCFError, match=r"--point-ras must be three finite numbers X,Y,Z, got '1,2'"):
        locate.parse_point("1,2", "--point-ras")

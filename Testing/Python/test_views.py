"""build_views: shapes, fixed anatomical orientation for any direction cosines, centring on the real fixtures,
unit equivalence, padding, determinism, and that only the region around the vertebra is read."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import shared
from mvcf import locate
from mvcf.ctimage import CTImage, lps_to_ras
from mvcf.errors import MVCFError
from mvcf.read_ct import read_ct, read_mask
from mvcf import modes  # noqa: E402
from mvcf.views import AIR_HU, SampleGrid, ViewSpec, build_views, sample_on_grid
from test_locate import FIXTURES, nibabel_centroid_lps


@pytest.fixture(scope="module")
def totalseg():
    ct_rel, mask_rel, *_ = FIXTURES["totalseg_L1"]
    ct, mask = read_ct(shared(ct_rel)), read_mask(shared(mask_rel))
    return ct, mask, locate.from_mask(ct, mask, 31)


# ------------------------------------------------------------------------------------------------ the spec
@pytest.mark.parametrize("mode,expected", [
    ("2d", (2, 40, 40)), ("2.5d-adjacent", (3 * 2, 40, 40)), ("2.5d-orthogonal", (3 * 2, 40, 40)),
    ("2.5d-mil", (16, 2, 40, 40)), ("3d", (2, 40, 40, 40)),
])
def test_shapes_dtype_and_range(totalseg, mode, expected):
    ct, _, loc = totalseg
    spec = ViewSpec(mode=mode, size_px=40, windows=("bone", "soft"))
    result = build_views(ct, loc, spec)
    assert result.shape == expected == spec.output_shape()
    assert result.array.dtype == np.float32 and result.array.flags.c_contiguous
    assert 0.0 <= result.array.min() and result.array.max() <= 1.0 and result.array.std() > 0.05
    assert len(result.channel_names) == (expected[1] if mode == "2.5d-mil" else expected[0])
    json.dumps(result.to_dict())


def test_windows_are_channels_with_their_own_scaling(totalseg):
    ct, _, loc = totalseg
    raw = build_views(ct, loc, ViewSpec(mode="2d", size_px=48, windows=())).array[0]
    both = build_views(ct, loc, ViewSpec(mode="2d", size_px=48, windows=("bone", (40, 400)))).array
    np.testing.assert_allclose(both[0], np.clip((raw - (400 - 900)) / 1800, 0, 1), atol=1e-5)
    np.testing.assert_allclose(both[1], np.clip((raw - (40 - 200)) / 400, 0, 1), atol=1e-5)


def test_adjacent_channels_are_slices_gap_apart(totalseg):
    ct, _, loc = totalseg
    spec = ViewSpec(mode="2.5d-adjacent", size_px=32, n_slices=5, slice_gap_mm=3.0, windows=())
    stack = build_views(ct, loc, spec).array
    for s in range(5):
        shifted = locate.VertebraLocation(loc.center_lps + [0, 0, 3.0 * (s - 2)])
        np.testing.assert_allclose(stack[s], build_views(ct, shifted, ViewSpec("2d", 32, windows=())).array[0],
                                   atol=1e-3)


def test_spec_json_round_trip_and_validation():
    spec = ViewSpec(mode="2.5d-mil", size_px=64, spacing_mm=1.5, n_slices=8, windows=("bone", (40, 400)))
    again = ViewSpec.from_json(spec.to_json())
    assert again == spec and again.slice_gap_mm == 2.0
    assert ViewSpec.from_dict(json.loads(json.dumps(ViewSpec().to_dict()))) == ViewSpec()
    for bad in [dict(mode="4d"), dict(size_px=4), dict(size_px=32.5), dict(spacing_mm=0),
                dict(mode="2d", n_slices=3), dict(mode="2.5d-mil", n_slices=0), dict(windows=("lung?",)),
                dict(windows=((40, -1),))]:
        with pytest.raises(MVCFError):
            ViewSpec(**bad)
    for repeated in [("bone", "bone"), ("bone", (400, 1800)), ((40, 400), "soft", "bone")]:
        with pytest.raises(MVCFError, match="given more than once"):
            ViewSpec(windows=repeated)
    with pytest.raises(MVCFError, match="unknown view spec field"):
        ViewSpec.from_dict({"mode": "2d", "size": 3})


# -------------------------------------------------------------------------------- orientation and geometry
def _marker_ct(direction: np.ndarray, spacing=(0.8, 0.9, 1.2), size=(70, 64, 60)) -> tuple[CTImage, np.ndarray]:
    """A CT with spheres 20 mm to the patient's left (1000 HU), posterior (2000) and superior (3000)."""
    direction = np.asarray(direction, float)
    centre = np.array([10.0, -20.0, 30.0])
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    ct = CTImage(np.zeros(size[::-1], np.int16), spacing, origin, direction)
    k, j, i = np.indices(ct.voxels.shape)
    lps = np.stack([i, j, k], -1).reshape(-1, 3) @ (direction @ np.diag(spacing)).T + origin
    for offset, value in (([20, 0, 0], 1000), ([0, 20, 0], 2000), ([0, 0, 20], 3000)):
        inside = np.linalg.norm(lps - (centre + offset), axis=1) < 5
        ct.voxels.reshape(-1)[inside] = value
    return ct, centre


def _rotation(axis, degrees):
    return sitk.VersorTransform(tuple(float(a) for a in axis), np.radians(degrees)).GetMatrix()


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "PIR": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
    "oblique": np.array(_rotation((1, 2, 3), 25)).reshape(3, 3) @ np.diag([-1.0, 1, 1]),
}


def _where(image: np.ndarray, value: float) -> np.ndarray:
    """Intensity-weighted centre of the marker blob whose peak is `value`."""
    from scipy import ndimage

    blobs, n = ndimage.label(image > 100)
    peaks = ndimage.maximum(image, blobs, range(1, n + 1))
    best = 1 + int(np.argmin(np.abs(np.asarray(peaks) - value)))
    assert abs(peaks[best - 1] - value) < 1
    return np.array(ndimage.center_of_mass(image, blobs, best))


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_fixed_anatomical_orientation_whatever_the_direction_cosines(name):
    ct, centre = _marker_ct(DIRECTIONS[name])
    c = (48 - 1) / 2
    orth = build_views(ct, centre, ViewSpec("2.5d-orthogonal", 48, windows=())).array
    axial, coronal, sagittal = orth
    left, post = _where(axial, 1000), _where(axial, 2000)  # (row, column)
    np.testing.assert_allclose(left, [c, c + 20], atol=0.6)  # patient left -> higher column
    np.testing.assert_allclose(post, [c + 20, c], atol=0.6)  # posterior -> lower in the image
    np.testing.assert_allclose(_where(coronal, 1000), [c, c + 20], atol=0.6)
    np.testing.assert_allclose(_where(coronal, 3000), [c - 20, c], atol=0.6)  # superior at the top
    np.testing.assert_allclose(_where(sagittal, 2000), [c, c + 20], atol=0.6)  # anterior on the left
    np.testing.assert_allclose(_where(sagittal, 3000), [c - 20, c], atol=0.6)
    cube = build_views(ct, centre, ViewSpec("3d", 48, windows=())).array[0]  # [S, P, L]
    np.testing.assert_allclose(_where(cube, 1000), [c, c, c + 20], atol=0.6)
    np.testing.assert_allclose(_where(cube, 2000), [c, c + 20, c], atol=0.6)
    np.testing.assert_allclose(_where(cube, 3000), [c + 20, c, c], atol=0.6)


@pytest.mark.parametrize("target", ["LPS", "RAS", "ASL"])
def test_reoriented_copy_gives_the_same_views(target):
    ct_rel, mask_rel, label, *_ = FIXTURES["tptbox_L3"]
    image = sitk.ReadImage(str(shared(ct_rel)))  # PIR on disk
    ct = CTImage.from_sitk(image)
    other = CTImage.from_sitk(sitk.DICOMOrient(image, target))
    assert not np.allclose(other.direction, ct.direction)
    loc = locate.from_mask(ct, read_mask(shared(mask_rel)), label)
    for mode in ("2.5d-orthogonal", "3d"):
        spec = ViewSpec(mode, 48, spacing_mm=1.3)
        np.testing.assert_allclose(build_views(other, loc, spec).array, build_views(ct, loc, spec).array,
                                   atol=1e-4)


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_view_centre_within_3mm_of_the_mask_centroid(key):
    """The label resampled on the view's own grid has its centroid at the view centre (< 3 mm)."""
    ct_rel, mask_rel, label, *_ = FIXTURES[key]
    ct, mask = read_ct(shared(ct_rel)), read_mask(shared(mask_rel))
    truth = nibabel_centroid_lps(shared(mask_rel), label)
    result = build_views(ct, locate.from_mask(ct, mask, label), ViewSpec("3d", 96, windows=()))
    grid = result.grids[0]
    labels = sample_on_grid(mask, grid, interpolation="nearest", default_value=0)
    kji = np.argwhere(labels == label)
    centroid_in_view = grid.index_to_lps(kji[:, ::-1].mean(axis=0))
    assert np.linalg.norm(centroid_in_view - truth) < 3.0
    assert np.linalg.norm(result.center_lps - truth) < 3.0
    mid = grid.index_to_lps((np.asarray(grid.size) - 1) / 2)
    assert np.linalg.norm(mid - truth) < 3.0
    # and the vertebra is where the CT is bright: the label's mean HU in the view is bone-like
    assert result.array[0][labels == label].mean() > 100


def test_ras_point_lps_point_and_ijk_index_give_the_same_view(totalseg):
    ct, _, loc = totalseg
    ijk = ct.lps_to_index(loc.center_lps)
    spec = ViewSpec("2.5d-orthogonal", 64)
    views = [build_views(ct, locate.from_point(ct, p, unit), spec).array for p, unit in
             ((lps_to_ras(loc.center_lps), "ras"), (loc.center_lps, "lps"), (ijk, "ijk"))]
    np.testing.assert_allclose(views[0], views[1], atol=1e-6)
    np.testing.assert_allclose(views[2], views[1], atol=1e-6)


def test_sampled_values_are_the_ct_at_the_grid_points(totalseg):
    ct, _, loc = totalseg
    result = build_views(ct, loc, ViewSpec("2.5d-orthogonal", 32, spacing_mm=3.0, windows=()))
    sagittal = result.grids[2]
    for (i, j) in ((0, 0), (5, 17), (31, 31)):
        ijk_ct = ct.lps_to_index(sagittal.index_to_lps([i, j, 0]))
        nearest = np.round(ijk_ct).astype(int)
        if np.allclose(ijk_ct, nearest, atol=1e-3):  # on a CT voxel centre the value is exact
            assert result.array[2, j, i] == pytest.approx(ct.voxels[nearest[2], nearest[1], nearest[0]])
    # grids are centred on the location
    for grid in result.grids:
        np.testing.assert_allclose(grid.index_to_lps((np.asarray(grid.size) - 1) / 2), loc.center_lps)


def test_grid_places_a_heatmap_back_in_the_ct(totalseg):
    ct, _, loc = totalseg
    result = build_views(ct, loc, ViewSpec("3d", 32))
    heat = np.zeros((32, 32, 32), np.float32)
    heat[20, 8, 25] = 1.0
    image = result.grids[0].to_ctimage(heat)
    k, j, i = np.argwhere(image.voxels == 1)[0]
    np.testing.assert_allclose(image.index_to_lps([i, j, k]), loc.center_lps + np.array([25, 8, 20]) - 15.5)
    assert SampleGrid.from_dict(result.grids[0].to_dict()).to_dict() == result.grids[0].to_dict()


# --------------------------------------------------------------------------------------- edges of the CT
def test_roi_partly_outside_is_padded_with_air_and_warned(totalseg):
    ct, _, _ = totalseg
    corner = ct.index_to_lps([2, 3, 2])
    result = build_views(ct, corner, ViewSpec("3d", 64, windows=()))
    assert any("beyond the CT" in w and "-1024" in w for w in result.warnings)
    cube = result.array[0]
    assert (cube == AIR_HU).mean() > 0.3
    assert np.isin(cube[0, 0, 0], [AIR_HU])
    inside = build_views(ct, locate.from_mask(ct, totalseg[1], 29), ViewSpec("2d", 32))
    assert inside.warnings == []


def test_point_outside_the_volume(totalseg):
    ct, _, _ = totalseg
    with pytest.raises(MVCFError, match="outside the CT"):
        build_views(ct, ct.index_to_lps([-3, 10, 10]), ViewSpec("2d", 32))
    with pytest.raises(MVCFError, match="finite"):
        build_views(ct, [np.nan, 0, 0], ViewSpec("2d", 32))


def test_deterministic(totalseg):
    ct, _, loc = totalseg
    spec = ViewSpec("2.5d-mil", 48, windows=("bone", "soft"))
    assert build_views(ct, loc, spec).array.tobytes() == build_views(ct, loc, spec).array.tobytes()


def test_only_the_region_around_the_vertebra_is_read():
    """A 2000^3 virtual CT (16 GB if materialised): views still come out, so nothing resampled it whole."""
    rng = np.random.default_rng(1)
    tile = rng.integers(-1000, 1500, size=(1, 1, 2000)).astype(np.int16)
    huge = np.broadcast_to(tile, (2000, 2000, 2000))
    ct = CTImage(huge, spacing=(0.5, 0.5, 0.5), origin=(0, 0, 0), direction=np.diag([-1.0, -1, 1]))
    centre = ct.index_to_lps([1000.2, 999.7, 1000.5])
    result = build_views(ct, centre, ViewSpec("3d", 64))
    assert result.shape == (1, 64, 64, 64) and result.warnings == []
    # columns of the cube run right -> left = decreasing i here; values vary only along i
    assert np.ptp(result.array[0, :, :, 10]) < 1e-6 and np.ptp(result.array[0, 10, 10, :]) > 0.1


def test_location_warnings_are_carried(totalseg):
    ct, _, loc = totalseg
    flagged = locate.VertebraLocation(loc.center_lps, warnings=["from the user"])
    assert build_views(ct, flagged, ViewSpec("2d", 16)).warnings == ["from the user"]


@pytest.mark.parametrize("mode", modes.names())
def test_every_mode_on_a_pir_ct(mode):
    ct_rel, mask_rel, label, *_ = FIXTURES["tptbox_L3"]
    ct = read_ct(shared(ct_rel))
    loc = locate.from_mask(ct, read_mask(shared(mask_rel)), label)
    result = build_views(ct, loc, ViewSpec(mode, 32, spacing_mm=2.0))
    assert result.shape == ViewSpec(mode, 32, spacing_mm=2.0).output_shape()
    assert result.spacing_mm == 2.0


def test_bad_ctimages_from_outside_read_ct():
    """CTImages built by hand (e.g. from a Slicer node) get one-line errors too."""
    vector = CTImage(np.zeros((8, 8, 8, 3), np.float32), spacing=(1, 1, 1), origin=(0, 0, 0))
    with pytest.raises(MVCFError, match="3D scalar"):
        build_views(vector, [3, 3, 3], ViewSpec("2d", 16))
    voxels = np.zeros((20, 20, 20), np.float32)
    voxels[10, 10, 10] = np.nan
    with pytest.raises(MVCFError, match="NaN"):
        build_views(CTImage(voxels, (1, 1, 1), (0, 0, 0)), [10, 10, 10], ViewSpec("2d", 16))


@settings(max_examples=8, deadline=None)
@given(angles=st.tuples(*[st.floats(-180, 180)] * 3),
       spacing=st.tuples(*[st.floats(0.6, 1.6)] * 3),
       flip=st.booleans())
@example(angles=(1.0, 0.0, 2.570744560726882e-306), spacing=(1.0, 1.0, 1.0), flip=False)  # ITK SVD vs denormals
def test_orientation_property_any_rotation_and_spacing(angles, spacing, flip):
    euler = sitk.Euler3DTransform()
    euler.SetRotation(*np.radians(angles))
    direction = np.array(euler.GetMatrix()).reshape(3, 3) @ np.diag([-1.0 if flip else 1.0, 1, 1])
    size = tuple(int(np.ceil(64 / s)) + 2 for s in spacing)  # +-32 mm: markers (20 mm + 5 mm) fit
    ct, centre = _marker_ct(direction, spacing=spacing, size=size)
    c = (48 - 1) / 2
    cube = build_views(ct, centre, ViewSpec("3d", 48, windows=())).array[0]
    np.testing.assert_allclose(_where(cube, 1000), [c, c, c + 20], atol=0.8)
    np.testing.assert_allclose(_where(cube, 2000), [c, c + 20, c], atol=0.8)
    np.testing.assert_allclose(_where(cube, 3000), [c + 20, c, c], atol=0.8)


def test_antialias_smooths_only_when_sampling_coarser_than_the_ct(totalseg):
    rng = np.random.default_rng(3)
    noise = CTImage(rng.normal(40, 60, (90, 90, 90)).astype(np.int16), (0.5, 0.5, 0.5), (0, 0, 0))
    centre = noise.index_to_lps([45, 45, 45])
    plain = build_views(noise, centre, ViewSpec("3d", 16, spacing_mm=2.0, windows=())).array
    smooth = build_views(noise, centre, ViewSpec("3d", 16, spacing_mm=2.0, windows=(), antialias=True)).array
    assert plain.std() > 40 and smooth.std() < 12  # white noise averaged over ~(2 sqrt(pi) 1.5 vox)^3
    assert abs(smooth.mean() - 40) < 5
    ct, _, loc = totalseg  # 3 mm voxels sampled at 1 mm: nothing to smooth, identical views
    spec = ViewSpec("2.5d-orthogonal", 32)
    aa = ViewSpec("2.5d-orthogonal", 32, antialias=True)
    np.testing.assert_array_equal(build_views(ct, loc, spec).array, build_views(ct, loc, aa).array)
    assert ViewSpec.from_json(aa.to_json()).antialias is True
    assert ViewSpec.from_dict({"mode": "2d"}).antialias is False  # bundles written before the field
    with pytest.raises(MVCFError, match="antialias"):
        ViewSpec(antialias="yes")

"""Every view mode places a heatmap as a volume covering the vertebra, on the CT's own lattice, with the
evidence where the view saw it (no model needed: known maps are placed and found again)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mvcf.explain import heatmap_image
from mvcf.locate import from_mask
from mvcf.read_ct import read_ct, read_mask
from mvcf.resources import sample_ct_paths
from mvcf.views import ViewSpec, build_views


@pytest.fixture(scope="module")
def l1():
    paths = sample_ct_paths()
    ct = read_ct(paths["ct"])
    return ct, from_mask(ct, read_mask(paths["mask"]), 31)


def _blob(shape, at, sigma=2.0) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    out[tuple(at)] = 1.0
    out = ndimage.gaussian_filter(out, sigma)
    return out / out.max()


def _on_lattice(ct, image) -> None:
    np.testing.assert_allclose(image.spacing, ct.spacing)
    np.testing.assert_allclose(image.direction, ct.direction)
    start = ct.lps_to_index(image.origin)
    np.testing.assert_allclose(start, np.round(start), atol=1e-4)
    assert min(image.voxels.shape) >= 5 and float(image.voxels.max()) == pytest.approx(1.0)


def _hottest_lps(image) -> np.ndarray:
    kji = np.unravel_index(np.argmax(image.voxels), image.voxels.shape)
    return image.index_to_lps(np.array(kji[::-1], float))


@pytest.mark.parametrize("mode", ["2d", "2.5d-adjacent"])
def test_axial_map_is_spread_through_the_vertebra_height(l1, mode):
    ct, location = l1
    view = build_views(ct, location, ViewSpec(mode=mode, size_px=32, windows=("bone",)))
    heat = _blob((32, 32), (8, 24))                                   # row 8 (anterior), column 24 (left)
    image = heatmap_image(view, heat, ct, location)
    _on_lattice(ct, image)
    expected = view.grids[0].index_to_lps(np.array([24.0, 8.0, 0.0]))
    hot = _hottest_lps(image)
    assert np.abs(hot[:2] - expected[:2]).max() <= ct.spacing.max()
    column = image.voxels[:, np.unravel_index(np.argmax(image.voxels), image.voxels.shape)[1],
                          np.unravel_index(np.argmax(image.voxels), image.voxels.shape)[2]]
    covered = (column > 0.5).sum() * ct.spacing[2]
    assert covered >= 0.8 * location.extent_mm[2]                      # the whole vertebra's height


def test_orthogonal_planes_meet_where_they_all_see_the_evidence(l1):
    ct, location = l1
    view = build_views(ct, location, ViewSpec(mode="2.5d-orthogonal", size_px=32, windows=("bone",)))
    heat = _blob((32, 32), (10, 10))
    image = heatmap_image(view, heat, ct, location)
    _on_lattice(ct, image)
    s = 32
    # pixel (10, 10): axial row A->P 10, col R->L 10; coronal/sagittal row S->I 10 -> slice k = s - 1 - 10
    expected = view.grids[0].index_to_lps(np.array([10.0, 10.0, 0.0]))
    expected[2] = view.center_lps[2] + (s - 1 - 10 - (s - 1) / 2) * view.spacing_mm
    assert np.linalg.norm(_hottest_lps(image) - expected) <= 1.5 * ct.spacing.max()


def test_bag_maps_stay_on_their_slices(l1):
    ct, location = l1
    view = build_views(ct, location, ViewSpec(mode="2.5d-mil", size_px=32, n_slices=8, slice_gap_mm=4.0,
                                              windows=("bone",)))
    heat = np.zeros((8, 32, 32), np.float32)
    heat[1] = _blob((32, 32), (16, 16))                                # the second slice from below only
    image = heatmap_image(view, heat, ct, location)
    _on_lattice(ct, image)
    slice_z = view.grids[0].index_to_lps(np.array([16.0, 16.0, 1.0]))[2]
    assert abs(_hottest_lps(image)[2] - slice_z) <= 4.0 + ct.spacing[2]


def test_cube_map_keeps_its_position(l1):
    ct, location = l1
    view = build_views(ct, location, ViewSpec(mode="3d", size_px=24, windows=("bone",)))
    heat = _blob((24, 24, 24), (5, 18, 7))
    image = heatmap_image(view, heat, ct, location)
    _on_lattice(ct, image)
    expected = view.grids[0].index_to_lps(np.array([7.0, 18.0, 5.0]))
    assert np.linalg.norm(_hottest_lps(image) - expected) <= 1.5 * ct.spacing.max()

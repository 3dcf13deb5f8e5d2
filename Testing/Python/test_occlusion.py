"""3D occlusion sensitivity (mvcf.occlusion): every input element knows where in the patient it was sampled,
hiding a block changes exactly the elements inside it, and a network that reads one spot of the patient gets a
map that is hot there and zero where it never looked, in every view mode."""
from __future__ import annotations

import numpy as np
import pytest

from mvcf import modes
from mvcf.locate import from_mask
from mvcf.read_ct import read_ct, read_mask
from mvcf.resources import sample_ct_paths
from mvcf.views import ViewSpec, build_views

torch = pytest.importorskip("torch")

SPECS = {"2d": {}, "2.5d-adjacent": {}, "2.5d-orthogonal": {}, "2.5d-mil": {"n_slices": 6}, "3d": {"size_px": 20}}


@pytest.fixture(scope="module")
def l1():
    paths = sample_ct_paths()
    ct = read_ct(paths["ct"])
    return ct, from_mask(ct, read_mask(paths["mask"]), 31)


def _view(l1, mode):
    ct, location = l1
    spec = ViewSpec(mode=mode, **{"size_px": 32, "spacing_mm": 1.5, "windows": ("bone", "soft"), **SPECS[mode]})
    return build_views(ct, location, spec)


@pytest.mark.parametrize("mode", modes.names())
def test_every_element_knows_where_it_was_sampled(l1, mode):
    from mvcf.occlusion import sample_positions

    view = _view(l1, mode)
    positions = sample_positions(view)
    assert positions.shape == (3,) + view.array.shape
    for axis in range(3):
        stacks = view.spec.view_mode.grid_stacks(positions[axis], view.spec.channels)
        for grid, stack in zip(view.grids, stacks):
            k, j, i = (np.asarray(v) for v in (grid.size[2] - 1, grid.size[1] // 3, grid.size[0] - 2))
            expected = grid.index_to_lps(np.array([i, j, k], float))[axis]
            assert stack.shape[1:] == tuple(grid.size[::-1])
            np.testing.assert_allclose(stack[:, k, j, i], expected, atol=1e-3)


class SpotReader(torch.nn.Module):
    """Recognises this view's own content within `radius` mm of one point: logit 4 for the view itself,
    lower the more the samples near the point change. A known answer for occlusion: only blocks that hide
    samples near the point may score, and the map must be hottest there."""

    def __init__(self, view, point_lps, radius: float) -> None:
        super().__init__()
        near = np.zeros(view.array.shape, np.float32)
        for grid, stack in zip(view.grids, view.spec.view_mode.grid_stacks(near, view.spec.channels)):
            i, j, k = np.meshgrid(*(np.arange(n) for n in grid.size), indexing="ij")
            lps = grid.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1))
            inside = (np.linalg.norm(lps - point_lps, axis=1) <= radius).reshape(grid.size).transpose(2, 1, 0)
            stack[:, inside] = 1.0
        assert near.sum() > 0, "the spot must lie on the view"
        self.register_buffer("near", torch.as_tensor(near))
        self.register_buffer("original", torch.as_tensor(view.array))

    def forward(self, x):
        change = ((x - self.original) * self.near).pow(2).flatten(1).sum(1) / self.near.sum()
        return 4.0 - 40.0 * change


def _bundle(tmp_path, view, network):
    from mvcf.models.bundle import Bundle
    from mvcf.models.networks import Ensemble

    card = {"name": "spot-reader", "threshold": 0.5, "view_spec": view.spec.to_dict(),
            "network": {"input_shape": list(view.array.shape)}}
    return Bundle(path=tmp_path, card=card, model=Ensemble([network]).eval())


@pytest.mark.parametrize("mode", modes.names())
def test_a_network_that_reads_one_spot_gets_a_map_hot_there_and_zero_elsewhere(l1, mode, tmp_path):
    from mvcf.explain import heatmap_for
    from mvcf.occlusion import BLOCK_MM

    ct, location = l1
    view = _view(l1, mode)
    spot = np.asarray(view.center_lps, float) + np.array([9.0, -7.5, 0.0])      # left, anterior, in the axial plane
    radius = 3.0
    bundle = _bundle(tmp_path, view, SpotReader(view, spot, radius))
    image = heatmap_for(bundle, view, "cpu", target="MVCF", ct=ct, method="occlusion")
    np.testing.assert_allclose(image.spacing, ct.spacing)
    assert float(image.voxels.max()) == pytest.approx(1.0)
    k, j, i = np.indices(image.voxels.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
    lps = image.origin + (ijk * image.spacing) @ image.direction.T
    distance = np.linalg.norm(lps - spot, axis=1).reshape(image.voxels.shape)
    hottest = distance.ravel()[np.argmax(image.voxels)]
    assert hottest <= BLOCK_MM / 2 + ct.spacing.max()
    reach = radius + BLOCK_MM * np.sqrt(3) + ct.spacing.max()     # a block must touch the spot to score
    assert float(image.voxels[distance > reach].max(initial=0.0)) == 0.0
    assert float(image.voxels[distance < radius].min()) > 0.3


def test_blocks_the_view_never_sampled_score_zero_and_scores_are_what_hiding_does(l1):
    """The trained demo model (2.5D orthogonal planes) on the real sample CT's L1: a block off all three
    planes is never evaluated and scores 0; a block on them scores the drop its hiding causes."""
    from mvcf.inference import forward_checked, load_model
    from mvcf.occlusion import BLOCK_MM, _blocks, occlusion_scores, sample_positions

    ct, location = l1
    bundle = load_model(None, "cpu")
    view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
    p0 = float(forward_checked(bundle, [view.array]).probabilities[0])
    scores, lattice = occlusion_scores(bundle, view, target="MVCF", probability=p0)
    positions = sample_positions(view)
    assert lattice.name == "occlusion" and scores.shape == lattice.size[::-1]
    centres = lattice.index_to_lps(np.stack(np.meshgrid(*(np.arange(n) for n in lattice.size), indexing="ij"),
                                            axis=-1).reshape(-1, 3).astype(float)).reshape(*lattice.size, 3)
    off = np.abs(centres - np.asarray(view.center_lps)).min(axis=-1) > BLOCK_MM / 2 + 1e-6   # off all three planes
    assert off.any() and np.all(scores.transpose(2, 1, 0)[off] == 0)
    assert scores.max() > 0
    (i, j, k), mask = max(_blocks(positions, lattice, BLOCK_MM / 2), key=lambda b: scores[b[0][2], b[0][1], b[0][0]])
    fill = view.array.mean(axis=(1, 2), keepdims=True)
    hidden = np.where(mask, np.broadcast_to(fill, view.array.shape), view.array)
    p = float(forward_checked(bundle, [hidden]).probabilities[0])
    assert scores[k, j, i] == pytest.approx(p0 - p, abs=1e-5)


def test_occlusion_runs_on_onnx_runtime_and_agrees_with_torch(l1):
    pytest.importorskip("onnxruntime")
    from mvcf.explain import heatmap_for
    from mvcf.inference import default_model_path, load_model

    ct, location = l1
    torch_bundle = load_model(None, "cpu", "torch")
    if not (default_model_path() / "model.onnx").is_file():
        pytest.skip("the embedded bundle has no ONNX graph")
    ort_bundle = load_model(None, "cpu", "onnxruntime")
    view = build_views(ct, location, ViewSpec.from_dict(torch_bundle.view_spec))
    maps = [heatmap_for(b, view, "cpu", method="occlusion").voxels for b in (torch_bundle, ort_bundle)]
    np.testing.assert_allclose(maps[0], maps[1], atol=2e-3)


def test_unknown_method_and_bad_lattice_are_refused(l1, tmp_path):
    from mvcf.errors import MVCFError
    from mvcf.explain import heatmap_for
    from mvcf.occlusion import block_lattice, sample_positions

    view = _view(l1, "2d")
    with pytest.raises(MVCFError, match="unknown heatmap method 'lime'; choose one of gradcam, occlusion"):
        heatmap_for(None, view, method="lime")
    with pytest.raises(MVCFError, match="0 < stride <= block size"):
        block_lattice(sample_positions(view), view.center_lps, 4.0, 6.0)


def test_a_large_view_drops_the_overlap_then_is_refused(l1):
    """A 96^3 cube would take 23^3 overlapping blocks: the lattice loses its overlap (13^3) and says so; a
    cube too large even then is refused with one line instead of running for an hour."""
    from mvcf.errors import MVCFError
    from mvcf.occlusion import MAX_BLOCKS, choose_lattice, sample_positions

    ct, location = l1
    small = sample_positions(build_views(ct, location, ViewSpec(mode="3d", size_px=20, windows=("bone",))))
    lattice, warnings = choose_lattice(small, location.center_lps, 8.0, 4.0)
    assert warnings == [] and tuple(lattice.spacing) == (4.0, 4.0, 4.0)
    big = sample_positions(build_views(ct, location, ViewSpec(mode="3d", size_px=96, windows=("bone",))))
    lattice, warnings = choose_lattice(big, location.center_lps, 8.0, 4.0)
    assert tuple(lattice.spacing) == (8.0, 8.0, 8.0) and lattice.size == (13, 13, 13)
    assert len(warnings) == 1 and "12,167 overlapping blocks" in warnings[0]
    assert int(np.prod(lattice.size)) <= MAX_BLOCKS
    with pytest.raises(MVCFError, match="too large for an occlusion map .* use the gradcam heatmap"):
        choose_lattice(big, location.center_lps, 2.0, 2.0)


def test_a_view_whose_hiding_changes_nothing_gives_an_empty_map_not_scaled_noise(l1, tmp_path):
    """A uniform region: the mean fill equals the samples up to float rounding, so every score is noise;
    the map must be empty (and say so), not that noise scaled to 1 (found by a hostile-input sweep)."""
    from mvcf.ctimage import CTImage
    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model

    ct, location = l1
    flat = CTImage(np.full(ct.voxels.shape, 500.0, np.float32), ct.spacing, ct.origin, ct.direction)
    bundle = load_model(None, "cpu")
    view = build_views(flat, location, ViewSpec.from_dict(bundle.view_spec))
    image = heatmap_for(bundle, view, "cpu", ct=flat, method="occlusion")
    assert float(image.voxels.max()) == 0.0


def test_an_occlusion_heatmap_reports_its_blocks_and_can_be_cancelled(l1, tmp_path):
    """Occlusion takes up to seconds per vertebra (a forward pass per block): predict_many says how far it
    is, per vertebra, and a Cancel during it stops it before the file is written."""
    from mvcf.errors import Cancelled
    from mvcf.locate import VertebraQuery
    from mvcf.predict import predict_many

    ct, _ = l1
    paths = sample_ct_paths()
    query = VertebraQuery(name="L1", mask=str(paths["mask"]), label=31, heatmap=str(tmp_path / "L1.nii.gz"))
    events: list = []
    [result] = predict_many(ct, [query], None, "cpu", heatmap_method="occlusion",
                            on_progress=lambda done, total, message: events.append((done, total, message)))
    blocks = [m for _, _, m in events if m.startswith("L1: occlusion heatmap ")]
    assert result["heatmap_method"] == "occlusion" and len(blocks) >= 2
    counts = [tuple(int(v) for v in m.split()[-2].split("/")) for m in blocks]
    assert counts[-1][0] == counts[-1][1] > 32 and [c[0] for c in counts] == sorted(c[0] for c in counts)
    assert all((done, total) == (1, 2) for done, total, m in events if m in blocks)  # located, then heatmap
    assert [d for d, _, _ in events] == sorted(d for d, _, _ in events) and {t for _, t, _ in events} == {2}
    seen: list = []
    query = VertebraQuery(name="L1", mask=str(paths["mask"]), label=31, heatmap=str(tmp_path / "again.nii.gz"))
    with pytest.raises(Cancelled):
        predict_many(ct, [query], None, "cpu", heatmap_method="occlusion",
                     on_progress=lambda done, total, message: seen.append(message),
                     should_cancel=lambda: any("occlusion heatmap" in m for m in seen))
    assert not (tmp_path / "again.nii.gz").exists()


def test_a_cancel_after_some_vertebrae_leaves_none_of_the_runs_outputs(l1, tmp_path):
    """Cancel (or Ctrl-C) in the middle of several vertebrae: the heatmaps and views folders finished before
    it are removed too, with the folders the run made for them, so a cancelled run leaves nothing; an
    unrelated file of the user's next to them stays."""
    from mvcf.errors import Cancelled
    from mvcf.locate import VertebraQuery
    from mvcf.predict import predict_many

    ct, _ = l1
    mask = str(sample_ct_paths()["mask"])
    (tmp_path / "mine.txt").write_text("mine", encoding="utf-8")
    queries = [VertebraQuery(name=name, mask=mask, label=label, heatmap=str(tmp_path / "new" / f"{name}.nii.gz"),
                             views=str(tmp_path / "views" / "deep" / f"{name}_views"))
               for name, label in (("L1", 31), ("L2", 30))]
    seen: list = []
    events: list = []

    def on_progress(done: int, total: int, message: str) -> None:
        seen.append(message)
        events.append((done, total))

    with pytest.raises(Cancelled):
        predict_many(ct, queries, None, "cpu", heatmap_method="occlusion", on_progress=on_progress,
                     should_cancel=lambda: any(m.startswith("L2: occlusion heatmap") for m in seen))
    assert any(m.startswith("L2: occlusion heatmap") for m in seen)   # L1 was finished when it stopped
    assert events == sorted(events) and {t for _, t in events} == {4}   # 2 located + 2 heatmaps: never back
    assert {d for (d, _), m in zip(events, seen) if m.startswith("L2: occlusion")} == {3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]

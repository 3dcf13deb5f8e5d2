"""The view-mode registry: a mode defined here, in the test file only, registers and then trains, predicts
and explains end to end through the same code paths as the shipped modes (adding a mode is one place)."""
from __future__ import annotations

import numpy as np
import pytest

from mvcf import modes
from mvcf.errors import MVCFError
from mvcf.grids import PLANE_DIRECTIONS, SampleGrid

torch = pytest.importorskip("torch")


class AxialCoronalMode(modes.ViewMode):
    """A throwaway mode: the axial and coronal planes through the centre, (2*C, S, S), plane-major. Both
    planes' columns run patient right -> left, so the left-right flip mirrors axis 2 of every channel."""

    name = "test-axial-coronal"
    flip_axis = 2

    def grids(self, spec, center_lps):
        s, sp = spec.size_px, spec.spacing_mm
        return [SampleGrid.centered(p, center_lps, PLANE_DIRECTIONS[p], (sp, sp, sp), (s, s, 1))
                for p in ("axial", "coronal")]

    def output_shape(self, spec):
        return (2 * spec.channels, spec.size_px, spec.size_px)

    def arrange(self, planes, grids, windows):
        return np.concatenate([p[:, 0] for p in planes]), [f"{g.name}/{w}" for g in grids for w in windows]

    def grid_stacks(self, array, channels):
        return [array[i * channels:(i + 1) * channels, None] for i in range(2)]

    def heatmap_image(self, view, heat):
        return view.grids[0].to_ctimage(heat[None], source="gradcam")   # the axial plane


@pytest.fixture()
def throwaway_mode():
    mode = modes.register(AxialCoronalMode())
    yield mode
    modes.unregister(mode.name)


def test_registry_lists_gets_and_refuses():
    assert modes.names() == ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")
    assert modes.get("3d").spatial_dims == 3 and modes.get("2.5d-mil").bag
    with pytest.raises(MVCFError, match="unknown view mode 'nope'; choose one of 2d,"):
        modes.get("nope")
    with pytest.raises(MVCFError, match="already registered"):
        modes.register(type("Again", (modes.ViewMode,), {"name": "2d"})())


def test_a_mode_defined_in_a_test_trains_predicts_and_explains(throwaway_mode, tmp_path):
    from tiny_cohort import make_tiny_cohort

    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model
    from mvcf.manifest import read_manifest
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct
    from mvcf.dataset import locate_record
    from mvcf.train import TrainConfig, train_cohort
    from mvcf.views import ViewSpec, build_views

    torch.set_num_threads(1)
    spec = ViewSpec(mode=throwaway_mode.name, size_px=24, windows=("bone", "soft"))
    records = read_manifest(make_tiny_cohort(tmp_path / "cohort", n_per_site=12))
    ct = read_ct(records[0].ct)
    view = build_views(ct, locate_record(ct, records[0]), spec)
    assert view.shape == (4, 24, 24) and [g.name for g in view.grids] == ["axial", "coronal"]
    assert [s.shape for s in view.grid_stacks()] == [(2, 1, 24, 24)] * 2

    config = TrainConfig(arch="resnet10-tiny", epochs=1, batch_size=4, device="cpu", seed=1)
    run = train_cohort(records, spec, config, out_dir=tmp_path / "run", n_folds=2, external="B")
    card = run.card
    assert card["view_spec"]["mode"] == throwaway_mode.name and "mode" not in card["network"]
    assert card["network"]["in_channels"] == 4 and card["network"]["spatial_dims"] == 2

    bundle = load_model(run.bundle_path, "cpu")
    prediction = predict_ct(ct, locate_record(ct, records[0]), bundle, "cpu")
    assert prediction.view_mode == throwaway_mode.name and 0.0 <= prediction.probability_malignant <= 1.0
    assert prediction.view.shape == (4, 24, 24)
    heat = heatmap_for(bundle, prediction.view, "cpu", probability=prediction.probability_malignant)
    assert heat.voxels.shape == (1, 24, 24) and np.all((heat.voxels >= 0) & (heat.voxels <= 1))
    np.testing.assert_allclose(heat.origin, prediction.view.grids[0].origin)


def test_the_throwaway_mode_reaches_the_cli(throwaway_mode, tmp_path, capsys):
    from mvcf.cli.main import main
    from mvcf.resources import sample_ct_paths

    sample = sample_ct_paths()
    code = main(["--progress", "none", "views", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--mode", throwaway_mode.name, "--size", "16", "--out", str(tmp_path / "v")])
    assert code == 0, capsys.readouterr().err
    assert np.load(tmp_path / "v" / "views.npy").shape == (2, 16, 16)
    assert (tmp_path / "v" / "coronal_bone.nii.gz").is_file() and (tmp_path / "v" / "preview.png").is_file()


def test_each_mode_flips_only_the_right_left_axis():
    # RandomState(1) draws 0.417 first: a flip. Every mode draws exactly once, so seeds stay aligned.
    ortho = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4)
    out = modes.get("2.5d-orthogonal").flip(ortho, np.random.RandomState(1))
    np.testing.assert_array_equal(out[:4], ortho[:4, :, ::-1])
    np.testing.assert_array_equal(out[4:], ortho[4:])
    cube = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
    np.testing.assert_array_equal(modes.get("3d").flip(cube, np.random.RandomState(1)), cube[..., ::-1])
    bag = np.arange(3 * 2 * 4 * 4, dtype=np.float32).reshape(3, 2, 4, 4)
    np.testing.assert_array_equal(modes.get("2.5d-mil").flip(bag, np.random.RandomState(1)), bag[..., ::-1])
    assert modes.get("2.5d-mil").to_channels(bag).shape == (6, 4, 4)
    np.testing.assert_array_equal(modes.get("2d").flip(ortho, np.random.RandomState(0)), ortho)   # 0.549: none

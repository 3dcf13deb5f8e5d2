"""A second MONAI family (DenseNet) is configured, not special-cased: it trains, predicts and explains in 2D
and 3D on tiny inputs through the same code as the ResNets, and Grad-CAM reads the layer its config names."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.models.architectures import ARCHITECTURES  # noqa: E402
from mvcf.models.networks import FAMILIES, build_network, gradcam_layer, network_config  # noqa: E402


def test_every_preset_names_a_known_family_and_a_gradcam_layer():
    for arch, preset in ARCHITECTURES.items():
        assert preset["family"] in FAMILIES, arch
        config = network_config("2d", (1, 32, 32), arch)
        assert config["family"] == preset["family"] and gradcam_layer(config) == f"encoder.{preset['gradcam_layer']}"
        assert dict(build_network(config).named_modules()).get(gradcam_layer(config)) is not None, arch
    with pytest.raises(MVCFError, match="unknown network family"):
        build_network({**network_config("2d", (1, 32, 32), "densenet-tiny"), "family": "monai.networks.nets.Nope"})


@pytest.mark.parametrize("mode,size", [("2d", 32), ("3d", 16)])
def test_densenet_trains_predicts_and_explains(mode, size, tmp_path):
    from mvcf.explain import heatmap_for
    from mvcf.inference import forward, load_model
    from mvcf.locate import from_mask
    from mvcf.models.bundle import save_bundle
    from mvcf.models.networks import Ensemble
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths
    from mvcf.train import TrainConfig, train_fold
    from mvcf.views import ViewSpec

    torch.set_num_threads(1)
    spec = ViewSpec(mode=mode, size_px=size, windows=("bone",))
    shape = spec.output_shape()
    rng = np.random.default_rng(0)
    y = np.arange(12) % 2
    x = [(rng.random(shape) * 0.6 + 0.3 * label).astype(np.float32) for label in y]
    config = network_config(mode, shape, "densenet-tiny")
    assert config["family"] == "monai.networks.nets.DenseNet" and config["spatial_dims"] == (3 if mode == "3d" else 2)
    result = train_fold(x[:8], y[:8], x[8:], y[8:], config,
                        TrainConfig(arch="densenet-tiny", epochs=1, batch_size=4, device="cpu", seed=2),
                        tmp_path / "fold", mode=mode)
    assert result.epochs_run == 1 and np.all(np.isfinite(result.val_prob))

    card = {"name": "densenet-test", "version": "1", "network": config, "ensemble_size": 1,
            "view_spec": spec.to_dict(), "threshold": 0.5}
    bundle = load_model(save_bundle(tmp_path / "model", Ensemble([result.model]), card), "cpu")
    probabilities = forward(bundle, x[8:], "cpu", batch_size=3)
    assert probabilities.shape == (4,) and np.all((probabilities >= 0) & (probabilities <= 1))

    sample = sample_ct_paths()
    ct = read_ct(sample["ct"])
    location = from_mask(ct, read_mask(sample["mask"]), SAMPLE_VERTEBRA_LABELS["L1"])
    prediction = predict_ct(ct, location, bundle, "cpu")
    heat = heatmap_for(bundle, prediction.view, "cpu", probability=prediction.probability_malignant)
    expected = (size, size, size)   # a 2D map is spread through the slab it summarises (view width by default)
    assert heat.voxels.shape == expected and np.all(np.isfinite(heat.voxels))
    assert 0.0 <= float(heat.voxels.min()) and float(heat.voxels.max()) <= 1.0

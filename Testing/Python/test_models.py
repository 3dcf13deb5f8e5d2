"""Networks: every view mode builds from its config, maps a batch to one logit per case, and refuses nonsense."""
import pytest

torch = pytest.importorskip("torch")

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.models.networks import (ARCHITECTURES, build_ensemble, build_network, count_parameters,  # noqa: E402
                                  network_config)

SHAPES = {"2d": (1, 32, 32), "2.5d-adjacent": (3, 32, 32), "2.5d-orthogonal": (3, 32, 32),
          "2.5d-mil": (4, 1, 32, 32), "3d": (1, 24, 24, 24)}


@pytest.mark.parametrize("mode", sorted(SHAPES))
def test_each_mode_gives_one_logit_per_case(mode):
    torch.manual_seed(0)
    config = network_config(mode, SHAPES[mode], "resnet10-tiny")
    model = build_network(config).eval()
    x = torch.randn(3, *SHAPES[mode])
    out = model(x)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    assert config["spatial_dims"] == (3 if mode == "3d" else 2)
    assert config["in_channels"] == (SHAPES[mode][1] if mode == "2.5d-mil" else SHAPES[mode][0])


def test_mil_attention_weights_are_a_distribution_over_slices():
    config = network_config("2.5d-mil", (5, 1, 32, 32), "resnet10-tiny", mil_pooling="attention")
    model = build_network(config).eval()
    model(torch.randn(2, 5, 1, 32, 32))
    weights = model.last_attention
    assert weights.shape == (2, 5)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    mean_model = build_network(network_config("2.5d-mil", (5, 1, 32, 32), "resnet10-tiny", mil_pooling="mean"))
    mean_model.eval()(torch.randn(1, 5, 1, 32, 32))
    assert torch.allclose(mean_model.last_attention, torch.full((1, 5), 0.2))


def test_sizes_grow_with_the_architecture_and_ensemble_returns_probabilities():
    sizes = [count_parameters(build_network(network_config("2d", (1, 32, 32), a))) for a in
             ("resnet10-tiny", "resnet10", "resnet18")]
    assert sizes == sorted(sizes) and sizes[0] < 100_000
    ensemble = build_ensemble(network_config("2d", (1, 32, 32), "resnet10-tiny"), 3).eval()
    p = ensemble(torch.randn(4, 1, 32, 32))
    assert p.shape == (4,) and bool(((p >= 0) & (p <= 1)).all())


@pytest.mark.parametrize("args", [("4d", (1, 8, 8)), ("2d", (1, 8, 8, 8)), ("2.5d-mil", (3, 8, 8))])
def test_bad_mode_or_shape_is_refused(args):
    with pytest.raises(MVCFError):
        network_config(*args)


def test_unknown_architecture_and_broken_config_are_refused():
    with pytest.raises(MVCFError, match="architecture"):
        network_config("2d", (1, 8, 8), "vgg99")
    assert "resnet10" in ARCHITECTURES
    config = network_config("2d", (1, 32, 32), "resnet10-tiny")
    del config["layers"]
    with pytest.raises(MVCFError, match="invalid network config"):
        build_network(config)

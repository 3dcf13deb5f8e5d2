"""The networks: MONAI networks configured (not copied) for each view mode, plus a small MIL pooling head.

Every network maps one batch of model inputs to one logit per case (positive class = MVCF). The view mode
(mvcf.modes) decides the encoder's spatial rank and input channels, and whether a case is a bag of slices
read by a shared per-slice encoder and pooled; the architecture preset (mvcf.models.architectures) decides
the MONAI family and its size. A network is fully described by a JSON-able config dict (stored once in the
model card, without the mode, which the card's view_spec holds), so a bundle can be rebuilt without
unpickling anything; `FAMILIES` dispatches on its "family" key. Only the heavy paths import this module.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from mvcf import modes
from mvcf.errors import MVCFError
from mvcf.models.architectures import ARCHITECTURES, DEFAULT_ARCH


def network_config(mode: Any, input_shape: tuple[int, ...], arch: str = DEFAULT_ARCH,
                   mil_pooling: str = "mean", dropout: float = 0.2) -> dict[str, Any]:
    """The config dict for view `mode` (a name or ViewMode) given one case's model input shape (no batch)."""
    view_mode = modes.get(mode)
    if arch not in ARCHITECTURES:
        raise MVCFError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if mil_pooling not in ("attention", "mean"):
        raise MVCFError(f"unknown MIL pooling {mil_pooling!r}; choose attention or mean")
    if len(input_shape) != view_mode.input_rank:
        raise MVCFError(f"mode {view_mode.name} expects a {view_mode.input_rank}-D model input per case, got "
                        f"shape {tuple(input_shape)}")
    preset = ARCHITECTURES[arch]
    config = {
        "family": preset["family"],
        "arch": arch,
        "input_shape": [int(s) for s in input_shape],
        "spatial_dims": view_mode.spatial_dims,
        "in_channels": view_mode.in_channels(input_shape),
        **{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in preset.items() if k != "family"},
        "dropout": float(dropout),
        "mil_pooling": mil_pooling if view_mode.bag else None,
        "num_outputs": 1,
    }
    if preset["family"] not in FAMILIES:
        raise MVCFError(f"architecture {arch!r} names an unknown network family {preset['family']!r}")
    config.update(FAMILIES[preset["family"]].fixed)
    return config


class Family:
    """How one MONAI network family becomes a feature encoder: `encoder(config) -> (module, features)`;
    `fixed` are the family's constant settings written into the config (and so into the card)."""

    def __init__(self, encoder: Callable[[dict[str, Any]], tuple[nn.Module, int]],
                 fixed: Optional[dict[str, Any]] = None) -> None:
        self.encoder = encoder
        self.fixed = dict(fixed or {})


def _resnet_encoder(config: dict[str, Any]) -> tuple[nn.Module, int]:
    from monai.networks.nets import ResNet

    encoder = ResNet(block="basic", layers=config["layers"], block_inplanes=config["block_inplanes"],
                     spatial_dims=config["spatial_dims"], n_input_channels=config["in_channels"],
                     conv1_t_size=config["conv1_t_size"], conv1_t_stride=config["conv1_t_stride"],
                     num_classes=config["num_outputs"], feed_forward=False)
    return encoder, int(config["block_inplanes"][-1])


def _densenet_encoder(config: dict[str, Any]) -> tuple[nn.Module, int]:
    from monai.networks.nets import DenseNet

    encoder = DenseNet(spatial_dims=config["spatial_dims"], in_channels=config["in_channels"],
                       out_channels=config["num_outputs"], init_features=config["init_features"],
                       growth_rate=config["growth_rate"], block_config=tuple(config["block_config"]),
                       bn_size=config["bn_size"])
    features = int(encoder.class_layers.out.in_features)
    encoder.class_layers.out = nn.Identity()   # pooled features out; the head below makes the logit
    return encoder, features


#: family key (as written in the card) -> how to build it.
FAMILIES: dict[str, Family] = {
    "monai.networks.nets.ResNet": Family(_resnet_encoder, {"conv1_t_size": 7, "conv1_t_stride": 2}),
    "monai.networks.nets.DenseNet": Family(_densenet_encoder),
}


def gradcam_layer(config: dict[str, Any]) -> str:
    """The module path (within one network) Grad-CAM reads, as the network's description names it."""
    try:
        return f"encoder.{config['gradcam_layer']}"
    except KeyError:
        raise MVCFError("invalid network config: it names no Grad-CAM layer (gradcam_layer)") from None


def build_network(config: dict[str, Any]) -> nn.Module:
    """Build the torch module described by `config` (see network_config)."""
    family = FAMILIES.get(config.get("family"))
    if family is None:
        raise MVCFError(f"unknown network family {config.get('family')!r}; known: {', '.join(FAMILIES)}")
    try:
        encoder, features = family.encoder(config)
        if config["mil_pooling"] is not None:
            return MILNetwork(encoder, features, config["mil_pooling"], config["dropout"], config["num_outputs"])
        return SingleInputNetwork(encoder, features, config["dropout"], config["num_outputs"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MVCFError(f"invalid network config: {exc}") from exc


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class SingleInputNetwork(nn.Module):
    """MONAI encoder -> dropout -> linear logit."""

    def __init__(self, encoder: nn.Module, features: int, dropout: float, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(x))).squeeze(-1)


class MILNetwork(nn.Module):
    """A bag of slices: one shared MONAI 2D encoder per slice, then gated attention pooling
    (Ilse et al. 2018) or the mean, then a linear logit."""

    def __init__(self, encoder: nn.Module, features: int, pooling: str, dropout: float,
                 outputs: int, attention_dim: int = 32) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        if pooling == "attention":
            self.attention_v = nn.Linear(features, attention_dim)
            self.attention_u = nn.Linear(features, attention_dim)
            self.attention_w = nn.Linear(attention_dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, outputs)
        self.last_attention: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, slices = x.shape[:2]
        features = self.encoder(x.reshape(batch * slices, *x.shape[2:])).reshape(batch, slices, -1)
        if self.pooling == "attention":
            gate = torch.tanh(self.attention_v(features)) * torch.sigmoid(self.attention_u(features))
            weights = torch.softmax(self.attention_w(gate).squeeze(-1), dim=1)
        else:
            weights = torch.full((batch, slices), 1.0 / slices, device=x.device, dtype=features.dtype)
        self.last_attention = weights.detach()
        pooled = (weights.unsqueeze(-1) * features).sum(dim=1)
        return self.head(self.dropout(pooled)).squeeze(-1)


class Ensemble(nn.Module):
    """Mean probability of K members (the fold models of a cross-validated run); K=1 is a single model.
    forward() returns probabilities of MVCF, not logits."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sigmoid(m(x).float()) for m in self.members], dim=0).mean(dim=0)


def build_ensemble(config: dict[str, Any], size: int) -> Ensemble:
    if not isinstance(size, int) or size < 1:
        raise MVCFError(f"invalid ensemble size {size!r}")
    return Ensemble([build_network(config) for _ in range(size)])

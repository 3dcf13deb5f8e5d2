"""The networks: MONAI ResNets configured (not copied) for each view mode, plus a small MIL pooling head.

Every network maps one batch of model inputs to one logit per case (positive class = MVCF).
Model input shapes (per case, batch dimension first in practice):
    2d, 2.5d-adjacent, 2.5d-orthogonal : (C, H, W)      -> 2D ResNet with C input channels
    2.5d-mil                           : (N, C, H, W)   -> shared 2D ResNet encoder per slice + pooling
    3d                                 : (C, D, H, W)   -> 3D ResNet
A network is fully described by a JSON-able config dict (stored in the model card), so a bundle can be
rebuilt without unpickling anything. Only the heavy paths (train, predict) import this module.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from mvcf.errors import MVCFError
from mvcf.models.architectures import ARCHITECTURES, DEFAULT_ARCH

MODES = ("2d", "2.5d-adjacent", "2.5d-orthogonal", "2.5d-mil", "3d")



def network_config(mode: str, input_shape: tuple[int, ...], arch: str = DEFAULT_ARCH,
                   mil_pooling: str = "mean", dropout: float = 0.2) -> dict[str, Any]:
    """The config dict for `mode` given the shape of one case's model input (no batch dimension)."""
    if mode not in MODES:
        raise MVCFError(f"unknown view mode {mode!r}; choose one of {', '.join(MODES)}")
    if arch not in ARCHITECTURES:
        raise MVCFError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if mil_pooling not in ("attention", "mean"):
        raise MVCFError(f"unknown MIL pooling {mil_pooling!r}; choose attention or mean")
    expected_rank = {"2.5d-mil": 4, "3d": 4}.get(mode, 3)
    if len(input_shape) != expected_rank:
        raise MVCFError(f"mode {mode} expects a {expected_rank}-D model input per case, got shape {input_shape}")
    layers, planes = ARCHITECTURES[arch]
    return {
        "family": "monai.networks.nets.ResNet",
        "arch": arch,
        "mode": mode,
        "input_shape": [int(s) for s in input_shape],
        "spatial_dims": 3 if mode == "3d" else 2,
        "in_channels": int(input_shape[1] if mode == "2.5d-mil" else input_shape[0]),
        "layers": list(layers),
        "block_inplanes": list(planes),
        "conv1_t_size": 7,
        "conv1_t_stride": 2,
        "dropout": float(dropout),
        "mil_pooling": mil_pooling if mode == "2.5d-mil" else None,
        "num_outputs": 1,
    }


def _resnet(config: dict[str, Any], feed_forward: bool):
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=config["layers"], block_inplanes=config["block_inplanes"],
                  spatial_dims=config["spatial_dims"], n_input_channels=config["in_channels"],
                  conv1_t_size=config["conv1_t_size"], conv1_t_stride=config["conv1_t_stride"],
                  num_classes=config["num_outputs"], feed_forward=feed_forward)


def build_network(config: dict[str, Any]) -> nn.Module:
    """Build the torch module described by `config` (see network_config)."""
    try:
        encoder = _resnet(config, feed_forward=False)
        features = config["block_inplanes"][-1]
        if config["mode"] == "2.5d-mil":
            return MILNetwork(encoder, features, config["mil_pooling"], config["dropout"], config["num_outputs"])
        return SingleInputNetwork(encoder, features, config["dropout"], config["num_outputs"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MVCFError(f"invalid network config: {exc}") from exc


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class SingleInputNetwork(nn.Module):
    """MONAI ResNet encoder -> dropout -> linear logit."""

    def __init__(self, encoder: nn.Module, features: int, dropout: float, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(x))).squeeze(-1)


class MILNetwork(nn.Module):
    """A bag of slices: one shared MONAI 2D ResNet encoder per slice, then gated attention pooling
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

"""Network presets, torch-free so the CLI can list them without importing torch.

Each preset names a MONAI network family (the key `mvcf.models.networks.FAMILIES` dispatches on), that
family's size parameters, and the layer Grad-CAM reads (named on the encoder; a stride of 8-16 keeps a map
placeable on a 64 px view). Sized for CPU training of a few hundred cases, except densenet121 (MONAI's
standard configuration, for a GPU).
"""
from __future__ import annotations

from typing import Any

RESNET = "monai.networks.nets.ResNet"
DENSENET = "monai.networks.nets.DenseNet"

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet10-tiny": {"family": RESNET, "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64],
                      "gradcam_layer": "layer3"},
    "resnet10": {"family": RESNET, "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128],
                 "gradcam_layer": "layer3"},
    "resnet18": {"family": RESNET, "layers": [2, 2, 2, 2], "block_inplanes": [16, 32, 64, 128],
                 "gradcam_layer": "layer3"},
    "densenet-tiny": {"family": DENSENET, "init_features": 8, "growth_rate": 8, "block_config": [2, 2, 2],
                      "bn_size": 2, "gradcam_layer": "features.denseblock2"},
    "densenet121": {"family": DENSENET, "init_features": 64, "growth_rate": 32, "block_config": [6, 12, 24, 16],
                    "bn_size": 4, "gradcam_layer": "features.denseblock3"},
}
DEFAULT_ARCH = "resnet10"

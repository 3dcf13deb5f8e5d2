"""Network size presets, torch-free so the CLI can list them without importing torch."""
from __future__ import annotations

# name -> (residual blocks per stage, channels per stage). Sized for CPU training of a few hundred cases.
ARCHITECTURES: dict[str, tuple[list[int], list[int]]] = {
    "resnet10-tiny": ([1, 1, 1, 1], [8, 16, 32, 64]),
    "resnet10": ([1, 1, 1, 1], [16, 32, 64, 128]),
    "resnet18": ([2, 2, 2, 2], [16, 32, 64, 128]),
}
DEFAULT_ARCH = "resnet10"

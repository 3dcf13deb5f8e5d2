"""Inference plumbing shared by predict, explain, evaluate and train: the device (resolved once per run),
model loading (memoised per process) and batched forward passes.

    device = resolve_device(args.device)            # "auto" -> "cuda" or "cpu", once
    bundle = load_model(path, device)               # None = the embedded demo bundle
    probabilities = forward(bundle, arrays, device)  # one MVCF probability per view array
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from mvcf.errors import MVCFError
from mvcf.progress import CancelCheck, check_cancel

#: The --device choices of every command.
DEVICES = ("auto", "cpu", "cuda")


def check_device_name(name: str) -> str:
    """`name` when it is a device this software can be asked for (also 'cuda:N'); MVCFError otherwise."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise MVCFError(f"--device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {name!r}")
    return name


def resolve_device(name: str = "auto") -> str:
    """The torch device to run on: 'auto' picks CUDA when present; asking for CUDA without one fails."""
    import torch

    check_device_name(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MVCFError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    return name


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timing measures it; a no-op on CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def default_model_path() -> Path:
    """The embedded demo bundle (trained on synthetic data) shipped in mvcf/resources/demo_model."""
    return Path(__file__).resolve().parent / "resources" / "demo_model"


_BUNDLES: dict[tuple[str, str, float], Any] = {}


def load_model(path: Union[str, Path, None, Any] = None, device: str = "cpu"):
    """A loaded Bundle on `device`: a bundle directory (loaded once per process), an already loaded Bundle
    (moved to `device`), or None for the embedded demo bundle."""
    from mvcf.models.bundle import WEIGHTS_FILE, Bundle, load_bundle

    if isinstance(path, Bundle):
        path.model.to(device)
        return path
    bundle_dir = Path(path) if path is not None else default_model_path()
    weights = bundle_dir / WEIGHTS_FILE
    key = (str(bundle_dir.resolve()), device, weights.stat().st_mtime if weights.exists() else 0.0)
    if key not in _BUNDLES:
        _BUNDLES[key] = load_bundle(bundle_dir, device=device)
    return _BUNDLES[key]


def forward_arrays(model, arrays: Sequence[np.ndarray], device: str = "cpu", batch_size: int = 32,
                   logits: bool = True, should_cancel: Optional[CancelCheck] = None,
                   amp: bool = True) -> np.ndarray:
    """Probabilities of MVCF for a list of model inputs, `batch_size` at a time: `model` returns logits
    (`logits=True`, a network being trained) or probabilities (an Ensemble). On CUDA `amp` runs float16
    autocast (training's validation passes); a bundle's predictions stay float32."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(arrays), batch_size):
            check_cancel(should_cancel)
            x = torch.as_tensor(np.stack(arrays[start:start + batch_size])).to(device)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.startswith("cuda")):
                y = model(x).float()
            out.append((torch.sigmoid(y) if logits else y).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def forward(bundle, arrays: Sequence[np.ndarray], device: str = "cpu", batch_size: int = 32,
            should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Probabilities of MVCF (float32, one per array) from a loaded Bundle; every array must have the shape
    the bundle's card names."""
    expected = tuple(bundle.card["network"]["input_shape"])
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
    for array in arrays:
        if tuple(array.shape) != expected:
            raise MVCFError(f"view shape {tuple(array.shape)} does not match the model's input {expected}")
    from mvcf.models.card_schema import check_probabilities

    return check_probabilities(forward_arrays(bundle.model, arrays, device, batch_size, logits=False,
                                              should_cancel=should_cancel, amp=False), f"the model {bundle.name}")

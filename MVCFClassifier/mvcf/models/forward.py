"""One batched torch forward pass over a list of model inputs: the lowest layer that both the bundle
(`Bundle.probabilities`) and `mvcf.inference` / training call, so neither has to import the other."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mvcf.progress import CancelCheck, check_cancel


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

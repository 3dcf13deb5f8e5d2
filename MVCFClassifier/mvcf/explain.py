"""Grad-CAM heatmaps (monai.visualize) placed back on the view's physical grid, so they overlay the CT.

The map is computed at the third residual stage of each ensemble member's MONAI ResNet encoder for the class
the model calls (MVCF: the logit; OVCF: its negative, so the map shows the evidence for the call whichever it
is), upsampled to the view, averaged over members and scaled to [0, 1]. Where it lands:
    2d / 2.5d-adjacent : the axial slice(s) of the view (the 2D map repeated over adjacent slices)
    2.5d-mil           : each slice of the bag gets its own map (the encoder sees slices one by one)
    2.5d-orthogonal    : a cube around the centre with the map painted on the three planes it came from
                         (for an even view size the cube has no slice through the exact centre, so each plane
                         lands half a voxel off it: 0.5 mm at 1 mm spacing, far below the map's own
                         resolution of one layer-3 cell, 16 voxels)
    3d                 : the view cube
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import logging

import numpy as np

from mvcf.errors import MVCFError

log = logging.getLogger(__name__)

TARGET_LAYER = "member.encoder.layer3"  # stride 16: 4x4 at 64 px; layer4 (2x2) is too coarse to place


def _wrap(member):
    import torch
    import torch.nn as nn

    class Logit2D(nn.Module):
        """(B,) logit -> (B, 2) scores [OVCF, MVCF] = [-logit, logit] for monai.visualize's class_idx."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.member = inner

        def forward(self, x):
            logit = self.member(x).reshape(x.shape[0], 1)
            return torch.cat([-logit, logit], dim=1)

    return Logit2D(member)


def grad_cam(bundle, array: np.ndarray, device: str = "cpu", target: str = "call") -> np.ndarray:
    """Grad-CAM for one view array: (H, W) for 2D-style modes, (N, H, W) for 2.5d-mil, (D, H, W) for 3d.
    `target`: 'call' (the class the bundle predicts at its threshold), 'MVCF' or 'OVCF'."""
    import torch
    import torch.nn.functional as F
    from monai.visualize import GradCAM

    mode = bundle.mode
    x = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)
    size = tuple(array.shape[-2:]) if mode != "3d" else tuple(array.shape[-3:])
    if target == "call":
        with torch.no_grad():
            target = "MVCF" if float(bundle.model(x)[0]) >= bundle.threshold else "OVCF"
    if target not in ("MVCF", "OVCF"):
        raise MVCFError(f"Grad-CAM target must be 'call', 'MVCF' or 'OVCF', got {target!r}")
    class_idx = 1 if target == "MVCF" else 0
    maps = []
    for member in bundle.model.members:
        wrapped = _wrap(member).to(device).eval()
        cam = GradCAM(nn_module=wrapped, target_layers=TARGET_LAYER)
        raw = cam.compute_map(x, class_idx=class_idx)  # (B' , 1, *spatial); B' = slices for MIL
        mode_ = "trilinear" if mode == "3d" else "bilinear"
        maps.append(F.interpolate(raw.float(), size=size, mode=mode_, align_corners=False)[:, 0].detach())
    heat = torch.stack(maps).mean(0).cpu().numpy()
    heat = heat[0] if mode != "2.5d-mil" else heat
    peak = float(heat.max())
    return (heat / peak).astype(np.float32) if peak > 0 else heat.astype(np.float32)


def heatmap_image(view, heat: np.ndarray):
    """The heatmap as a CTImage on the view's grid (see the module doc for each mode)."""
    from mvcf.views import PLANE_DIRECTIONS, SampleGrid

    mode, grids = view.mode, view.grids
    if mode == "2d":
        return grids[0].to_ctimage(heat[None], source="gradcam")
    if mode == "2.5d-adjacent":
        return grids[0].to_ctimage(np.repeat(heat[None], grids[0].size[2], axis=0), source="gradcam")
    if mode in ("2.5d-mil", "3d"):
        return grids[0].to_ctimage(heat, source="gradcam")
    if mode == "2.5d-orthogonal":
        s = heat.shape[0]
        spacing = float(view.spacing_mm)
        cube = SampleGrid.centered("cube", np.asarray(view.center_lps, float), PLANE_DIRECTIONS["axial"],
                                   (spacing, spacing, spacing), (s, s, s))
        values = np.zeros((s, s, s), dtype=np.float32)  # [k (I->S), j (A->P), i (R->L)]
        mid = (s - 1) // 2
        values[mid] = np.maximum(values[mid], heat)                          # axial: rows A->P, cols R->L
        values[:, mid, :] = np.maximum(values[:, mid, :], heat[::-1, :])     # coronal: rows S->I, cols R->L
        values[:, :, mid] = np.maximum(values[:, :, mid], heat[::-1, :])     # sagittal: rows S->I, cols A->P
        return cube.to_ctimage(values, source="gradcam")
    raise MVCFError(f"no heatmap mapping for mode {mode}")


def explain(ct, location, model: Union[str, Path, None, Any] = None, device: str = "cpu", target: str = "call"):
    """(heatmap CTImage, ViewResult) for the vertebra at `location` of `ct`. An all-zero heatmap means
    Grad-CAM found no positive evidence for `target` (ReLU of the weighted activations); it is reported,
    not replaced by something else."""
    from mvcf.models.bundle import Bundle
    from mvcf.predict import load_model
    from mvcf.views import ViewSpec, build_views

    if isinstance(model, Bundle) and model.backend == "torch":
        bundle = model
    else:  # Grad-CAM needs the torch network, whichever backend classified
        bundle = load_model(model.path if isinstance(model, Bundle) else model, device, backend="torch")
    view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
    return heatmap_image(view, grad_cam(bundle, view.array, device, target)), view


def write_heatmap(ct, location, model: Union[str, Path, None, Any], out_path: Union[str, Path],
                  device: str = "cpu", target: str = "call") -> Path:
    """Write the Grad-CAM heatmap (values 0..1 on the view grid, LPS geometry) to a NIfTI/NRRD/MHA file."""
    import SimpleITK as sitk

    from mvcf.fileio import atomic_path

    image, _ = explain(ct, location, model, device, target)
    image.voxels = image.voxels.astype(np.float32)
    with atomic_path(out_path) as tmp:
        sitk.WriteImage(image.to_sitk(), str(tmp), True)
    if not np.any(image.voxels > 0):
        log.warning("Grad-CAM found no positive evidence for the %s class in %s: the heatmap is empty", target,
                    out_path)
    return Path(out_path)

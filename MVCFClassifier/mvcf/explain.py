"""Heatmaps placed back in the CT: a volume covering the vertebra, on the CT's lattice. Two methods:
Grad-CAM (monai.visualize; the default, one backward pass) and 3D occlusion sensitivity (mvcf.occlusion; one
forward pass per block of the patient the view touches, model-agnostic), chosen with `method`.

The map is computed at the layer the network's description names (`gradcam_layer` in the card's network
config, e.g. a ResNet's third residual stage) of each ensemble member, for the class the model calls (MVCF:
the logit; OVCF: its negative, so the map shows the evidence for the call whichever it is), upsampled to the
view, averaged over members and scaled to [0, 1]. Where it lands in CT space is the view mode's decision
(`mvcf.modes.ViewMode.heatmap_image`): a 2D axial map spread through the vertebra's height, a bag's maps
interpolated between its slices, the orthogonal planes back-projected through a cube and combined, a 3D
view's cube; then resampled onto the CT's own voxel lattice (docs/screening.md, "Heatmaps").

Occlusion needs no placement rule: its blocks already lie in physical space, and it is zero wherever the
model never looked.

`heatmap_for(bundle, view, ...)` works on a view already built (e.g. `Prediction.view`), so predicting and
explaining one vertebra builds its view once; `explain(ct, location, ...)` builds it itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import logging

import numpy as np

from mvcf.errors import MVCFError
from mvcf.manifest import CLASS_NAMES
from mvcf.progress import CancelCheck

log = logging.getLogger(__name__)

#: progress(blocks done, blocks) of a heatmap that takes many forward passes (occlusion).
Progress = Callable[[int, int], None]

#: The heatmap methods, the default first (docs/screening.md, "Heatmaps", compares them per mode).
METHODS = ("gradcam", "occlusion")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MVCFError(f"unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def engine_for(method: str, backend: str = "auto") -> str:
    """The backend to load a bundle on for a heatmap by `method`: Grad-CAM needs the torch network's
    gradients; occlusion only forward passes, so the caller's own choice (ONNX Runtime needs no torch)."""
    return "torch" if check_method(method) == "gradcam" else backend


#: How reports and DICOM objects name each method.
METHOD_LABELS = {"gradcam": "Grad-CAM", "occlusion": "Occlusion sensitivity"}


def method_of(image) -> str:
    """Which method made a heatmap CTImage ('gradcam' or 'occlusion'), from the `source` each one sets."""
    return "occlusion" if getattr(image, "source", "") == "occlusion" else "gradcam"


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


def grad_cam(bundle, array: np.ndarray, device: str = "cpu", target: str = "call",
             probability: Optional[float] = None) -> np.ndarray:
    """Grad-CAM for one view array: (H, W) for 2D-style modes, one map per slice (N, H, W) for a bag,
    (D, H, W) for a 3D view. `target`: 'call' (the class the bundle predicts at its threshold; from
    `probability` when the caller already has it, else one forward pass), 'MVCF' or 'OVCF'."""
    import torch
    import torch.nn.functional as F
    from monai.visualize import GradCAM

    from mvcf import modes
    from mvcf.models.networks import gradcam_layer

    view_mode = modes.get(bundle.mode)
    x = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)
    size = view_mode.heatmap_size(array.shape)
    if target == "call":
        if probability is None:
            with torch.no_grad():
                probability = float(bundle.model(x)[0])
        target = CLASS_NAMES[int(probability >= bundle.threshold)]
    if target not in CLASS_NAMES.values():
        raise MVCFError(f"Grad-CAM target must be 'call', 'MVCF' or 'OVCF', got {target!r}")
    class_idx = 1 if target == CLASS_NAMES[1] else 0
    layer = f"member.{gradcam_layer(bundle.card['network'])}"
    interpolation = "trilinear" if view_mode.spatial_dims == 3 else "bilinear"
    maps = []
    for member in bundle.model.members:
        wrapped = _wrap(member).to(device).eval()
        cam = GradCAM(nn_module=wrapped, target_layers=layer)
        raw = cam.compute_map(x, class_idx=class_idx)  # (B', 1, *spatial); B' = slices for a bag
        maps.append(F.interpolate(raw.float(), size=size, mode=interpolation, align_corners=False)[:, 0].detach())
    heat = torch.stack(maps).mean(0).cpu().numpy()
    heat = heat if view_mode.bag else heat[0]
    peak = float(heat.max())
    return (heat / peak).astype(np.float32) if peak > 0 else heat.astype(np.float32)


def _depth_mm(location) -> Optional[float]:
    """The vertebra's cranio-caudal extent (mm) when the location knows it (a mask or a box)."""
    extent = getattr(location, "extent_mm", None)
    return None if extent is None else float(extent[2])


def on_ct_lattice(image, ct):
    """`image` (a heatmap in physical space) resampled (linear, 0 outside) onto the block of the CT's own voxel
    lattice that covers it: same spacing, direction and voxel positions as the CT, so a viewer overlays it
    voxel for voxel."""
    import SimpleITK as sitk

    from mvcf.ctimage import CTImage
    from mvcf.grids import SampleGrid

    grid = SampleGrid("heatmap", image.origin, image.spacing, image.direction, image.size_ijk)
    ijk = np.array([ct.lps_to_index(c) for c in grid.corners_lps()])
    size = np.asarray(ct.size_ijk)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size - 1)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, lo + 1, size)
    reference = sitk.Image([int(v) for v in hi - lo], sitk.sitkFloat32)
    reference.SetOrigin(tuple(float(v) for v in ct.index_to_lps(lo)))
    reference.SetSpacing(tuple(float(v) for v in ct.spacing))
    reference.SetDirection(tuple(float(v) for v in ct.direction.ravel()))
    source = CTImage(np.asarray(image.voxels, np.float32), image.spacing, image.origin, image.direction)
    out = sitk.Resample(source.to_sitk(), reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return CTImage.from_sitk(out, source=image.source or "heatmap")


def heatmap_image(view, heat: np.ndarray, ct=None, location=None):
    """The Grad-CAM map as a volume covering the vertebra in physical space (how is the view mode's decision,
    `ViewMode.heatmap_image`), on the CT's voxel lattice when `ct` is given."""
    depth = _depth_mm(location)
    mode = view.spec.view_mode
    image = mode.heatmap_image(view, heat) if depth is None else mode.heatmap_image(view, heat, depth_mm=depth)
    return image if ct is None else placed_on(image, ct)


def placed_on(image, ct):
    """A map in physical space on the CT's lattice (on_ct_lattice), scaled back to [0, 1]."""
    placed = on_ct_lattice(image, ct)
    peak = float(placed.voxels.max())
    if peak > 0:   # linear resampling onto a coarser lattice lowers the peak: back to [0, 1]
        placed.voxels = (placed.voxels / peak).astype(np.float32)
    return placed


def heatmap_for(bundle, view, device: str = "cpu", target: str = "call", probability: Optional[float] = None,
                ct=None, location=None, method: str = "gradcam", progress: Optional[Progress] = None,
                should_cancel: Optional[CancelCheck] = None):
    """The heatmap (CTImage) of an already built view (mvcf.views.ViewResult) by `method` (METHODS); with
    `ct` on its lattice, with `location` (Grad-CAM) spread through the vertebra's own height. Grad-CAM needs
    the torch network: a bundle that classified on ONNX Runtime is loaded again for torch; occlusion runs on
    the bundle as it is, calling `progress(blocks done, blocks)` after each batch of forward passes (it
    takes up to seconds per vertebra; Grad-CAM's one backward pass reports nothing)."""
    from mvcf.inference import load_model

    bundle = load_model(bundle, device, engine_for(method))
    if method == "occlusion":
        from mvcf.occlusion import occlusion_map

        image = occlusion_map(bundle, view, target=target, probability=probability, should_cancel=should_cancel,
                              progress=progress)
        return image if ct is None else placed_on(image, ct)
    return heatmap_image(view, grad_cam(bundle, view.array, device, target, probability), ct, location)


def explain(ct, location, model: Union[str, Path, None, Any] = None, device: str = "cpu", target: str = "call",
            method: str = "gradcam", progress: Optional[Progress] = None):
    """(heatmap CTImage on the CT's lattice, ViewResult) for the vertebra at `location` of `ct`. An all-zero
    heatmap means no positive evidence for `target` was found (Grad-CAM: ReLU of the weighted activations;
    occlusion: no hidden block lowered its probability); it is reported, not replaced by something else."""
    from mvcf.inference import load_model
    from mvcf.views import ViewSpec, build_views

    bundle = load_model(model, device, backend=engine_for(method))
    view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
    return heatmap_for(bundle, view, device, target, ct=ct, location=location, method=method,
                       progress=progress), view


def write_image(image, out_path: Union[str, Path], target: str = "call", undo=None) -> Path:
    """Write a heatmap (values 0..1, LPS geometry) to a NIfTI/NRRD/MHA file, atomically; `undo`: the run's
    fileio.RunOutputs (fileio.atomic_path)."""
    from mvcf.fileio import atomic_path, write_image_file
    from mvcf.outputs_guard import tag_image

    image.voxels = image.voxels.astype(np.float32)
    written = image.to_sitk()
    tag_image(written)
    with atomic_path(out_path, undo) as tmp:
        write_image_file(written, tmp)
    if not np.any(image.voxels > 0):
        log.warning("no positive evidence for the %s class in %s: the heatmap is empty", target, out_path)
    return Path(out_path)


def write_heatmap(ct, location, model: Union[str, Path, None, Any], out_path: Union[str, Path],
                  device: str = "cpu", target: str = "call", method: str = "gradcam") -> Path:
    """Build the view, compute its heatmap and write it (see write_image)."""
    image, _ = explain(ct, location, model, device, target, method)
    return write_image(image, out_path, target)


def write_prediction_heatmap(bundle, prediction, out_path: Union[str, Path], device: str = "cpu",
                             target: str = "call", ct=None, location=None, method: str = "gradcam",
                             progress: Optional[Progress] = None,
                             should_cancel: Optional[CancelCheck] = None, undo=None) -> Path:
    """The heatmap of a Prediction (mvcf.predict) from the view and probability it already holds (on the
    lattice of `ct` and through the height of `location` when given); `progress` as heatmap_for's, `undo`
    as write_image's."""
    image = heatmap_for(bundle, prediction.view, device, target, prediction.probability_malignant, ct, location,
                        method, progress, should_cancel)
    return write_image(image, out_path, target, undo)

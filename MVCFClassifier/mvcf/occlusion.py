"""Occlusion sensitivity in 3D: which blocks of the patient, hidden from the model, change its call.

A cube of the patient (`block_mm`, axis-aligned in LPS, centres on a lattice `stride_mm` apart through the view's
centre) is hidden from every sampled plane, slice or cube of the view that passes through it: the input
samples whose physical positions lie in the block take the view's mean value of their channel (MONAI's
"mean_img" fill), and the fall in the probability of the class the model calls is the block's score (a rise
counts as 0: the map shows evidence *for* the call, as Grad-CAM's ReLU does; so does a fall below MIN_SCORE,
float noise). A block that no sample lies in
leaves the input unchanged and scores 0 without a forward pass, so the map of a plane-based mode is zero
wherever the model never looked. Each point of the map is the mean score of the blocks that contain it.

Why not `monai.visualize.OcclusionSensitivity`: it occludes pixels of the network input, one image at a
time, whereas a lesion in the patient hides from the axial, coronal and sagittal planes of a 2.5D view at
once (the three are channels of one input), and from a stack's slices together; only a block in physical
space is the same occluder for every mode. It needs no gradients, so it explains an ONNX bundle too.
Cost: one forward pass per block that touches the view (64 px views at 1 mm: 225 for a slice or a 3-slice
stack, about 1,200-1,600 for three planes, a 48^3 cube or a 16-slice bag; benchmarks/bench_heatmap.py);
scripts/heatmap_in_lesion.py and docs/screening.md ("Heatmaps") compare it with Grad-CAM per mode.
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import numpy as np

from mvcf.errors import MVCFError
from mvcf.grids import PLANE_DIRECTIONS, SampleGrid
from mvcf.manifest import CLASS_NAMES
from mvcf.progress import CancelCheck, check_cancel

log = logging.getLogger(__name__)

#: Block edge and lattice step (mm): a block about the size of a small lytic lesion, overlapping by half.
BLOCK_MM = 8.0
STRIDE_MM = 4.0
#: Bounds on one map: forward passes (blocks) and the bytes of the per-axis block masks (lattice lines x
#: input elements). A larger view first drops the overlap (stride = block: 8x fewer blocks for a cube);
#: beyond that it is refused rather than run for an hour.
MAX_BLOCKS = 8192
MAX_MASK_BYTES = 1 << 29
#: A block's score below this (a fall of 0.01 percentage points) is float noise, not evidence: without it a view
#: whose hidden blocks change nothing would be scaled from rounding errors up to a full-scale map.
MIN_SCORE = 1e-4


def sample_positions(view) -> np.ndarray:
    """LPS position (mm) of every element of `view.array`: shape (3, *view.array.shape), laid out by the
    view mode's own `arrange`, so the positions line up with the input whatever the mode."""
    mode, channels = view.spec.view_mode, view.spec.channels
    per_axis = []
    for axis in range(3):
        planes = []
        for grid in view.grids:
            i, j, k = np.meshgrid(*(np.arange(n) for n in grid.size), indexing="ij")
            lps = grid.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1))
            coord = lps[:, axis].reshape(grid.size).transpose(2, 1, 0)            # [k, j, i]
            planes.append(np.broadcast_to(coord, (channels,) + coord.shape))
        array, _ = mode.arrange(planes, view.grids, [f"c{c}" for c in range(channels)])
        per_axis.append(np.asarray(array, dtype=np.float32))
    positions = np.stack(per_axis)
    if positions.shape[1:] != view.array.shape:
        raise MVCFError(f"the {view.mode} mode's layout does not map its samples back to positions "
                        f"({positions.shape[1:]} vs {view.array.shape})")
    return positions


def block_lattice(positions: np.ndarray, center_lps: np.ndarray, block_mm: float, stride_mm: float) -> SampleGrid:
    """Block centres: an axial-aligned lattice `stride_mm` apart through `center_lps`, reaching every sample."""
    if not (np.isfinite(block_mm) and np.isfinite(stride_mm) and 0 < stride_mm <= block_mm):
        raise MVCFError(f"occlusion needs 0 < stride <= block size, got block {block_mm!r} mm, stride "
                        f"{stride_mm!r} mm")
    flat = positions.reshape(3, -1)
    reach = np.maximum(np.abs(flat.max(axis=1) - center_lps), np.abs(flat.min(axis=1) - center_lps))
    half_count = np.ceil(np.maximum(reach - block_mm / 2, 0) / stride_mm).astype(int) + 1
    size = tuple(int(2 * n - 1) for n in half_count)
    return SampleGrid.centered("occlusion", np.asarray(center_lps, float), PLANE_DIRECTIONS["axial"],
                               (stride_mm,) * 3, size)


def choose_lattice(positions: np.ndarray, center_lps: np.ndarray, block_mm: float,
                   stride_mm: float) -> tuple[SampleGrid, list[str]]:
    """The block lattice within MAX_BLOCKS and MAX_MASK_BYTES (block_lattice, without overlap when the
    overlapping one would exceed them), and the warnings that say so; MVCFError when even that is too large."""
    lattice = block_lattice(positions, center_lps, block_mm, stride_mm)
    warnings = []

    def too_large(grid: SampleGrid) -> bool:
        return int(np.prod(grid.size)) > MAX_BLOCKS or sum(grid.size) * positions[0].size > MAX_MASK_BYTES

    if too_large(lattice) and stride_mm < block_mm:
        warnings.append(f"occlusion: {int(np.prod(lattice.size)):,} overlapping blocks for a view of "
                        f"{positions[0].size:,} samples; blocks {block_mm:g} mm apart instead of {stride_mm:g}")
        lattice = block_lattice(positions, center_lps, block_mm, block_mm)
    if too_large(lattice):
        raise MVCFError(f"this view ({positions[0].size:,} samples) is too large for an occlusion map "
                        f"({int(np.prod(lattice.size)):,} blocks of {block_mm:g} mm); use the gradcam heatmap")
    return lattice, warnings


def _blocks(positions: np.ndarray, lattice: SampleGrid, half: float) -> Iterator[tuple[tuple[int, int, int],
                                                                                         np.ndarray]]:
    """(lattice index (i, j, k), mask of the input elements inside that block) for every block that holds one."""
    inside = []
    for axis in range(3):
        centres = lattice.origin[axis] + lattice.spacing[axis] * np.arange(lattice.size[axis])
        inside.append([np.abs(positions[axis] - c) <= half for c in centres])
    for i, in_i in enumerate(inside[0]):
        if not in_i.any():
            continue
        for j, in_j in enumerate(inside[1]):
            in_ij = in_i & in_j
            if not in_ij.any():
                continue
            for k, in_k in enumerate(inside[2]):
                mask = in_ij & in_k
                if mask.any():
                    yield (i, j, k), mask


def occlusion_scores(bundle, view, block_mm: float = BLOCK_MM, stride_mm: float = STRIDE_MM,
                     target: str = "call", probability: Optional[float] = None, batch_size: int = 32,
                     should_cancel: Optional[CancelCheck] = None, progress=None) -> tuple[np.ndarray, SampleGrid]:
    """Per block centre the fall in the called (or `target`) class's probability when the block is hidden:
    (scores [k, j, i] on the lattice, the lattice). `progress(done, total)` after each batch."""
    from mvcf.inference import forward_checked

    array = np.asarray(view.array, dtype=np.float32)
    if probability is None:
        probability = float(forward_checked(bundle, [array]).probabilities[0])
    if target == "call":
        target = CLASS_NAMES[int(probability >= bundle.threshold)]
    if target not in CLASS_NAMES.values():
        raise MVCFError(f"occlusion target must be 'call', 'MVCF' or 'OVCF', got {target!r}")
    sign = 1.0 if target == CLASS_NAMES[1] else -1.0
    positions = sample_positions(view)
    lattice, warnings = choose_lattice(positions, np.asarray(view.center_lps, float), block_mm, stride_mm)
    for warning in warnings:
        log.warning("%s", warning)
    channel_axis = 1 if view.spec.view_mode.bag else 0
    other = tuple(a for a in range(array.ndim) if a != channel_axis)
    fill = np.broadcast_to(array.mean(axis=other, keepdims=True), array.shape)
    blocks = list(_blocks(positions, lattice, block_mm / 2))
    scores = np.zeros(lattice.size[::-1], dtype=np.float32)
    for start in range(0, len(blocks), batch_size):
        check_cancel(should_cancel)
        chunk = blocks[start:start + batch_size]
        hidden = [np.where(mask, fill, array) for _, mask in chunk]
        p = forward_checked(bundle, hidden, batch_size=batch_size, should_cancel=should_cancel).probabilities
        for ((i, j, k), _), value in zip(chunk, p):
            score = sign * (probability - float(value))
            scores[k, j, i] = score if score >= MIN_SCORE else 0.0
        if progress is not None:
            progress(min(start + batch_size, len(blocks)), len(blocks))
    return scores, lattice


def occlusion_image(scores: np.ndarray, lattice: SampleGrid, block_mm: float, spacing_mm: float):
    """The block scores as a map in physical space (CTImage, axial-aligned, `spacing_mm` voxels): each point
    the mean score of the blocks containing it, scaled to [0, 1]."""
    step = float(lattice.spacing[0])
    half = block_mm / 2
    extent = (np.asarray(lattice.size) - 1) * step + block_mm                      # i, j, k in mm
    n = np.maximum(1, np.round(extent / spacing_mm).astype(int))
    grid = SampleGrid.centered("occlusion", lattice.index_to_lps((np.asarray(lattice.size) - 1) / 2),
                               PLANE_DIRECTIONS["axial"], (spacing_mm,) * 3, tuple(int(v) for v in n))
    axes = [(np.arange(n[a]) - (n[a] - 1) / 2) * spacing_mm for a in range(3)]      # mm from the lattice centre
    centres = [(np.arange(lattice.size[a]) - (lattice.size[a] - 1) / 2) * step for a in range(3)]
    member = [np.abs(axes[a][:, None] - centres[a][None, :]) <= half + 1e-6 for a in range(3)]  # (n_a, blocks_a)
    mi, mj, mk = (m.astype(np.float32) for m in member)
    total = np.einsum("zc,yb,xa,cba->zyx", mk, mj, mi, scores, optimize=True)
    count = np.einsum("zc,yb,xa->zyx", mk, mj, mi, optimize=True)
    values = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    peak = float(values.max())
    if peak > 0:
        values /= peak
    return grid.to_ctimage(values, source="occlusion")


def occlusion_map(bundle, view, block_mm: float = BLOCK_MM, stride_mm: float = STRIDE_MM, target: str = "call",
                  probability: Optional[float] = None, should_cancel: Optional[CancelCheck] = None,
                  progress=None):
    """The occlusion-sensitivity map of a built view (CTImage in physical space, values 0-1; all zero when
    hiding no block lowers the called class's probability)."""
    scores, lattice = occlusion_scores(bundle, view, block_mm, stride_mm, target, probability,
                                       should_cancel=should_cancel, progress=progress)
    return occlusion_image(scores, lattice, block_mm, float(view.spacing_mm))

"""The view-mode registry (numpy only): one `ViewMode` object per mode owns everything mode-specific.

A mode decides which grids a view samples around the vertebra and how the sampled planes become one array
(layout, output shape, channel names), what the network sees (spatial rank, input channels, whether the
input is a bag of slices for a per-slice encoder), the left-right flip that augmentation may apply, how a
Grad-CAM map is placed back in CT space, and the preview panels of `mvcf views`. Everything else asks the
registry: `names()` for the list of modes, `get(name)` for one mode, `register(mode)` to add one.

Adding a mode = one subclass of ViewMode here (or anywhere, then `register(MyMode())`) plus its tests.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError
from mvcf.grids import PLANE_DIRECTIONS, SampleGrid

Panel = tuple[str, np.ndarray]


class ViewMode:
    """The base: one axial plane through the centre (the '2d' mode). Subclasses override what differs.

    `spec` arguments are mvcf.views.ViewSpec objects (size_px, spacing_mm, channels, n_slices, slice_gap_mm);
    `planes` are the sampled grids' windowed values, one array (C, k, H, W) per grid."""

    name: str = "2d"
    #: (n_slices, slice_gap_mm) defaults when the mode samples a stack of slices; None when it does not.
    stack_defaults: Optional[tuple[int, float]] = None
    #: 2 for a 2D network, 3 for a 3D one.
    spatial_dims: int = 2
    #: True when one case is a bag (N, C, H, W) read slice by slice by a shared encoder (MIL).
    bag: bool = False
    #: The array axis of one case that runs patient right -> left (the left-right flip), or None.
    flip_axis: Optional[int] = 2

    # --- sampling and layout -------------------------------------------------------------------------------
    def grids(self, spec, center_lps: np.ndarray) -> list[SampleGrid]:
        s, sp = spec.size_px, spec.spacing_mm
        return [SampleGrid.centered("axial", center_lps, PLANE_DIRECTIONS["axial"], (sp, sp, sp), (s, s, 1))]

    def output_shape(self, spec) -> tuple[int, ...]:
        return (spec.channels, spec.size_px, spec.size_px)

    def arrange(self, planes: list[np.ndarray], grids: list[SampleGrid],
                windows: list[str]) -> tuple[np.ndarray, list[str]]:
        """The model input array and one name per channel from the sampled planes."""
        return planes[0][:, 0], [f"axial/{w}" for w in windows]

    def grid_stacks(self, array: np.ndarray, channels: int) -> list[np.ndarray]:
        """The inverse of `arrange`: per grid an array (C, k, H, W) of the sampled values."""
        return [array[:, None]]

    # --- network ---------------------------------------------------------------------------------------------
    @property
    def input_rank(self) -> int:
        """Dimensions of one case's model input (no batch dimension)."""
        return 4 if (self.bag or self.spatial_dims == 3) else 3

    def in_channels(self, input_shape: Sequence[int]) -> int:
        return int(input_shape[1] if self.bag else input_shape[0])

    # --- augmentation ----------------------------------------------------------------------------------------
    def flip(self, array: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        """A left-right mirror with probability 1/2 (always one draw from `rng`, so seeds stay aligned)."""
        if rng.rand() < 0.5 and self.flip_axis is not None:
            return np.flip(array, axis=self.flip_axis)
        return array

    def to_channels(self, array: np.ndarray) -> np.ndarray:
        """One case as a channel-first image for MONAI's intensity/rotation transforms."""
        return array

    # --- explanation -----------------------------------------------------------------------------------------
    def heatmap_size(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial size a Grad-CAM map is upsampled to."""
        return tuple(input_shape[-self.spatial_dims:])

    def heatmap_image(self, view, heat: np.ndarray, depth_mm: Optional[float] = None):
        """The map as a volume in the CT's physical space that covers the vertebra (docs/screening.md,
        "Heatmaps"): here the axial map spread through the slab it summarises, `depth_mm` (the vertebra's
        cranio-caudal extent when known, else the view's width) around the centre."""
        return extruded_axial(view, heat, depth_mm)

    # --- preview ---------------------------------------------------------------------------------------------
    def preview_panels(self, grid: SampleGrid, window: str, volume: np.ndarray) -> list[Panel]:
        """(title, image) panels of one grid's values (k, H, W) in one window."""
        return [(f"{grid.name}/{window}", volume[0])]


class StackMode(ViewMode):
    """A stack of axial slices `slice_gap_mm` apart, inferior first; shared by the adjacent and MIL modes."""

    stack_defaults = (3, 2.0)

    def grids(self, spec, center_lps: np.ndarray) -> list[SampleGrid]:
        s, sp = spec.size_px, spec.spacing_mm
        return [SampleGrid.centered("axial", center_lps, PLANE_DIRECTIONS["axial"], (sp, sp, spec.slice_gap_mm),
                                    (s, s, spec.n_slices))]

    def preview_panels(self, grid: SampleGrid, window: str, volume: np.ndarray) -> list[Panel]:
        picks = np.unique(np.linspace(0, volume.shape[0] - 1, min(volume.shape[0], 8)).round())
        return [(f"slice {int(s)}/{window}", volume[int(s)]) for s in picks]


class AdjacentMode(StackMode):
    """(k*C, S, S): k axial slices as channels; channel s*C + c is slice s in window c."""

    name = "2.5d-adjacent"

    def output_shape(self, spec) -> tuple[int, ...]:
        return (spec.n_slices * spec.channels, spec.size_px, spec.size_px)

    def arrange(self, planes, grids, windows):
        c, k = planes[0].shape[:2]
        array = planes[0].transpose(1, 0, 2, 3).reshape(k * c, *planes[0].shape[2:])
        return array, [f"axial[{s}]/{w}" for s in range(k) for w in windows]

    def grid_stacks(self, array, channels):
        return [array.reshape(-1, channels, *array.shape[1:]).transpose(1, 0, 2, 3)]

    def heatmap_image(self, view, heat, depth_mm=None):
        # one 2D map for the whole stack: spread through the vertebra (at least the stack's own slab)
        stack = view.spec.n_slices * view.spec.slice_gap_mm
        return extruded_axial(view, heat, max(depth_mm or 0.0, stack))


class MILMode(StackMode):
    """(n, C, S, S): a bag of n axial slices for a per-slice encoder and pooling; each slice gets its own map."""

    name = "2.5d-mil"
    stack_defaults = (16, 2.0)
    bag = True
    flip_axis = 3

    def output_shape(self, spec) -> tuple[int, ...]:
        return (spec.n_slices, spec.channels, spec.size_px, spec.size_px)

    def arrange(self, planes, grids, windows):
        return planes[0].transpose(1, 0, 2, 3), [f"axial/{w}" for w in windows]

    def grid_stacks(self, array, channels):
        return [array.transpose(1, 0, 2, 3)]

    def to_channels(self, array):
        return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])

    def heatmap_image(self, view, heat, depth_mm=None):
        # each slice's own map, interpolated between the slices (each summarises gap mm of the stack)
        grid = view.grids[0]
        n, gap, sp = heat.shape[0], float(grid.spacing[2]), float(grid.spacing[0])
        depth = n * gap
        k = max(1, int(round(depth / sp)))
        z = (np.arange(k) - (k - 1) / 2) * sp                       # mm from the centre, inferior first
        position = np.clip(z / gap + (n - 1) / 2, 0, n - 1)
        lo = np.floor(position).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (position - lo)[:, None, None]
        volume = (1 - w) * heat[lo] + w * heat[hi]
        return axial_block(view, k, sp).to_ctimage(volume.astype(np.float32), source="gradcam")


class OrthogonalMode(ViewMode):
    """(3*C, S, S): the axial, coronal and sagittal planes through the centre (plane-major)."""

    name = "2.5d-orthogonal"
    flip_axis = None
    PLANES = ("axial", "coronal", "sagittal")

    def grids(self, spec, center_lps):
        s, sp = spec.size_px, spec.spacing_mm
        return [SampleGrid.centered(name, center_lps, PLANE_DIRECTIONS[name], (sp, sp, sp), (s, s, 1))
                for name in self.PLANES]

    def output_shape(self, spec):
        return (3 * spec.channels, spec.size_px, spec.size_px)

    def arrange(self, planes, grids, windows):
        return np.concatenate([p[:, 0] for p in planes], axis=0), [f"{g.name}/{w}" for g in grids for w in windows]

    def grid_stacks(self, array, channels):
        return [array[i * channels:(i + 1) * channels, None] for i in range(3)]

    def flip(self, array, rng):
        # A left-right mirror flips the columns of the axial and coronal planes (R->L) and leaves the sagittal
        # plane's image (A->P by S->I) as it is.
        if rng.rand() < 0.5:
            array = array.copy()
            third = array.shape[0] // 3
            array[: 2 * third] = array[: 2 * third, :, ::-1]
        return array

    #: How the three back-projections combine: "geometric" (a voxel is hot where all three planes see
    #: evidence through it) or "mean". Chosen on synthetic lesions, docs/screening.md.
    combine = "geometric"

    def heatmap_image(self, view, heat, depth_mm=None):
        # The network reads the three planes as channels of one image, so Grad-CAM gives one map whose pixel
        # (r, c) is axial (row A->P, col R->L), coronal (row S->I, col R->L) and sagittal (row S->I, col A->P).
        # Each plane's reading is back-projected through the cube perpendicular to its plane.
        s = heat.shape[0]
        spacing = float(view.spacing_mm)
        cube = SampleGrid.centered("cube", np.asarray(view.center_lps, float), PLANE_DIRECTIONS["axial"],
                                   (spacing, spacing, spacing), (s, s, s))      # [k (I->S), j (A->P), i (R->L)]
        axial = np.broadcast_to(heat[None, :, :], (s, s, s))
        coronal = np.broadcast_to(heat[::-1, None, :], (s, s, s))
        sagittal = np.broadcast_to(heat[::-1, :, None], (s, s, s))
        if self.combine == "geometric":
            values = np.cbrt(axial * coronal * sagittal)
        else:
            values = (axial + coronal + sagittal) / 3
        return cube.to_ctimage(np.ascontiguousarray(values, dtype=np.float32), source="gradcam")


class CubeMode(ViewMode):
    """(C, S, S, S): a cube indexed [slice (I->S), row (A->P), column (R->L)] for a 3D network."""

    name = "3d"
    spatial_dims = 3
    flip_axis = 3

    def grids(self, spec, center_lps):
        s, sp = spec.size_px, spec.spacing_mm
        return [SampleGrid.centered("cube", center_lps, PLANE_DIRECTIONS["axial"], (sp, sp, sp), (s, s, s))]

    def output_shape(self, spec):
        s = spec.size_px
        return (spec.channels, s, s, s)

    def arrange(self, planes, grids, windows):
        return planes[0], [f"cube/{w}" for w in windows]

    def grid_stacks(self, array, channels):
        return [array]

    def heatmap_image(self, view, heat, depth_mm=None):
        return view.grids[0].to_ctimage(heat, source="gradcam")

    def preview_panels(self, grid, window, volume):
        mid = [s // 2 for s in volume.shape]
        return [(f"axial/{window}", volume[mid[0]]), (f"coronal/{window}", volume[::-1, mid[1], :]),
                (f"sagittal/{window}", volume[::-1, :, mid[2]])]


def axial_block(view, k: int, spacing_k: float) -> SampleGrid:
    """The view's axial field of view (its first grid's rows and columns) as a block of `k` slices
    `spacing_k` mm apart, centred on the view's centre."""
    grid = view.grids[0]
    return SampleGrid.centered("heatmap", np.asarray(view.center_lps, float), PLANE_DIRECTIONS["axial"],
                               (float(grid.spacing[0]), float(grid.spacing[1]), spacing_k),
                               (grid.size[0], grid.size[1], k))


def extruded_axial(view, heat: np.ndarray, depth_mm: Optional[float]):
    """A 2D axial map repeated through `depth_mm` (default: the view's width) of slices at the view's pixel
    spacing: the evidence the map shows lies somewhere along each column of that slab."""
    grid = view.grids[0]
    sp = float(grid.spacing[0])
    depth = float(depth_mm) if depth_mm else grid.size[0] * sp
    k = max(1, int(round(depth / sp)))
    volume = np.repeat(np.asarray(heat, np.float32)[None], k, axis=0)
    return axial_block(view, k, sp).to_ctimage(volume, source="gradcam")


#: The mode a command uses when none is given (the paper's best: 2.5D, three orthogonal planes).
DEFAULT = "2.5d-orthogonal"

_REGISTRY: dict[str, ViewMode] = {}


def register(mode: ViewMode) -> ViewMode:
    """Add `mode` under `mode.name` (a name already taken is refused); returns it."""
    if not isinstance(mode, ViewMode) or not isinstance(mode.name, str) or not mode.name:
        raise MVCFError(f"a view mode must be a named ViewMode, got {mode!r}")
    if mode.name in _REGISTRY and _REGISTRY[mode.name] is not mode:
        raise MVCFError(f"view mode {mode.name!r} is already registered")
    _REGISTRY[mode.name] = mode
    return mode


def unregister(name: str) -> None:
    """Remove a mode (tests that register a throwaway mode clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered mode names, in registration order."""
    return tuple(_REGISTRY)


def stacked_names() -> tuple[str, ...]:
    """The registered modes built from an axial stack (`n_slices`/`slice_gap_mm` apply to these only)."""
    return tuple(name for name, mode in _REGISTRY.items() if mode.stack_defaults is not None)


def get(name) -> ViewMode:
    """The mode called `name` (a ViewMode passes through); MVCFError naming the choices for an unknown one."""
    if isinstance(name, ViewMode):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise MVCFError(f"unknown view mode {name!r}; choose one of {', '.join(_REGISTRY)}") from None


for _mode in (ViewMode(), AdjacentMode(), OrthogonalMode(), MILMode(), CubeMode()):
    register(_mode)

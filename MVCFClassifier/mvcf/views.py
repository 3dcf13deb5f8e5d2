"""Build the model inputs (2D / 2.5D / 3D views) around one vertebra, resampling only that region.

Orientation is fixed whatever the CT's direction cosines: every view is sampled on its own small grid with
its own LPS direction, so the arrays always read the same way (radiological display convention):

=========  ====================  ======================  ==========================
plane      columns (W, index i)  rows (H, index j)       slices (index k)
=========  ====================  ======================  ==========================
axial      patient right → left  anterior → posterior    inferior → superior
coronal    patient right → left  superior → inferior     anterior → posterior (1)
sagittal   anterior → posterior  superior → inferior     left → right (1)
=========  ====================  ======================  ==========================

Array shapes (C = number of windows, S = size_px, float32); each mode's grids, layout and shape are its
`mvcf.modes.ViewMode`'s (the registry), so this module holds no mode-specific branch:

- ``2d``: (C, S, S), the axial slice through the centre.
- ``2.5d-adjacent``: (k*C, S, S), k axial slices `slice_gap_mm` apart, inferior first; channel s*C + c is
  slice s in window c.
- ``2.5d-orthogonal``: (3*C, S, S), axial, coronal, sagittal planes through the centre (plane-major).
- ``2.5d-mil``: (n, C, S, S), a bag of n axial slices (inferior first) for a per-slice encoder + pooling.
- ``3d``: (C, S, S, S), a cube indexed [slice (I→S), row (A→P), column (R→L)].

Each view grid is returned as a `SampleGrid` (origin, spacing, direction in LPS, like a CTImage), so any
array on it (e.g. a heatmap) can be placed back in the CT's physical space with `SampleGrid.to_ctimage`.
Windowing maps [center - width/2, center + width/2] HU linearly to [0, 1] and clips; `windows=()` keeps raw
HU. Voxels outside the CT are air (-1024 HU) and the result carries a warning.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from mvcf import modes
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError
from mvcf.limits import check_view_shape
from mvcf.grids import PLANE_DIRECTIONS, SampleGrid

__all__ = ["AIR_HU", "MODEL_WINDOWS", "PLANE_DIRECTIONS", "SampleGrid", "ViewResult", "ViewSpec", "WINDOWS",
           "apply_windows", "build_views", "resample_to_grid", "sample_on_grid", "view_grids"]

AIR_HU = -1024.0

#: Named HU windows as (center, width).
WINDOWS: dict[str, tuple[float, float]] = {
    "bone": (400.0, 1800.0),
    "soft": (40.0, 400.0),
    "wide": (200.0, 2400.0),
}

#: The windows a model reads by default (`mvcf train`, `study`, `demo`): bone for the fracture and the lesion,
#: soft tissue for epidural and paraspinal masses, as a radiologist reads both.
MODEL_WINDOWS = ("bone", "soft")


def _window(value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        if value not in WINDOWS:
            raise MVCFError(f"unknown window {value!r}; named windows: {', '.join(WINDOWS)} "
                            "(or a window in HU: CENTER:WIDTH on the command line, e.g. 400:1800; "
                            "(center, width) in Python)")
        return WINDOWS[value]
    try:
        center, width = (float(v) for v in value)
    except (TypeError, ValueError):
        raise MVCFError(f"a window is a name or (center, width) in HU, got {value!r}") from None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise MVCFError(f"window width must be > 0 HU, got {value!r}")
    return (center, width)


@dataclass(frozen=True)
class ViewSpec:
    """What view to build; JSON round-trips (`to_dict`/`from_dict`) because model bundles freeze it.

    `n_slices`/`slice_gap_mm` apply to '2.5d-adjacent' and '2.5d-mil' only (None = mode default, resolved
    at construction). `windows` are names of `WINDOWS` or (center, width) pairs in HU, one channel each.
    `antialias` smooths the CT block (Gaussian, sigma = (view spacing - CT spacing) / 2 per axis) before
    sampling it more coarsely than it was acquired, so noise does not alias and sites with finer voxels
    look alike; off by default (then the views equal plain linear resampling)."""

    mode: str = modes.DEFAULT
    size_px: int = 96
    spacing_mm: float = 1.0
    n_slices: Optional[int] = None
    slice_gap_mm: Optional[float] = None
    windows: tuple = ("bone",)
    antialias: bool = False

    def __post_init__(self) -> None:
        view_mode = modes.get(self.mode)
        object.__setattr__(self, "mode", view_mode.name)   # a ViewMode object given stands for its name
        size = int(self.size_px)
        if size != self.size_px or not 8 <= size <= 1024:
            raise MVCFError(f"view size must be an integer number of pixels in [8, 1024], got {self.size_px!r}")
        spacing = float(self.spacing_mm)
        if not (np.isfinite(spacing) and 0.05 <= spacing <= 20):
            raise MVCFError(f"view spacing must be in [0.05, 20] mm, got {self.spacing_mm!r}")
        n, gap = self.n_slices, self.slice_gap_mm
        if view_mode.stack_defaults is not None:
            n = view_mode.stack_defaults[0] if n is None else n
            gap = view_mode.stack_defaults[1] if gap is None else gap
            if int(n) != n or not 1 <= int(n) <= 512:
                raise MVCFError(f"n_slices must be an integer in [1, 512], got {n!r}")
            if not (np.isfinite(float(gap)) and 0.05 <= float(gap) <= 50):
                raise MVCFError(f"slice_gap_mm must be in [0.05, 50] mm, got {gap!r}")
            n, gap = int(n), float(gap)
        elif n is not None or gap is not None:
            raise MVCFError(f"n_slices/slice_gap_mm apply to {' and '.join(modes.stacked_names())}, not {self.mode}")
        if not isinstance(self.antialias, (bool, np.bool_)):
            raise MVCFError(f"antialias must be true or false, got {self.antialias!r}")
        windows = (self.windows,) if isinstance(self.windows, str) else tuple(self.windows)
        object.__setattr__(self, "size_px", size)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "n_slices", n)
        object.__setattr__(self, "slice_gap_mm", gap)
        resolved = tuple(_window(w) for w in windows)
        repeated = sorted({w for w in resolved if resolved.count(w) > 1})
        if repeated:
            names = {v: k for k, v in WINDOWS.items()}
            shown = ", ".join(names.get(w, f"{w[0]:g}:{w[1]:g}") for w in repeated)
            raise MVCFError(f"window {shown} is given more than once; each window is one channel, and a repeat "
                            f"would only copy it")
        object.__setattr__(self, "windows", resolved)
        check_view_shape(self.output_shape(), f"a {self.mode} view of {self.size_px} px")

    @property
    def channels(self) -> int:
        """Intensity channels per sampled plane (1 when raw HU)."""
        return max(1, len(self.windows))

    @property
    def view_mode(self) -> "modes.ViewMode":
        return modes.get(self.mode)

    def output_shape(self) -> tuple[int, ...]:
        return self.view_mode.output_shape(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["windows"] = [list(w) for w in self.windows]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "ViewSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise MVCFError(f"unknown view spec field(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if "windows" in data and not isinstance(data["windows"], str):
            data["windows"] = tuple(w if isinstance(w, str) else tuple(w) for w in data["windows"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ViewSpec":
        return cls.from_dict(json.loads(text))


@dataclass
class ViewResult:
    """A built view: `array` (float32, shape per mode), where it came from, and how to map it back."""

    array: np.ndarray
    mode: str
    spec: ViewSpec
    center_lps: np.ndarray
    spacing_mm: float
    grids: list[SampleGrid]
    channel_names: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def window_names(self) -> list[str]:
        """The window of each channel as used in file and node names (e.g. 'bone')."""
        return [name.split("/", 1)[1].replace(",", "_") for name in self.channel_names[: self.spec.channels]]

    def grid_stacks(self) -> list[np.ndarray]:
        """Per grid: an array (C, k, H, W) of the sampled values, whatever the mode's layout."""
        return self.spec.view_mode.grid_stacks(self.array, self.spec.channels)

    def grid_volumes(self) -> Iterator[tuple["SampleGrid", str, np.ndarray]]:
        """(grid, window, values) for every sampled grid and window: what is written to NIfTI or to Slicer."""
        windows = self.window_names()
        for grid, stack in zip(self.grids, self.grid_stacks()):
            for window, values in zip(windows, stack):
                yield grid, window, values

    def write_volumes(self, folder) -> list:
        """One compressed NIfTI per sampled grid and window (`<grid>_<window>.nii.gz`) in `folder` (created
        when missing), each on its grid's LPS geometry so it overlays the CT; returns the paths."""
        from pathlib import Path

        import SimpleITK as sitk

        from mvcf.fileio import write_image_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for grid, window, volume in self.grid_volumes():
            image = sitk.GetImageFromArray(np.ascontiguousarray(volume.reshape(grid.size[::-1])))
            image.SetOrigin(tuple(float(v) for v in grid.origin))
            image.SetSpacing(tuple(float(v) for v in grid.spacing))
            image.SetDirection(tuple(float(v) for v in grid.direction.ravel()))
            paths.append(folder / f"{grid.name}_{window}.nii.gz")
            write_image_file(image, paths[-1])
        return paths

    def to_dict(self) -> dict:
        """Everything but the array, JSON-ready."""
        return {"mode": self.mode, "shape": list(self.shape), "spacing_mm": self.spacing_mm,
                "center_lps": [float(v) for v in self.center_lps], "spec": self.spec.to_dict(),
                "channels": self.channel_names, "grids": [g.to_dict() for g in self.grids],
                "warnings": list(self.warnings)}


def view_grids(spec: ViewSpec, center_lps: np.ndarray) -> list[SampleGrid]:
    """The grid(s) a view samples, centred on `center_lps`."""
    return spec.view_mode.grids(spec, center_lps)


def _corner_indices(ct: CTImage, grids: list[SampleGrid]) -> np.ndarray:
    """Continuous CT indices (i, j, k) of every grid's corners; the grids are affine, so they bound it."""
    corners = np.vstack([g.corners_lps() for g in grids])
    to_index = np.linalg.inv(ct.direction @ np.diag(ct.spacing))
    return (corners - ct.origin) @ to_index.T


def _outside_warning(ct: CTImage, grids: list[SampleGrid]) -> Optional[str]:
    ijk = _corner_indices(ct, grids)
    size = np.asarray(ct.size_ijk, dtype=float)
    over = np.maximum(-0.5 - ijk, ijk - (size - 0.5)).max(axis=0)
    if np.all(over <= 1e-6):
        return None
    over_mm = float(np.max(np.maximum(over, 0) * ct.spacing))
    return (f"the view region extends up to {over_mm:.1f} mm beyond the CT; "
            f"padded with air ({AIR_HU:g} HU)")


def _crop(ct: CTImage, grids: list[SampleGrid], sigma_mm: Optional[np.ndarray] = None):
    """The CT's voxel block covering every grid as SimpleITK: one voxel margin for linear interpolation, and
    with `sigma_mm` (per CT axis) a Gaussian-smoothed block with 3 sigma more margin."""
    import SimpleITK as sitk

    ijk = _corner_indices(ct, grids)
    size = np.asarray(ct.size_ijk)
    margin = 1 + (np.ceil(3 * sigma_mm / ct.spacing).astype(int) if sigma_mm is not None else 0)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - margin, 0, size - 1)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1 + margin, 1, size)
    block = ct.voxels[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    if sigma_mm is not None:
        from scipy.ndimage import gaussian_filter

        block = gaussian_filter(block.astype(np.float32), sigma=(sigma_mm / ct.spacing)[::-1], mode="nearest",
                                truncate=3.0)
    if block.dtype not in (np.int16, np.int32, np.uint8, np.uint16, np.float32, np.float64):
        block = block.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(block))
    image.SetSpacing(tuple(float(v) for v in ct.spacing))
    image.SetOrigin(tuple(float(v) for v in ct.index_to_lps(lo)))
    image.SetDirection(tuple(float(v) for v in ct.direction.ravel()))
    return image


def antialias_sigma_mm(ct: CTImage, spacing_mm: float) -> Optional[np.ndarray]:
    """Gaussian sigma (mm, per CT axis) before sampling at `spacing_mm`; None when no axis is coarsened."""
    sigma = np.maximum(0.0, (spacing_mm - ct.spacing) / 2)
    return sigma if np.any(sigma > 0.05 * ct.spacing) else None


def resample_to_grid(image, grid: SampleGrid, interpolation: str = "linear",
                     default_value: float = AIR_HU) -> np.ndarray:
    """Sample a SimpleITK image on `grid` -> float32 array [k, j, i]; 'nearest' for label masks."""
    import SimpleITK as sitk

    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolation]
    out = sitk.Resample(image, [int(v) for v in grid.size], sitk.Transform(), interp,
                        tuple(float(v) for v in grid.origin), tuple(float(v) for v in grid.spacing),
                        tuple(float(v) for v in grid.direction.ravel()), float(default_value),
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def sample_on_grid(image: CTImage, grid: SampleGrid, interpolation: str = "linear",
                   default_value: float = AIR_HU) -> np.ndarray:
    """Sample a CTImage (a CT or, with 'nearest' and default 0, a label mask) on `grid`, cropping first."""
    return resample_to_grid(_crop(image, [grid]), grid, interpolation, default_value)


def apply_windows(hu: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """Stack one [0, 1] channel per (center, width) window on axis 0; raw HU (one channel) if none."""
    if not windows:
        return hu[np.newaxis].astype(np.float32, copy=False)
    out = np.empty((len(windows),) + hu.shape, dtype=np.float32)
    for c, (center, width) in enumerate(windows):
        np.subtract(hu, center - width / 2, out=out[c])
        out[c] *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _window_names(spec: ViewSpec) -> list[str]:
    if not spec.windows:
        return ["hu"]
    names = {v: k for k, v in WINDOWS.items()}
    return [names.get(w, f"{w[0]:g},{w[1]:g}") for w in spec.windows]


def build_views(ct: CTImage, location: Any, spec: ViewSpec) -> ViewResult:
    """Resample the region around `location` (a VertebraLocation, or an LPS point in mm) into the view `spec`
    describes; see the module doc. The location's own warnings are carried into the result.

    Raises MVCFError when the centre is outside the CT; a region partly outside is padded with air and
    reported in `warnings`. Deterministic; only the CT block under the view is read."""
    if np.ndim(ct.voxels) != 3:
        raise MVCFError(f"a CT must be a 3D scalar volume, got voxels of shape {np.shape(ct.voxels)}")
    center = np.asarray(getattr(location, "center_lps", location), dtype=float).reshape(3)
    if not np.all(np.isfinite(center)):
        raise MVCFError("view centre must be finite LPS coordinates")
    if not ct.contains(center):
        raise MVCFError(f"view centre LPS ({center[0]:.1f}, {center[1]:.1f}, {center[2]:.1f}) mm is outside "
                        f"the CT")
    grids = view_grids(spec, center)
    warnings = list(getattr(location, "warnings", []))
    outside = _outside_warning(ct, grids)
    if outside:
        warnings.append(outside)
    sigma = antialias_sigma_mm(ct, spec.spacing_mm) if spec.antialias else None
    planes = [apply_windows(resample_to_grid(_crop(ct, [g], sigma), g), spec.windows) for g in grids]
    if not all(np.isfinite(p).all() for p in planes):
        raise MVCFError("the CT has NaN or infinite values around the vertebra")
    array, names = spec.view_mode.arrange(planes, grids, _window_names(spec))
    return ViewResult(array=np.ascontiguousarray(array, dtype=np.float32), mode=spec.mode, spec=spec,
                      center_lps=center, spacing_mm=spec.spacing_mm, grids=grids, channel_names=names,
                      warnings=warnings)

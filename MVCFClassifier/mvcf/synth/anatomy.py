"""The normal anatomy of a 3-5 vertebra thoracic or lumbar segment, drawn on a 1 mm truth grid.

Frame: x = patient left, y = posterior, z = superior (LPS), millimetres, the fractured vertebra's body centre
near the origin. Arrays are indexed [z, y, x] like SimpleITK. Every structure is a signed-distance field
turned into partial-volume occupancy, painted from the back (fat) to the front (bone, then the fracture
signs of `signs.py`). Sizes follow published morphometry (Panjabi et al. 1991/1992: lumbar body width
40-50 mm, depth 30-35 mm, height 25-28 mm; thoracic bodies smaller; discs 8-12 mm lumbar, 4-6 mm thoracic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from mvcf.synth.shapes import (box_sdf, capsule_sdf, ellipsoid_sdf, occupancy, paint, smooth_noise,
                               sparse_min, superellipse_sdf)

if TYPE_CHECKING:
    from mvcf.synth.signs import FractureSigns

LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
TRUTH_SPACING_MM = 1.0
FOV_X_MM = 88.0
FOV_Y_MM = (-38.0, 58.0)

HU_FAT = -95.0
HU_MUSCLE = 50.0
HU_BLOOD = 42.0
HU_CSF = 10.0
HU_AIR = -950.0
HU_LUNG = -840.0
HU_DISC = 88.0
HU_NUCLEUS = 70.0
_CORNER_MM = 2.5


def level_label(name: str) -> int:
    """TotalSegmentator (v2) label value of a vertebra: T1 = 43 ... T12 = 32, L1 = 31 ... L5 = 27."""
    return 43 - LEVELS.index(name)


def _interp(index: int, at_t5: float, at_l5: float) -> float:
    t = (index - LEVELS.index("T5")) / (LEVELS.index("L5") - LEVELS.index("T5"))
    return at_t5 + (at_l5 - at_t5) * float(np.clip(t, 0.0, 1.0))


@dataclass
class VertebraSpec:
    name: str
    center: np.ndarray          # body centre, mm in the truth frame
    half_width: float           # a: left-right
    half_depth: float           # b: antero-posterior
    half_height: float          # h: cranio-caudal
    cortex_mm: float
    is_target: bool = False

    @property
    def label(self) -> int:
        return level_label(self.name)

    @property
    def thoracic(self) -> bool:
        return self.name.startswith("T")


@dataclass
class SpineSpec:
    """Everything random about one segment's normal anatomy (the patient's bone quality included)."""

    vertebrae: list[VertebraSpec]     # inferior to superior
    trabecular_hu: float
    cortex_hu: float
    texture_hu: float                 # amplitude of the trabecular texture
    vertical_striation: float         # >1: vertical trabeculae dominate (osteoporosis)
    disc_heights: list[float]
    z_range: tuple[float, float]
    x_shift: float
    psoas_scale: float
    fat_hu: float

    @property
    def target(self) -> VertebraSpec:
        return next(v for v in self.vertebrae if v.is_target)


def sample_spine(rng: np.random.Generator, target_name: str, n_levels: int, trabecular_hu: float,
                 osteoporotic: bool) -> SpineSpec:
    """Random normal anatomy around `target_name`, whose body centre sits at (x_shift, 0, 0)."""
    t_index = LEVELS.index(target_name)
    below = int(rng.integers(1, n_levels - 1)) if n_levels > 3 else 1
    below = int(np.clip(below, n_levels - 1 - t_index, len(LEVELS) - 1 - t_index))
    names = [LEVELS[t_index + k] for k in range(below, below - n_levels, -1)]  # inferior to superior
    size = rng.normal(1.0, 0.05)
    x_shift = float(rng.uniform(-3, 3))
    lordosis = float(rng.normal(0, 0.0015))
    heights = [_interp(LEVELS.index(n), 9.5, 13.5) * size * rng.normal(1.0, 0.02) for n in names]
    discs = [_interp(LEVELS.index(n), 4.5, 10.0) * rng.normal(1.0, 0.08) for n in names[:-1]]
    centers = [0.0]
    for i in range(1, len(names)):
        centers.append(centers[-1] + heights[i - 1] + discs[i - 1] + heights[i])
    centers = [c - centers[below] for c in centers]
    specs, disc_heights = [], []
    for name, zc, h in zip(names, centers, heights):
        i = LEVELS.index(name)
        specs.append(VertebraSpec(
            name=name,
            center=np.array([x_shift, lordosis * zc * zc, zc]),
            half_width=_interp(i, 14.0, 25.0) * size * rng.normal(1.0, 0.02),
            half_depth=_interp(i, 12.5, 17.5) * size * rng.normal(1.0, 0.02),
            half_height=h,
            cortex_mm=float(rng.uniform(0.5, 0.8) if osteoporotic else rng.uniform(0.8, 1.2)),
            is_target=(name == target_name)))
    for lower, upper in zip(specs[:-1], specs[1:]):
        disc_heights.append(float(upper.center[2] - upper.half_height - lower.center[2] - lower.half_height))
    bottom, top = specs[0], specs[-1]
    z_range = (float(bottom.center[2] - bottom.half_height - 5.0), float(top.center[2] + top.half_height + 5.0))
    return SpineSpec(vertebrae=specs, trabecular_hu=float(trabecular_hu),
                     cortex_hu=float(rng.uniform(1050, 1350) if osteoporotic else rng.uniform(1300, 1600)),
                     texture_hu=float(rng.uniform(32, 45) if osteoporotic else rng.uniform(22, 32)),
                     vertical_striation=float(rng.uniform(2.0, 3.0) if osteoporotic else rng.uniform(1.0, 1.6)),
                     disc_heights=disc_heights, z_range=z_range, x_shift=x_shift,
                     psoas_scale=float(rng.uniform(0.8, 1.25)), fat_hu=float(rng.normal(HU_FAT, 8)))


@dataclass
class TruthGrid:
    """Axis coordinates (mm) of the 1 mm truth grid and broadcastable coordinate arrays."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.zs), len(self.ys), len(self.xs))

    @classmethod
    def for_spine(cls, spine: SpineSpec) -> "TruthGrid":
        s = TRUTH_SPACING_MM
        xs = np.arange(-FOV_X_MM / 2, FOV_X_MM / 2, s, dtype=np.float32) + s / 2
        ys = np.arange(FOV_Y_MM[0], FOV_Y_MM[1], s, dtype=np.float32) + s / 2
        zs = np.arange(spine.z_range[0], spine.z_range[1], s, dtype=np.float32) + s / 2
        return cls(xs, ys, zs)


@dataclass
class VertebraGeometry:
    """The drawn fields of one vertebra on its slab of the truth grid (kept for the signs)."""

    spec: VertebraSpec
    z_slice: slice
    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    top: np.ndarray              # 2D [y, x] superior body surface (mm, local z)
    bottom: np.ndarray           # 2D [y, x] inferior body surface
    body_sdf: np.ndarray         # 3D
    posterior_sdf: np.ndarray    # 3D, pedicles + posterior arch
    pedicle_sdf: np.ndarray      # 3D, both pedicles
    canal_center_y: float
    canal_radii: tuple[float, float]


@dataclass
class RenderedCase:
    hu: np.ndarray               # float32 [z, y, x], truth grid
    labels: np.ndarray           # uint8 [z, y, x], TotalSegmentator values
    grid: TruthGrid
    target: Optional[VertebraGeometry] = None


def _capsule(target: np.ndarray, axes: tuple, p0, p1, radius: float, z_scale: float = 1.0) -> None:
    """Union a capsule into `target` (z_scale > 1 makes its cross-section taller than wide)."""
    p0 = np.array(p0, float)
    p1 = np.array(p1, float)
    lo = np.minimum(p0, p1) - radius * np.array([1, 1, z_scale])
    hi = np.maximum(p0, p1) + radius * np.array([1, 1, z_scale])
    q0 = p0 / [1, 1, z_scale]
    q1 = p1 / [1, 1, z_scale]
    sparse_min(target, axes, lambda X, Y, Z: capsule_sdf(X, Y, Z / z_scale, q0, q1, radius), lo, hi)


def _posterior_elements(spec: VertebraSpec, axes: tuple, shape) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance of the pedicles and of the whole posterior arch (pedicles, laminae, spinous,
    transverse and articular processes), in the vertebra's local frame (`axes` = local x, y, z 1-D)."""
    a, b, h = spec.half_width, spec.half_depth, spec.half_height
    k = a / 22.0
    xp = 10.5 * k + 1.5
    zp = 0.3 * h
    r_ped = 4.2 * k
    ped = np.full(shape, 50.0, np.float32)
    for side in (1, -1):
        _capsule(ped, axes, (side * (xp - 1), 0.55 * b, zp), (side * (xp + 1), b + 12 * k, zp), r_ped, 1.5)
    arch = ped.copy()
    yl = b + 13 * k
    for side in (1, -1):
        _capsule(arch, axes, (side * (xp + 1), yl, zp - 2), (side * 2.0, yl + 9 * k, -0.1 * h), 3.2 * k)
        _capsule(arch, axes, (side * (xp + 1), yl, -0.5 * h), (side * 2.0, yl + 9 * k, -0.55 * h), 3.0 * k)
        if spec.thoracic:
            _capsule(arch, axes, (side * xp, yl - 2, zp), (side * (xp + 17 * k), yl + 8, zp - 1), 3.4)
        else:
            _capsule(arch, axes, (side * xp, yl - 3, zp), (side * (xp + 20 * k), yl - 1, zp), 3.0)
        _capsule(arch, axes, (side * (xp + 2), yl + 1, zp), (side * (xp + 3), yl + 4, h + 3), 3.3 * k)
        _capsule(arch, axes, (side * (xp - 1), yl + 6 * k, -0.1 * h), (side * (xp - 1.5), yl + 7 * k, -h - 4),
                 3.0 * k)
    if spec.thoracic:
        _capsule(arch, axes, (0, yl + 8 * k, -0.2 * h), (0, yl + 30 * k, -1.3 * h), 3.0)
    else:
        lo, hi = (-2.2, yl + 7 * k, -0.55 * h), (2.2, yl + 30 * k, 0.45 * h)
        sparse_min(arch, axes, lambda X, Y, Z: box_sdf(X, Y, Z, lo, hi) - 1.0, lo, hi)
    return ped, arch


def _body_sdf(spec: VertebraSpec, X, Y, Z, top, bottom, wall_shift) -> np.ndarray:
    """Signed distance of the vertebral body: a waisted superellipse column cut by the endplate maps and
    the (flat, slightly concave) posterior wall plus `wall_shift`."""
    a, b, h = spec.half_width, spec.half_depth, spec.half_height
    rho = superellipse_sdf(X, Y, a, b, 2.6) / min(a, b) + 1.0
    waist = 1.0 - 0.07 * np.clip(1.0 - (Z / h) ** 2, 0, 1)
    sdf = (rho - waist) * min(a, b)
    y_post = 0.86 * b - 1.5 * np.clip(1 - (X / a) ** 2, 0, 1) + wall_shift
    wall = np.maximum(sdf, Y - y_post) + _CORNER_MM
    caps = np.maximum(bottom - Z, Z - top) + _CORNER_MM
    # intersection with rounded edges where the endplates meet the walls (the ring apophysis)
    outside = np.sqrt(np.maximum(wall, 0) ** 2 + np.maximum(caps, 0) ** 2)
    return outside + np.minimum(np.maximum(wall, caps), 0) - _CORNER_MM


def render_anatomy(spine: SpineSpec, signs: "FractureSigns", rng: np.random.Generator) -> RenderedCase:
    """Paint the segment on the truth grid; the target vertebra's body is deformed and decorated by
    `signs` (height loss, posterior wall, then `signs.paint`)."""
    grid = TruthGrid.for_spine(spine)
    _, ny, nx = grid.shape
    hu = np.full(grid.shape, spine.fat_hu, dtype=np.float32)
    hu += 6.0 * smooth_noise(rng, grid.shape, 3.0)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    texture = smooth_noise(rng, grid.shape, 0.7)
    vertical = smooth_noise(rng, grid.shape, (2.5, 0.6, 0.6)) if spine.vertical_striation > 1.3 else None
    x2 = grid.xs[None, None, :]
    y2 = grid.ys[None, :, None]
    _draw_soft_tissue(spine, grid, hu, rng)
    rendered = RenderedCase(hu=hu, labels=labels, grid=grid)
    for index, spec in enumerate(spine.vertebrae):
        if index + 1 < len(spine.vertebrae):
            _draw_disc(spec, spine.vertebrae[index + 1], grid, hu)
    for spec in spine.vertebrae:
        cx, cy, cz = spec.center
        reach = spec.half_height + 10.0
        k0 = int(np.searchsorted(grid.zs, cz - reach))
        k1 = int(np.searchsorted(grid.zs, cz + reach))
        zsl = slice(k0, k1)
        X = x2 - cx
        Y = y2 - cy
        Z = grid.zs[zsl][:, None, None] - cz
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        endplate_dip = 0.8 * np.clip(1 - ((X[0] / a) ** 2 + (Y[0] / b) ** 2), 0, 1)
        top = (h - endplate_dip) * np.ones((ny, nx), np.float32)
        bottom = (-h + endplate_dip) * np.ones((ny, nx), np.float32)
        wall_shift = np.zeros((1, 1, 1), np.float32)
        if spec.is_target:
            top, bottom = signs.body_heights(X[0], Y[0], a, b, h, top, bottom)
            wall_shift = signs.posterior_wall_shift(X, Z, a, b, h, top)
        body = _body_sdf(spec, X, Y, Z, top, bottom, wall_shift)
        ped, arch = _posterior_elements(spec, (grid.xs - cx, grid.ys - cy, grid.zs[zsl] - cz), body.shape)
        _draw_canal(spec, hu[zsl], X, Y, Z)
        bone = np.minimum(body, arch)
        occ = occupancy(bone)
        inner = occupancy(bone + spec.cortex_mm)
        slab_tex = texture[zsl]
        if vertical is not None:
            slab_tex = (slab_tex + (spine.vertical_striation - 1.0) * vertical[zsl]) / spine.vertical_striation
        trab = spine.trabecular_hu + spine.texture_hu * slab_tex
        trab = np.where(Y > 0.8 * b, trab + 60.0, trab)  # denser posterior elements
        paint(hu[zsl], occ, spine.cortex_hu)
        paint(hu[zsl], inner, trab)
        labels[zsl][occ >= 0.5] = spec.label
        if spec.is_target:
            rendered.target = VertebraGeometry(
                spec=spec, z_slice=zsl, X=X, Y=Y, Z=Z, top=top, bottom=bottom, body_sdf=body,
                posterior_sdf=arch, pedicle_sdf=ped, canal_center_y=b + 9.5 * a / 22.0,
                canal_radii=(10.5 * a / 22.0, 8.5 * a / 22.0))
    if spine.vertebrae[0].thoracic:
        _draw_ribs(spine, grid, hu)
    signs.paint(hu[rendered.target.z_slice], rendered.target, rng)
    return rendered


def _draw_soft_tissue(spine: SpineSpec, grid: TruthGrid, hu: np.ndarray, rng: np.random.Generator) -> None:
    """Paraspinal muscles, psoas, aorta and IVC (lumbar) or lungs (thoracic), and a little bowel gas."""
    target = spine.target
    a, b = target.half_width, target.half_depth
    x = grid.xs[None, None, :] - spine.x_shift
    y = grid.ys[None, :, None]
    z = grid.zs[:, None, None]
    k = a / 22.0
    erector = np.minimum(superellipse_sdf(x - 17 * k - 2, y - (b + 34 * k), 15 * k, 17 * k, 2.2),
                         superellipse_sdf(x + 17 * k + 2, y - (b + 34 * k), 15 * k, 17 * k, 2.2))
    paint(hu, occupancy(erector), HU_MUSCLE)
    if target.thoracic:
        lung = np.minimum(ellipsoid_sdf(x, y, z, (a + 34, 0.3 * b, 0), (30, 42, 500)),
                          ellipsoid_sdf(x, y, z, (-a - 34, 0.3 * b, 0), (30, 42, 500)))
        paint(hu, occupancy(lung, 2.0), HU_LUNG)
        aorta = superellipse_sdf(x - 0.7 * a - 4, y + b + 2, 11, 11, 2.0)
        paint(hu, occupancy(aorta), HU_BLOOD)
    else:
        grow = spine.psoas_scale * np.clip(1.0 - z / 120.0, 0.4, 1.6)
        psoas = np.minimum(superellipse_sdf(x - a - 7 * grow, y + 2, 7 * grow, 9 * grow, 2.0),
                           superellipse_sdf(x + a + 7 * grow, y + 2, 7 * grow, 9 * grow, 2.0))
        paint(hu, occupancy(psoas), HU_MUSCLE - 4)
        paint(hu, occupancy(superellipse_sdf(x - 9, y + b + 13, 10.5, 10.5, 2.0)), HU_BLOOD)
        paint(hu, occupancy(superellipse_sdf(x + 17, y + b + 11, 12, 8, 2.0)), HU_BLOOD - 5)
        if rng.random() < 0.5:
            gx = float(rng.uniform(-30, 30))
            gas = ellipsoid_sdf(x, y, z, (gx, grid.ys[0] + 4, float(rng.uniform(*spine.z_range))), (8, 4, 10))
            paint(hu, occupancy(gas), HU_AIR)


def _draw_disc(lower: VertebraSpec, upper: VertebraSpec, grid: TruthGrid, hu: np.ndarray) -> None:
    """The disc fills the column between two body centres; bone painted afterwards leaves the disc only
    between the endplates, so a collapsed endplate is filled by disc, as on real CT."""
    k0 = int(np.searchsorted(grid.zs, lower.center[2]))
    k1 = int(np.searchsorted(grid.zs, upper.center[2]))
    cx, cy = (lower.center[:2] + upper.center[:2]) / 2
    a = 1.03 * (lower.half_width + upper.half_width) / 2
    b = 1.03 * (lower.half_depth + upper.half_depth) / 2
    X = grid.xs[None, :] - cx
    Y = grid.ys[:, None] - cy
    sdf = superellipse_sdf(X, Y, a, b, 2.6)
    sdf = np.maximum(sdf, Y - 0.9 * b)
    nucleus = superellipse_sdf(X, Y - 0.1 * b, 0.5 * a, 0.45 * b, 2.0)
    value = np.where(nucleus < 0, HU_NUCLEUS, HU_DISC).astype(np.float32)
    paint(hu[k0:k1], occupancy(sdf)[None], value[None])


def _draw_canal(spec: VertebraSpec, hu_slab: np.ndarray, X, Y, Z) -> None:
    """Epidural fat around the thecal sac (CSF), behind the body; the arch is drawn over it."""
    a, b = spec.half_width, spec.half_depth
    k = a / 22.0
    cy = b + 9.5 * k
    canal = superellipse_sdf(X[0], Y[0] - cy, 10.5 * k, 8.5 * k, 2.0)
    sac = superellipse_sdf(X[0], Y[0] - cy - 0.5, 7.5 * k, 6.0 * k, 2.0)
    paint(hu_slab, occupancy(canal)[None], HU_FAT)
    paint(hu_slab, occupancy(sac)[None], HU_CSF)


def _draw_ribs(spine: SpineSpec, grid: TruthGrid, hu: np.ndarray) -> None:
    """Rib heads at each thoracic disc level, running postero-laterally out of the field of view."""
    x = grid.xs[None, None, :]
    y = grid.ys[None, :, None]
    for spec in spine.vertebrae:
        cx, cy, cz = spec.center
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        z = grid.zs[:, None, None] - cz
        k0 = int(np.searchsorted(grid.zs, cz + h - 8))
        k1 = int(np.searchsorted(grid.zs, cz + h + 10))
        zs = z[k0:k1]
        for side in (1, -1):
            rib = capsule_sdf(x - cx, y - cy, zs, (side * (a - 1), 0.5 * b, h + 1),
                              (side * (a + 40), b + 24, h - 6), 4.5)
            occ = occupancy(rib)
            paint(hu[k0:k1], occ, 900.0)
            paint(hu[k0:k1], occupancy(rib + 1.2), spine.trabecular_hu + 80)

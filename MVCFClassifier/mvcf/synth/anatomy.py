"""The normal anatomy of a 3-5 vertebra thoracolumbar segment (T9-L5), drawn on a 1 mm truth grid.

Frame: x = patient left, y = posterior, z = superior (LPS), millimetres, the fractured vertebra's body centre
near the origin. Arrays are indexed [z, y, x] like SimpleITK. Every vertebra is a real shape (templates.py:
masks of real spines, scaled and smoothly deformed per case); its cortical shell, endplates, trabecular
texture, disc footprint and canal follow that shape. Every structure is a signed-distance field turned into
partial-volume occupancy, painted from the back (fat) to the front (bone, then the fracture signs of
`signs.py`). Disc heights follow published morphometry (8-12 mm lumbar, 4-6 mm thoracic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from mvcf.synth.shapes import capsule_sdf, ellipsoid_sdf, occupancy, paint, smooth_noise, superellipse_sdf
from mvcf.synth.templates import PlacedShape, load_templates, place_template, templates_for

if TYPE_CHECKING:
    from mvcf.synth.signs import FractureSigns

LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
TRUTH_SPACING_MM = 1.0
FOV_X_MM = 88.0
FOV_Y_MM = (-38.0, 58.0)
TEMPLATE_LEVELS = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")   # levels with a real template

HU_FAT = -95.0
HU_MUSCLE = 50.0
HU_BLOOD = 42.0
HU_CSF = 10.0
HU_AIR = -950.0
HU_LUNG = -840.0
HU_DISC = 88.0
HU_NUCLEUS = 70.0


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
    shape: PlacedShape          # the real template, scaled and deformed for this case
    cortex_mm: float
    is_target: bool = False

    @property
    def half_width(self) -> float:    # a: left-right
        return self.shape.half_width

    @property
    def half_depth(self) -> float:    # b: antero-posterior
        return self.shape.half_depth

    @property
    def half_height(self) -> float:   # h: cranio-caudal
        return self.shape.half_height

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
                 osteoporotic: bool, size: float = 1.0) -> SpineSpec:
    """Random normal anatomy around `target_name` (levels kept within TEMPLATE_LEVELS), whose body centre
    sits at (x_shift, 0, 0); every vertebra is a real template (one source subject where it has the level)
    scaled by the patient's `size` and smoothly deformed."""
    lo, hi = LEVELS.index(TEMPLATE_LEVELS[0]), LEVELS.index(TEMPLATE_LEVELS[-1])
    t_index = LEVELS.index(target_name)
    below = int(rng.integers(1, n_levels - 1)) if n_levels > 3 else 1
    below = int(np.clip(below, n_levels - 1 - (t_index - lo), hi - t_index))
    names = [LEVELS[t_index + k] for k in range(below, below - n_levels, -1)]  # inferior to superior
    size = size * rng.normal(1.0, 0.05)
    x_shift = float(rng.uniform(-3, 3))
    lordosis = float(rng.normal(0, 0.0015))
    sources = sorted({t.source for t in load_templates() if t.level == target_name})
    source = str(rng.choice(sources))
    shapes = []
    for name in names:
        pool = templates_for(name, LEVELS, source)
        shapes.append(place_template(rng, pool[int(rng.integers(len(pool)))], size))
    heights = [shape.half_height for shape in shapes]
    discs = [_interp(LEVELS.index(n), 4.5, 10.0) * rng.normal(1.0, 0.08) for n in names[:-1]]
    centers = [0.0]
    for i in range(1, len(names)):
        centers.append(centers[-1] + heights[i - 1] + discs[i - 1] + heights[i])
    centers = [c - centers[below] for c in centers]
    specs, disc_heights = [], []
    for name, zc, shape in zip(names, centers, shapes):
        specs.append(VertebraSpec(
            name=name, center=np.array([x_shift, lordosis * zc * zc, zc]), shape=shape,
            cortex_mm=float(rng.uniform(0.2, 0.35) if osteoporotic else rng.uniform(0.3, 0.5)),
            is_target=(name == target_name)))
    for lower, upper in zip(specs[:-1], specs[1:]):
        disc_heights.append(float(upper.center[2] - upper.half_height - lower.center[2] - lower.half_height))
    bottom, top = specs[0], specs[-1]
    z_range = (float(bottom.center[2] - bottom.half_height - 5.0), float(top.center[2] + top.half_height + 5.0))
    return SpineSpec(vertebrae=specs, trabecular_hu=float(trabecular_hu),
                     cortex_hu=float(rng.uniform(1050, 1350) if osteoporotic else rng.uniform(1300, 1600)),
                     texture_hu=float(rng.uniform(65, 90) if osteoporotic else rng.uniform(55, 80)),
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


def render_anatomy(spine: SpineSpec, signs: "FractureSigns", rng: np.random.Generator) -> RenderedCase:
    """Paint the segment on the truth grid; the target vertebra's body is deformed and decorated by
    `signs` (height loss, posterior wall, then `signs.paint`)."""
    grid = TruthGrid.for_spine(spine)
    _, ny, nx = grid.shape
    hu = np.full(grid.shape, spine.fat_hu, dtype=np.float32)
    hu += 6.0 * smooth_noise(rng, grid.shape, 3.0)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    texture = smooth_noise(rng, grid.shape, 0.9)
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
        z_lo, z_hi = spec.shape.z_extent()
        k0 = int(np.searchsorted(grid.zs, cz + z_lo - 2.0))
        k1 = int(np.searchsorted(grid.zs, cz + z_hi + 2.0))
        zsl = slice(k0, k1)
        X = x2 - cx
        Y = y2 - cy
        Z = grid.zs[zsl][:, None, None] - cz
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        top = np.full((ny, nx), h, np.float32)
        bottom = np.full((ny, nx), -h, np.float32)
        wall_shift = np.zeros((1, 1, 1), np.float32)
        if spec.is_target:
            top, bottom = signs.body_heights(X[0], Y[0], a, b, h, top, bottom)
            wall_shift = signs.posterior_wall_shift(X, Z, a, b, h, top)
        fields = spec.shape.fields(X, Y, Z, top, bottom, wall_shift, pedicles=spec.is_target)
        body, arch = fields["body"], fields["arch"]
        canal_y, canal_radii = _canal(spec)
        _draw_canal(hu[zsl], X, Y, canal_y, canal_radii)
        bone = np.minimum(body, arch)
        occ = occupancy(bone)
        inner = occupancy(bone + spec.cortex_mm)
        slab_tex = texture[zsl]
        if vertical is not None:
            slab_tex = (slab_tex + (spine.vertical_striation - 1.0) * vertical[zsl]) / spine.vertical_striation
        trab = spine.trabecular_hu + spine.texture_hu * slab_tex
        trab = np.where(arch < body, trab + 60.0, trab)  # denser posterior elements
        paint(hu[zsl], occ, spine.cortex_hu)
        paint(hu[zsl], inner, trab)
        labels[zsl][occ >= 0.5] = spec.label
        if spec.is_target:
            top_s, bottom_s = spec.shape.endplates(X[0], Y[0], top, bottom)
            rendered.target = VertebraGeometry(
                spec=spec, z_slice=zsl, X=X, Y=Y, Z=Z, top=top_s, bottom=bottom_s, body_sdf=body,
                posterior_sdf=arch, pedicle_sdf=fields["pedicle"], canal_center_y=canal_y,
                canal_radii=canal_radii)
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


def _canal(spec: VertebraSpec) -> tuple[float, tuple[float, float]]:
    """Centre (local y, mm) and half width / half depth of the spinal canal, from the template."""
    m, scale = spec.shape.template.measures, spec.shape.scale
    return (m["canal_y_mm"] * float(scale[1]),
            (max(m["canal_width_mm"], 12.0) / 2 * float(scale[0]), max(m["canal_ap_mm"], 9.0) / 2 * float(scale[1])))


def _draw_disc(lower: VertebraSpec, upper: VertebraSpec, grid: TruthGrid, hu: np.ndarray) -> None:
    """The disc fills the column between two body centres, in the union of both bodies' axial footprints;
    bone painted afterwards leaves the disc only between the endplates, so a collapsed endplate is filled by
    disc, as on real CT."""
    reach = [0.1 if v.is_target else 0.6 for v in (lower, upper)]     # a collapse is filled by disc
    k0 = int(np.searchsorted(grid.zs, lower.center[2] + reach[0] * lower.half_height))
    k1 = int(np.searchsorted(grid.zs, upper.center[2] - reach[1] * upper.half_height))
    x = grid.xs[None, :]
    y = grid.ys[:, None]
    sdf = np.minimum(lower.shape.footprint(x - lower.center[0], y - lower.center[1]),
                     upper.shape.footprint(x - upper.center[0], y - upper.center[1])) - 0.5
    cx, cy = (lower.center[:2] + upper.center[:2]) / 2
    a = (lower.half_width + upper.half_width) / 2
    b = (lower.half_depth + upper.half_depth) / 2
    nucleus = superellipse_sdf(x - cx, y - cy - 0.1 * b, 0.5 * a, 0.45 * b, 2.0)
    value = np.where(nucleus < 0, HU_NUCLEUS, HU_DISC).astype(np.float32)
    paint(hu[k0:k1], occupancy(sdf)[None], value[None])


def _draw_canal(hu_slab: np.ndarray, X, Y, canal_y: float, radii: tuple[float, float]) -> None:
    """Epidural fat around the thecal sac (CSF), behind the body; the arch is drawn over it."""
    canal = superellipse_sdf(X[0], Y[0] - canal_y, radii[0], radii[1], 2.0)
    sac = superellipse_sdf(X[0], Y[0] - canal_y - 0.5, 0.72 * radii[0], 0.7 * radii[1], 2.0)
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

"""Real vertebra shapes as the generator's templates, and their random smooth variation per case.

`templates/vertebrae.npz` (built by scripts/make_vertebra_templates.py from the VerSe, TotalSegmentator and
TPTBox sample masks; licences in templates/ATTRIBUTION.md) holds each vertebra on a 1 mm canonical grid
(x = left, y = posterior, z = superior along the spine, origin = body centre), split into body, posterior arch
and pedicles. A case places a template at each level, scaled per axis and bent by a smooth random displacement
field, and reads its signed-distance fields at the warped coordinates; the vertebral body can be collapsed
(endplate maps) and its posterior wall displaced (fracture signs) by warping the body's coordinates alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

TEMPLATE_FILE = Path(__file__).with_name("templates") / "vertebrae.npz"
_PAD = 8
_OUTSIDE_MM = 30.0


@dataclass(frozen=True)
class Template:
    key: str
    source: str
    level: str
    measures: dict

    @property
    def half_width(self) -> float:
        return self.measures["body_width_mm"] / 2

    @property
    def half_depth(self) -> float:
        return self.measures["body_depth_mm"] / 2

    @property
    def half_height(self) -> float:
        return self.measures["body_height_mm"] / 2


@lru_cache(maxsize=1)
def _archive() -> dict[str, np.ndarray]:
    with np.load(TEMPLATE_FILE) as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=1)
def load_templates() -> tuple[Template, ...]:
    index = json.loads(_archive()["index"].tobytes())
    return tuple(Template(key=e["key"], source=e["source"], level=e["level"],
                          measures={k: v for k, v in e.items() if k.endswith("_mm") or k.endswith("_ml")})
                 for e in index)


def _sdf(mask: np.ndarray) -> np.ndarray:
    """Smoothed signed distance (mm, negative inside) of a binary mask on the 1 mm grid."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    sdf = (outside - inside + np.where(mask, 0.5, -0.5)).astype(np.float32)
    return ndimage.gaussian_filter(sdf, 0.8)


@dataclass
class TemplateFields:
    """Signed distances of one template (padded grid [z, y, x]) and its body's endplate surfaces."""

    body: np.ndarray
    arch: np.ndarray
    pedicle: np.ndarray
    origin: np.ndarray          # (x, y, z) mm of padded voxel (0, 0, 0) from the body centre
    top: np.ndarray             # [y, x] local z (mm) of the body's superior surface, its half height outside
    bottom: np.ndarray
    footprint: np.ndarray       # [y, x] 2D signed distance of the body's axial projection
    boxes: dict                 # field name -> (lo, hi) (x, y, z) mm where it is within 3 mm of its surface


@lru_cache(maxsize=32)
def template_fields(key: str) -> TemplateFields:
    data = _archive()
    parts = np.pad(data[f"{key}__parts"], _PAD)
    origin = data[f"{key}__origin"].astype(float) - _PAD
    body = parts == 1
    template = next(t for t in load_templates() if t.key == key)
    zs = origin[2] + np.arange(parts.shape[0], dtype=np.float32)
    has = body.any(axis=0)
    top = np.where(has, zs[::-1][np.argmax(body[::-1], axis=0)], template.half_height)
    bottom = np.where(has, zs[np.argmax(body, axis=0)], -template.half_height)
    top = ndimage.gaussian_filter(top.astype(np.float32), 1.0)
    bottom = ndimage.gaussian_filter(bottom.astype(np.float32), 1.0)
    footprint = _sdf(has[None])[0] if has.any() else np.full(has.shape, _OUTSIDE_MM, np.float32)
    sdfs = {"body": _sdf(body), "arch": _sdf(parts >= 2), "pedicle": _sdf(parts == 3)}
    boxes = {}
    for name, sdf in sdfs.items():
        kji = np.argwhere(sdf < 3.0)
        boxes[name] = (origin + kji.min(axis=0)[::-1], origin + kji.max(axis=0)[::-1])
    return TemplateFields(**sdfs, origin=origin, top=top, bottom=bottom, footprint=footprint, boxes=boxes)


def templates_for(level: str, levels: Sequence[str], source: Optional[str] = None) -> list[Template]:
    """Templates of `level` (from `source` when it has one), else of the nearest level (in the order
    `levels`, cranial to caudal) that has any."""
    pool = load_templates()
    same = [t for t in pool if t.level == level]
    if source is not None and any(t.source == source for t in same):
        return [t for t in same if t.source == source]
    if same:
        return same
    i = list(levels).index(level)
    nearest = min(pool, key=lambda t: abs(list(levels).index(t.level) - i))
    return [t for t in pool if t.level == nearest.level]


@dataclass
class PlacedShape:
    """One template at one level of one case: per-axis scale and a smooth displacement (sum of waves)."""

    template: Template
    scale: np.ndarray            # (x, y, z)
    wave_axis: np.ndarray        # (n,) the axis (0 x, 1 y, 2 z) each wave runs along
    wave_k: np.ndarray           # (n,) rad/mm
    wave_phase: np.ndarray       # (n,)
    wave_amp: np.ndarray         # (n, 3) mm, displacement of each axis by each wave

    @property
    def half_width(self) -> float:
        return self.template.half_width * float(self.scale[0])

    @property
    def half_depth(self) -> float:
        return self.template.half_depth * float(self.scale[1])

    @property
    def half_height(self) -> float:
        return self.template.half_height * float(self.scale[2])

    def z_extent(self) -> tuple[float, float]:
        fields = template_fields(self.template.key)
        n = fields.body.shape[0]
        return (float(fields.origin[2] + _PAD) * float(self.scale[2]),
                float(fields.origin[2] + n - _PAD) * float(self.scale[2]))

    def _to_template(self, X, Y, Z):
        """Template coordinates (mm) of local points: undo the displacement, then the scale. Each wave runs
        along one axis, so the field is a sum of broadcast 1-D profiles (cheap) yet bends, tapers and shears
        the shape smoothly."""
        points = (X, Y, Z)
        out = [np.asarray(c, np.float32) for c in points]
        for axis, k, phase, amp in zip(self.wave_axis, self.wave_k, self.wave_phase, self.wave_amp):
            profile = np.sin(k * points[axis] + phase).astype(np.float32)
            out = [c - a * profile for c, a in zip(out, amp)]
        return tuple(c / s for c, s in zip(out, self.scale))

    @staticmethod
    def _lookup(field: np.ndarray, origin: np.ndarray, t) -> np.ndarray:
        shape = np.broadcast_shapes(*(np.shape(c) for c in t))
        coords = np.empty((len(t),) + shape, np.float32)
        for i, (c, o) in enumerate(zip(t[::-1], origin[len(t) - 1::-1])):
            coords[i] = c - o
        return ndimage.map_coordinates(field, coords, order=1, mode="constant", cval=_OUTSIDE_MM)

    def _boxed(self, name: str, X, Y, Z) -> np.ndarray:
        """Field `name` (scaled mm) at the broadcast local points X, Y, Z, looked up only inside the box the
        scaled, deformed template can reach (a vertebra fills a fraction of its slab). A coordinate given
        as a 1-D profile along its own axis is cropped; a warped (full) one is not."""
        f = template_fields(self.template.key)
        k = float(self.scale.mean())
        lo, hi = f.boxes[name]
        slack = float(np.abs(self.wave_amp).sum(axis=0).max()) + 2.0
        lo, hi = lo * self.scale - slack, hi * self.scale + slack
        arrays = [np.asarray(c, np.float32) for c in (X, Y, Z)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        crop = [slice(None)] * 3
        for array_axis in range(3):
            c = 2 - array_axis
            a = arrays[c]
            if a.ndim == 3 and a.size == shape[array_axis] and a.shape[array_axis] == shape[array_axis]:
                inside = np.flatnonzero((a.ravel() >= lo[c]) & (a.ravel() <= hi[c]))
                if inside.size == 0:
                    return np.full(shape, _OUTSIDE_MM * k, np.float32)
                crop[array_axis] = slice(int(inside[0]), int(inside[-1]) + 1)
        sub = [a[tuple(s if a.shape[i] > 1 else slice(None) for i, s in enumerate(crop))] for a in arrays]
        out = np.full(shape, _OUTSIDE_MM, np.float32)
        out[tuple(crop)] = self._lookup(getattr(f, name), f.origin, self._to_template(*sub))
        return out * k

    def fields(self, X, Y, Z, top: np.ndarray, bottom: np.ndarray, wall_shift,
               pedicles: bool = False) -> dict[str, np.ndarray]:
        """Body, arch (and with `pedicles` pedicle) signed distances at local points (X [1,1,x], Y [1,y,1],
        Z [z,1,1]). `top` and `bottom` ([y, x]) are where the body's nominal half heights (+h, -h) have moved
        to (collapse); `wall_shift` ([z, 1, x]) moves the posterior part of the body backwards (bulge,
        retropulsion). The body alone is warped, so the posterior elements keep their shape."""
        out = {"arch": self._boxed("arch", X, Y, Z)}
        h = self.half_height
        moved = bool(np.any(np.abs(top - h) > 1e-3) or np.any(np.abs(bottom + h) > 1e-3) or np.any(wall_shift))
        if moved:
            t, b = top[None], bottom[None]
            zb = (Z - (t + b) / 2) * (2 * h / np.maximum(t - b, 2.0))
            wall = self.template.measures["posterior_wall_y_mm"] * float(self.scale[1])
            yb = Y - wall_shift * np.clip((Y - (wall - 14.0)) / 14.0, 0, 1)
            out["body"] = self._boxed("body", X, yb, zb)
        else:
            out["body"] = self._boxed("body", X, Y, Z)
        if pedicles:
            out["pedicle"] = self._boxed("pedicle", X, Y, Z)
        return out

    def endplates(self, X2, Y2, top: np.ndarray, bottom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local z (mm) of the superior and inferior body surfaces per column ([y, x]) after the collapse."""
        f = template_fields(self.template.key)
        tx, ty, _ = self._to_template(X2, Y2, np.zeros((), np.float32))
        h = self.half_height
        surfaces = []
        for surface in (f.top, f.bottom):
            local = self._lookup(surface, f.origin[:2], (tx, ty))
            local = np.where(local == _OUTSIDE_MM, np.sign(surface.mean()) * self.template.half_height, local)
            surfaces.append((top + bottom) / 2 + local * float(self.scale[2]) * (top - bottom) / (2 * h))
        return surfaces[0].astype(np.float32), surfaces[1].astype(np.float32)

    def footprint(self, X2, Y2) -> np.ndarray:
        """2D signed distance (mm) of the body's axial footprint at local points."""
        f = template_fields(self.template.key)
        tx, ty, _ = self._to_template(X2, Y2, np.zeros((), np.float32))
        return self._lookup(f.footprint, f.origin[:2], (tx, ty)) * float(self.scale[:2].mean())


def place_template(rng: np.random.Generator, template: Template, size: float,
                   deformation_mm: float = 1.5) -> PlacedShape:
    """`template` scaled by the patient's `size` and a little per axis, bent by four random waves (one along
    each axis, one more along a random axis; wavelengths 35-90 mm, each displacing every axis by up to
    `deformation_mm`): smooth, anatomy-preserving variation."""
    scale = size * rng.normal(1.0, 0.04, size=3)
    axes = np.array([0, 1, 2, int(rng.integers(0, 3))])
    return PlacedShape(template=template, scale=scale.astype(np.float32), wave_axis=axes,
                       wave_k=(2 * np.pi / rng.uniform(35.0, 90.0, size=len(axes))).astype(np.float32),
                       wave_phase=rng.uniform(0, 2 * np.pi, size=len(axes)).astype(np.float32),
                       wave_amp=rng.uniform(-deformation_mm, deformation_mm, size=(len(axes), 3)).astype(np.float32))

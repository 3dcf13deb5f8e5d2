"""Signed-distance primitives, soft occupancy and smooth noise: the drawing tools of the generator.

Distances are in millimetres on the 1 mm truth grid (negative inside). `occupancy` turns a signed distance
into a partial-volume fraction, so a 0.4 mm cortex renders as a faint, thin shell instead of aliasing.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


def occupancy(sdf: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Fraction of a 1 mm voxel inside the shape whose signed distance (mm) is `sdf`."""
    return np.clip(0.5 - sdf / width, 0.0, 1.0, dtype=np.float32)


def paint(volume: np.ndarray, occ: np.ndarray, value) -> None:
    """volume <- volume * (1 - occ) + value * occ, in place (value may be an array)."""
    volume += occ * (value - volume)


def superellipse_sdf(x: np.ndarray, y: np.ndarray, a, b, p: float = 2.4) -> np.ndarray:
    """Approximate signed distance (mm) to the superellipse |x/a|^p + |y/b|^p = 1."""
    f = (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)
    return (f - 1.0) * np.minimum(a, b)


def ellipsoid_sdf(x, y, z, center, radii) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid."""
    (cx, cy, cz), (rx, ry, rz) = center, radii
    f = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
    return (f - 1.0) * min(rx, ry, rz)


def box_sdf(x, y, z, lo, hi) -> np.ndarray:
    """Signed distance (mm) to an axis-aligned box [lo, hi]."""
    dx = np.maximum(lo[0] - x, x - hi[0])
    dy = np.maximum(lo[1] - y, y - hi[1])
    dz = np.maximum(lo[2] - z, z - hi[2])
    outside = np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2 + np.maximum(dz, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(dx, dy), dz), 0)
    return outside + inside


def capsule_sdf(x, y, z, p0, p1, radius) -> np.ndarray:
    """Signed distance (mm) to a capsule (a rod with round ends) from p0 to p1."""
    p0 = np.asarray(p0, float)
    d = np.asarray(p1, float) - p0
    px, py, pz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / float(d @ d), 0.0, 1.0)
    return np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2) - radius


TILE_SHAPE = (128, 112, 112)


@lru_cache(maxsize=16)
def _noise_tile(sigma_zyx: tuple[float, float, float]) -> np.ndarray:
    """A periodic, unit-variance Gaussian-filtered noise tile, the same in every process (fixed seed)."""
    seed = int(round(sum(s * 1000 * (i + 1) for i, s in enumerate(sigma_zyx))))
    rng = np.random.default_rng(np.random.SeedSequence([20261127, seed]))
    tile = ndimage.gaussian_filter(rng.standard_normal(TILE_SHAPE, dtype=np.float32), sigma_zyx, mode="wrap",
                                   truncate=3.0)
    tile -= tile.mean()
    tile /= tile.std()
    tile.setflags(write=False)
    return tile


def smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise field of `shape` ([z, y, x]); sigma in voxels (a
    number or a (z, y, x) triple). Cut from a cached periodic tile at a random offset with random flips, so
    a case costs an index gather instead of a 3D filter; `rng` makes the cut reproducible."""
    sigma_zyx = tuple(float(v) for v in np.broadcast_to(np.asarray(sigma, float), (3,)))
    tile = _noise_tile(sigma_zyx)
    index = []
    for n, size in zip(shape, TILE_SHAPE):
        idx = (np.arange(n) + int(rng.integers(0, size))) % size
        index.append(idx[::-1] if rng.random() < 0.5 else idx)
    return tile[np.ix_(*index)]


def sparse_min(target: np.ndarray, axes: tuple, sdf_fn, lo, hi, margin: float = 2.0) -> None:
    """target = min(target, sdf_fn(X, Y, Z)) evaluated only inside the box [lo - margin, hi + margin] (mm).
    `axes` = (xs, ys, zs) 1-D coordinates of target's x, y, z axes (z first in the array). A primitive is
    only a few thousand voxels of a slab, so this is what keeps a case under a fraction of a second."""
    xs, ys, zs = axes
    sl = []
    for coords, a, b in ((zs, lo[2], hi[2]), (ys, lo[1], hi[1]), (xs, lo[0], hi[0])):
        i0 = int(np.searchsorted(coords, a - margin))
        i1 = int(np.searchsorted(coords, b + margin))
        if i1 <= i0:
            return
        sl.append(slice(i0, i1))
    X = xs[sl[2]][None, None, :]
    Y = ys[sl[1]][None, :, None]
    Z = zs[sl[0]][:, None, None]
    view = target[tuple(sl)]
    np.minimum(view, sdf_fn(X, Y, Z), out=view)

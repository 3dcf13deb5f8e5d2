"""Locate the fractured vertebra: from a point (RAS mm, LPS mm or IJK), a box ROI, or a mask + label.

Every way of naming a vertebra (the CLI options of `mvcf views` and `mvcf predict`, a manifest row, a
locations file entry, the Slicer module) becomes a `VertebraQuery`, and `resolve(ct, query)` turns it into
a `VertebraLocation` in LPS millimetres, checked to lie inside the CT. `parse_point` is the one parser of
three coordinates (negative numbers included).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from mvcf.ctimage import CTImage, ras_to_lps, same_voxel_centres
from mvcf.errors import MVCFError, shown_numbers

POINT_UNITS = ("ras", "lps", "ijk")


@dataclass
class VertebraLocation:
    """Where the vertebra is. `center_lps` in mm (LPS); `extent_mm` the box size along L, P, S when known."""

    center_lps: np.ndarray
    extent_mm: Optional[np.ndarray] = None
    name: str = ""
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.center_lps = np.asarray(self.center_lps, dtype=float).reshape(3)
        if self.extent_mm is not None:
            self.extent_mm = np.asarray(self.extent_mm, dtype=float).reshape(3)

    def to_dict(self) -> dict:
        return {"center_lps": [float(v) for v in self.center_lps],
                "extent_mm": None if self.extent_mm is None else [float(v) for v in self.extent_mm],
                "name": self.name, "source": self.source, "warnings": list(self.warnings)}


def parse_point(value: Any, what: str = "point") -> np.ndarray:
    """Three finite numbers from a sequence or from text ('x,y,z', also with ';', spaces or brackets): the one
    point parser of the CLI, the manifest, the locations file and the Slicer adapters."""
    given = value
    if isinstance(value, str):
        value = [p for p in re.split(r"[,;\s]+", value.strip().strip("[]()")) if p]
    try:
        if isinstance(value, (bool, np.bool_)) or any(isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError
        point = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        point = np.zeros(0)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        shown = given.tolist() if isinstance(given, np.ndarray) else given
        raise MVCFError(f"{what} must be three finite numbers X,Y,Z, got {shown!r}")
    return point


def _require_inside(ct: CTImage, lps: np.ndarray, what: str) -> None:
    if not ct.contains(lps):
        ijk = ct.lps_to_index(lps)

        def shown(v: np.ndarray) -> str:   # 1e308 mm is no 300-digit number in an error line
            return ", ".join(f"{x:.1f}" if abs(x) < 1e6 else f"{x:.3g}" for x in v)
        raise MVCFError(f"{what} LPS ({shown(lps)}) mm = voxel ({shown(ijk)}) is outside the CT (size "
                        f"{ct.size_ijk})")


def from_point(ct: CTImage, point: Sequence[float], unit: str, name: str = "") -> VertebraLocation:
    """A location from a point in `unit`: 'ras' or 'lps' (mm, world) or 'ijk' (continuous voxel index)."""
    unit = unit.lower()
    if unit not in POINT_UNITS:
        raise MVCFError(f"point unit must be one of {', '.join(POINT_UNITS)}, got {unit!r}")
    p = parse_point(point, f"{unit.upper()} point")
    with np.errstate(over="ignore", invalid="ignore"):   # 1e308 voxels: no LPS point, and no numpy warning
        lps = {"ras": lambda: ras_to_lps(p), "lps": lambda: p, "ijk": lambda: ct.index_to_lps(p)}[unit]()
        far = not np.all(np.isfinite(lps)) or not np.all(np.isfinite(ct.lps_to_index(lps)))
    if far:
        raise MVCFError(f"{unit.upper()} point {shown_numbers(p)} is outside the CT (size {ct.size_ijk})")
    _require_inside(ct, lps, f"{unit.upper()} point")
    return VertebraLocation(center_lps=lps, name=name, source=f"point ({unit})")


#: A box around one vertebra (a Slicer ROI, say) is at most this large along L, P, S (mm): a lumbar vertebra
#: with its processes is under 100 mm across, its body under 40 mm tall; a larger box holds several.
BOX_MAX_MM = (160.0, 160.0, 80.0)
#: A box thinner than this along any axis (mm) encloses nothing.
BOX_MIN_MM = 1.0
#: A box thinner than this along any axis (mm) does not enclose a vertebral body (15-50 mm each way; even a
#: vertebra plana spans its width and depth): most often a Slicer ROI left at its default depth.
BOX_SMALL_MM = 10.0
#: A label smaller than this (cm3) is no whole vertebra (a lumbar one holds 40-90 cm3, a cervical one 5-10):
#: a fragment, a stray label value or a vertebra mostly outside the mask.
LABEL_MIN_CM3 = 2.0


def from_box(ct: CTImage, min_lps: Sequence[float], max_lps: Sequence[float], name: str = "") -> VertebraLocation:
    """A location from an axis-aligned LPS box given by two opposite corners (mm). A flat box is refused; one
    larger than one vertebra is classified at its centre with a warning (its centre may lie on a disc or
    between vertebrae, and its height spreads the heatmap)."""
    a, b = parse_point(min_lps, "box corner"), parse_point(max_lps, "box corner")
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    center = (lo + hi) / 2
    size = hi - lo
    shown = " x ".join(f"{v:.0f}" for v in size)
    if np.any(size < BOX_MIN_MM):
        raise MVCFError(f"the box is flat ({' x '.join(f'{v:.1f}' for v in size)} mm along L, P, S): a box must "
                        "enclose the vertebra (give two opposite corners, or a point)")
    _require_inside(ct, center, "box centre")
    warnings = []
    if np.any(size < BOX_SMALL_MM):
        warnings.append(f"the box is {' x '.join(f'{v:.1f}' for v in size)} mm (L, P, S), thinner than a vertebral "
                        f"body (under {BOX_SMALL_MM:g} mm along an axis): it is classified at its centre, which lies "
                        "on the body only if the box was drawn around it")
    if np.any(size > np.asarray(BOX_MAX_MM)):
        warnings.append(f"the box is {shown} mm (L, P, S), larger than one vertebra (at most "
                        f"{' x '.join(f'{v:.0f}' for v in BOX_MAX_MM)} mm): it is classified at its centre, LPS "
                        f"({center[0]:.1f}, {center[1]:.1f}, {center[2]:.1f}) mm, which may lie between vertebrae")
    return VertebraLocation(center_lps=center, extent_mm=size, name=name, source="box", warnings=warnings)


def from_mask(ct: CTImage, mask: CTImage, label: int, name: str = "") -> VertebraLocation:
    """A location at the centroid (LPS mm) of `label` in `mask`; the extent is the label's LPS bounding box.

    The mask's own geometry is used, so it need not share the CT's grid, only its physical space. Messages
    name the label by `name` first where there is one (a Slicer segment is label 1 of its own mask)."""
    from mvcf.ct_plausibility import check_vertebra_label

    label = int(label)
    check_vertebra_label(label)
    kji = np.argwhere(mask.voxels == label)
    if kji.size == 0:
        present = np.unique(mask.voxels)
        present = present[present != 0]
        shown = ", ".join(str(v) for v in present[:20]) + (" ..." if present.size > 20 else "")
        raise MVCFError(f"label {label} is absent from the mask {mask.source or ''}".rstrip()
                        + f" (labels present: {shown or 'none'})")
    called = f"'{name}' (label {label})" if name and name != f"label {label}" else f"label {label}"
    kji, warnings = main_piece(kji, mask.spacing, called)
    ijk = kji[:, ::-1].astype(float)
    center = mask.index_to_lps(ijk.mean(axis=0))
    volume = len(ijk) * float(np.prod(mask.spacing)) / 1000.0
    if volume < LABEL_MIN_CM3:
        warnings.append(f"{called} holds {volume:.2g} cm3, less than any whole vertebra (at least "
                        f"{LABEL_MIN_CM3:g} cm3): a fragment or a stray label value, or a vertebra mostly outside "
                        "the mask; the location is its centroid")
    gap = _front_gap_mm(mask, ijk, center)
    if gap is not None:
        warnings.append(f"{called}: its front (the body) is split by a gap of {gap:.0f} mm head to foot, as by a "
                        "disc: if the label holds two vertebrae, this location lies between them (give each "
                        "vertebra its own label)")
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)
    lo, hi = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5
    box = np.array([mask.index_to_lps(lo + c * (hi - lo)) for c in corners])
    _require_inside(ct, center, f"centroid of {called}")
    return VertebraLocation(center_lps=center, extent_mm=box.max(axis=0) - box.min(axis=0),
                            name=name or f"label {label}", source=f"mask label {label}", warnings=warnings)


#: Pieces of one label farther apart than this (mm, between their boxes) are not one vertebra: a vertebra's
#: body and arch, split by a thin pedicle at coarse voxels, lie within a few millimetres of each other.
PIECE_GAP_MM = 10.0
#: The share of a label's voxels lying apart from its main piece above which the label is refused (two
#: vertebrae under one label); below it those voxels are left out, with a warning (strays of a segmenter).
APART_MAX_SHARE = 0.10


#: A gap head to foot in the front of a label (its body) wider than this many voxel steps, and than
#: FRONT_GAP_MIN_MM, is a disc between two bodies: one label holding two touching vertebrae (its pieces touch
#: through the facet joints, so main_piece sees one) was classified at the disc between them.
FRONT_GAP_STEPS = 1.5
FRONT_GAP_MIN_MM = 4.0


def _front_gap_mm(mask: CTImage, ijk: np.ndarray, center: np.ndarray) -> Optional[float]:
    """The widest gap head to foot (mm) among the label's voxels more than 5 mm in front of its centroid,
    when it is wide enough to be a disc; else None. One vertebra's body has none: every real and synthetic
    vertebra label at hand leaves one voxel step at most; two under one label leave 6-9 mm on the sample."""
    lps = mask.index_to_lps(ijk)
    front = np.sort(lps[lps[:, 1] < center[1] - 5.0, 2])
    if front.size < 50:
        return None
    widest = float(np.diff(front).max())
    z_per_step = np.abs(mask.direction[2] * np.asarray(mask.spacing, float)).max()   # mm of z per index step
    limit = max(FRONT_GAP_STEPS * float(z_per_step), FRONT_GAP_MIN_MM)
    return widest if widest > limit else None


def main_piece(kji: np.ndarray, spacing: np.ndarray, called: str) -> tuple[np.ndarray, list[str]]:
    """The voxels (k, j, i rows) of the label's main piece: its largest 26-connected component and every
    piece within PIECE_GAP_MM of it, and the warnings. A label whose voxels lie far apart was located at their
    centroid, between the pieces: two vertebrae under one label were classified at the one between them."""
    from scipy import ndimage

    lo = kji.min(axis=0)
    grid = np.zeros(tuple(kji.max(axis=0) - lo + 1), bool)
    grid[tuple((kji - lo).T)] = True
    pieces, count = ndimage.label(grid, structure=np.ones((3, 3, 3), bool))
    if count == 1:
        return kji, []
    sizes = np.bincount(pieces.ravel())[1:]
    boxes = ndimage.find_objects(pieces)
    main = int(np.argmax(sizes))
    step = np.asarray(spacing, float)[::-1]   # mm per k, j, i

    def gap_mm(box) -> float:
        apart = [max(b.start - m.stop + 1, m.start - b.stop + 1, 0) * d for b, m, d in zip(box, boxes[main], step)]
        return float(np.linalg.norm(apart))

    near = [n for n in range(count) if n == main or gap_mm(boxes[n]) <= PIECE_GAP_MM]
    apart = int(sizes.sum() - sizes[near].sum())
    if apart == 0:
        return kji, []
    share = apart / float(sizes.sum())
    far = max(gap_mm(boxes[n]) for n in range(count) if n not in near)
    if share > APART_MAX_SHARE:
        raise MVCFError(f"{called} of the mask lies in pieces {far:.0f} mm apart ({100 * share:.0f} % of its "
                        f"voxels away from the largest piece): one label must hold one vertebra (two under one "
                        "label would be classified at a point between them)")
    keep = np.isin(pieces[tuple((kji - lo).T)], np.asarray(near) + 1)
    return kji[keep], [f"{called}: left out {apart} voxels ({100 * share:.1f} %) lying up to {far:.0f} mm "
                       "apart from its main piece (stray voxels of the segmentation)"]


def refine_on_body(ct: CTImage, location: VertebraLocation, search_mm: float = 80.0,
                   max_shift_mm: float = 25.0) -> VertebraLocation:
    """Recentre a location on the vertebral body in the axial plane (off unless asked for).

    The body's cortex is the largest ring in an axial CT slice: edges (Canny) of five 1 mm axial slices
    2 mm apart vote in a circular Hough transform for radii 12-30 mm, weighted by a Gaussian prior
    (sigma 15 mm) around the given point; the strongest circle centre is the new in-plane centre. The
    superior-inferior position is kept. A heuristic: it moves a mask centroid (pulled back by the posterior
    elements) onto the body, but can lock onto another ring; a shift over `max_shift_mm` is refused with a
    warning."""
    from skimage.feature import canny
    from skimage.transform import hough_circle

    from mvcf.views import ViewSpec, build_views

    size = int(round(search_mm))
    spec = ViewSpec(mode="2.5d-adjacent", size_px=size, spacing_mm=1.0, n_slices=5, slice_gap_mm=2.0,
                    windows=())
    result = build_views(ct, location, spec)
    radii = np.arange(12, 31)
    votes = np.zeros((size, size))
    for hu in np.clip(result.array, -200, 600):
        edges = canny(hu, sigma=2.5, low_threshold=20, high_threshold=60)
        votes += hough_circle(edges, radii, normalize=True).max(axis=0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    votes *= np.exp(-0.5 * (yy ** 2 + xx ** 2) / 15.0 ** 2)
    if not np.any(votes > 0):
        return replace(location, warnings=location.warnings + ["refine: no bone edges near the point; "
                                                               "location kept"])
    row, col = np.unravel_index(np.argmax(votes), votes.shape)
    new_center = result.grids[0].index_to_lps([col, row, 2])
    shift = float(np.linalg.norm(new_center - location.center_lps))
    if shift > max_shift_mm:
        return replace(location, warnings=location.warnings + [
            f"refine: the vertebral body found is {shift:.0f} mm away (> {max_shift_mm:g}); location kept"])
    return replace(location, center_lps=new_center, source=location.source + " + refined on body")


@dataclass(frozen=True)
class VertebraQuery:
    """One vertebra as the user named it: exactly one of a point in `unit` ('lps', 'ras' or 'ijk'), a box
    (two opposite LPS corners) or a mask file with its label. `refine` recentres it on the vertebral body;
    `heatmap` (optional) asks `mvcf predict` for a Grad-CAM file for this vertebra, `views` (optional) for
    the model input it used, written into that folder (one NIfTI per grid and window)."""

    name: str = ""
    point: Optional[tuple[float, float, float]] = None
    unit: str = ""
    mask: Optional[Path] = None
    label: Optional[int] = None
    box: Optional[tuple[tuple[float, float, float], tuple[float, float, float]]] = None
    refine: bool = False
    heatmap: Optional[Path] = None
    views: Optional[Path] = None

    def __post_init__(self) -> None:
        given = [k for k, v in (("point", self.point), ("box", self.box), ("mask", self.mask)) if v is not None]
        if len(given) != 1:
            raise MVCFError("give exactly one of a point (RAS, LPS or IJK), a box or a mask with a label"
                            + (f", not {' and '.join(given)}" if given else ""))
        if self.mask is not None and self.label is None:
            raise MVCFError("a mask needs a label (the vertebra's label value, e.g. 31 for L1 in "
                            "TotalSegmentator)")
        if self.mask is None and self.label is not None:
            raise MVCFError("a label applies only with a mask")
        if self.point is not None:
            if str(self.unit).lower() not in POINT_UNITS:
                raise MVCFError(f"point unit must be one of {', '.join(POINT_UNITS)}, got {self.unit!r}")
            point = tuple(float(v) for v in parse_point(self.point, f"{str(self.unit).upper()} point"))
            object.__setattr__(self, "point", point)
            object.__setattr__(self, "unit", str(self.unit).lower())

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in a JSON locations file (paths as given)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.point is not None:
            entry[f"point_{self.unit}"] = list(self.point)
        elif self.box is not None:
            entry["box_lps"] = [list(c) for c in self.box]
        else:
            entry.update(mask=str(self.mask), label=self.label)
        if self.heatmap is not None:
            entry["heatmap"] = str(self.heatmap)
        if self.views is not None:
            entry["views"] = str(self.views)
        return entry


def resolve(ct: CTImage, query: VertebraQuery, masks: Optional[dict] = None) -> VertebraLocation:
    """The VertebraLocation of `query` in `ct`: the one way from what a user names to a checked location.

    `masks` (optional, a dict the caller keeps for one run) caches each mask file read, or the error reading
    it raised, so several vertebrae of one segmentation read it once."""
    if query.mask is not None:
        mask, boxes = _read_mask_cached(query.mask, masks if masks is not None else {})
        moved = moved_grid(ct, mask)
        try:
            location = from_mask(ct, _label_region(mask, boxes, int(query.label)), int(query.label),
                                 name=query.name)
        except MVCFError as exc:
            raise MVCFError(f"{exc}; {moved}" if moved and "outside the CT" in str(exc) else str(exc)) from None
        if moved:
            location = replace(location, warnings=location.warnings + [moved])
    elif query.box is not None:
        location = from_box(ct, query.box[0], query.box[1], name=query.name)
    else:
        location = from_point(ct, query.point, query.unit, name=query.name)
    return refine_on_body(ct, location) if query.refine else location


def moved_grid(ct: CTImage, mask: CTImage) -> Optional[str]:
    """A mask with the CT's size and spacing but another origin or direction: most often a mask made on this
    CT whose header was lost or rewritten. Its labels are placed by its own header (a mask on another grid is
    allowed), so this is said, with how far, never corrected; None when the grids agree or plainly differ."""
    if mask.size_ijk != ct.size_ijk or not np.allclose(mask.spacing, ct.spacing, rtol=1e-4, atol=1e-4):
        return None
    if same_voxel_centres(mask, ct):   # listed in another axis order (RAS vs LPS), not moved
        return None
    shift = float(np.linalg.norm(mask.origin - ct.origin))
    half = 0.5 * float(min(ct.spacing))   # half a voxel moves every label by half a voxel: said (it was not)
    differences = [f"an origin {shift:.1f} mm away"] if shift >= half * (1 - 1e-6) else []
    if not np.allclose(mask.direction, ct.direction, atol=1e-4):
        differences.append("another direction")
    if not differences:
        return None
    what = " and ".join(differences)
    named = f"the mask {Path(mask.source).name}" if mask.source else "the mask"
    return (f"{named} has the CT's size and spacing but {what}: its labels are placed by "
            "its own header; if it was made on this CT, its header was lost or rewritten")


def _read_mask_cached(path: Path, masks: dict) -> tuple[CTImage, list]:
    """The mask and the bounding box of each of its labels (found in one pass), read once per run."""
    from scipy import ndimage

    from mvcf.read_ct import read_mask

    key = str(Path(path).resolve())
    if key not in masks:
        try:
            mask = read_mask(path)
            voxels = mask.voxels
            integer = np.issubdtype(voxels.dtype, np.integer) and voxels.size > 0 and voxels.min() >= 0
            masks[key] = (mask, ndimage.find_objects(voxels) if integer else [])
        except MVCFError as exc:
            masks[key] = exc
    if isinstance(masks[key], MVCFError):
        raise masks[key]
    return masks[key]


def _label_region(mask: CTImage, boxes: list, label: int) -> CTImage:
    """The part of `mask` around `label`, in the same physical space, so that several labels of one mask
    are located without scanning all of it for each; the whole mask when the label is absent (from_mask
    then names the labels present)."""
    box = boxes[label - 1] if 0 < label <= len(boxes) else None
    if box is None:
        return mask
    start_ijk = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
    return CTImage(mask.voxels[box], mask.spacing, mask.index_to_lps(start_ijk), mask.direction, source=mask.source)


#: A vertebral body has cortical and dense trabecular bone: within BONE_RADIUS_MM of its centre, at least
#: BONE_MIN_FRACTION of the CT lies above BONE_HU (L1-L5 of the shipped CT: 7-18 %; soft tissue 6 cm in
#: front of L1: 0 %; air at the CT's corner: 0 %).
BONE_HU = 200.0
BONE_RADIUS_MM = 20.0
BONE_MIN_FRACTION = 0.02


def bone_fraction(ct: CTImage, center_lps: np.ndarray, radius_mm: float = BONE_RADIUS_MM) -> float:
    """Fraction of the CT's voxels within `radius_mm` of the point that are above BONE_HU (0 outside the CT)."""
    ijk = ct.lps_to_index(center_lps)
    reach = radius_mm / ct.spacing
    size = np.asarray(ct.size_ijk)
    lo = np.clip(np.floor(ijk - reach).astype(int), 0, size)
    hi = np.clip(np.ceil(ijk + reach).astype(int) + 1, 0, size)
    if np.any(hi <= lo):
        return 0.0
    block = ct.voxels[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) - ijk[a] for a in (2, 1, 0)), indexing="ij")
    offsets = np.stack([i, j, k], axis=-1) @ (ct.direction @ np.diag(ct.spacing)).T
    inside = np.einsum("...c,...c->...", offsets, offsets) <= radius_mm ** 2
    return float(np.mean(block[inside] > BONE_HU)) if inside.any() else 0.0


def require_bone(ct: CTImage, location: VertebraLocation) -> VertebraLocation:
    """Refuse to classify a location with no vertebral bone around it (air, soft tissue, a wrong label):
    the model would still return a probability, and it would mean nothing."""
    fraction = bone_fraction(ct, location.center_lps)
    if fraction < BONE_MIN_FRACTION:
        c = location.center_lps
        raise MVCFError(f"no vertebral bone at the location ({location.source or 'point'}, LPS {c[0]:.1f}, "
                        f"{c[1]:.1f}, {c[2]:.1f} mm): only {100 * fraction:.1f} % of the CT within "
                        f"{BONE_RADIUS_MM:g} mm is above {BONE_HU:g} HU (a vertebral body has far more); place "
                        "the point or the mask label on the fractured vertebral body")
    return location

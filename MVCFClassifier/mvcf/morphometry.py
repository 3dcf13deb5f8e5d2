"""Vertebral body morphometry from a multi-label mask: three heights, height-loss ratios, Genant grade.

Each vertebra is measured in its own frame, not the scanner's: the cranio-caudal axis is the local spine
axis (the line through the centroids of the neighbouring vertebrae; the vertebra's smallest principal axis
where it has none), the antero-posterior axis runs from the body to the posterior elements (both found in a
first pass), the left-right axis completes the frame. The mask is resampled (linear, 0.5 mm) on that frame,
so a rotated patient or a scoliotic spine is measured like an upright one.

On the mid-sagittal slab (3 mm thick) the body is the anterior run of the mask in front of the spinal
canal; its height profile (mm of mask per antero-posterior position) gives the anterior, middle and posterior
anterior and posterior heights as means over 10 % of the body depth centred at 10 % and 90 % of it (inside
the rounded corners, where six-point morphometry places its points) and the middle height as the least
height of the central 30 % (the deepest point of concave endplates). Rules and sources: docs/screening.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mvcf.ctimage import CTImage

#: Genant semi-quantitative grades (Genant et al., J Bone Miner Res 1993;8:1137-48): height reduction
#: < 20 % normal (0), 20-25 % mild (1), 25-40 % moderate (2), > 40 % severe (3).
GENANT_LIMITS = (0.20, 0.25, 0.40)
GENANT_NAMES = ("normal", "mild", "moderate", "severe")
#: A neighbour is a reference only when its own shape is not deformed by this much (1 - min/max of its own
#: heights; Genant's moderate limit: real normal bodies reach 20 % by their natural wedging alone).
REFERENCE_MAX_OWN_LOSS = 0.25

GRID_MM = 0.5
SLAB_HALF_MM = 1.5
MIN_BODY_HEIGHT_MM = 3.0
#: No vertebral body is taller (mm; lumbar bodies 25-35 mm): a taller one is two vertebrae under one label.
MAX_BODY_HEIGHT_MM = 45.0
#: HU at or below which a CT voxel holds no data (padding: scanners write -2000 to -3024 outside the
#: reconstruction circle; air reads about -1000 and its noise never reaches this beside a vertebra)
PADDING_HU = -1500.0
MIN_BODY_DEPTH_MM = 10.0
#: No vertebral body is deeper (mm, front to back; lumbar bodies 30-50 mm): a deeper one is a body search that
#: ran along a wrong axis into the posterior elements (a patient lying turned about 45 degrees).
MAX_BODY_DEPTH_MM = 60.0
SPIKE_MM = 2.5
CANAL_MARGIN_MM = 12.0
#: A posterior step (see _posterior_step) marks a fragment or bulge behind the wall, not the wall itself.
STEP_SHARE = 0.25
FRAGMENT_SHARE = 0.65
FRAGMENT_MIN_MM = 2.0
POSITIONS = ("anterior", "middle", "posterior")
_FRACTIONS = (0.10, 0.50, 0.90)
_WINDOW = 0.10
_MIDDLE_HALF = 0.15


@dataclass
class BodyRegion:
    """The body of one vertebra on its own frame grid (i = left, j = posterior, k = superior)."""

    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray      # columns: LPS directions of the left, posterior, superior axes
    body: np.ndarray           # bool [k, j, i]: the vertebral body (mask in front of the canal)

    def to_sitk_reference(self):
        import SimpleITK as sitk

        k, j, i = self.body.shape
        image = sitk.Image([int(i), int(j), int(k)], sitk.sitkUInt8)
        image.SetOrigin(tuple(float(v) for v in self.origin))
        image.SetSpacing(tuple(float(v) for v in self.spacing))
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image


@dataclass
class Morphometry:
    """What was measured on one vertebra. Heights in mm; None where the body could not be measured."""

    label: int
    level: str
    heights_mm: Optional[tuple[float, float, float]] = None   # anterior, middle, posterior
    depth_mm: Optional[float] = None
    center_lps: Optional[np.ndarray] = None                   # centroid of the body
    axes_lps: Optional[np.ndarray] = None                     # columns: left, posterior, superior
    partial: bool = False
    region: Optional[BodyRegion] = None
    notes: list[str] = field(default_factory=list)
    several: bool = False                                     # the label seems to hold more than one vertebra

    @property
    def measured(self) -> bool:
        return self.heights_mm is not None and not self.partial


@dataclass
class Grade:
    """Height-loss ratios and the Genant grade of one vertebra."""

    loss_own: Optional[float]                 # 1 - smallest / tallest of its own three heights
    loss_neighbours: Optional[float]          # 1 - its tallest height / mean tallest height of the neighbours
    losses_by_position: Optional[tuple[float, float, float]]   # 1 - H / neighbours' mean H, per position
    height_loss: Optional[float]              # the larger of the two: what is graded
    grade: Optional[int]
    shape: str                                # normal | wedge | biconcave | crush | "" (not graded)
    reference: str                            # which neighbours were the reference


def genant_grade(loss: float) -> int:
    """Genant grade 0-3 of a fractional height reduction."""
    return int(np.searchsorted(GENANT_LIMITS, float(loss), side="right"))


def _voxel_points(mask: CTImage, label: int, box: Optional[tuple] = None) -> np.ndarray:
    """LPS positions (mm) of the voxels of `label` (searched in the slices `box` when given)."""
    if box is not None:
        kji = np.argwhere(mask.voxels[box] == label) + np.array([b.start for b in box])
    else:
        kji = np.argwhere(mask.voxels == label)
    if kji.size == 0:
        return np.zeros((0, 3))
    return mask.index_to_lps(kji[:, ::-1])


def _main_points(mask: CTImage, label: int, level: str, box: tuple) -> np.ndarray:
    """LPS positions of the label's main piece (locate.main_piece): a segmenter's stray voxels far off, which
    the classifier's location leaves out, moved the centroids and axes, and so every neighbour's heights. A
    label in pieces far apart keeps them all: its classification says why it is refused."""
    from mvcf.errors import MVCFError
    from mvcf.locate import main_piece

    kji = np.argwhere(mask.voxels[box] == label) + np.array([b.start for b in box])
    if kji.size == 0:
        return np.zeros((0, 3))
    try:
        kji, _ = main_piece(kji, mask.spacing, level)
    except MVCFError:
        pass
    return mask.index_to_lps(kji[:, ::-1])


def principal_si_axis(points: np.ndarray) -> np.ndarray:
    """The smallest principal axis of a point cloud, pointing superior (+S in LPS)."""
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, 0]
    return axis if axis[2] >= 0 else -axis


def _frame(si: np.ndarray, ap_hint: np.ndarray) -> np.ndarray:
    """Right-handed LPS frame (columns left, posterior, superior) from an SI axis and an AP direction."""
    s = si / np.linalg.norm(si)
    p = ap_hint - s * float(ap_hint @ s)
    if np.linalg.norm(p) < 1e-6:
        p = np.array([0.0, 1.0, 0.0]) - s * s[1]
    p /= np.linalg.norm(p)
    return np.column_stack([np.cross(p, s), p, s])


def _sample_label(mask: CTImage, label: int, center: np.ndarray, axes: np.ndarray, extent: np.ndarray,
                  spacing: Sequence[float]):
    """Occupancy (0..1, linear interpolation of the binary label) on a grid of the given frame."""
    import SimpleITK as sitk

    spacing = np.asarray(spacing, float)
    size = np.maximum(np.ceil(extent / spacing).astype(int) + 1, 2)
    origin = center - axes @ (spacing * (size - 1) / 2)
    reference = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    reference.SetOrigin(tuple(float(v) for v in origin))
    reference.SetSpacing(tuple(float(v) for v in spacing))
    reference.SetDirection(tuple(float(v) for v in axes.ravel()))
    lo = np.floor(np.min([mask.lps_to_index(c) for c in _corners(origin, axes, spacing, size)], axis=0)) - 1
    hi = np.ceil(np.max([mask.lps_to_index(c) for c in _corners(origin, axes, spacing, size)], axis=0)) + 2
    lo = np.clip(lo, 0, np.asarray(mask.size_ijk) - 1).astype(int)
    hi = np.clip(hi, 1, np.asarray(mask.size_ijk)).astype(int)
    block = (mask.voxels[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] == label).astype(np.float32)
    binary = CTImage(block, mask.spacing, mask.index_to_lps(lo), mask.direction)
    occ = sitk.GetArrayFromImage(sitk.Resample(binary.to_sitk(), reference, sitk.Transform(), sitk.sitkLinear,
                                               0.0, sitk.sitkFloat32))
    return occ, origin, spacing


def _corners(origin: np.ndarray, axes: np.ndarray, spacing: np.ndarray, size: np.ndarray) -> list[np.ndarray]:
    far = spacing * (np.asarray(size) - 1)
    return [origin + axes @ (far * np.array([a, b, c])) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def _body_run(occ: np.ndarray, spacing: np.ndarray,
              fragment_mm: float = FRAGMENT_MIN_MM) -> Optional[tuple[np.ndarray, int, int]]:
    """Height profile (mm) along j on the mid-sagittal slab, and the body's run [j0, j1) in front of the
    canal (the first gap of the profile behind the anterior edge). The run's ends are those of the slab's
    body opened by SPIKE_MM (eroded, then the erosion added back to the ends), so a thin spur, an osteophyte
    or a retropulsed fragment does not count as body depth; a step down behind the posterior wall (a
    fragment or bulge) ends the run there."""
    from scipy import ndimage

    ni = occ.shape[2]
    half = int(round(SLAB_HALF_MM / spacing[0]))
    mid = (ni - 1) // 2
    slab = occ[:, :, max(mid - half, 0):mid + half + 1]
    heights = slab.sum(axis=0).mean(axis=1) * spacing[2]
    present = np.flatnonzero(heights > MIN_BODY_HEIGHT_MM)
    if present.size == 0:
        return None
    j0 = int(present[0])
    gaps = np.flatnonzero(heights[j0:] <= MIN_BODY_HEIGHT_MM)
    j1 = j0 + int(gaps[0]) if gaps.size else heights.size
    section = slab.mean(axis=2) >= 0.5                       # [k, j] mid-sagittal section
    section[:, :j0] = False
    section[:, j1:] = False
    core = ndimage.distance_transform_edt(section, sampling=(spacing[2], spacing[1])) > SPIKE_MM
    columns = np.flatnonzero(core.any(axis=0))
    if columns.size:
        back = int(round(SPIKE_MM / spacing[1]))
        j0, j1 = max(j0, int(columns[0]) - back), min(j1, int(columns[-1]) + 1 + back)
    j1 = _posterior_step(heights, j0, j1, spacing[1], fragment_mm)
    if (j1 - j0) * spacing[1] < MIN_BODY_DEPTH_MM:
        return None
    return heights, j0, j1


def _posterior_step(heights: np.ndarray, j0: int, j1: int, step_mm: float, fragment_mm: float) -> int:
    """The run's posterior end moved forward to a step in the posterior half: the height falls by more than
    STEP_SHARE of the median within 1 mm and stays below FRAGMENT_SHARE of it for `fragment_mm` or more (a
    fragment or bulge attached behind the wall; at least 1.5 voxels of the mask, so a voxel staircase is not
    one). A rounded posterior edge tapers more gently and is kept."""
    if j1 - j0 < 8:
        return j1
    median = float(np.median(heights[j0:j1]))
    ahead = max(1, int(round(1.0 / step_mm)))
    tail = max(1, int(round(fragment_mm / step_mm)))
    for j in range(j0 + (j1 - j0) // 2, j1 - ahead - tail + 1):
        low = heights[j + ahead:j + ahead + tail]
        if heights[j] - heights[j + ahead] > STEP_SHARE * median and np.all(low < FRAGMENT_SHARE * median):
            return j + 1
    return j1


def _three_heights(heights: np.ndarray, j0: int, j1: int) -> tuple[float, float, float]:
    """Anterior and posterior: mean height over 10 % of the depth centred at 10 % and 90 % of it; middle:
    the least height in the central 30 % (the deepest point of concave endplates)."""
    depth = j1 - j0

    def window(lo: float, hi: float) -> np.ndarray:
        a = j0 + int(round(lo * depth))
        return heights[a:max(j0 + int(round(hi * depth)), a + 1)]

    half = _WINDOW / 2
    return (float(window(_FRACTIONS[0] - half, _FRACTIONS[0] + half).mean()),
            float(window(0.5 - _MIDDLE_HALF, 0.5 + _MIDDLE_HALF).min()),
            float(window(_FRACTIONS[2] - half, _FRACTIONS[2] + half).mean()))


@dataclass
class BodyPose:
    """Where the body of one vertebra is and how it is oriented (columns left, posterior, superior)."""

    center_lps: np.ndarray
    axes_lps: np.ndarray
    at_edge: bool = False        # the body reaches the edge of the image (its centroid is biased)
    depth_mm: Optional[float] = None   # antero-posterior depth of the body found on the 1 mm grid


def locate_body(mask: CTImage, label: int, si_axis: Optional[Sequence[float]] = None,
                points: Optional[np.ndarray] = None, start: Optional[BodyPose] = None,
                beyond: Optional[np.ndarray] = None,
                posterior_hint: Sequence[float] = (0.0, 1.0, 0.0)) -> Optional[BodyPose]:
    """The body's centroid and frame, on a 1 mm grid: the body is the mask in front of the canal on the
    mid-sagittal slab; the antero-posterior axis points from its centroid to that of the posterior
    elements. None when no body is found. `start` (a pose found with a nearby axis) is where the
    iteration begins, so it usually converges in one step; without it the search starts from
    `posterior_hint` (LPS; the patient's posterior: +P unless the patient lies prone or on the side, see
    `posterior_direction`); `beyond` as in `field_of_view_edge`."""
    points = _voxel_points(mask, label) if points is None else points
    if len(points) < 20:
        return None
    si = np.asarray(si_axis, float) if si_axis is not None else principal_si_axis(points)
    axes = _frame(si, start.axes_lps[:, 1] if start is not None else np.asarray(posterior_hint, float))
    center = start.center_lps if start is not None else points.mean(axis=0)
    found = None
    for _ in range(3):
        extent = 2 * np.abs((points - center) @ axes).max(axis=0) + 4.0
        occ, origin, spacing = _sample_label(mask, label, center, axes, extent, (1.0, 1.0, 1.0))
        run = _body_run(occ, spacing)
        if run is None:
            return found
        _, j0, j1 = run
        inside = occ >= 0.5
        body, behind = inside.copy(), inside.copy()
        body[:, j1:, :] = False
        body[:, :j0, :] = False
        behind[:, :j1 + 2, :] = False
        grid_to_lps = axes @ np.diag(spacing)
        body_center = origin + grid_to_lps @ np.argwhere(body)[:, ::-1].mean(axis=0)
        new_axes = axes
        if behind.any():
            posterior = origin + grid_to_lps @ np.argwhere(behind)[:, ::-1].mean(axis=0)
            new_axes = _frame(si, posterior - body_center)
        done = np.allclose(new_axes, axes, atol=2e-3) and np.allclose(center, body_center, atol=0.5)
        region = BodyRegion(origin=origin, spacing=spacing, direction=axes, body=body)
        axes, center = new_axes, body_center
        found = BodyPose(center, axes, _body_at_edge(mask, region, beyond), float((j1 - j0) * spacing[1]))
        if done:
            break
    return found


def measure_vertebra(mask: CTImage, label: int, level: str, si_axis: Optional[Sequence[float]] = None,
                     points: Optional[np.ndarray] = None, start: Optional[BodyPose] = None,
                     beyond: Optional[np.ndarray] = None) -> Morphometry:
    """Heights of vertebra `label` of `mask`. `si_axis` (LPS, pointing superior) is the local spine axis;
    without it the vertebra's smallest principal axis is used; `beyond` as in `field_of_view_edge`. Never
    raises for a vertebra that cannot be measured: the Morphometry says why in `notes`."""
    result = Morphometry(label=int(label), level=level)
    points = _voxel_points(mask, label) if points is None else points
    if len(points) < 20:
        result.notes.append("empty label" if len(points) == 0 else f"only {len(points)} voxels")
        result.partial = len(points) > 0
        return result
    pose = locate_body(mask, label, si_axis, points, start, beyond)
    if pose is None:
        return _no_body(result, mask, points, beyond)
    axes, center = pose.axes_lps, pose.center_lps
    grid_center, extent = _body_grid(points, center, axes, pose.depth_mm)
    occ, origin, spacing = _sample_label(mask, label, grid_center, axes, extent, (GRID_MM, GRID_MM, GRID_MM))
    voxel_ap = float(np.abs(np.linalg.solve(mask.direction, axes[:, 1])) @ mask.spacing)
    run = _body_run(occ, spacing, max(FRAGMENT_MIN_MM, 1.5 * voxel_ap))
    if run is None:
        return _no_body(result, mask, points, beyond)
    heights, j0, j1 = run
    body = occ >= 0.5
    body[:, j1:, :] = False
    body[:, :j0, :] = False
    result.heights_mm = _three_heights(heights, j0, j1)
    result.depth_mm = float((j1 - j0) * spacing[1])
    result.center_lps = center
    result.axes_lps = axes
    result.region = _cropped(BodyRegion(origin=origin, spacing=spacing, direction=axes, body=body))
    if _body_at_edge(mask, result.region, beyond):
        result.partial = True
        result.notes.append("partial: the vertebral body is cut by the edge of the field of view")
    return result


def _no_body(result: Morphometry, mask: CTImage, points: np.ndarray,
             beyond: Optional[np.ndarray] = None) -> Morphometry:
    """No body in front of the canal: where the label reaches the image's edge or the CT's padding the field
    of view has cut it (often the body itself, in front), which the table must say rather than "not
    measured"."""
    ijk = np.linalg.solve(mask.direction @ np.diag(mask.spacing), (points - mask.origin).T).T
    if ijk.min() < 0.5 or np.any(ijk.max(axis=0) > np.asarray(mask.size_ijk, float) - 1.5) \
            or _touches(beyond, ijk):
        result.partial = True
        result.notes.append("partial: the vertebra is cut by the edge of the field of view (no body found in "
                            "front of the spinal canal)")
    else:
        result.notes.append("no vertebral body found in front of the spinal canal on the mid-sagittal plane")
    return result


def _body_grid(points: np.ndarray, center: np.ndarray, axes: np.ndarray,
               depth_mm: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """Centre and extent of the fine grid: the whole vertebra left-right and cranio-caudally, but
    antero-posteriorly only to CANAL_MARGIN_MM behind the body's posterior wall found on the 1 mm grid (the
    canal's gap must be on the grid; the posterior elements need not be, and they are half the volume)."""
    offsets = (points - center) @ axes
    extent = 2 * np.abs(offsets).max(axis=0) + 4.0
    if depth_mm is None:
        return center, extent
    front = float(offsets[:, 1].min()) - 2.0
    back = min(float(offsets[:, 1].max()) + 2.0, depth_mm / 2 + CANAL_MARGIN_MM)
    if back <= front:
        return center, extent
    extent[1] = back - front
    return center + axes[:, 1] * (front + back) / 2, extent


def _cropped(region: BodyRegion, margin: int = 2) -> BodyRegion:
    """The region cut to the body's bounding box (plus `margin` voxels), origin moved accordingly."""
    kji = np.argwhere(region.body)
    if kji.size == 0:
        return region
    lo = np.maximum(kji.min(axis=0) - margin, 0)
    hi = np.minimum(kji.max(axis=0) + margin + 1, region.body.shape)
    origin = region.origin + region.direction @ (region.spacing * lo[::-1])
    return BodyRegion(origin=origin, spacing=region.spacing, direction=region.direction,
                      body=region.body[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy())


def field_of_view_edge(ct_voxels: np.ndarray, near: Optional[np.ndarray] = None,
                       margin: int = 2) -> Optional[np.ndarray]:
    """Where the CT holds no data, widened by `margin` voxels: padding at or below PADDING_HU (a scanner's value
    outside its reconstruction circle, or what a resampling filled in), True on the CT's voxel array; None when
    there is none. `near` (a label map on that array) limits the work to the box of its labels. A body
    reaching it is cut by the field of view as surely as one reaching the image's outermost voxels."""
    from scipy import ndimage

    box = tuple(slice(0, n) for n in ct_voxels.shape)
    if near is not None:
        found = ndimage.find_objects((near > 0).astype(np.int8))
        if not found:
            return None
        box = tuple(slice(max(s.start - margin - 1, 0), min(s.stop + margin + 1, n))
                    for s, n in zip(found[0], ct_voxels.shape))
    padding = ct_voxels[box] <= PADDING_HU
    if not padding.any():
        return None
    edge = np.zeros(ct_voxels.shape, bool)
    edge[box] = ndimage.binary_dilation(padding, structure=np.ones((3, 3, 3), bool), iterations=margin)
    return edge


def _touches(beyond: Optional[np.ndarray], ijk: np.ndarray) -> bool:
    """True when any of the continuous voxel positions `ijk` (i, j, k columns) falls on `beyond`."""
    if beyond is None or len(ijk) == 0:
        return False
    index = np.clip(np.rint(ijk).astype(int), 0, np.asarray(beyond.shape[::-1]) - 1)
    return bool(beyond[index[:, 2], index[:, 1], index[:, 0]].any())


def _body_at_edge(mask: CTImage, region: BodyRegion, beyond: Optional[np.ndarray] = None) -> bool:
    """True when the body reaches the outermost voxels of the image, or `beyond` (field_of_view_edge)."""
    to_mask = np.linalg.inv(mask.direction @ np.diag(mask.spacing))
    linear = to_mask @ region.direction @ np.diag(region.spacing)
    offset = to_mask @ (region.origin - mask.origin)
    size = np.asarray(mask.size_ijk, float)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * \
        (np.asarray(region.body.shape[::-1]) - 1)
    box = corners @ linear.T + offset
    if beyond is None and box.min() >= 0.0 and np.all(box.max(axis=0) <= size - 1.0):
        return False                     # the whole grid lies inside the image: no voxel list needed
    kji = np.argwhere(region.body)
    if kji.size == 0:
        return False
    ijk = kji[:, ::-1] @ linear.T + offset
    return bool(np.any(ijk.min(axis=0) < 0.0) or np.any(ijk.max(axis=0) > size - 1.0) or _touches(beyond, ijk))


def spine_axes(centroids: dict[str, np.ndarray], order: Sequence[str]) -> dict[str, np.ndarray]:
    """Local spine axis (pointing superior) at each level: through the centroids of its present
    neighbours (one neighbour: through its own centroid and that one's)."""
    ordered = [level for level in order if level in centroids]   # cranial first
    axes: dict[str, np.ndarray] = {}
    for n, level in enumerate(ordered):
        above = centroids[ordered[n - 1]] if n > 0 else centroids[level]
        below = centroids[ordered[n + 1]] if n + 1 < len(ordered) else centroids[level]
        direction = above - below
        if np.linalg.norm(direction) > 1e-6:
            direction = direction / np.linalg.norm(direction)
            axes[level] = direction if direction[2] >= 0 else -direction
    return axes


def measure_spine(mask: CTImage, levels: dict[int, str], order: Sequence[str],
                  beyond: Optional[np.ndarray] = None) -> dict[str, Morphometry]:
    """Every vertebra of `levels` (label value -> level): bodies found with the axis through the whole
    vertebrae's centroids, then measured on the axis through the neighbouring bodies' centroids (the
    posterior elements, often cut by the field of view, no longer tilt it). `beyond`: where the CT holds no
    data (field_of_view_edge), so a body cut there is partial."""
    from scipy import ndimage

    boxes = ndimage.find_objects(mask.voxels.astype(np.int32, copy=False), max_label=max(levels))
    points = {level: _main_points(mask, value, level, boxes[value - 1]) if boxes[value - 1] is not None
              else np.zeros((0, 3)) for value, level in levels.items()}
    rough = spine_axes({lv: p.mean(axis=0) for lv, p in points.items() if len(p)}, order)
    hint = posterior_direction(points, rough)
    poses = {level: locate_body(mask, value, rough.get(level), points[level], beyond=beyond, posterior_hint=hint)
             if len(points[level]) >= 20 else None for value, level in levels.items()}
    bodies = {level: pose.center_lps for level, pose in poses.items() if pose is not None and not pose.at_edge}
    axes = spine_axes(bodies, order)
    measured = {level: measure_vertebra(mask, value, level, axes.get(level, rough.get(level)), points[level],
                                        poses[level], beyond) for value, level in levels.items()}
    for level, m in measured.items():
        tallest = max(m.heights_mm) if m.heights_mm is not None else 0.0
        if level != "S1" and tallest > MAX_BODY_HEIGHT_MM:   # S1 may stand for the whole sacrum
            m.notes.append(f"the body measures {tallest:.0f} mm tall, more than any vertebral body (at most "
                           f"{MAX_BODY_HEIGHT_MM:g} mm): the label seems to hold more than one vertebra")
            m.heights_mm, m.region, m.several = None, None, True
        elif m.heights_mm is not None and (m.depth_mm or 0.0) > MAX_BODY_DEPTH_MM:
            m.notes.append(f"the body measures {m.depth_mm:.0f} mm front to back, deeper than any vertebral body "
                           f"(at most {MAX_BODY_DEPTH_MM:g} mm): the search left the body (heights not reported)")
            m.heights_mm, m.region = None, None
    return measured


#: The spine's posterior direction from the vertebrae's shape replaces the scanner's +P as the start of the
#: body search only when the two lie farther apart than this (degrees): a supine or upright patient keeps +P.
TURNED_DEG = 45.0


def posterior_direction(points: dict[str, np.ndarray], axes: dict[str, np.ndarray]) -> np.ndarray:
    """The patient's posterior in scanner terms (a unit LPS axis), for the whole spine. A
    vertebra's voxels are skewed towards its spinous process (the heavy body in front, a thin process
    behind), so the direction of largest skewness across the cranio-caudal axis points posterior whatever the
    patient's position. From +P alone, a prone patient's (or one on the side) search found the spinous
    process behind the canal and read it as a body 6-13 mm tall: grade 3 at every level."""
    angles = np.radians(np.arange(0.0, 360.0, 5.0))
    total = np.zeros(2)
    for level, p in points.items():
        if len(p) < 500 or level not in axes:
            continue
        si = np.asarray(axes[level], float)
        si = si / np.linalg.norm(si)
        a = np.cross(si, [0.0, 0.0, 1.0]) if abs(si[2]) < 0.9 else np.cross(si, [1.0, 0.0, 0.0])
        a = a / np.linalg.norm(a)
        b = np.cross(si, a)
        x = p[::max(1, len(p) // 20000)]   # a few thousand voxels tell the shape; 0.7 mm CTs hold 200,000
        x = x - x.mean(axis=0)
        projected = np.outer(np.cos(angles), x @ a) + np.outer(np.sin(angles), x @ b)
        skew = (projected ** 3).mean(axis=1) / np.maximum((projected ** 2).mean(axis=1), 1e-9) ** 1.5
        best = int(np.argmax(skew))
        direction = np.cos(angles[best]) * a + np.sin(angles[best]) * b
        total += float(skew[best]) * direction[:2]
    default = np.array([0.0, 1.0, 0.0])
    if np.linalg.norm(total) < 1e-9:
        return default
    found = np.array([total[0], total[1], 0.0]) / np.linalg.norm(total)
    if np.degrees(np.arccos(np.clip(found @ default, -1.0, 1.0))) <= TURNED_DEG:
        return default
    # the scanner axis nearest to it: a patient prone or on the side is measured as the same patient supine
    cardinal = np.zeros(3)
    axis = int(np.argmax(np.abs(found[:2])))
    cardinal[axis] = np.sign(found[axis])
    return cardinal


def turned_degrees(measured: dict[str, Morphometry]) -> Optional[float]:
    """How far (degrees, 0-180) the patient lies turned about the long axis from supine: the circular median
    of the measured bodies' posterior axes in the axial plane, against the scanner's +P; None when no body was
    measured."""
    angles = np.array([np.arctan2(m.axes_lps[0, 1], m.axes_lps[1, 1]) for m in measured.values()
                       if m.measured and m.axes_lps is not None])
    if not angles.size:
        return None
    centre = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())   # a median around it: one body off
    offsets = np.angle(np.exp(1j * (angles - centre)))                  # (a wrong frame) does not move it
    return float(abs(np.degrees(np.angle(np.exp(1j * (centre + np.median(offsets)))))))


def grade_vertebra(target: Morphometry, references: Sequence[Morphometry]) -> Grade:
    """Height-loss ratios and Genant grade of `target` against its own heights and its neighbours'.

    Genant's semi-quantitative reading judges a wedge or biconcave deformity against the vertebra's own
    tallest height and a crush (the whole body lower) against the adjacent vertebrae: loss_own = 1 -
    min(Ha, Hm, Hp) / max(Ha, Hm, Hp); loss_neighbours = 1 - max(Ha, Hm, Hp) / mean(max(Ha, Hm, Hp) of the
    usable neighbours) (measured, own loss < REFERENCE_MAX_OWN_LOSS). Tallest against tallest, not height by
    height: adjacent normal bodies differ in shape (thoracic wedging, lumbar lordosis) far more than in
    size. The graded height loss is the larger of the two."""
    if not target.measured:
        return Grade(None, None, None, None, None, "", "")
    h = np.asarray(target.heights_mm, float)
    loss_own = float(1.0 - h.min() / h.max()) if h.max() > 0 else None
    usable = [r for r in references if r.measured
              and 1.0 - min(r.heights_mm) / max(r.heights_mm) < REFERENCE_MAX_OWN_LOSS]  # type: ignore[arg-type]
    losses_by_position = None
    loss_nb = None
    reference = "own heights"
    if usable:
        ref = np.mean([r.heights_mm for r in usable], axis=0)
        losses_by_position = tuple(float(v) for v in 1.0 - h / ref)
        loss_nb = float(1.0 - h.max() / np.mean([max(r.heights_mm) for r in usable]))  # type: ignore[arg-type]
        reference = "+".join(r.level for r in usable)
    candidates = [v for v in (loss_own, loss_nb) if v is not None]
    loss = max(candidates) if candidates else None
    if loss is None:
        return Grade(loss_own, loss_nb, losses_by_position, None, None, "", reference)
    grade = genant_grade(loss)
    shape = "normal"
    if grade > 0:
        per = 1.0 - h / h.max()
        if loss_nb is not None and loss_nb >= (loss_own or 0) or per.max() <= 0:
            shape = "crush"           # lower than its neighbours rather than misshapen
        else:
            shape = ("wedge", "biconcave", "crush")[int(np.argmax(per))]
    return Grade(loss_own, loss_nb, losses_by_position, float(loss), grade, shape, reference)

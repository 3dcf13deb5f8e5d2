"""CTImage: voxels plus full physical geometry, the one image type the core passes around.

Conventions (ITK's, like Slicer's arrayFromVolume):
- `voxels` is indexed [k, j, i] (slice, row, column), i.e. numpy order of SimpleITK.GetArrayFromImage.
- `spacing` and `origin` are in (i, j, k) order, millimetres; `origin` is the LPS position of voxel (0,0,0).
- `direction` is 3x3: column c is the LPS direction of index axis c.
RAS appears only at the Slicer boundary (`ijk_to_ras`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


#: Direction cosines smaller than this are rounding noise of an axis-aligned or rotated matrix.
DIRECTION_ZERO = 1e-12


@dataclass
class CTImage:
    voxels: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""

    def __post_init__(self) -> None:
        self.spacing = np.asarray(self.spacing, dtype=float).reshape(3)
        self.origin = np.asarray(self.origin, dtype=float).reshape(3)
        direction = np.array(self.direction, dtype=float).reshape(3, 3)
        direction[np.abs(direction) < DIRECTION_ZERO] = 0.0   # float noise; denormals make ITK's SVD fail
        self.direction = direction

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.voxels.shape
        return (i, j, k)

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix from continuous index (i, j, k) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK-to-RAS matrix, as Slicer's vtkMRMLVolumeNode.GetIJKToRASMatrix expects."""
        m = self.ijk_to_lps_matrix()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    def index_to_lps(self, ijk) -> np.ndarray:
        """LPS mm of a continuous (i, j, k) index, or of each row of an (N, 3) array of them."""
        ijk = np.asarray(ijk, dtype=float)
        step = self.direction @ np.diag(self.spacing)
        return self.origin + (step @ ijk if ijk.ndim == 1 else ijk @ step.T)

    def lps_to_index(self, lps) -> np.ndarray:
        """Continuous (i, j, k) index of an LPS point in mm."""
        lps = np.asarray(lps, dtype=float)
        return np.linalg.solve(self.direction @ np.diag(self.spacing), lps - self.origin)

    def contains(self, lps) -> bool:
        """True when the LPS point lies within the voxels (half a voxel beyond the outer centres; the far edge
        itself is outside, as ITK counts it, whose resampling there gives nothing but padding)."""
        ijk = self.lps_to_index(lps)
        size = np.asarray(self.size_ijk, dtype=float)
        return bool(np.all(ijk >= -0.5) and np.all(ijk < size - 0.5))

    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.voxels)
        image.SetSpacing(tuple(float(s) for s in self.spacing))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image, source: str = "") -> "CTImage":
        import SimpleITK as sitk

        return cls(
            voxels=sitk.GetArrayFromImage(image),
            spacing=np.array(image.GetSpacing()),
            origin=np.array(image.GetOrigin()),
            direction=np.array(image.GetDirection()).reshape(3, 3),
            source=source,
        )

    @classmethod
    def from_ijk_to_ras(cls, voxels: np.ndarray, ijk_to_ras: np.ndarray, source: str = "") -> "CTImage":
        """Build from a [k, j, i] array and a 4x4 IJK-to-RAS matrix (a Slicer volume node's geometry)."""
        m = np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)
        lin = LPS_TO_RAS @ m[:3, :3]
        spacing = np.linalg.norm(lin, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero spacing: NaN direction, refused by validate_ct
            direction = lin / spacing
        return cls(voxels=voxels, spacing=spacing, origin=LPS_TO_RAS @ m[:3, 3], direction=direction, source=source)


def _axis_order(image: CTImage, reference: CTImage, tolerance_mm: float) -> Optional[tuple[list, list]]:
    """For each axis of `reference`: the axis of `image` along it and whether it runs the other way, when both
    images have the same voxel centres; None otherwise."""
    if sorted(image.size_ijk) != sorted(reference.size_ijk):
        return None
    source_axis, flipped = [0, 0, 0], [False, False, False]
    for b in range(3):
        cosines = image.direction.T @ reference.direction[:, b]
        a = int(np.argmax(np.abs(cosines)))
        if abs(abs(cosines[a]) - 1.0) > 1e-4 or image.size_ijk[a] != reference.size_ijk[b] \
                or not np.isclose(image.spacing[a], reference.spacing[b], rtol=1e-4, atol=1e-4):
            return None
        source_axis[b], flipped[b] = a, bool(cosines[a] < 0)
    if sorted(source_axis) != [0, 1, 2]:
        return None
    first = np.array([reference.size_ijk[b] - 1 if flipped[b] else 0 for b in range(3)], float)
    slack = tolerance_mm + 1e-3 * float(np.max(reference.spacing))
    if np.linalg.norm(reference.index_to_lps(first) - image.origin) > slack:
        return None
    return source_axis, flipped


def same_voxel_centres(image: CTImage, reference: CTImage, tolerance_mm: float = 0.01) -> bool:
    """Whether both images sample the same points, whatever the order their axes list them in."""
    return _axis_order(image, reference, tolerance_mm) is not None


def on_lattice_of(image: CTImage, reference: CTImage, tolerance_mm: float = 0.01) -> Optional[CTImage]:
    """`image` as an array on `reference`'s index grid when both have the same voxel centres and only list
    them in another order (axes flipped or permuted: a TotalSegmentator NIfTI in RAS order beside a DICOM CT
    read in LPS order), so nothing needs resampling; None when the voxel centres differ."""
    order = _axis_order(image, reference, tolerance_mm)
    if order is None:
        return None
    source_axis, flipped = order
    voxels = np.transpose(image.voxels, [2 - source_axis[2 - p] for p in range(3)])   # [k, j, i] of reference
    flips = tuple(p for p in range(3) if flipped[2 - p])
    voxels = np.flip(voxels, axis=flips) if flips else voxels
    return CTImage(np.ascontiguousarray(voxels), reference.spacing.copy(), reference.origin.copy(),
                   reference.direction.copy(), source=image.source)


def ras_to_lps(point) -> np.ndarray:
    return LPS_TO_RAS @ np.asarray(point, dtype=float)


lps_to_ras = ras_to_lps

"""Cohort views for training: built once per case (every requested mode from one CT read), cached in memory
and on disk as .npy, then served by a torch Dataset with seeded MONAI augmentation.

Augmentation is anatomically valid only: small in-plane rotations, left-right flips (never anterior-posterior
or superior-inferior), an intensity shift and Gaussian noise. Each sample's randomness is derived from
(seed, epoch, index), so an epoch is reproducible on its own; that is what makes resumed training identical.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError
from mvcf.fileio import atomic_path, remove_stale_temporaries
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel
from mvcf.views import ViewSpec


def record_query(record) -> "Any":
    """The VertebraQuery of a manifest record: its mask label when it has one, else its LPS centre."""
    from mvcf.locate import VertebraQuery

    if getattr(record, "mask", None) is not None and getattr(record, "vertebra_label", None) is not None:
        return VertebraQuery(mask=record.mask, label=int(record.vertebra_label))
    return VertebraQuery(point=record.center_lps, unit="lps")


#: How far (mm) a manifest row's centre may lie from the centroid of its mask label when it gives both: the
#: body's centre lies 10-20 mm in front of the whole vertebra's centroid, the next vertebra's 30 mm and more.
CENTRE_AGREES_MM = 25.0


def locate_record(ct, record) -> "Any":
    """The VertebraLocation of a manifest record (mvcf.locate.resolve of its query). A row with a mask label
    and a centre is located by the label; a centre that names another place refuses the row (the label won in
    silence)."""
    from mvcf.locate import resolve

    location = resolve(ct, record_query(record))
    given = getattr(record, "center_lps", None)
    if getattr(record, "mask", None) is not None and given is not None:
        apart = float(np.linalg.norm(np.asarray(given, float) - location.center_lps))
        if apart > CENTRE_AGREES_MM:
            raise MVCFError(f"its centre lies {apart:.0f} mm from the centroid of label {record.vertebra_label} "
                            f"of its mask (at most {CENTRE_AGREES_MM:g} mm): the two name different places; "
                            "give one of them")
    return location


def spec_key(spec: ViewSpec) -> str:
    return hashlib.sha256(spec.to_json().encode()).hexdigest()[:16]


def _case_key(record) -> str:
    """Cache key of a case: its id plus the identity of its files, so an edited CT is rebuilt."""
    from mvcf.cohort_checks import file_identity

    parts = [str(record.case_id)]
    for path in (record.ct, getattr(record, "mask", None)):
        if path is not None:
            parts.append(file_identity(path))
    parts.append(str(getattr(record, "vertebra_label", "")))
    center = getattr(record, "center_lps", None)
    parts.append("" if center is None else ",".join(f"{v:.4f}" for v in center))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


#: A case_id that may name its cache file as it is; any other (a `/`, `..`, spaces, non-ASCII, 300 bytes) is
#: left out of the name, which the key (it covers the id) then names alone.
_PLAIN_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def cache_file_name(record) -> str:
    """`<case_id>-<key>.npy`, or `<key>.npy` for a case_id that is not a plain name: a manifest's case_id
    never leads the file out of its folder or past a file name's length."""
    key = _case_key(record)
    case_id = str(record.case_id)
    return f"{case_id}-{key}.npy" if _PLAIN_CASE_ID.fullmatch(case_id) else f"{key}.npy"


class ViewCache:
    """case -> view array per ViewSpec; memory first, then `cache_dir/<spec>/<case>.npy`, else built."""

    def __init__(self, cache_dir: Optional[os.PathLike] = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._swept: set[Path] = set()

    def _file(self, spec: ViewSpec, record) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        return self.cache_dir / spec_key(spec) / cache_file_name(record)

    def _lookup(self, spec: ViewSpec, record) -> Optional[np.ndarray]:
        key = (spec_key(spec), _case_key(record))
        if key in self._memory:
            return self._memory[key]
        path = self._file(spec, record)
        if path is not None and path.is_file():
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError):   # truncated, overwritten, pickled: a miss, built again
                return None
            if tuple(array.shape) == spec.output_shape() and np.issubdtype(array.dtype, np.floating) \
                    and np.isfinite(array).all():   # NaN views made the model look broken
                self._memory[key] = array
                return array
        return None

    def _store(self, spec: ViewSpec, record, array: np.ndarray) -> None:
        self._memory[(spec_key(spec), _case_key(record))] = array
        path = self._file(spec, record)
        if path is not None:
            with atomic_path(path) as tmp:
                np.save(tmp, array, allow_pickle=False)
            if path.parent not in self._swept:   # once per folder: what a killed run was writing there
                self._swept.add(path.parent)
                remove_stale_temporaries(path.parent)

    def views(self, records: Sequence[Any], specs: Sequence[ViewSpec],
              on_progress: Optional[ProgressCallback] = None,
              should_cancel: Optional[CancelCheck] = None) -> dict[str, dict[str, np.ndarray]]:
        """{spec_key: {case_id: array}} for every record and spec; each CT is read at most once."""
        from mvcf.read_ct import read_ct
        from mvcf.views import build_views

        out: dict[str, dict[str, np.ndarray]] = {spec_key(s): {} for s in specs}
        for n, record in enumerate(records):
            check_cancel(should_cancel)
            missing = []
            for spec in specs:
                array = self._lookup(spec, record)
                if array is None:
                    missing.append(spec)
                else:
                    out[spec_key(spec)][record.case_id] = array
            if missing:
                try:
                    ct = read_ct(record.ct)
                    location = locate_record(ct, record)
                    for spec in missing:
                        array = build_views(ct, location, spec).array
                        self._store(spec, record, array)
                        out[spec_key(spec)][record.case_id] = array
                except MVCFError as exc:
                    raise MVCFError(f"case {record.case_id}: {exc}") from None
            if on_progress is not None:
                on_progress(n + 1, len(records), f"views {n + 1}/{len(records)}")
        return out


def augmentation(mode: str, rotate_deg: float = 10.0, shift: float = 0.05, noise_std: float = 0.02,
                 blur_sigma: tuple[float, float] = (0.25, 1.5), contrast_gamma: tuple[float, float] = (0.8, 1.25)):
    """MONAI transforms for one channel-first sample (`ViewMode.to_channels`: a bag's slices folded into
    channels); `mode` is accepted for the callers' symmetry, the transforms are the same for every mode.

    Beyond the geometry (a small rotation; the left-right flip is applied by CaseDataset), the intensity
    transforms imitate what differs between scanners and sites: a reconstruction kernel / slice thickness
    (Gaussian blur with a separate sigma per axis, in pixels), calibration drift (intensity shift), contrast
    (gamma) and noise."""
    import math

    from monai.transforms import (Compose, RandAdjustContrast, RandGaussianNoise, RandGaussianSmooth,
                                  RandRotate, RandShiftIntensity)

    transforms = []
    if rotate_deg > 0:
        transforms.append(RandRotate(range_x=math.radians(rotate_deg), prob=1.0, keep_size=True,
                                     padding_mode="border", dtype=np.float32))
    transforms += [
        RandGaussianSmooth(sigma_x=blur_sigma, sigma_y=blur_sigma, sigma_z=blur_sigma, prob=0.5),
        RandAdjustContrast(gamma=contrast_gamma, prob=0.3),
        RandShiftIntensity(offsets=shift, prob=1.0),
        RandGaussianNoise(prob=0.5, std=noise_std, dtype=np.float32),
    ]
    return Compose(transforms)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).hexdigest()[:8], 16)


class CaseDataset:
    """A torch-style Dataset over (array, label) pairs with per-(seed, epoch, index) seeded augmentation.

    Call `set_epoch(e)` before each epoch (as with DistributedSampler)."""

    def __init__(self, arrays: Sequence[np.ndarray], labels: Sequence[int], mode: str, augment: bool,
                 seed: int = 0, transform: Optional[Callable] = None) -> None:
        if len(arrays) != len(labels):
            raise ValueError("arrays and labels differ in length")
        self.arrays = list(arrays)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.mode = mode
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.transform = transform if transform is not None else (augmentation(mode) if augment else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int):
        import torch

        array = self.arrays[index]
        if self.augment and self.transform is not None:
            array = self._augment(array, _sample_seed(self.seed, self.epoch, index))
        return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)), torch.tensor(self.labels[index])

    def _augment(self, array: np.ndarray, seed: int) -> np.ndarray:
        from mvcf import modes

        view_mode = modes.get(self.mode)
        rng = np.random.RandomState(seed)
        shape = array.shape
        array = view_mode.to_channels(view_mode.flip(array, rng))
        self.transform.set_random_state(seed=int(rng.randint(0, 2**31 - 1)))
        out = self.transform(np.ascontiguousarray(array))
        out = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
        return out.reshape(shape).astype(np.float32, copy=False)

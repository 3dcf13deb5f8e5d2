"""Institution profiles (scanner + protocol, and the population the site sees) and the acquisition that
turns the 1 mm truth into a CT.

Acquisition = slice-profile and in-plane blur (the reconstruction kernel), resampling to the site's voxel
grid, correlated noise of the site's texture, a per-case HU calibration offset and the reconstructed field of
view. The internal site is a modern thin-slice protocol with a sharp bone kernel; the external site
reconstructs thicker slices with a softer kernel, a larger field of view (coarser pixels), coarse-grained
low-dose noise and a drifting calibration, and serves an older population with another mix of primary
tumours and a lower prevalence of malignancy: a real domain shift that a model trained on one site meets at
the other (as in multi-centre CT radiomics, where kernel and slice thickness dominate feature shift).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from mvcf.synth.anatomy import TRUTH_SPACING_MM, RenderedCase


@dataclass(frozen=True)
class Population:
    """Who is scanned at a site: bone density by class, and the primary-tumour mix of its MVCF patients."""

    ovcf_bone_hu: tuple[float, float] = (50.0, 110.0)      # trabecular HU range of osteoporotic patients
    mvcf_osteopenic: float = 0.35                          # fraction of MVCF patients who are osteopenic too
    mvcf_osteopenic_hu: tuple[float, float] = (65.0, 125.0)
    mvcf_normal_hu: tuple[float, float] = (110.0, 210.0)
    blastic: float = 0.20                                  # prostate/breast-like sclerotic metastases
    myeloma: float = 0.05                                  # diffuse permeative lysis, pedicles spared, few masses
    mimic: float = 1.0                                     # x the OVCF look-alike findings (haematoma, islands...)
    strength: float = 1.0                                  # x the malignant signs (how advanced at presentation)
    occult: float = 1.0                                    # x the fraction of MVCFs with nothing but a small lesion
    mvcf_collapse: float = 1.0                             # x the height loss of MVCFs (surveillance finds them early)
    prevalence: Optional[float] = None                     # MVCF fraction; None = the cohort's --prevalence


@dataclass(frozen=True)
class InstitutionProfile:
    name: str
    pixel_mm: tuple[float, float]       # in-plane spacing, drawn per case from this range
    slice_mm: tuple[float, float]       # slice thickness = slice spacing, drawn per case
    kernel_sigma_mm: float              # in-plane point-spread (Gaussian sigma); larger = softer kernel
    noise_hu: tuple[float, float]       # noise standard deviation range
    noise_grain_mm: float               # noise correlation length (soft kernels: coarser grain)
    hu_offset: tuple[float, float]      # calibration offset: mean, per-case standard deviation
    population: Population = Population()
    description: str = ""


INSTITUTIONS: dict[str, InstitutionProfile] = {
    "internal": InstitutionProfile(
        name="internal", pixel_mm=(0.9, 1.1), slice_mm=(1.0, 1.25), kernel_sigma_mm=0.45,
        noise_hu=(22.0, 32.0), noise_grain_mm=0.5, hu_offset=(0.0, 3.0),
        population=Population(ovcf_bone_hu=(45.0, 105.0), mvcf_osteopenic=0.15, mvcf_normal_hu=(120.0, 220.0),
                              blastic=0.15, myeloma=0.05, mimic=0.7, strength=1.25, occult=0.5,
                              mvcf_collapse=0.7),
        description="thin slices, sharp bone kernel, well calibrated; a tertiary spine-oncology centre whose "
                    "MVCF patients present with advanced, mostly osteolytic solid-tumour metastases"),
    "external": InstitutionProfile(
        name="external", pixel_mm=(1.3, 1.6), slice_mm=(2.5, 3.5), kernel_sigma_mm=1.0,
        noise_hu=(35.0, 55.0), noise_grain_mm=1.6, hu_offset=(25.0, 20.0),
        population=Population(ovcf_bone_hu=(40.0, 100.0), mvcf_osteopenic=0.45, mvcf_osteopenic_hu=(45.0, 105.0),
                              mvcf_normal_hu=(95.0, 170.0), blastic=0.15, myeloma=0.15, mimic=1.0, mvcf_collapse=0.85,
                              prevalence=0.4),
        description="thick slices, soft kernel, large field of view, coarse low-dose noise, calibration "
                    "drift; older, osteopenic patients with more look-alike findings, more myeloma (collapsing like "
                    "osteoporosis), less advanced metastases than the oncology centre's, 40 % MVCF"),
}


@dataclass
class Acquired:
    """A simulated CT on the site's grid: voxels [z, y, x] (int16 HU) and labels (uint8), LPS geometry with
    identity direction (i = L, j = P, k = S)."""

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]   # (i, j, k) mm
    origin: tuple[float, float, float]    # LPS mm of voxel (0, 0, 0)


def _axis_matrix(n_in: int, first_in: float, step_in: float, n_out: int, first_out: float, step_out: float,
                 sigma_mm: float) -> np.ndarray:
    """(n_out, n_in) weights that blur with a Gaussian of `sigma_mm` and sample at the output centres,
    rows normalised (so edges behave like 'nearest' padding). Blur and resampling in one matrix product."""
    p_in = first_in + step_in * np.arange(n_in)
    p_out = first_out + step_out * np.arange(n_out)
    sigma = max(sigma_mm, 0.4 * step_in)
    w = np.exp(-0.5 * ((p_out[:, None] - p_in[None, :]) / sigma) ** 2)
    w[w < 1e-4] = 0.0
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def acquire(case: RenderedCase, profile: InstitutionProfile, rng: np.random.Generator,
            lps_offset: np.ndarray) -> Acquired:
    """Simulate scanning the truth volume at `profile`'s site; `lps_offset` places the truth frame in
    patient coordinates (so cases do not all share one origin)."""
    pixel = float(np.round(rng.uniform(*profile.pixel_mm), 3))
    thickness = float(np.round(rng.uniform(*profile.slice_mm) * 4) / 4)
    t = TRUTH_SPACING_MM
    grid = case.grid
    centres_in = np.array([grid.xs[0], grid.ys[0], grid.zs[0]], dtype=float)
    extent = np.array([len(grid.xs), len(grid.ys), len(grid.zs)], dtype=float) * t
    step = np.array([pixel, pixel, thickness])
    size = np.floor(extent / step).astype(int)
    start = centres_in - t / 2 + step / 2          # centre of output voxel 0 (truth frame, mm)
    # slice sensitivity profile: FWHM = thickness; in-plane: the kernel's point spread plus the pixel
    sigmas = (np.hypot(profile.kernel_sigma_mm, pixel / 2.355),) * 2 + (thickness / 2.355,)
    mx, my, mz = (_axis_matrix(n_in, c, t, int(n), s0, st, sg) for n_in, c, n, s0, st, sg in zip(
        (len(grid.xs), len(grid.ys), len(grid.zs)), centres_in, size, start, step, sigmas))
    hu = np.einsum("zyx,Xx->zyX", case.hu, mx, optimize=True)
    hu = np.einsum("zyx,Yy->zYx", hu, my, optimize=True)
    hu = (mz @ hu.reshape(len(grid.zs), -1)).reshape(int(size[2]), int(size[1]), int(size[0]))
    nearest = [np.clip(np.rint((s0 + st * np.arange(int(n)) - c) / t).astype(int), 0, n_in - 1)
               for n_in, c, n, s0, st in zip((len(grid.xs), len(grid.ys), len(grid.zs)), centres_in, size,
                                             start, step)]
    labels = case.labels[np.ix_(nearest[2], nearest[1], nearest[0])]

    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    grain = profile.noise_grain_mm / pixel
    noise = ndimage.gaussian_filter(noise, (0.0, grain, grain), truncate=2.5)
    noise *= float(rng.uniform(*profile.noise_hu)) / max(float(noise.std()), 1e-6)
    offset = rng.normal(profile.hu_offset[0], profile.hu_offset[1])
    hu = np.clip(np.rint(hu + noise + offset), -1024, 3071).astype(np.int16)
    origin = tuple(float(v) for v in (start + lps_offset))
    return Acquired(hu=hu, labels=labels.astype(np.uint8), spacing=(pixel, pixel, thickness), origin=origin)

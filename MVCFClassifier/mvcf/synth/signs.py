"""The CT signs that separate malignant (MVCF) from osteoporotic (OVCF) compression fractures.

`sample_signs` draws which signs a case shows and how strongly, from its class and the difficulty;
`FractureSigns` deforms the target body (height loss, posterior wall) and paints the rest. Signs overlap
between classes on purpose (an osteoporotic patient may have a haematoma that looks like a mass, a small
metastasis may show nothing but a collapse), so no classifier can reach AUC 1. docs/synthetic.md gives the
numbers and the literature behind them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from mvcf.synth.shapes import ellipsoid_sdf, occupancy, paint, smooth_noise

if TYPE_CHECKING:
    from mvcf.synth.anatomy import VertebraGeometry
    from mvcf.synth.institutions import Population

DIFFICULTIES = ("easy", "standard", "hard")

# strength scales the malignant signs (probability and size); mimic scales the look-alike findings.
_DIFFICULTY = {
    "easy": {"strength": 1.25, "mimic": 0.4, "occult": 0.02, "guarantee": 1.0},
    "standard": {"strength": 1.0, "mimic": 1.0, "occult": 0.12, "guarantee": 0.88},
    "hard": {"strength": 0.7, "mimic": 1.8, "occult": 0.15, "guarantee": 0.5},
}


@dataclass
class FractureSigns:
    """Which signs one fractured vertebra shows. Distances in mm, densities in HU."""

    label: int
    height_kind: str = "none"          # wedge | biconcave | crush | none
    height_loss: float = 0.0           # fraction of the body height lost where it is worst
    sclerotic_band_hu: float = 0.0     # OVCF: impaction band under the collapsed endplate
    sclerotic_band_mm: float = 0.0
    fracture_lines: int = 0            # OVCF: lines inside an intact cortex
    vacuum_cleft: bool = False         # OVCF: intravertebral gas
    retropulsion_mm: float = 0.0       # OVCF: angular posterosuperior fragment into the canal
    lesion_fraction: float = 0.0       # MVCF: fraction of the cancellous body replaced by tumour
    lesion_pattern: str = ""           # geographic | moth-eaten | permeative
    lesion_hu: float = 0.0             # ~20-60 lytic, ~650 blastic
    cortical_breach: bool = False      # MVCF: cortex destroyed where the tumour reaches it
    pedicle_side: int = 0              # MVCF: +1 left / -1 right pedicle destroyed, 0 none
    convex_wall_mm: float = 0.0        # MVCF: smooth posterior bulge of the whole wall
    epidural_mass_mm: float = 0.0      # MVCF: soft tissue in the anterior epidural space
    paraspinal_mass_mm: float = 0.0    # MVCF: focal, asymmetric paravertebral mass
    haematoma_mm: float = 0.0          # mimic (OVCF): thin symmetric paravertebral soft tissue
    bone_island: bool = False          # mimic (OVCF): small dense nodule
    fat_focus: bool = False            # mimic (OVCF): well-defined lucent focus, intact cortex
    primary: str = ""                  # MVCF: solid-lytic | blastic | myeloma (the site's tumour mix)
    extra: dict = field(default_factory=dict)

    def names(self) -> list[str]:
        """The signs present, for the manifest's `signs` column (never read by any model or baseline)."""
        out = [self.height_kind] if self.height_kind != "none" else []
        flags = {
            "sclerotic_band": self.sclerotic_band_hu > 0, "fracture_lines": self.fracture_lines > 0,
            "vacuum_cleft": self.vacuum_cleft, "retropulsion": self.retropulsion_mm > 0,
            "lytic": 0 < self.lesion_hu < 300 and self.lesion_fraction > 0,
            "blastic": self.lesion_hu >= 300 and self.lesion_fraction > 0,
            "cortical_breach": self.cortical_breach, "pedicle": self.pedicle_side != 0,
            "convex_wall": self.convex_wall_mm > 0, "epidural_mass": self.epidural_mass_mm > 0,
            "paraspinal_mass": self.paraspinal_mass_mm > 0, "haematoma": self.haematoma_mm > 0,
            "bone_island": self.bone_island, "fat_focus": self.fat_focus, "myeloma": self.primary == "myeloma",
        }
        return out + [name for name, on in flags.items() if on]

    def as_dict(self) -> dict:
        return asdict(self)

    # --- geometry hooks called by anatomy.render_anatomy for the target vertebra ---

    def body_heights(self, X, Y, a, b, h, top, bottom):
        """Superior/inferior endplate maps (2D, mm) after the collapse."""
        loss = self.height_loss * 2 * h
        if self.height_kind == "wedge":
            anterior = np.clip((0.9 * b - Y) / (1.8 * b), 0, 1)
            top = top - loss * anterior
        elif self.height_kind == "biconcave":
            centre = np.clip(1 - ((X / a) ** 2 + (Y / b) ** 2), 0, 1) ** 0.7
            top = top - 0.5 * loss * centre
            bottom = bottom + 0.5 * loss * centre
        elif self.height_kind == "crush":
            top = top - 0.6 * loss
            bottom = bottom + 0.4 * loss
        return top.astype(np.float32), bottom.astype(np.float32)

    def posterior_wall_shift(self, X, Z, a, b, h, top):
        """Posterior displacement (mm) of the posterior body wall: smooth and convex for tumour,
        angular and confined to the upper corner for a retropulsed fragment."""
        shift = np.zeros((Z.shape[0], 1, X.shape[-1]), np.float32)
        if self.convex_wall_mm > 0:
            zc = float(np.median(top)) / 2 - h / 2
            shift += self.convex_wall_mm * np.clip(1 - ((Z - zc) / h) ** 2, 0, 1) * \
                np.clip(1 - (X / (0.75 * a)) ** 2, 0, 1)
        if self.retropulsion_mm > 0:
            upper = float(np.median(top))
            frag = np.clip((Z - (upper - 8.0)) / 3.0, 0, 1)
            shift += self.retropulsion_mm * frag * (np.abs(X) < 0.55 * a)
        return shift

    # --- painting, after the normal bone ---

    def paint(self, hu: np.ndarray, geo: "VertebraGeometry", rng: np.random.Generator) -> None:
        """Draw the density signs into `hu` (the target's slab of the truth grid, modified in place)."""
        spec = geo.spec
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        X, Y, Z = geo.X, geo.Y, geo.Z
        inner = occupancy(geo.body_sdf + spec.cortex_mm + 0.5)
        if self.sclerotic_band_hu > 0:
            depth = geo.top[None] - Z
            band = np.clip(1 - depth / self.sclerotic_band_mm, 0, 1) ** 0.5 * (depth > -1)
            if self.height_kind in ("biconcave", "crush"):
                depth_lo = Z - geo.bottom[None]
                band = np.maximum(band, 0.7 * np.clip(1 - depth_lo / self.sclerotic_band_mm, 0, 1) ** 0.5)
            ragged = 1 + 0.35 * smooth_noise(rng, hu.shape, 1.5)
            hu += self.sclerotic_band_hu * band * inner * ragged
        for _ in range(self.fracture_lines):
            normal = np.array([rng.normal(0, 0.25), rng.normal(0, 0.35), 1.0])
            normal /= np.linalg.norm(normal)
            z0 = rng.uniform(-0.5 * h, 0.5 * h)
            dist = np.abs(normal[0] * X + normal[1] * Y + normal[2] * (Z - z0))
            line = occupancy(dist - 0.45, 0.8)
            hu += (rng.choice([-110.0, 180.0])) * line * inner
        if self.bone_island:
            c = (rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.3) * b, rng.uniform(-0.4, 0.4) * h)
            r = rng.uniform(2.0, 3.5)
            paint(hu, occupancy(ellipsoid_sdf(X, Y, Z, c, (r, r, r))) * inner, 950.0)
        if self.fat_focus:
            c = (rng.uniform(-0.4, 0.4) * a, rng.uniform(-0.5, 0.2) * b, rng.uniform(-0.3, 0.3) * h)
            r = rng.uniform(3.0, 5.0)
            focus = ellipsoid_sdf(X, Y, Z, c, (r, r * 0.9, r * 0.8))
            paint(hu, occupancy(focus + 1.2) * inner, 350.0)   # sclerotic rim
            paint(hu, occupancy(focus) * inner, float(rng.uniform(-60, 0)))
        if self.lesion_fraction > 0:
            self._paint_lesion(hu, geo, inner, rng)
        if self.vacuum_cleft:
            upper = float(np.median(geo.top))
            c = (rng.uniform(-0.3, 0.3) * a, rng.uniform(-0.5, 0.0) * b, upper - rng.uniform(2.5, 5.0))
            radii = (rng.uniform(7, 13), rng.uniform(4, 8), rng.uniform(1.5, 3.0))
            paint(hu, occupancy(ellipsoid_sdf(X, Y, Z, c, radii)) * inner, -850.0)
        if self.haematoma_mm > 0:
            shell = geo.body_sdf
            ring = occupancy(np.abs(shell - self.haematoma_mm / 2) - self.haematoma_mm / 2)
            ring = ring * (np.abs(Z) < 0.9 * h) * (Y < 0.6 * b) * (geo.posterior_sdf > 0)
            paint(hu, ring, float(rng.uniform(45, 65)))
        self._paint_masses(hu, geo, rng)

    def _paint_lesion(self, hu, geo: "VertebraGeometry", inner, rng) -> None:
        """Tumour replacing cancellous bone (and cortex/pedicle where those signs are on)."""
        spec = geo.spec
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        X, Y, Z = geo.X, geo.Y, geo.Z
        sigma = {"geographic": 5.0, "moth-eaten": 2.0, "permeative": 1.2}[self.lesion_pattern]
        noise = smooth_noise(rng, hu.shape, sigma)
        seed = np.array([rng.uniform(-0.5, 0.5) * a, rng.uniform(0.0, 0.6) * b, rng.uniform(-0.4, 0.4) * h])
        if self.pedicle_side:
            seed[0] = self.pedicle_side * rng.uniform(0.3, 0.6) * a
            seed[1] = 0.6 * b
        dist = np.sqrt((X - seed[0]) ** 2 + (Y - seed[1]) ** 2 + ((Z - seed[2]) * 1.3) ** 2)
        spread = 0.8 if self.lesion_pattern == "geographic" else 0.35
        score = noise * (1 - spread) - spread * dist / (0.6 * b)
        body = geo.body_sdf <= -1.0
        thr = float(np.quantile(score[body], 1 - self.lesion_fraction))
        lesion = np.clip((score - thr) / 0.15, 0, 1)
        allowed = inner
        if self.cortical_breach:
            near_seed = np.clip(1.5 - dist / (0.7 * b), 0, 1)
            allowed = np.maximum(inner, occupancy(geo.body_sdf - 0.5) * near_seed)
        weight = lesion * allowed
        if self.pedicle_side:
            ped = occupancy(geo.pedicle_sdf - 0.5) * (np.sign(X) == self.pedicle_side)
            weight = np.maximum(weight, ped * np.clip((lesion + 0.6), 0, 1))
        value = self.lesion_hu + (6.0 if self.lesion_hu < 300 else 120.0) * \
            smooth_noise(rng, hu.shape, 1.0)
        paint(hu, weight.astype(np.float32), value)

    def _paint_masses(self, hu, geo: "VertebraGeometry", rng) -> None:
        spec = geo.spec
        a, b, h = spec.half_width, spec.half_depth, spec.half_height
        X, Y, Z = geo.X, geo.Y, geo.Z
        outside_bone = occupancy(-np.minimum(geo.body_sdf, geo.posterior_sdf) + 0.5)
        lumps = None
        if self.epidural_mass_mm > 0 or self.paraspinal_mass_mm > 0:
            lumps = 1.8 * smooth_noise(rng, hu.shape, 2.5)
        if self.epidural_mass_mm > 0:
            size = self.epidural_mass_mm
            side = rng.uniform(-0.4, 0.4) * geo.canal_radii[0]
            c = (side, geo.canal_center_y - geo.canal_radii[1] * 0.6, rng.uniform(-0.3, 0.3) * h)
            mass = ellipsoid_sdf(X, Y, Z, c, (0.9 * size + 3, 0.45 * size + 1.5, 1.6 * size + 4)) + lumps
            paint(hu, occupancy(mass) * outside_bone, float(rng.uniform(40, 60)))
        if self.paraspinal_mass_mm > 0:
            size = self.paraspinal_mass_mm
            angle = rng.uniform(-0.45, 0.45) * np.pi + (0 if rng.random() < 0.5 else np.pi)
            c = (np.cos(angle) * (a + 0.3 * size), np.sin(angle) * 0.6 * b - 0.2 * b, rng.uniform(-0.3, 0.3) * h)
            mass = ellipsoid_sdf(X, Y, Z, c, (size, 0.8 * size, 1.3 * size)) + lumps
            paint(hu, occupancy(mass) * outside_bone, float(rng.uniform(38, 58)))


def sample_signs(rng: np.random.Generator, label: int, difficulty: str,
                 population: Optional["Population"] = None) -> FractureSigns:
    """Draw one fracture's signs for its class (1 = MVCF, 0 = OVCF) at the given difficulty; an MVCF's
    primary tumour comes from the site's `population` mix (default: the internal site's)."""
    from mvcf.synth.institutions import INSTITUTIONS

    if difficulty not in _DIFFICULTY:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}")
    knob = _DIFFICULTY[difficulty]
    population = population or INSTITUTIONS["internal"].population
    s, m = knob["strength"] * population.strength, knob["mimic"] * population.mimic
    signs = FractureSigns(label=label)
    if label == 0:
        signs.height_kind = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.5, 0.3, 0.2]))
        signs.height_loss = float(rng.uniform(0.15, 0.45))
        if rng.random() < 0.6:
            signs.sclerotic_band_hu = float(rng.uniform(180, 380))
            signs.sclerotic_band_mm = float(rng.uniform(3, 7))
        signs.fracture_lines = int(rng.random() < 0.5) * int(rng.integers(1, 4))
        signs.vacuum_cleft = bool(rng.random() < 0.25)
        if rng.random() < 0.3:
            signs.retropulsion_mm = float(rng.uniform(2, 5))
        if rng.random() < min(0.9, 0.18 * m):
            signs.haematoma_mm = float(rng.uniform(2, 5))
        signs.bone_island = bool(rng.random() < min(0.9, 0.1 * m))
        signs.fat_focus = bool(rng.random() < min(0.9, 0.12 * m))
        return signs
    occult = rng.random() < min(0.9, knob["occult"] * population.occult)
    draw = rng.random()
    signs.primary = "blastic" if draw < population.blastic else \
        "myeloma" if draw < population.blastic + population.myeloma else "solid-lytic"
    blastic = signs.primary == "blastic"
    signs.lesion_hu = float(rng.uniform(550, 750) if blastic else rng.uniform(15, 50))
    if signs.primary == "myeloma" and not occult:
        return _myeloma(rng, signs, s)
    signs.height_kind = str(rng.choice(["crush", "wedge", "biconcave", "none"], p=[0.42, 0.28, 0.15, 0.15]))
    signs.height_loss = float(rng.uniform(0.07, 0.41)) * population.mvcf_collapse if signs.height_kind != "none" else 0.0
    signs.lesion_pattern = str(rng.choice(["geographic", "moth-eaten", "permeative"], p=[0.5, 0.3, 0.2]))
    if occult:
        signs.lesion_fraction = float(rng.uniform(0.04, 0.12))
        return signs
    signs.lesion_fraction = float(np.clip(rng.uniform(0.25, 0.7) * s, 0.1, 0.85))
    signs.cortical_breach = bool(rng.random() < min(0.95, 0.7 * s)) and not blastic
    if rng.random() < min(0.95, 0.6 * s):
        signs.pedicle_side = int(rng.choice([-1, 1]))
    _wall_and_masses(rng, signs, s, (0.5, (1.5, 4.5)), (0.45, (4, 9)), (0.45, (7, 16)))
    hallmark = signs.cortical_breach or signs.pedicle_side or signs.epidural_mass_mm or signs.paraspinal_mass_mm
    if not hallmark and rng.random() < knob["guarantee"]:
        pick = int(rng.integers(0, 3))
        if pick == 0:
            signs.pedicle_side = int(rng.choice([-1, 1]))
        elif pick == 1:
            signs.paraspinal_mass_mm = float(rng.uniform(8, 16) * s)
        else:
            signs.epidural_mass_mm = float(rng.uniform(5, 9) * s)
    return signs


def _myeloma(rng: np.random.Generator, signs: FractureSigns, s: float) -> FractureSigns:
    """Myeloma: diffuse permeative or moth-eaten lysis through much of the body, pedicles usually spared,
    cortex and soft tissue less often involved; with the diffuse osteopenia it resembles osteoporosis
    (Lecouvet et al. 1997; Mulligan 2011)."""
    signs.lesion_pattern = str(rng.choice(["permeative", "moth-eaten"], p=[0.6, 0.4]))
    signs.height_kind = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.4, 0.4, 0.2]))
    signs.height_loss = float(rng.uniform(0.15, 0.45))
    signs.lesion_fraction = float(np.clip(rng.uniform(0.3, 0.75) * s, 0.1, 0.85))
    signs.cortical_breach = bool(rng.random() < min(0.95, 0.3 * s))
    _wall_and_masses(rng, signs, s, (0.25, (1.5, 3.5)), (0.25, (4, 8)), (0.25, (6, 12)))
    return signs


def _wall_and_masses(rng: np.random.Generator, signs: FractureSigns, s: float, wall, epidural, paraspinal) -> None:
    """Convex posterior wall, epidural and paraspinal mass, each (probability, (min, max) mm) x strength `s`."""
    for name, (p, (low, high)) in (("convex_wall_mm", wall), ("epidural_mass_mm", epidural),
                                   ("paraspinal_mass_mm", paraspinal)):
        if rng.random() < min(0.95, p * s):
            setattr(signs, name, float(rng.uniform(low, high) * s))

"""How much of each view mode's heatmap lies inside the lesion the synthetic generator drew.

    python scripts/heatmap_in_lesion.py --models demo_out/study --cases 12 --seed 11 [--methods gradcam,occlusion]
        [--out heatmap_in_lesion.json]

`--models` is a folder with one model bundle per view mode (`<mode>/model`, e.g. the study folder `mvcf demo`
writes). MVCF cases are generated in memory (mvcf.synth); the tumour's occupancy (the weight the generator
paints the lesion with, 0..1) is captured while the case is drawn and sampled on the CT's voxels. For each
mode and case: share = sum(heatmap * lesion) / sum(heatmap) over the CT lattice ("| vertebra": the heatmap
inside the vertebra label only), against the share of a uniform map over the vertebra label,
sum(vertebra * lesion) / sum(vertebra). Each `--methods` entry (mvcf.explain.METHODS) is scored; Grad-CAM of
the orthogonal mode with both ways of combining its three back-projections. Results in docs/screening.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def capture_lesion(store: dict):
    """Record the lesion weight, the truth grid and the spine spec while mvcf.synth draws a case."""
    from mvcf.synth import cohort, signs

    original_paint_lesion = signs.FractureSigns._paint_lesion
    original_render = cohort.render_anatomy
    original_spine = cohort.sample_spine

    def paint_lesion(self, hu, geo, inner, rng):
        real_paint = signs.paint

        def grab(target, weight, value):
            store["lesion"] = np.asarray(weight, np.float32).copy()
            store["z_slice"] = geo.z_slice
            return real_paint(target, weight, value)

        signs.paint = grab
        try:
            return original_paint_lesion(self, hu, geo, inner, rng)
        finally:
            signs.paint = real_paint

    def render(spine, fracture, rng):
        rendered = original_render(spine, fracture, rng)
        store["grid"] = rendered.grid
        return rendered

    def spine_spec(*args, **kwargs):
        spec = original_spine(*args, **kwargs)
        store["spine"] = spec
        return spec

    signs.FractureSigns._paint_lesion = paint_lesion
    cohort.render_anatomy = render
    cohort.sample_spine = spine_spec
    try:
        yield store
    finally:
        signs.FractureSigns._paint_lesion = original_paint_lesion
        cohort.render_anatomy = original_render
        cohort.sample_spine = original_spine


def lesion_on_ct(case, store: dict) -> np.ndarray:
    """The captured lesion weight (truth grid, 1 mm) sampled (nearest) on the acquired CT's voxels."""
    grid, zsl, lesion = store["grid"], store["z_slice"], store["lesion"]
    offset = np.asarray(case.body_center_lps) - store["spine"].target.center
    image = case.image
    k, j, i = np.indices(image.hu.shape)
    lps = np.asarray(image.origin) + np.stack([i, j, k], axis=-1) * np.asarray(image.spacing)
    truth = lps - offset
    xi = np.rint(truth[..., 0] - grid.xs[0]).astype(int)
    yi = np.rint(truth[..., 1] - grid.ys[0]).astype(int)
    zi = np.rint(truth[..., 2] - grid.zs[zsl][0]).astype(int)
    inside = (xi >= 0) & (xi < lesion.shape[2]) & (yi >= 0) & (yi < lesion.shape[1]) & (zi >= 0) & \
        (zi < lesion.shape[0])
    out = np.zeros(image.hu.shape, np.float32)
    out[inside] = lesion[zi[inside], yi[inside], xi[inside]]
    return out


def measure(models: Path, n_cases: int, seed: int, methods: tuple[str, ...] = ("gradcam",)) -> dict:
    from mvcf.ctimage import CTImage
    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model
    from mvcf.locate import from_mask
    from mvcf.synth import generate_case, plan_cohort
    from mvcf.synth.anatomy import level_label
    from mvcf.views import ViewSpec, build_views

    from mvcf import modes
    from mvcf.inference import default_model_path

    bundles = {p.parent.parent.name: load_model(p.parent, "cpu") for p in sorted(models.glob("*/model/model.json"))}
    bundles["2.5d-orthogonal (embedded demo, 64 px)"] = load_model(default_model_path(), "cpu")
    if not bundles:
        raise SystemExit(f"no <mode>/model bundles under {models}")
    plans = [p for p in plan_cohort(8 * n_cases, seed=seed) if p.label == 1]
    rows = []
    for plan in plans:
        if len(rows) >= n_cases:
            break
        store: dict = {}
        with capture_lesion(store):
            case = generate_case(plan, seed)
        if "lesion" not in store or case.signs.lesion_fraction < 0.1:
            continue
        ct = CTImage(case.image.hu, case.image.spacing, case.image.origin, source=plan.case_id)
        mask = CTImage(case.image.labels, case.image.spacing, case.image.origin)
        lesion = lesion_on_ct(case, store)
        vertebra = (case.image.labels == level_label(plan.level)).astype(np.float32)
        uniform = float((vertebra * lesion).sum() / vertebra.sum())
        location = from_mask(ct, mask, level_label(plan.level))
        row = {"case_id": plan.case_id, "level": plan.level, "lesion_fraction": case.signs.lesion_fraction,
               "signs": case.signs.names(), "uniform_over_vertebra": uniform}
        for mode, bundle in bundles.items():
            view = build_views(ct, location, ViewSpec.from_dict(bundle.view_spec))
            for method in methods:
                orthogonal = method == "gradcam" and bundle.mode == "2.5d-orthogonal"
                for combine in ("geometric", "mean") if orthogonal else ("",):
                    name = f"{mode} [{combine}]" if combine else mode
                    name = name if method == "gradcam" else f"{name} [{method}]"
                    if combine:
                        modes.get("2.5d-orthogonal").combine = combine
                    heat = heatmap_for(bundle, view, "cpu", target="MVCF", ct=ct, location=location, method=method)
                    block = _block_of(ct, heat)
                    values, in_lesion, in_vertebra = heat.voxels, lesion[block], vertebra[block]
                    total, inside = float(values.sum()), float((values * in_vertebra).sum())
                    row[name] = float((values * in_lesion).sum() / total) if total > 0 else None
                    row[name + " | vertebra"] = float((values * in_vertebra * in_lesion).sum() / inside) \
                        if inside > 0 else None
                modes.get("2.5d-orthogonal").combine = "geometric"
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for mode in [k for k in rows[0] if k not in ("case_id", "level", "lesion_fraction", "signs",
                                                   "uniform_over_vertebra")] if rows else []:
        values = [(r[mode], r["uniform_over_vertebra"]) for r in rows if r[mode] is not None]
        shares = np.array([v[0] for v in values])
        base = np.array([v[1] for v in values])
        summary[mode] = {"n": len(values), "mean_share_in_lesion": float(shares.mean()),
                         "mean_uniform_share": float(base.mean()), "ratio": float(shares.mean() / base.mean()),
                         "cases_above_uniform": int((shares > base).sum())}
    return {"summary": summary, "cases": rows, "seed": seed, "models": str(models)}


def _block_of(ct, heat) -> tuple:
    """The slices of the CT array the heatmap (on the CT lattice) covers."""
    lo = np.rint(ct.lps_to_index(heat.origin)).astype(int)
    size = np.asarray(heat.size_ijk)
    return tuple(slice(int(lo[a]), int(lo[a] + size[a])) for a in (2, 1, 0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--methods", default="gradcam", help="comma list of heatmap methods (gradcam, occlusion)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.models, args.cases, args.seed, tuple(args.methods.split(",")))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`mvcf views`: build the 2D / 2.5D / 3D model input around one vertebra and write it to a folder.

Output folder (written atomically): `views.npy` (the model input array), `views.json` (mode, shape, spacing,
centre, grids, channels, warnings), one NIfTI per sampled plane/stack and window (`<grid>_<window>.nii.gz`,
placed at the sampled grid's physical position so it overlays the CT in any viewer) and `preview.png`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mvcf.cli import args as A
from mvcf.errors import MVCFError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf import modes
    from mvcf.cli.location import add_location_arguments
    from mvcf.views import WINDOWS

    parser.add_argument("--ct", required=True, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    add_location_arguments(parser)
    parser.add_argument("--mode", choices=modes.names(), default=modes.DEFAULT, help="view mode (default: "
                        "%(default)s)")
    parser.add_argument("--size", type=A.ranged("size"), default=96, help="view size in pixels (default: %(default)s)")
    parser.add_argument("--spacing", type=A.SPACING_MM, default=1.0, help="isotropic pixel spacing in mm "
                        "(default: %(default)s)")
    add_stack_arguments(parser)
    parser.add_argument("--windows", type=A.WINDOWS, default="bone", help="comma-separated HU windows, one channel each: "
                        f"names ({', '.join(WINDOWS)}) or CENTER:WIDTH (default: %(default)s)")
    parser.add_argument("--antialias", action="store_true", help="smooth before sampling more coarsely than "
                        "the CT's voxels (Gaussian, off by default)")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """--n-slices and --slice-gap: the axial stack of the stacked 2.5D modes (views, train, study)."""
    from mvcf import modes

    stacked = [(m, modes.get(m).stack_defaults) for m in modes.stacked_names()]
    names = " / ".join(m for m, _ in stacked)
    parser.add_argument("--n-slices", type=A.ranged("n_slices"), metavar="N",
                        help=f"slices for {names} (default: {' / '.join(str(d[0]) for _, d in stacked)})")
    parser.add_argument("--slice-gap", type=A.SLICE_GAP_MM, metavar="MM",
                        help=f"mm between slices for {names} (default: {' / '.join(f'{d[1]:g}' for _, d in stacked)})")


def parse_windows(text: str) -> tuple:
    windows = []
    for item in (w.strip() for w in text.split(",") if w.strip()):
        if ":" in item:
            center, _, width = item.partition(":")
            try:
                windows.append((float(center), float(width)))
            except ValueError:
                raise MVCFError(f"a window is a name or CENTER:WIDTH in HU, got {item!r}") from None
        else:
            windows.append(item)
    if not windows:
        raise MVCFError("--windows needs at least one window")
    return tuple(windows)


def write_outputs(result, folder: Path) -> list[str]:
    """Write the NPY, the per-grid NIfTI files and the PNG preview of a ViewResult into `folder`."""
    import numpy as np

    files = ["views.npy"]
    np.save(folder / "views.npy", result.array)
    files += [path.name for path in result.write_volumes(folder)]
    write_preview(result, folder / "preview.png")
    files.append("preview.png")
    return files


def write_preview(result, path: Path) -> None:
    """A PNG of every grid and window: the plane, up to 8 slices of a stack, three planes of a cube."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view_mode = result.spec.view_mode
    panels = [panel for grid, window, volume in result.grid_volumes()
              for panel in view_mode.preview_panels(grid, window, volume)]
    columns = min(len(panels), 8)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels):
        ax.imshow(image, cmap="gray", interpolation="nearest", vmin=0 if result.spec.windows else None,
                  vmax=1 if result.spec.windows else None)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{result.mode}, {result.spacing_mm:g} mm (research use only)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args, reporter) -> int:
    from mvcf.cli.location import query_from_args
    from mvcf.fileio import atomic_dir
    from mvcf.locate import resolve
    from mvcf.progress import dumps, emit_result
    from mvcf.read_ct import read_ct
    from mvcf.views import ViewSpec, build_views

    from mvcf.outputs_guard import check_output

    out = check_output(args.out, [args.ct, args.mask], kind="folder", overwrite=args.overwrite, what="--out")
    spec = ViewSpec(mode=args.mode, size_px=args.size, spacing_mm=args.spacing, n_slices=args.n_slices,
                    slice_gap_mm=args.slice_gap, windows=parse_windows(args.windows), antialias=args.antialias)
    warnings: list[str] = []
    ct = read_ct(args.ct, warnings=warnings)
    location = resolve(ct, query_from_args(args))
    result = build_views(ct, location, spec)
    warnings += result.warnings
    for warning in warnings:
        reporter.log(warning, level="warning")
    payload = {**result.to_dict(), "warnings": warnings, "ct": str(args.ct), "location": location.to_dict(),
               "out": str(out)}
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        payload["files"] = write_outputs(result, tmp)
        (tmp / "views.json").write_text(dumps(payload, indent=2) + "\n", encoding="utf-8")
    emit_result(reporter, payload, args.json,
                lambda: print(f"{result.mode} views {list(result.shape)} at {result.spacing_mm:g} mm -> {out}"),
                indent=None)
    return 0

"""`mvcf predict`: classify one vertebra of a CT with a model bundle (default: the embedded demo bundle)."""
from __future__ import annotations

import argparse

from mvcf.errors import MVCFError

POINT_HELP = "three comma-separated numbers; write --point-{0}=X,Y,Z when X is negative"


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """The vertebra options of `mvcf views`: one point (RAS, LPS or IJK) or a mask with a label."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--point-ras", metavar="X,Y,Z", help="vertebra centre in RAS mm (Slicer); "
                       + POINT_HELP.format("ras"))
    where.add_argument("--point-lps", metavar="X,Y,Z", help="vertebra centre in LPS mm (ITK/DICOM); "
                       + POINT_HELP.format("lps"))
    where.add_argument("--point-ijk", metavar="I,J,K", help="vertebra centre as a voxel index (0-based); "
                       + POINT_HELP.format("ijk"))
    where.add_argument("--mask", metavar="PATH", help="label mask; the centre is the centroid of --label")
    parser.add_argument("--label", type=int, help="label value of the vertebra in --mask (e.g. "
                        "TotalSegmentator 31 = L1)")
    parser.add_argument("--refine", action="store_true", help="recentre the point on the vertebral body "
                        "from bone intensity (heuristic, off by default)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", required=True, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    add_location_arguments(parser)
    parser.add_argument("--model", metavar="DIR", help="model bundle folder (default: the embedded demo model, "
                        "trained on synthetic data)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--heatmap", metavar="OUT.nii.gz", help="also write a Grad-CAM heatmap on the view grid "
                        "(overlays the CT in any viewer)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def locate_from_args(args: argparse.Namespace, ct):
    from mvcf.cli.views import locate_from_args
    from mvcf.locate import refine_on_body

    location = locate_from_args(args, ct)
    return refine_on_body(ct, location) if args.refine else location


def run(args: argparse.Namespace, reporter) -> int:
    import time

    from mvcf.predict import predict_ct
    from mvcf.progress import JsonLinesReporter, dumps
    from mvcf.read_ct import read_ct

    if args.heatmap is not None and not str(args.heatmap).endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
        raise MVCFError("--heatmap must name a .nii.gz, .nii, .nrrd or .mha file")
    reporter.progress(0, 3, "reading CT")
    started = time.perf_counter()
    ct = read_ct(args.ct)
    read_ms = 1000 * (time.perf_counter() - started)
    reporter.progress(1, 3, "locating the vertebra")
    location = locate_from_args(args, ct)
    reporter.progress(2, 3, "classifying")
    result = predict_ct(ct, location, args.model, args.device)
    result.timing_ms = {"read_ct": round(read_ms, 2), **result.timing_ms,
                        "total": round(1000 * (time.perf_counter() - started), 2)}
    payload = result.to_dict()
    if args.heatmap:
        from mvcf.explain import write_heatmap

        payload["heatmap"] = str(write_heatmap(ct, location, args.model, args.heatmap, device=result.device))
    reporter.progress(3, 3, "done")
    if args.json:
        print(dumps(payload, indent=2))
    else:
        reporter.close()
        print(f"probability_malignant: {result.probability_malignant:.3f}")
        print(f"prediction: {result.prediction} (threshold {result.threshold:.3f})")
        print(f"model: {result.model['name']} {result.model['version']} sha256 {result.model['sha256'][:12]}")
        print(f"center_lps: {', '.join(f'{v:.1f}' for v in result.center_lps)} mm; device {result.device}; "
              f"{result.timing_ms['total']:.0f} ms")
        for warning in result.warnings:
            print(f"warning: {warning}")
        print(result.disclaimer)
    if isinstance(reporter, JsonLinesReporter):
        reporter.result(payload)
    return 0

"""`mvcf predict`: classify vertebrae of a CT with a model bundle (default: the embedded demo bundle).

One vertebra (a point or --mask with one --label): one result object, exactly as it always was. Several
vertebrae (--locations FILE, or --mask with --label repeated): the CT and the bundle are loaded once, then
each vertebra in turn; a vertebra that fails (absent label, point outside the CT...) gets an `error`
instead of a probability and the others go on. Exit code 0 when at least one vertebra was classified; 2
with a one-line `error: ...` when the locations file is bad (nothing is run) or when every vertebra
failed (their errors are still printed).
"""
from __future__ import annotations

import argparse

from mvcf.errors import MVCFError


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """The vertebra options of `mvcf views` (mvcf.cli.location) plus --locations and a repeatable --label."""
    from mvcf.cli.location import add_location_arguments as add_vertebra_options

    where = add_vertebra_options(parser, several=True)
    where.add_argument("--locations", metavar="FILE", help="several vertebrae in one run: a JSON list or a CSV "
                       "with a header; each entry has a name and one of point_lps, point_ras, point_ijk (three "
                       "numbers) or mask + label, optionally a heatmap output path (relative paths resolve "
                       "against FILE's folder); exit code 0 when at least one vertebra was classified, 2 when "
                       "FILE is bad or every vertebra failed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", required=True, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    add_location_arguments(parser)
    parser.add_argument("--model", metavar="DIR", help="model bundle folder (default: the embedded demo model, "
                        "trained on synthetic data)")
    from mvcf.inference import BACKENDS, DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="engine for the network: auto = ONNX Runtime when the bundle has an ONNX graph "
                             "(no torch import; fast start), else torch")
    parser.add_argument("--heatmap", metavar="OUT.nii.gz", help="also write a heatmap on the CT's lattice "
                        "(overlays the CT in any viewer); one vertebra only (with --locations: a heatmap per "
                        "entry)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout (several "
                        "vertebrae: {\"results\": [one object per vertebra, or its name and error]})")
    from mvcf.cli.outputs import add_output_arguments

    add_output_arguments(parser)


def queries_from_args(args: argparse.Namespace):
    """The vertebrae of a multi-vertebra run (list of VertebraQuery), or None for the single-vertebra case."""
    from mvcf.cli.location import query_from_args
    from mvcf.locations_file import read_locations

    labels = args.label or []
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:   # it was classified twice under one name, with two key images in the report
        raise MVCFError(f"--label {twice[0]} is given twice")
    several = args.locations is not None or (args.mask is not None and len(labels) > 1)
    if several and args.heatmap is not None:
        raise MVCFError("--heatmap names one file: for several vertebrae give each entry of --locations its "
                        "own heatmap")
    if args.locations is not None:
        if labels:
            raise MVCFError("--label applies only with --mask (a locations file gives each entry its label)")
        return read_locations(args.locations, [p for p in (args.ct, args.model) if p is not None])
    if several:
        return [query_from_args(args, label) for label in labels]
    return None


def check_placement(args: argparse.Namespace) -> None:
    """Before reading anything large: the model card is valid and the heatmap may be written where asked
    (never over the CT, the mask or the model, never over a file mvcf did not write)."""
    from mvcf.models.bundle import read_card
    from mvcf.outputs_guard import check_output
    from mvcf.inference import default_model_path

    read_card(args.model if args.model is not None else default_model_path())
    if args.heatmap is not None:
        check_output(args.heatmap, [args.ct, args.mask, args.model], kind="file", overwrite=True,
                     what="--heatmap")


def run(args: argparse.Namespace, reporter) -> int:
    import time

    from mvcf.cli.location import query_from_args
    from mvcf.cli.outputs import check_outputs, finish_outputs, warn_unused_heatmap_method, write_outputs
    from mvcf.locate import resolve
    from mvcf.locations_file import HEATMAP_SUFFIXES
    from mvcf.outputs_guard import check_outputs_distinct, check_outside_folders
    from mvcf.fileio import RunOutputs, undone_on_failure
    from mvcf.predict import predict_ct
    from mvcf.signals import outputs_final
    from mvcf.progress import emit_result
    from mvcf.read_ct import read_ct

    if args.heatmap is not None and not str(args.heatmap).endswith(HEATMAP_SUFFIXES):
        raise MVCFError("--heatmap must name a .nii.gz, .nii, .nrrd or .mha file")
    check_placement(args)
    queries = queries_from_args(args)
    per_vertebra = [] if queries is None else [(f"{q.name} {field}", path) for q in queries for field, path in
                                               (("heatmap", q.heatmap), ("views", q.views)) if path is not None]
    check_outside_folders(per_vertebra if queries is not None else [("--heatmap", args.heatmap)],
                          [("--report", args.report), ("--dicom-out", args.dicom_out)])
    warn_unused_heatmap_method(args, "--heatmap, --report or --dicom-out", args.heatmap is not None
                               or any(q.heatmap is not None for q in queries or []))
    if queries is not None:
        check_outputs_distinct(per_vertebra, [args.ct, args.model, args.locations])
        return run_many(args, reporter, queries)
    plan = check_outputs(args)
    reporter.progress(0, 3, "reading CT")
    started = time.perf_counter()
    ct_warnings: list[str] = []   # which DICOM series, HU scaling: part of the result's record
    ct = read_ct(args.ct, warnings=ct_warnings, series_uid=args.series_uid)
    read_ms = 1000 * (time.perf_counter() - started)
    reporter.progress(1, 3, "locating the vertebra")
    location = resolve(ct, query_from_args(args))
    reporter.progress(2, 3, "classifying")
    result = predict_ct(ct, location, args.model, args.device, args.backend)
    result.warnings[:0] = ct_warnings
    result.timing_ms = {"read_ct": round(read_ms, 2), **result.timing_ms,
                        "total": round(1000 * (time.perf_counter() - started), 2)}
    payload = result.to_dict()
    written = RunOutputs([args.heatmap])
    with undone_on_failure(written):
        if args.heatmap:
            from mvcf.explain import engine_for, write_prediction_heatmap
            from mvcf.inference import load_model

            bundle = load_model(args.model, result.device, engine_for(args.heatmap_method, args.backend))
            payload["heatmap"] = str(write_prediction_heatmap(
                bundle, result, args.heatmap, device=result.device, ct=ct, location=location,
                method=args.heatmap_method,
                progress=lambda done, total: reporter.progress(2, 3, f"occlusion heatmap: {done}/{total} blocks"),
                undo=written))
            payload["heatmap_method"] = args.heatmap_method
        # no plan: no report or DICOM output asked for (a second check would retrieve the study again)
        outputs = write_outputs(args, ct, [{"name": location.name or "vertebra", **payload}], args.model,
                                result.device, plan=plan, undo=written,
                                on_progress=lambda _done, _total, message: reporter.log(message)) \
            if plan is not None else {}
    outputs_final()   # a cancel from here on finds nothing left to undo
    if outputs:
        payload["outputs"] = outputs
    reporter.progress(3, 3, "done")

    def text() -> None:
        from mvcf.predict import shown_decimals

        digits = shown_decimals(result.threshold, [result.probability_malignant])
        print(f"probability_malignant: {result.probability_malignant:.{digits}f}")
        print(f"prediction: {result.prediction} (threshold {result.threshold:.{digits}f})")
        print(f"model: {result.model['name']} {result.model['version']} sha256 {result.model['sha256'][:12]}")
        print(f"center_lps: {', '.join(f'{v:.1f}' for v in result.center_lps)} mm; device {result.device}; "
              f"{result.timing_ms['total']:.0f} ms")
        for warning in result.warnings:
            print(f"warning: {warning}")
        print(result.disclaimer)

    as_event = emit_result(reporter, payload, args.json, text)
    return finish_outputs(outputs, quiet=args.json or as_event)


def run_many(args: argparse.Namespace, reporter, queries) -> int:
    """Several vertebrae: read the CT and load the bundle once, then classify them all in one batched pass
    (mvcf.predict.predict_ct_file, the same call as the warm worker's)."""
    from mvcf.cli.outputs import check_outputs, finish_outputs, write_outputs
    from mvcf.fileio import RunOutputs, undone_on_failure
    from mvcf.predict import predict_ct_file
    from mvcf.signals import outputs_final
    from mvcf.progress import emit_result

    plan = check_outputs(args)
    written = RunOutputs([p for q in queries for p in (q.heatmap, q.views)])
    with undone_on_failure(written):   # a Cancel during the report takes the heatmaps and views away too
        payload, bundle, ct = predict_ct_file(args.ct, queries, args.model, args.device, args.backend,
                                              refine=args.refine, on_progress=reporter.progress,
                                              series_uid=args.series_uid, heatmap_method=args.heatmap_method,
                                              outputs=written)
        results = payload["results"]
        outputs = write_outputs(args, ct, results, bundle, bundle.device,
                                on_progress=lambda _done, _total, message: reporter.log(message), plan=plan,
                                undo=written) \
            if plan is not None and any("error" not in r for r in results) else {}
    outputs_final()
    if outputs:
        payload["outputs"] = outputs
    as_event = emit_result(reporter, payload, args.json,
                           lambda: print_many(results, bundle.identity(), bundle.device))
    failed = [r for r in results if "error" in r]
    if len(failed) == len(results):
        raise MVCFError(f"none of the {len(results)} vertebrae could be classified; {failed[0]['name']}: "
                        f"{failed[0]['error']}")
    return finish_outputs(outputs, quiet=args.json or as_event)


def print_many(results: list, model: dict, device: str) -> None:
    """One line per vertebra, the model once, each distinct warning once (with the vertebrae it concerns),
    then the disclaimer."""
    from mvcf import RESEARCH_USE_DISCLAIMER

    from mvcf.predict import results_decimals

    warnings: dict[str, list[str]] = {}
    digits = results_decimals([r for r in results if "error" not in r])
    for r in results:
        if "error" in r:
            print(f"{r['name']}: error: {r['error']}")
            continue
        print(f"{r['name']}: probability_malignant {r['probability_malignant']:.{digits}f}, {r['prediction']} "
              f"(threshold {r['threshold']:.{digits}f}); center_lps {', '.join(f'{v:.1f}' for v in r['center_lps'])} "
              f"mm; {r['timing_ms']['total']:.0f} ms")
        for warning in r["warnings"]:
            warnings.setdefault(warning, []).append(r["name"])
    print(f"model: {model['name']} {model['version']} sha256 {model['sha256'][:12]}; device {device}")
    for warning, names in warnings.items():
        print(f"warning ({', '.join(names)}): {warning}")
    print(RESEARCH_USE_DISCLAIMER)

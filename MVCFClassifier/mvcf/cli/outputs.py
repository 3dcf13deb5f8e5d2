"""Where results go besides stdout: the case report, DICOM objects and a PACS (and, on the way in, a study
fetched from a PACS). `mvcf predict` and `mvcf screen` call the same functions, in this order:

    add_output_arguments(parser)
        adds --heatmap-method, --series-uid, --retrieve-study UID, --retrieve-from URL, --report DIR,
        --include-identifiers, --dicom-out DIR, --send AET@HOST:PORT, --calling-aet AET, --dicomweb URL.
    check_outputs(args) -> OutputPlan | None
        before the prediction: every refusal that needs no results (bad --send, AE title or URL, a report
        or DICOM folder that is a file, a missing extra); then, with --retrieve-study/--retrieve-from, the
        study fetched by WADO-RS into the --ct folder (retrieve_input); then the refusals that need the
        source (a NIfTI or blank-UID source for DICOM output). None when no output was asked for. Then
        read the CT with read_ct(args.ct, series_uid=args.series_uid).
    write_outputs(args, ct, results, model=None, device="cpu", on_progress=None, plan=None, undo=None) -> dict
        ct: the CTImage the results come from. results: one dict per vertebra as `mvcf predict` emits
        them (name, probability_malignant, prediction, threshold, model{name,version,sha256}, center_lps,
        warnings; or name + error), optionally with level, height_*_mm, genant_grade and trabecular_hu,
        which the report and the SR then show. Screening rows may leave out threshold and model (the
        bundle's are used) and give `notes` for warnings; a row whose probability_malignant or
        center_lps is None is "not classified": its measurements are still reported, without key images.
        model: the bundle folder, a loaded Bundle or None (demo bundle), for the heatmaps. plan: check_outputs' result (checked again when None). Returns
        {"report": {html, pdf, json}, "dicom": [paths], "sent": [{to, ok, files, attempts, error, stored}],
        "dicom_dir"}, keys only for what was asked, {} when nothing was. Refusals and unwritable folders
        are MVCFError (one line). A cancel or error before the PACS send removes the report and DICOM
        files already written (and, with `undo`, the caller's fileio.RunOutputs, what it holds too); once
        the send starts, every file stays.
    finish_outputs(outputs, quiet=False) -> int
        prints where the outputs went (unless quiet, e.g. with --json), one `error:` line on stderr per
        failed send (the files stay), and returns the exit code: 2 if a send failed, else 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.explain import check_method

    parser.add_argument("--heatmap-method", default="gradcam", type=check_method, metavar="{gradcam,occlusion}",
                        help="how every heatmap this run writes is made (predict's --heatmap, the report's key "
                             "images, DICOM Parametric Maps): gradcam "
                             "(default: one backward pass, placed by the view mode) or occlusion (3D occlusion "
                             "sensitivity: one forward pass per 8 mm block the view touches, any backend; "
                             "docs/screening.md, Heatmaps)")
    group = parser.add_argument_group("report, DICOM and PACS")
    group.add_argument("--series-uid", metavar="UID", help="with a DICOM folder holding several series: the "
                       "SeriesInstanceUID to read (default: the folder's one CT series)")
    group.add_argument("--retrieve-study", metavar="UID", help="first fetch this study (StudyInstanceUID) by "
                       "WADO-RS from --retrieve-from into the --ct folder, which must not exist yet, then read it")
    group.add_argument("--retrieve-from", metavar="URL", help="DICOMweb base URL for --retrieve-study")
    group.add_argument("--report", metavar="DIR", help="write a case report: report.html, report.pdf, "
                       "report.json and key images (axial and mid-sagittal with the heatmap) into DIR")
    group.add_argument("--include-identifiers", action="store_true", help="show the patient's name, ID, birth "
                       "date and accession number in the report (left out by default)")
    group.add_argument("--dicom-out", metavar="DIR", help="write a DICOM SR (TID 1500 measurement report), the "
                       "key images as Secondary Capture and the heatmaps as Parametric Maps, new series of the "
                       "source study (DICOM input only)")
    group.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run of mvcf "
                       "in --report / --dicom-out (a folder mvcf did not write is never touched)")
    group.add_argument("--dicom-source", metavar="DIR", help="the DICOM series folder --ct was exported from "
                       "(e.g. a NRRD saved by Slicer): DICOM output goes into its study and references it")
    group.add_argument("--send", metavar="AET@HOST:PORT", help="C-STORE the --dicom-out files to this PACS "
                       "(tried twice; a failure leaves the files and exits 2)")
    group.add_argument("--calling-aet", default="MVCF", metavar="AET", help="our AE title for --send "
                       "(default MVCF)")
    group.add_argument("--dicomweb", metavar="URL", help="STOW-RS the --dicom-out files to this DICOMweb base "
                       "URL (e.g. http://pacs:8042/dicom-web)")


def retrieve_input(args: argparse.Namespace) -> None:
    """With --retrieve-study: fetch the study into the --ct folder (before reading it); else nothing."""
    if getattr(args, "retrieve_study", None) is None:
        if getattr(args, "retrieve_from", None):
            raise MVCFError("--retrieve-from needs --retrieve-study UID")
        return
    if not args.retrieve_from or not re.match(r"^https?://[^/\s]+", args.retrieve_from):
        raise MVCFError("--retrieve-study needs --retrieve-from http(s)://DICOMWEB-BASE-URL")
    from mvcf.dicom.pacs import retrieve_study

    retrieve_study(args.retrieve_from, args.retrieve_study, Path(args.ct))


def _requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, key, None) for key in ("report", "dicom_out", "send", "dicomweb"))


@dataclass
class OutputPlan:
    """What check_outputs found: the DICOM source (None for a NIfTI/NRRD input, or for a report made
    without pydicom installed)."""
    source: Any


#: The arguments of predict / screen that name what the run reads: no output folder may be or hold one.
INPUT_ARGUMENTS = ("ct", "mask", "seg", "model", "locations", "dicom_source", "manifest")
#: The names of the DICOM objects --dicom-out writes (_write_dicom): what its --overwrite may remove there.
DICOM_NAME = re.compile(r"(SR|SC|PM)_[0-9.]+\.dcm")


def run_inputs(args: argparse.Namespace) -> list:
    return [getattr(args, key) for key in INPUT_ARGUMENTS if getattr(args, key, None) is not None]


def _check_folder(args: argparse.Namespace, key: str, option: str) -> None:
    from mvcf.outputs_guard import check_output_folder

    check_output_folder(getattr(args, key), run_inputs(args), overwrite=getattr(args, "overwrite", False),
                        what=option)


def warn_unused_heatmap_method(args: argparse.Namespace, hint: str, heatmaps: bool = False) -> None:
    """A `--heatmap-method` other than the default that nothing in this run uses (no --report, no
    --dicom-out, no other heatmap: `heatmaps`) is said, not silently dropped; `hint` names the command's
    own options that would use it."""
    method = getattr(args, "heatmap_method", "gradcam")
    if method != "gradcam" and not (heatmaps or getattr(args, "report", None) or getattr(args, "dicom_out", None)):
        logging.getLogger("mvcf.cli").warning("--heatmap-method %s has no effect: this run writes no heatmap "
                                              "(give %s)", method, hint)


def check_outputs(args: argparse.Namespace) -> Optional[OutputPlan]:
    """Every refusal that can come before any work (call it before the prediction, so a bad request costs
    nothing), then --retrieve-study's download; None when no output was asked for."""
    from mvcf.dicom.pacs import check_ae_title, parse_ae
    from mvcf.dicom.source import load_source
    if not _requested(args):
        retrieve_input(args)
        return None
    if (args.send or args.dicomweb) and not args.dicom_out:
        raise MVCFError("--send and --dicomweb send the files of --dicom-out DIR: give --dicom-out too")
    if args.send:
        parse_ae(args.send)
        check_ae_title(args.calling_aet, "--calling-aet")
    if args.dicomweb and not re.match(r"^https?://[^/\s]+", args.dicomweb):
        raise MVCFError(f"--dicomweb wants an http(s) base URL such as http://pacs:8042/dicom-web, got "
                        f"{args.dicomweb!r}")
    _check_folder(args, "report", "--report")
    _check_folder(args, "dicom_out", "--dicom-out")
    if args.report and args.dicom_out:
        from mvcf.outputs_guard import check_outputs_distinct

        check_outputs_distinct([("--report", args.report), ("--dicom-out", args.dicom_out)], [])
    if args.report:
        from mvcf.report import check_pdf

        check_pdf()
    retrieve_input(args)   # the last check: a refused request downloads nothing
    series_uid = getattr(args, "series_uid", None)
    folder = getattr(args, "dicom_source", None) or args.ct
    if args.dicom_out:
        return OutputPlan(load_source(folder, series_uid))
    if Path(folder).is_dir() and importlib.util.find_spec("pydicom") is not None:
        return OutputPlan(load_source(folder, series_uid, require_uids=False))
    return OutputPlan(None)  # a report of a NIfTI input, or without pydicom one without the DICOM description


def _name(result: dict[str, Any], index: int) -> str:
    return str(result.get("level") or result.get("name") or f"vertebra {index + 1}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "vertebra"


def write_outputs(args: argparse.Namespace, ct, results: Sequence[dict[str, Any]], model: Any = None,
                  device: str = "cpu", on_progress: Optional[Callable[[int, int, str], None]] = None,
                  plan: Optional[OutputPlan] = None,
                  figures: Sequence[tuple[str, Any, Sequence[float]]] = (),
                  undo: Optional[Any] = None) -> dict[str, Any]:
    """The case report, DICOM objects and PACS sends the arguments ask for; `figures`: (file name, KeyImage,
    centre LPS mm) of pictures of the whole case (screen's overview), shown above the vertebrae in the report
    and the first Secondary Capture of the DICOM output. The report and DICOM files are told to `undo` (a
    fileio.RunOutputs; a new one when None), so the run's outputs come all or none up to the PACS send."""
    from mvcf.fileio import RunOutputs, undone_on_failure

    plan = plan or check_outputs(args)
    if plan is None:
        return {}
    try:
        with undone_on_failure(undo if undo is not None else RunOutputs()) as written:
            return _write(args, ct, results, model, device, on_progress, plan.source, figures, written)
    except OSError as exc:
        raise MVCFError(f"cannot write {getattr(exc, 'filename', None) or 'the outputs'}: "
                        f"{exc.strerror or exc}") from None


def _quarters(callback: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """`callback` at each quarter of the work only: these messages become log lines, one per batch would flood."""
    last = [0]

    def report(done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter > last[0]:
            last[0] = quarter
            callback(done, total)
    return report


def _write(args, ct, results, model, device, on_progress, source, figures, undo) -> dict[str, Any]:
    from mvcf import RESEARCH_USE_DISCLAIMER, __version__
    from mvcf.explain import engine_for, explain
    from mvcf.inference import load_model
    from mvcf.locate import from_point
    from mvcf.predict import results_decimals
    from mvcf.report import DISCLAIMER_SHORT, case_context, source_rows, write_report
    from mvcf.report.images import key_images

    progress = on_progress or (lambda done, total, message: None)
    method = getattr(args, "heatmap_method", "gradcam")
    bundle = load_model(model, device, backend=engine_for(method))
    results = [_complete(r, bundle) for r in results]
    done = [i for i, r in enumerate(results)
            if "error" not in r and r.get("probability_malignant") is not None and r.get("center_lps") is not None]
    outside = [str(results[i].get("name", i + 1)) for i in done
               if source is not None and not source.covers(results[i]["center_lps"])]
    if outside:
        raise MVCFError(f"{', '.join(outside)} lie(s) outside the slices of the DICOM source {source.folder}: "
                        f"the CT is not that series (or another part of it)")
    images: dict[int, list] = {}
    heats: dict[int, Any] = {}
    for step, index in enumerate(done):
        r = results[index]
        name = _name(r, index)
        progress(step, len(done), f"key images of {name}")
        heat, _ = explain(ct, from_point(ct, r["center_lps"], "lps"), bundle, device, method=method,
                          progress=_quarters(lambda n, of, step=step, name=name: progress(
                              step, len(done), f"key images of {name}: occlusion heatmap {n}/{of} blocks")))
        heats[index] = heat
        if not np.any(heat.voxels > 0):   # the --heatmap file says so (explain.write_image); so must these
            logging.getLogger("mvcf.cli").warning(
                "no positive evidence for the %s class in %s: its heatmap in the key images and the DICOM "
                "parametric map is empty", r["prediction"], name)
        digits = results_decimals([r])
        footer = (f"P(MVCF) {r['probability_malignant']:.{digits}f} -> {r['prediction']} (threshold "
                  f"{r['threshold']:.{digits}f})\n{DISCLAIMER_SHORT}")
        images[index] = key_images(ct, r["center_lps"], heat, name, footer)
    outputs: dict[str, Any] = {}
    if args.report:
        progress(len(done), len(done), f"writing the report to {args.report}")
        identity = source.identity(args.include_identifiers) if source is not None else None
        named = {index: [(f"key_{index + 1:02d}_{_slug(_name(results[index], index))}_{im.plane}.png", im)
                         for im in ims] for index, ims in images.items()}
        shown = {index: [{"src": name, "caption": im.caption} for name, im in pairs] for index, pairs in named.items()}
        context = case_context(results, shown, bundle.card, source_rows(identity, str(args.ct)))
        context["figures"] = [{"src": name, "caption": image.caption} for name, image, _ in figures]
        pngs = {name: image.png for name, image, _ in figures}
        pngs.update({name: im.png for pairs in named.values() for name, im in pairs})
        outputs["report"] = write_report(Path(args.report), context, pngs,
                                         {"results": list(results), "source": identity or {"ct": str(args.ct)},
                                          "model": context["model"], "heatmap_method": method},
                                         prune=getattr(args, "overwrite", False), undo=undo)
    if args.dicom_out:
        progress(len(done), len(done), f"writing DICOM SR, key images and heatmaps to {args.dicom_out}")
        outputs["dicom"] = _write_dicom(Path(args.dicom_out), source, results, images, heats, bundle.identity(),
                                        f"mvcf {__version__}", RESEARCH_USE_DISCLAIMER,
                                        prune=getattr(args, "overwrite", False),
                                        figures=[(image, centre) for _, image, centre in figures], undo=undo)
    if args.send or args.dicomweb:
        from mvcf.dicom.pacs import send_all

        progress(len(done), len(done), "sending to the PACS")
        undo.keep()
        outputs["sent"] = [s.to_dict() for s in send_all([Path(p) for p in outputs["dicom"]], args.send,
                                                          args.dicomweb, args.calling_aet)]
        outputs["dicom_dir"] = str(args.dicom_out)
    return outputs


def _complete(result: dict[str, Any], bundle) -> dict[str, Any]:
    """A result row with what a screening row may leave out: the bundle's threshold and identity, and its
    `notes` as warnings."""
    if "error" in result:
        return result
    return {"threshold": bundle.threshold, "model": bundle.identity(),
            "warnings": list(result.get("notes") or []), **result}


def _own_dicom(path: Path) -> bool:
    """A DICOM object an earlier run wrote: its name and its manufacturer (a user's `SR_1.2.3.dcm` put in the
    folder was deleted by --overwrite for its name alone)."""
    if DICOM_NAME.fullmatch(path.name) is None or not path.is_file() or path.is_symlink():
        return False
    import pydicom

    from mvcf.dicom.sr import MANUFACTURER

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer"])
    except Exception:   # not DICOM, truncated, unreadable: not ours to delete
        return False
    return str(getattr(header, "Manufacturer", "")) == MANUFACTURER


def _write_dicom(folder: Path, source, results, images, heats, model: dict, software: str,
                 disclaimer: str, prune: bool = False, figures: Sequence[tuple[Any, Sequence[float]]] = (),
                 undo: Any = None) -> list[str]:
    from mvcf.dicom.pm import build_pm
    from mvcf.dicom.sc import build_sc
    from mvcf.dicom.sr import build_sr
    from mvcf.fileio import atomic_files

    sr = build_sr(source, results, model, software_version=software, disclaimer=disclaimer)
    sc = build_sc(source, [*figures, *[(im, results[index]["center_lps"]) for index, ims in images.items()
                                       for im in ims]], comment=disclaimer)
    pm = build_pm(source, [(heat, _name(results[index], index)) for index, heat in heats.items()],
                  model, software)
    objects = {f"SR_{sr.SOPInstanceUID}.dcm": sr, **{f"SC_{ds.SOPInstanceUID}.dcm": ds for ds in sc},
               **{f"PM_{ds.SOPInstanceUID}.dcm": ds for ds in pm}}
    with atomic_files(folder, list(objects), mark=True, prune=prune, undo=undo, fresh=not prune,
                      prunable=_own_dicom) as tmp:
        for name, ds in objects.items():
            ds.save_as(tmp / name, enforce_file_format=True)
    return [str(folder / name) for name in objects]


def finish_outputs(outputs: dict[str, Any], quiet: bool = False) -> int:
    if not quiet:
        if "report" in outputs:
            print(f"report: {outputs['report']['html']}" + (f" and {outputs['report']['pdf']}"
                                                             if "pdf" in outputs["report"] else ""))
        if "dicom" in outputs:
            print(f"DICOM: {len(outputs['dicom'])} files (SR, key images, heatmaps) in "
                  f"{Path(outputs['dicom'][0]).parent if outputs['dicom'] else '-'}")
        for s in outputs.get("sent", []):
            if s["ok"]:
                print(f"sent {s['files']} files to {s['to']}")
    failed = [s for s in outputs.get("sent", []) if not s["ok"]]
    for s in failed:
        print(f"error: sending to {s['to']} failed after {s['attempts']} attempts ({s['error']}); {s['stored']} of "
              f"{s['files']} files stored there; every file stays in {outputs.get('dicom_dir')}", file=sys.stderr)
    return 2 if failed else 0

"""`mvcf screen`: every vertebra of a CT's spine segmentation measured, graded and classified.

    mvcf screen --ct CT --seg SEG [--numbering auto|totalsegmentator|totalsegmentator-v1|verse] [--out DIR] [--json]
    mvcf screen --manifest CASES.csv --out DIR          (many CTs: resumable, one folder per case, shardable)

The manifest has a header with `case_id`, `ct` and `seg` (or `mask`), optionally `numbering`; paths are
relative to the CSV. Each finished case is OUT/<case_id>/ (screen.tsv + screen.json + screen_overview.png,
written atomically); finished cases are skipped on a rerun. Shards: torchrun's RANK / WORLD_SIZE, a Slurm array's
SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (offset by SLURM_ARRAY_TASK_MIN), or both (a launcher inside each
array task) pick every n-th case. Every
run rewrites OUT/screen_index.tsv/.json: all cases of the manifest, those to read first at the top.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from mvcf.errors import MVCFError


def _contrast_phase(value: str) -> str:
    from mvcf.bone_density import check_contrast_phase

    return check_contrast_phase(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mvcf.inference import check_device_name
    from mvcf.numbering import NUMBERINGS

    parser.add_argument("--ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    parser.add_argument("--seg", type=Path, help="multi-label vertebra segmentation on the CT's grid "
                        "(TotalSegmentator 'total' output, a VerSe mask, or a Slicer .seg.nrrd)")
    parser.add_argument("--numbering", default="auto", help="label numbering: auto (from the file), "
                        + ", ".join(NUMBERINGS))
    parser.add_argument("--manifest", type=Path, help="CSV of many cases (case_id, ct, seg[, numbering])")
    parser.add_argument("--out", type=Path, help="folder for screen.tsv + screen.json + screen_overview.png (with "
                        "--manifest: one sub-folder per case, and screen_index.tsv/.json, every case in one table, "
                        "those to read first at the top)")
    from mvcf.cli.train import add_manifest_root_argument

    add_manifest_root_argument(parser)
    parser.add_argument("--model", type=Path, default=None, help="model bundle folder (default: the demo model)")
    parser.add_argument("--device", default="auto", type=check_device_name, help="auto, cpu or cuda[:N]")
    from mvcf.inference import BACKENDS

    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="engine for the network: auto = ONNX Runtime when the bundle has an ONNX graph "
                             "(no torch import), else torch")
    parser.add_argument("--contrast-phase", default=None, type=_contrast_phase,
                        help="the CT's contrast phase (e.g. native, portal-venous) or TotalSegmentator's "
                             "contrast_phase.json, when the file does not say")
    parser.add_argument("--json", action="store_true", help="print {\"vertebrae\": [...], ...} as JSON")
    from mvcf.cli.outputs import add_output_arguments

    add_output_arguments(parser)   # --report, --dicom-out, --send, ... (with --ct only)


def run(args: argparse.Namespace, reporter) -> int:
    from mvcf.numbering import check_numbering

    if args.numbering != "auto":
        args.numbering = check_numbering(args.numbering)
    from mvcf.cli.outputs import warn_unused_heatmap_method

    if args.manifest is not None:
        if any(getattr(args, key, None) for key in ("report", "dicom_out", "send", "dicomweb")):
            raise MVCFError("--report, --dicom-out, --send and --dicomweb work with --ct, not with --manifest")
        if args.ct is not None or args.seg is not None:
            raise MVCFError("give either --manifest or --ct with --seg, not both")
        if args.out is None:
            raise MVCFError("--manifest needs --out (one folder per case is written there)")
        warn_unused_heatmap_method(args, "--report or --dicom-out, which need --ct instead of --manifest")
        return run_manifest(args, reporter)
    if args.ct is None or args.seg is None:
        raise MVCFError("give --ct and --seg (or --manifest)")
    warn_unused_heatmap_method(args, "--report or --dicom-out")
    return run_one(args, reporter)


def run_one(args: argparse.Namespace, reporter) -> int:
    from mvcf.cli import outputs as case_outputs
    from mvcf.fileio import RunOutputs, undone_on_failure
    from mvcf.progress import emit_result
    from mvcf.outputs_guard import check_output_folder
    from mvcf.signals import outputs_final
    from mvcf.screen import OUTPUT_NAMES, OVERVIEW_NAME, result_payload, screen_files, summary_text, write_outputs

    check_output_folder(args.out, case_outputs.run_inputs(args), OUTPUT_NAMES, overwrite=args.overwrite,
                        what="--out")
    plan = case_outputs.check_outputs(args)
    result = screen_files(args.ct, args.seg, args.numbering, args.model, args.device, args.contrast_phase,
                          on_progress=reporter.progress, series_uid=args.series_uid, backend=args.backend)
    reporter.close()   # the screen's bar is done: the outputs' messages below are lines of their own
    outputs = {}
    overview = result.overview() if args.out is not None or plan is not None else None
    undo = RunOutputs()
    with undone_on_failure(undo):   # a cancel while the table is written takes the report and DICOM away too
        if plan is not None:
            from mvcf.report.overview import overview_centre

            figures = [(OVERVIEW_NAME, overview, overview_centre(result.vertebrae))] if overview is not None else []
            outputs = case_outputs.write_outputs(args, result.images[0], result.vertebrae, args.model,
                                                 result.device, plan=plan, figures=figures, undo=undo,
                                                 on_progress=lambda _done, _total, message: reporter.log(message))
        # the table last: a report or DICOM output that fails or is interrupted leaves no table behind either
        written = write_outputs(result, args.out, overview, undo) if args.out is not None else ()
    outputs_final()   # a cancel from here on finds nothing left to undo
    def text() -> None:
        print(summary_text(result))
        for path in written:
            print(f"wrote {path}")

    as_event = emit_result(reporter, result_payload(result, outputs), args.json, text)
    return case_outputs.finish_outputs(outputs, quiet=args.json or as_event)


def _env_integer(name: str, default: int) -> int:
    """An integer environment variable in plain ASCII digits (int() also takes '1_0' and other scripts' digits);
    unset or empty: the default."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"-?[0-9]+", value):
        raise MVCFError(f"environment variable {name}={value!r} is not an integer")
    return int(value)


def _slurm_shard() -> tuple[int, int]:
    first, step = _env_integer("SLURM_ARRAY_TASK_MIN", 0), _env_integer("SLURM_ARRAY_TASK_STEP", 1)
    task, count = _env_integer("SLURM_ARRAY_TASK_ID", 0), _env_integer("SLURM_ARRAY_TASK_COUNT", 1)
    last = _env_integer("SLURM_ARRAY_TASK_MAX", first + step * (count - 1))
    # a range with a step (--array=1-5:2: tasks 1, 3, 5) is shards 0, 1, 2; a list (--array=1,4,9) is
    # no range, so its shards cannot be told from the environment
    if count < 1:
        raise MVCFError(f"SLURM_ARRAY_TASK_COUNT={count}: an array has at least one task")
    if step < 1 or last - first != step * (count - 1):
        raise MVCFError(f"the Slurm array (tasks {first}-{last}, step {step}, {count} tasks) is not a range "
                        "with one step; give --array as A-B or A-B:STEP")
    if not first <= task <= last or (task - first) % step:
        raise MVCFError(f"SLURM_ARRAY_TASK_ID={task} is not a task of the array (tasks {first}-{last}, step {step})")
    return (task - first) // step, count


def _launcher_shard() -> tuple[int, int]:
    given = [name for name in ("RANK", "WORLD_SIZE") if os.environ.get(name, "").strip()]
    if len(given) == 1:   # a launcher sets both; one alone would run one shard's cases as if it were all
        other = ({"RANK", "WORLD_SIZE"} - set(given)).pop()
        raise MVCFError(f"environment variable {given[0]} is set but {other} is not (or empty); a launcher such "
                        "as torchrun sets both")
    rank, size = _env_integer("RANK", 0), _env_integer("WORLD_SIZE", 1)
    if size < 1 or not 0 <= rank < size:
        raise MVCFError(f"RANK={rank} with WORLD_SIZE={size} is no process of the job (RANK counts from 0 to "
                        "WORLD_SIZE - 1)")
    return rank, size


def shard() -> tuple[int, int]:
    """(this process's index, number of processes) from a Slurm array's environment, torchrun's (RANK,
    WORLD_SIZE), or both: a launcher run inside each array task splits that task's share again, so no case
    is screened by two processes."""
    in_array = bool(os.environ.get("SLURM_ARRAY_TASK_ID", "").strip())
    if not in_array and os.environ.get("SLURM_ARRAY_TASK_COUNT", "").strip():   # as WORLD_SIZE without RANK
        raise MVCFError("environment variable SLURM_ARRAY_TASK_COUNT is set but SLURM_ARRAY_TASK_ID is not (or "
                        "empty); Slurm sets both in every array task")
    launched = any(os.environ.get(name, "").strip() for name in ("RANK", "WORLD_SIZE"))
    task, tasks = _slurm_shard() if in_array else (0, 1)
    rank, size = _launcher_shard() if launched or not in_array else (0, 1)
    return task * size + rank, tasks * size


#: In each case folder of a manifest run: path, size and modification time of the CT and segmentation it was
#: screened from (cohort_checks.file_identity) and the settings that shape its results (model, numbering,
#: contrast phase), so a rerun can tell a finished case that no longer matches what it would screen now.
INPUTS_NAME = "inputs.json"


def _input_identity(case: dict[str, str]) -> dict[str, str]:
    from mvcf.cohort_checks import file_identity

    try:
        return {key: file_identity(Path(case[key])) for key in ("ct", "seg")}
    except OSError:   # a file gone since: the case fails when screened, and no finished case matches it
        return {}


def _model_settings(bundle) -> dict[str, Any]:
    """What of the model decides a case's results: its weights and the card's threshold and views."""
    return {**bundle.identity(), "threshold": bundle.threshold, "view_spec": bundle.view_spec}


def _settings(case: dict[str, str], args: argparse.Namespace, bundle) -> dict[str, Any]:
    return {"numbering": _numbering(case, args), "contrast_phase": args.contrast_phase,
            **({"model": _model_settings(bundle)} if bundle is not None else {})}


def _numbering(case: dict[str, str], args: argparse.Namespace) -> str:
    return case["numbering"] if args.numbering == "auto" else args.numbering


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else repr(value)


def _model_difference(earlier: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between two models' settings that changes results ('' when nothing does): the weights,
    the threshold, the views; an earlier mvcf recorded only the weights."""
    if earlier.get("sha256") != now["sha256"]:
        named = " ".join(str(earlier[k]) for k in ("name", "version") if earlier.get(k))
        return f"other weights{': ' + named if named else ''}"
    if "threshold" in earlier and earlier["threshold"] != now["threshold"]:
        return f"threshold {_number(earlier['threshold'])}, now {_number(now['threshold'])}"
    if "view_spec" in earlier and earlier["view_spec"] != now["view_spec"]:
        return "other view settings"
    return ""


#: Why a finished case is kept though it would be screened otherwise now, by kind: the --json summary's key
#: and what the warning says.
STALE_KINDS = {"files": ("skipped_with_other_files", "the manifest names other files now"),
               "model": ("skipped_with_another_model", "this run's model differs"),
               "settings": ("skipped_with_other_settings", "this run's settings differ")}


def stale_cases(out: Path, cases: list[dict[str, str]], args: argparse.Namespace,
                bundle) -> dict[str, dict[str, str]]:
    """The finished cases that no longer match the manifest and this run: {case_id: {kind: reason}}, kinds
    of STALE_KINDS. Compared by what each case folder recorded (INPUTS_NAME); a folder of an earlier mvcf
    without that record by the resolved paths and the weights' sha256 its screen.json names."""
    from mvcf.screen import JSON_NAME
    from mvcf.screen_index import finished_result

    stale: dict[str, dict[str, str]] = {}
    for case in cases:
        if not (out / case["case_id"] / JSON_NAME).is_file():
            continue
        try:
            recorded = json.loads((out / case["case_id"] / INPUTS_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        recorded = recorded if isinstance(recorded, dict) else {}
        then = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
        # screen.json is read only for a folder of an earlier mvcf (the index reads every one anyway)
        payload = {} if then else finished_result(out / case["case_id"] / JSON_NAME) or {}
        now = _settings(case, args, bundle)
        reasons = {}
        if recorded:
            same_files = {k: recorded.get(k) for k in ("ct", "seg")} == _input_identity(case)
        else:
            same_files = all(_same_file(payload.get(field), case[key])
                             for field, key in (("ct", "ct"), ("segmentation", "seg")))
        if not same_files:
            reasons["files"] = "its CT or segmentation changed since"
        if bundle is not None:
            earlier = then["model"] if isinstance(then.get("model"), dict) else {
                k: (payload.get("model") or {}).get(k) for k in ("sha256", "name", "version")}
            differs = _model_difference(earlier, now["model"])
            if differs:
                reasons["model"] = f"screened with another model ({differs})"
        changed = [f"{key.replace('_', ' ')} {then[key] or 'not given'}, now {now[key] or 'not given'}"
                   for key in ("numbering", "contrast_phase") if key in then and then[key] != now[key]]
        if changed:
            reasons["settings"] = "screened with " + "; ".join(changed)
        if reasons:
            stale[case["case_id"]] = reasons
    return stale


def _same_file(recorded: Any, now: str) -> bool:
    try:
        return isinstance(recorded, str) and Path(recorded).resolve() == Path(now).resolve()
    except (OSError, RuntimeError):
        return False


#: a case_id is a folder name, and the run adds temporary suffixes to it: file systems allow 255 bytes
MAX_CASE_ID_BYTES = 200


def read_cases(path: Path, allow_outside_root: bool = False) -> list[dict[str, str]]:
    """Rows of the screening manifest, paths resolved against its folder; every bad row in one error, the
    cells checked as every manifest's are (cohort_checks.check_cells: NUL bytes, paths outside its folder)."""
    from mvcf.cohort_checks import check_cells, check_header, csv_read_errors, holds_control_character, surplus_cells
    from mvcf.numbering import check_numbering
    from mvcf.screen_index import RESERVED_NAMES

    if not path.is_file():
        raise MVCFError(f"manifest not found: {path}")
    from mvcf.limits import check_file_size

    check_file_size(path, "MAX_TABLE_BYTES", "manifest")
    with csv_read_errors(str(path)), open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        check_header(reader.fieldnames or [], str(path))
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [(reader.line_num, surplus_cells(row), {k.strip(): (v or "").strip() for k, v in row.items() if k})
                for row in reader]
    if "seg" in header and "mask" in header:   # one of them was read in silence
        raise MVCFError(f"{path}: the manifest has both a 'seg' and a 'mask' column; keep one (the segmentation)")
    seg_column = "seg" if "seg" in header else "mask"
    missing = [c if c != "mask" else "seg (or mask)" for c in ("case_id", "ct", seg_column) if c not in header]
    if missing:
        raise MVCFError(f"{path}: the manifest needs the column(s) {', '.join(missing)} (has {', '.join(header)}; "
                        "names are lower case)")
    from mvcf.outputs_guard import file_identity_key

    problems, seen, cases = [], set(), []
    exams: dict[tuple, str] = {}
    for n, surplus, row in rows:
        if surplus:
            problems.append(f"line {n}: {surplus}")
            continue
        case_id = row.get("case_id", "")
        if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
            problems.append(f"line {n}: case_id {case_id!r} must be a plain name")
            continue
        if holds_control_character(case_id):
            problems.append(f"line {n}: case_id {case_id!r} holds a control character (tab, newline, ...)")
            continue
        if len(case_id.encode("utf-8")) > MAX_CASE_ID_BYTES:
            problems.append(f"line {n}: case_id {case_id[:40]!r}... is {len(case_id.encode('utf-8'))} bytes long; "
                            f"a folder name takes at most {MAX_CASE_ID_BYTES}")
            continue
        if case_id.casefold() in RESERVED_NAMES:
            problems.append(f"line {n}: case_id {case_id!r} is the name of a file or folder the run writes "
                            f"into --out ({', '.join(RESERVED_NAMES)}, in any letter case)")
            continue
        if case_id.casefold() in seen:
            problems.append(f"line {n}: case_id {case_id!r} repeats (letter case aside: the folders would be "
                            f"one on file systems that ignore it)")
        seen.add(case_id.casefold())
        if not row.get("ct") or not row.get(seg_column):
            problems.append(f"line {n}: ct and {seg_column} are required")
            continue
        try:
            check_cells(row, path.resolve().parent, allow_outside_root, ("ct", seg_column))
            numbering = row.get("numbering") or "auto"
            numbering = numbering if numbering.lower() == "auto" else check_numbering(numbering)
        except MVCFError as exc:
            problems.append(f"line {n}: {exc}")
            continue
        case = {"case_id": case_id, "ct": str(path.parent / row["ct"]), "seg": str(path.parent / row[seg_column]),
                "numbering": numbering.lower()}
        exam = tuple(file_identity_key(case[k]) for k in ("ct", "seg"))
        if None not in exam and exam in exams:   # one exam screened and counted twice in the index
            problems.append(f"line {n}: case {case_id!r} names the CT and segmentation of case {exams[exam]!r}")
            continue
        exams[exam] = case_id
        cases.append(case)
    if problems:
        raise MVCFError(f"{path}: {len(problems)} bad row(s): {'; '.join(problems[:5])}"
                        + (" ..." if len(problems) > 5 else ""))
    if not cases:
        raise MVCFError(f"{path}: no cases")
    return cases


def _finished(folder: Path) -> Optional[dict[str, Any]]:
    """A case folder's screen.json payload when the case is finished: None for a damaged screen.json, or a
    folder missing a file its run wrote (deleted since), so that the case is screened again."""
    from mvcf.outputs_guard import missing_files
    from mvcf.screen import JSON_NAME
    from mvcf.screen_index import finished_result

    payload = finished_result(folder / JSON_NAME)
    return payload if payload is not None and not missing_files(folder) else None


def _write_index(out: Path, case_ids: list[str], stale: dict[str, str]) -> dict[str, Any]:
    """The archive index of every manifest case as it stands on disk, whichever shard screened it, as the
    summary's `index`, `index_json`, `index_html` and `index_counts` (None when --out was never made). A
    failure to write it is a warning, so it never hides the run's own error."""
    import logging

    from mvcf.screen_index import write_index

    paths, counts = (None, None, None), None
    if out.is_dir():
        try:
            paths, counts = write_index(out, case_ids, stale)
        except (MVCFError, OSError) as exc:
            logging.getLogger("mvcf.cli").warning("the archive index in %s was not written: %s", out, exc)
    keys = ("index", "index_json", "index_html")
    return {**{key: str(p) if p is not None else None for key, p in zip(keys, paths)}, "index_counts": counts}


def run_manifest(args: argparse.Namespace, reporter) -> int:
    """Screen the shard's cases not done yet, each into OUT/<case_id>/ atomically; errors into
    OUT/errors/<case_id>.txt (retried on the next run)."""
    from mvcf.fileio import atomic_dir, remove_stale_temporaries, write_text
    from mvcf.inference import load_model
    from mvcf.progress import emit_result
    from mvcf.screen import screen_files, write_outputs
    from mvcf.screen_index import error_file

    from mvcf.outputs_guard import MARKER, check_output_folder, write_marker

    cases = read_cases(args.manifest, args.allow_outside_root)
    # a rerun resumes into its own earlier --out (finished cases are kept); a folder of the user's is refused
    check_output_folder(args.out, [args.manifest, args.model] + [c[k] for c in cases for k in ("ct", "seg")],
                        overwrite=True, what="--out")
    index, count = shard()
    mine = cases[index::count]
    out = Path(args.out)
    finished = {c["case_id"]: _finished(out / c["case_id"]) for c in mine}
    finished = {case_id: payload for case_id, payload in finished.items() if payload is not None}
    todo = [c for c in mine if c["case_id"] not in finished]
    skipped = len(mine) - len(todo)
    bundle = load_model(args.model, args.device, args.backend) if mine else None
    device = bundle.device if bundle is not None else args.device
    stale = stale_cases(out, cases, args, bundle)
    kept = {case_id: stale[case_id] for case_id in finished if case_id in stale}
    if kept:
        import logging

        for kind, (_, why) in STALE_KINDS.items():
            ids = [case_id for case_id, reasons in kept.items() if kind in reasons]
            if ids:
                logging.getLogger("mvcf.cli").warning(
                    "%d finished case(s) in %s are kept as they are though %s (e.g. %s: %s); the index marks "
                    "them; delete their folders, or use another --out, to screen them again", len(ids), out, why,
                    ids[0], kept[ids[0]][kind])
    if out.is_dir():
        remove_stale_temporaries(out)   # case folders a killed run left half-written, never written again
    if todo and not (out / MARKER).is_file():
        from mvcf.fileio import apply_umask, write_errors

        with write_errors(out):
            out.mkdir(parents=True, exist_ok=True)
            write_marker(out)
            apply_umask(out / MARKER)
    done, failed, elsewhere = [], [], []
    reporter.progress(0, len(todo), f"shard {index + 1}/{count}: {len(todo)} to screen, {skipped} done before")
    try:
        for n, case in enumerate(todo, start=1):
            # another run of the same shard (a requeued Slurm task, a second launch) may have finished it meanwhile
            if _finished(out / case["case_id"]) is not None:
                elsewhere.append(case["case_id"])
                reporter.progress(n, len(todo), f"{case['case_id']}: finished by another run")
                continue
            try:
                inputs = {**_input_identity(case), "settings": _settings(case, args, bundle)}
                result = screen_files(case["ct"], case["seg"], _numbering(case, args), bundle, device,
                                      args.contrast_phase, backend=args.backend)
                # overwrite: an unfinished or damaged earlier folder of this run's (never a folder of the user's)
                with atomic_dir(out / case["case_id"], overwrite=True) as tmp:
                    write_outputs(result, tmp)
                    (tmp / INPUTS_NAME).write_text(json.dumps(inputs, indent=2) + "\n", encoding="utf-8")
                done.append(case["case_id"])
                (out / error_file(case["case_id"])).unlink(missing_ok=True)
            except MVCFError as exc:
                failed.append({"case_id": case["case_id"], "error": str(exc).splitlines()[0]})
                write_text(out / error_file(case["case_id"]), failed[-1]["error"] + "\n")
            reporter.progress(n, len(todo), f"{case['case_id']} ({n}/{len(todo)})")
    finally:   # finished, failed, cancelled or stopped by Slurm's SIGTERM: the index says where the archive is
        archive = _write_index(out, [c["case_id"] for c in cases],
                               {case_id: "; ".join(r.values()) for case_id, r in stale.items()
                                if case_id not in done})
    summary = {"shard": index, "shards": count, "cases_in_shard": len(mine), "screened": len(done),
               "skipped_finished": skipped + len(elsewhere), "finished_by_another_run": len(elsewhere),
               **{key: sum(kind in r for r in kept.values()) for kind, (key, _) in STALE_KINDS.items()},
               "failed": failed,
               "out": str(out), "model": bundle.identity() if bundle is not None else None,
               "backend": bundle.backend if bundle is not None else None, **archive}
    def text() -> None:
        meanwhile = f" ({len(elsewhere)} by another run meanwhile)" if elsewhere else ""
        print(f"shard {index + 1}/{count}: screened {len(done)}, skipped {skipped + len(elsewhere)} finished"
              f"{meanwhile}, failed {len(failed)} of {len(mine)} cases -> {out}")
        for item in failed:
            print(f"{item['case_id']}: error: {item['error']}")
        if archive["index"] is not None:
            c = archive["index_counts"]
            print(f"index of all {c['cases']} cases, those to read first at the top: {archive['index']} "
                  f"({c['flagged']} flagged, {c['collapsed']} with a collapse, {c['osteoporosis_likely']} osteoporosis "
                  f"likely; {c['failed']} failed, {c['pending']} not screened yet); to look through: "
                  f"{archive['index_html']}")

    emit_result(reporter, summary, args.json, text)
    if failed and not done and not skipped and not elsewhere:
        raise MVCFError(f"none of the {len(mine)} cases could be screened; {failed[0]['case_id']}: "
                        f"{failed[0]['error']}")
    return 0

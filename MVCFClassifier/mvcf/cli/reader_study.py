"""`mvcf reader-study plan | collect | report | simulate`: run a blinded, randomised reader study
(unaided then aided) and analyse it with the ORH method of `mvcf stats mrmc`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mvcf.cli.args import RANGES, float_in, int_in
from mvcf.errors import MVCFError
from mvcf.progress import emit_result


def _ints(lo: int, hi: int, max_items: int = 64):
    """A comma-separated list of at most `max_items` whole numbers, each in [lo, hi] (the arrays of a simulated
    study grow with readers x cases: a million readers asked for 29 TiB)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
        if not values:
            raise argparse.ArgumentTypeError("give at least one number")
        if len(values) > max_items:
            raise argparse.ArgumentTypeError(f"takes at most {max_items} numbers, got {len(values)}")
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise argparse.ArgumentTypeError(f"each must be a whole number in [{lo:,}, {hi:,}], got {bad[0]}")
        return values
    parse.__name__ = "list"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rs_command", metavar="STEP", parser_class=type(parser))
    sub.required = True

    plan = sub.add_parser("plan", help="Plan a fully crossed, randomised, blinded study; write reader packages.",
                          description="Which reader reads which case in which round, in a seeded per-reader order; "
                                      "the key (truth, case identity) is written apart from the reader packages.")
    plan.add_argument("--manifest", required=True, help="cohort manifest CSV (the cases to read)")
    plan.add_argument("--readers", required=True, help="number of readers, or their names: ann,ben,cy")
    plan.add_argument("--group", action="append", default=[], metavar="NAME:READER,READER",
                      help="a reader group for the report (repeat), e.g. senior:ann,ben --group junior:cy")
    plan.add_argument("--rounds", default="unaided,aided", help="reading rounds in order (default unaided,aided)")
    plan.add_argument("--washout-days", type=float_in(0, 3650), default=0.0,
                      help="days between finishing one round and starting the next (default 0)")
    plan.add_argument("--scale", choices=["confidence", "probability", "both"], default="confidence",
                      help="rating: 1-5 confidence of malignancy, 0-100 probability, or both (default confidence)")
    plan.add_argument("--allow-revision", action="store_true",
                      help="let readers change a submitted rating within the current round")
    plan.add_argument("--model", default=None, help="model bundle for the aided round (default: embedded demo)")
    plan.add_argument("--device", default="auto", help="device for the model outputs (auto, cpu, cuda)")
    plan.add_argument("--no-heatmaps", action="store_true", help="aided round without Grad-CAM heatmaps")
    plan.add_argument("--crop-mm", type=float_in(40, 5000), default=None,
                      help="copy only a cube of this size (mm) around the vertebra into the packages "
                           "(default: the whole CT)")
    plan.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the orders and opaque IDs (default 0)")
    plan.add_argument("--out", required=True, help="new folder for the plan, key and packages")
    from mvcf.cli.train import add_manifest_root_argument

    add_manifest_root_argument(plan)

    collect = sub.add_parser("collect", help="Merge the readers' answers with the key into long format.",
                             description="Readers' answers + key -> readings.csv (reader, modality, case, truth, "
                                         "rating, ...) and model_scores.csv; refuses incomplete or duplicated readings.")
    collect.add_argument("dir", help="the plan folder")
    collect.add_argument("--key", default=None, help="key file (default DIR/key.json)")
    collect.add_argument("--answers", nargs="+", default=None,
                         help="answers files or returned package folders (default: DIR/packages/*/answers.json)")
    collect.add_argument("--out", default=None, help="folder for readings.csv (default DIR)")

    report = sub.add_parser("report", help="ORH analysis, per-reader ROC curves and the paper-style table.",
                            description="Unaided vs aided (all readers and each group) and the model vs the readers, "
                                        "into report.md, report.html and report.json.")
    report.add_argument("dir", nargs="?", default=None, help="the plan folder (after collect)")
    report.add_argument("--readings", default=None, help="long-format CSV (default DIR/readings.csv)")
    report.add_argument("--model-scores", default=None, help="CSV case,score[,threshold] (default DIR/model_scores.csv)")
    report.add_argument("--unaided", default=None, help="modality label of unaided reads (default 'unaided')")
    report.add_argument("--aided", default=None, help="modality label of aided reads (default 'aided')")
    report.add_argument("--group", action="append", default=[], metavar="NAME:READER,READER",
                        help="reader group (overrides the plan's groups)")
    report.add_argument("--positive-at", type=float_in(-1e12, 1e12), default=None,
                        help="rating at or above which a reader's call is malignant (default: the plan's scale)")
    report.add_argument("--alpha", type=float_in(0, 1, lo_open=True, hi_open=True), default=0.05, help="1 - confidence level (default 0.05)")
    report.add_argument("--title", default="Reader study", help="report title")
    report.add_argument("--out", default=None, help="report folder (default DIR/report)")
    report.add_argument("--json", action="store_true", help="print report.json")

    sim = sub.add_parser("simulate", help="Power of a planned study from Roe-Metz simulated readers.",
                         description="Roe & Metz (1997) readers, analysed by the ORH test the report uses: the power "
                                     "for every readers x cases pair.")
    sim.add_argument("--readers", type=_ints(2, 200), default=[5], help="reader counts, e.g. 4,6,8 (default 5)")
    sim.add_argument("--cases", type=_ints(*RANGES["cases"]), default=[114], help="case counts, e.g. 60,114,200 (default 114)")
    sim.add_argument("--auc-unaided", type=float_in(0.5, 1, hi_open=True), default=0.80, help="expected reader AUC without the model")
    sim.add_argument("--auc-aided", type=float_in(0.5, 1, hi_open=True), default=0.85, help="expected reader AUC with the model")
    sim.add_argument("--prevalence", type=float_in(0, 1, lo_open=True, hi_open=True), default=0.4, help="fraction of MVCF cases (default 0.4)")
    for name, default in (("var-r", 0.011), ("var-tr", 0.011), ("var-c", 0.3), ("var-tc", 0.3), ("var-rc", 0.2),
                          ("var-e", 0.2)):
        sim.add_argument(f"--{name}", type=float_in(0, 100), default=default,
                         help=f"Roe-Metz variance component sigma^2_{name[4:].upper()} (default {default})")
    sim.add_argument("--simulations", type=int_in(10, 1_000_000), default=500, help="simulated studies per design (default 500)")
    sim.add_argument("--alpha", type=float_in(0, 1, lo_open=True, hi_open=True), default=0.05, help="significance level (default 0.05)")
    sim.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed (default 0)")
    sim.add_argument("--plot", default=None, help="write power against cases (one line per reader count) to this PNG")
    sim.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _emit(reporter: Any, payload: dict, as_json: bool, text: str) -> None:
    emit_result(reporter, payload, as_json, lambda: print(text), indent=None)


def run_plan(args: argparse.Namespace, reporter: Any) -> int:
    from mvcf.reader_study.plan import PlanSettings, make_plan, parse_groups, parse_readers, parse_rounds
    from mvcf.reader_study.scale import Scale

    readers = parse_readers(args.readers)
    if args.washout_days < 0:
        raise MVCFError("--washout-days must be >= 0")
    settings = PlanSettings(readers=readers, rounds=parse_rounds(args.rounds), groups=parse_groups(args.group, readers),
                            washout_days=args.washout_days, seed=args.seed, scale=Scale(kind=args.scale),
                            allow_revision=args.allow_revision, model=args.model, device=args.device,
                            heatmaps=not args.no_heatmaps, crop_mm=args.crop_mm,
                            allow_outside_root=args.allow_outside_root)
    plan = make_plan(args.manifest, settings, args.out, on_progress=reporter.progress)
    _emit(reporter, plan, False,
          f"planned study {plan['study_id']}: {len(readers)} readers x {plan['n_cases']} cases x "
          f"{len(plan['rounds'])} round(s); send each reader {Path(args.out) / 'packages'}/<reader>/, keep "
          f"{Path(args.out) / 'key.json'} to yourself")
    return 0


def run_collect(args: argparse.Namespace, reporter: Any) -> int:
    from mvcf.reader_study.collect import collect_readings, write_collected

    from mvcf.outputs_guard import check_output_folder, check_outputs_distinct
    from mvcf.reader_study.collect import MODEL_SCORES_FILE, READINGS_FILE

    out = Path(args.out or args.dir)
    names = [READINGS_FILE, MODEL_SCORES_FILE]
    readings, model, summary = collect_readings(args.dir, args.key, args.answers)   # reads only: not a plan, said first
    # the tables of an earlier collect are written again; a folder of the user's, or an input, never is
    check_output_folder(out, names=names, overwrite=True,
                        what="--out" if args.out else "the plan folder (where readings.csv goes without --out)")
    check_outputs_distinct([(name, out / name) for name in names], [args.key, *(args.answers or [])])
    written = write_collected(readings, model, out)
    summary["written"] = [str(p) for p in written]
    _emit(reporter, summary, False, f"collected {summary['ratings']} ratings ({summary['readers']} readers x "
                                    f"{summary['cases']} cases x {len(summary['rounds'])} rounds): "
                                    + ", ".join(summary["written"]))
    return 0


def run_report(args: argparse.Namespace, reporter: Any) -> int:
    from mvcf.stats._validate import read_table

    from mvcf.reader_study.collect import MODEL_SCORES_FILE, READINGS_FILE
    from mvcf.reader_study.packages import read_json
    from mvcf.reader_study.plan import KEY_FILE, PLAN_FILE, parse_groups
    from mvcf.reader_study.report import build_report

    if args.dir is None and args.readings is None:
        raise MVCFError("give the plan folder or --readings CSV")
    folder = Path(args.dir) if args.dir else None
    out = Path(args.out) if args.out else (folder / "report" if folder else None)
    if out is None:
        raise MVCFError("give --out for the report folder")
    from mvcf.outputs_guard import check_output_folder
    from mvcf.reader_study.report import REPORT_FILES

    check_output_folder(out, [p for p in (args.readings, args.model_scores) if p], list(REPORT_FILES),
                        overwrite=True, what="--out")   # an earlier report of mvcf is written again
    readings = read_table(Path(args.readings) if args.readings else folder / READINGS_FILE, "readings CSV")
    missing = [c for c in ("reader", "modality", "case", "truth", "rating") if c not in readings.columns]
    if missing:
        raise MVCFError(f"readings CSV is missing column(s): {', '.join(missing)}")
    plan = read_json(folder / PLAN_FILE, "study plan") if folder and (folder / PLAN_FILE).exists() else None
    if plan is not None and (folder / KEY_FILE).exists():
        from mvcf.reader_study.collect import check_readings_against_plan, load_plan_and_key

        check_readings_against_plan(readings, *load_plan_and_key(folder))
    if args.group:
        plan = dict(plan or {}, groups=parse_groups(args.group, sorted(map(str, readings["reader"].unique()))))
    scores_path = Path(args.model_scores) if args.model_scores else (folder / MODEL_SCORES_FILE if folder else None)
    model = read_table(scores_path, "model scores CSV") if scores_path and (args.model_scores or scores_path.exists()) \
        else None
    payload = build_report(readings, out, plan=plan, model=model, unaided=args.unaided or "unaided",
                           aided=args.aided or "aided", positive_at=args.positive_at, alpha=args.alpha,
                           title=args.title)
    from mvcf.progress import standard_json
    from mvcf.reader_study.report import table_rows

    rows = table_rows(payload)
    text = "\n".join("  ".join(r) for r in rows) + f"\nreport: {out / 'report.html'}"
    _emit(reporter, standard_json(payload), args.json, text)
    return 0


def run_simulate(args: argparse.Namespace, reporter: Any) -> int:
    from mvcf.reader_study.simulate import RoeMetz, power

    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise MVCFError(f"--plot must end in .png: {args.plot}")
    if args.plot:   # before the simulations: a plot mvcf wrote earlier is replaced, a file of the user's never
        from mvcf.outputs_guard import check_output

        check_output(args.plot, [], kind="file", overwrite=True, what="--plot")
    model = RoeMetz(var_r=args.var_r, var_tr=args.var_tr, var_c=args.var_c, var_tc=args.var_tc,
                    var_rc=args.var_rc, var_e=args.var_e)
    result = power(args.readers, args.cases, args.auc_unaided, args.auc_aided, prevalence=args.prevalence,
                   model=model, n_sim=args.simulations, alpha=args.alpha, seed=args.seed,
                   on_progress=reporter.progress)
    lines = [f"Roe-Metz readers, AUC {args.auc_unaided:.3f} unaided -> {args.auc_aided:.3f} aided, "
             f"{result['n_sim']} simulated studies per design, ORH RRRC test at alpha {args.alpha}:",
             "readers  cases  MVCF  power (MC s.e.)  mean AUC unaided/aided"]
    lines += [f"{g['readers']:>7}  {g['cases']:>5}  {g['n_pos']:>4}  {g['power']:.3f} ({g['mc_se']:.3f})      "
              f"{g['mean_auc_unaided']:.3f}/{g['mean_auc_aided']:.3f}"
              + (f"  ({g['no_test']} of {result['n_sim']} studies had no test: zero variance)" if g["no_test"] else "")
              for g in result["grid"]]
    if args.plot:
        from mvcf.reader_study.figures import plot_power

        result["plot"] = str(plot_power(Path(args.plot), result))
        lines.append(f"plot: {result['plot']}")
    _emit(reporter, result, args.json, "\n".join(lines))
    return 0


def run(args: argparse.Namespace, reporter: Any) -> int:
    return {"plan": run_plan, "collect": run_collect, "report": run_report,
            "simulate": run_simulate}[args.rs_command](args, reporter)

"""`mvcf study` on a tiny cohort: every requested mode and the baseline on identical splits, paired DeLong,
the report files."""
import csv
import json

import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from tiny_cohort import make_tiny_cohort  # noqa: E402


def test_study_compares_modes_and_baseline_on_identical_cases(tmp_path, capsys):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=16)
    out = tmp_path / "study"
    code = main(["--progress", "none", "study", "--manifest", str(manifest), "--out", str(out),
                 "--modes", "2d,2.5d-orthogonal,3d", "--size", "24", "--size-3d", "16", "--arch", "resnet10-tiny",
                 "--epochs", "1", "--batch-size", "4", "--folds", "2", "--external", "B", "--device", "cpu",
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in summary["models"]]
    assert names == ["2d", "2.5d-orthogonal", "3d", "baseline-logistic"]
    assert summary["design"]["reference"] == "2.5d-orthogonal"
    for m in summary["models"]:
        assert m["internal_test"]["n"] == 16 and m["external_test"]["n"] == 16
        assert m["parameters"] > 0 and m["train_seconds"] >= 0
    pairs = summary["delong_external"]["pairs"]
    assert len(pairs) == 6   # a pair with zero DeLong variance is no test (it printed p = 0 or 1)
    assert all(0.0 <= p["p"] <= 1.0 if p["p"] is not None else "no test possible" in p["note"] for p in pairs)
    scans = []
    for mode in ("2d", "2.5d-orthogonal", "3d"):
        assert (out / mode / "model" / "model.json").is_file()
        scans.append(json.loads((out / mode / "model" / "model.json").read_text())["training_scans"])
    # one entry, hashed once by the study for every mode: site A's 16 scans (B is held out)
    assert scans[0]["count"] == 16 and all(s == scans[0] for s in scans)
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and all(r["baseline-logistic"] and r["3d"] for r in rows)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "p vs ref" in report and "Research use only" in report
    assert (out / "report.html").is_file() and (out / "roc_external.png").is_file()


def _auc_table(summary):
    return [(m["name"], m["internal_test"]["auc"], m["external_test"]["auc"], m["threshold"])
            for m in summary["models"]]


def test_cancelled_study_resumes_to_the_uninterrupted_result(tmp_path):
    from mvcf.errors import Cancelled, MVCFError
    from mvcf.manifest import read_manifest
    from mvcf.study import StudyConfig, run_study
    from mvcf.train import TrainConfig

    records = read_manifest(make_tiny_cohort(tmp_path / "cohort", n_per_site=12))

    def config(**changes):
        settings = dict(modes=("2d", "2.5d-orthogonal"), size_px=24, n_folds=2, external="B",
                        train=TrainConfig(arch="resnet10-tiny", epochs=3, batch_size=4, device="cpu", seed=5))
        settings.update(changes)
        return StudyConfig(**settings)

    reference = run_study(records, tmp_path / "full", config())
    events = []

    def cancel_in_second_mode():
        return any(e.get("mode") == "2.5d-orthogonal" and e["epoch"] == 2 for e in events)

    with pytest.raises(Cancelled):
        run_study(records, tmp_path / "run", config(), should_cancel=cancel_in_second_mode,
                  on_metrics=lambda **row: events.append(row))
    assert (tmp_path / "run" / "2d" / "model" / "model.json").is_file()
    assert not (tmp_path / "run" / "study.json").exists()
    with pytest.raises(MVCFError, match="settings differ"):
        run_study(records, tmp_path / "run", config(size_px=32), resume=True)
    resumed = run_study(records, tmp_path / "run", config(), resume=True)
    assert _auc_table(resumed) == _auc_table(reference)
    assert resumed["delong_external"] == reference["delong_external"]
    assert resumed["design"]["resumed"] and not reference["design"]["resumed"]
    assert "a resumed run: the time of this run only" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "resumed" not in (tmp_path / "full" / "report.md").read_text(encoding="utf-8")


def test_a_resumed_study_may_restate_what_changes_nothing(tmp_path):
    """`study --resume` was refused for a --size-3d in a study without the 3D mode, or an --external naming
    the site the study had defaulted to: settings that change no model. Any setting that does is refused."""
    from mvcf.errors import MVCFError
    from mvcf.manifest import read_manifest
    from mvcf.study import RUN_RECORD, StudyConfig, _check_or_write_run_config
    from mvcf.train import TrainConfig

    records = read_manifest(make_tiny_cohort(tmp_path / "cohort", n_per_site=4))
    train = TrainConfig(arch="resnet10-tiny", epochs=1, batch_size=4, device="cpu", seed=5)
    record = tmp_path / RUN_RECORD
    _check_or_write_run_config(record, StudyConfig(modes=("2d",), train=train), records, resume=False)
    for same in (StudyConfig(modes=("2d",), size_3d_px=32, train=train),
                 StudyConfig(modes=("2d",), external="A", train=train)):   # A/B tie: the first by name
        _check_or_write_run_config(record, same, records, resume=True)
    for other, setting in ((StudyConfig(modes=("2d",), external="B", train=train), "external"),
                           (StudyConfig(modes=("2d",), size_px=32, train=train), "size_px")):
        with pytest.raises(MVCFError, match=f"settings differ \\({setting}\\)"):
            _check_or_write_run_config(record, other, records, resume=True)
    _check_or_write_run_config(record, StudyConfig(modes=("3d",), train=train), records, resume=False)
    with pytest.raises(MVCFError, match="size_3d_px"):
        _check_or_write_run_config(record, StudyConfig(modes=("3d",), size_3d_px=32, train=train), records,
                                   resume=True)


def test_study_cli_refuses_a_used_folder_without_resume(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "something").write_text("x")
    code = main(["--progress", "none", "study", "--manifest", str(tmp_path / "none.csv"), "--out", str(out)])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_a_mode_listed_twice_is_refused():
    """--modes 2d,2d trained one model, reported it twice and counted the copy in Holm's adjustment."""
    from mvcf.errors import MVCFError
    from mvcf.study import StudyConfig

    with pytest.raises(MVCFError, match="study mode 2d is listed twice"):
        StudyConfig(modes=("2d", "3d", "2d"))


@pytest.mark.parametrize("command", ["study", "train"])
def test_bad_window_is_one_line_error_and_no_output(tmp_path, capsys, command):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=4)
    code = main(["--progress", "none", command, "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 "--windows", "bone,lung"])
    assert code == 2
    # the hint named 'center,width', but a comma starts the next window: CENTER:WIDTH is the syntax
    assert capsys.readouterr().err.strip().splitlines() == ["error: unknown window 'lung'; named windows: bone, "
                                                            "soft, wide (or a window in HU: CENTER:WIDTH on the "
                                                            "command line, e.g. 400:1800; (center, width) in "
                                                            "Python)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["study", "train"])
@pytest.mark.parametrize("extra, message", [
    (["--folds", "5"], "too few for 5 folds"),
    (["--folds", "1"], "(--folds 1 trains one of 5 folds)"),
    (["--external", "nosuch"], "external institution 'nosuch' not in the manifest"),
])
def test_a_split_refusal_writes_nothing_so_the_corrected_rerun_works(tmp_path, capsys, command, extra, message):
    """Too few cases for the folds, or an unknown --external: one line, exit 2 and --out not created, so the
    corrected command runs into the same folder (before, cohort.json / study_config.json were already
    written and the rerun was refused as a used folder)."""
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=3)
    out = tmp_path / "out"
    code = main(["--progress", "none", command, "--manifest", str(manifest), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("command, extra", [("study", ["--modes", "2d,3d"]), ("train", ["--view", "2d"])])
def test_a_stack_option_without_a_stacked_mode_is_one_line(tmp_path, capsys, command, extra):
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=4)
    code = main(["--progress", "none", command, "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                 *extra, "--n-slices", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "n_slices/slice_gap_mm apply to 2.5d-adjacent and 2.5d-mil" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_stack_options_reach_the_stacked_modes_bundles_and_the_study_record(tmp_path, capsys):
    """--n-slices / --slice-gap set the stack of 2.5d-adjacent and 2.5d-mil (their cards say so), leave the
    other modes alone, and are part of the study's record only when given (so earlier studies resume)."""
    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=12)
    out = tmp_path / "study"
    code = main(["--progress", "none", "study", "--manifest", str(manifest), "--out", str(out), "--modes",
                 "2d,2.5d-adjacent", "--size", "16", "--arch", "resnet10-tiny", "--epochs", "1", "--batch-size", "4",
                 "--folds", "2", "--external", "B", "--device", "cpu", "--no-baseline", "--n-slices", "5",
                 "--slice-gap", "4.5", "--json"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "2.5d-adjacent" / "model" / "model.json").read_text(encoding="utf-8"))
    assert (card["view_spec"]["n_slices"], card["view_spec"]["slice_gap_mm"]) == (5, 4.5)
    assert card["view_spec"]["n_slices"] * 2 == card["network"]["in_channels"]   # 5 slices x bone, soft
    other = json.loads((out / "2d" / "model" / "model.json").read_text(encoding="utf-8"))
    assert other["view_spec"]["n_slices"] is None
    record = json.loads((out / "study_config.json").read_text(encoding="utf-8"))
    assert (record["config"]["n_slices"], record["config"]["slice_gap_mm"]) == (5, 4.5)
    from mvcf.study import StudyConfig

    assert "n_slices" not in StudyConfig().to_dict() and "slice_gap_mm" not in StudyConfig().to_dict()

"""Argument ranges are checked at parse time: one error line, exit code 2, nothing run."""
from __future__ import annotations

import os

import pytest

from mvcf.cli.main import build_parser

MANIFEST = ["--manifest", "m.csv", "--out", "o"]


@pytest.mark.parametrize("argv, message", [
    (["synth", "--out", "o", "--cases", "1e9"], r"argument --cases: must be a whole number in \[1, 100,000\], got 1e9"),
    (["synth", "--out", "o", "--cases", "0"], "argument --cases"),
    (["synth", "--out", "o", "--workers", "-2"], "argument --workers"),
    (["synth", "--out", "o", "--external-fraction", "nan"], "argument --external-fraction: must be a finite"),
    (["train", *MANIFEST, "--patience", "-5"], r"argument --patience: must be a whole number in \[1,"),
    (["train", *MANIFEST, "--lr", "nan"], r"argument --lr: must be a finite number in \(0, 1\], got nan"),
    (["train", *MANIFEST, "--lr", "-1"], "argument --lr"),
    (["train", *MANIFEST, "--epochs", "1.5"], "argument --epochs: must be a whole number"),
    (["train", *MANIFEST, "--windows", ",".join(["bone"] * 5000)], "argument --windows: takes at most 16 entries, got 5000"),
    (["train", *MANIFEST, "--windows", "40:-5"], "argument --windows"),
    (["study", *MANIFEST, "--size-3d", "1024"], r"argument --size-3d: must be a whole number in \[8, 256\]"),
    (["views", "--ct", "c", "--point-ijk", "1,2,3", "--out", "o", "--size", "100000"], "argument --size"),
    (["views", "--ct", "c", "--point-ijk", "1,2,3", "--out", "o", "--spacing", "inf"], "argument --spacing"),
    (["predict", "--ct", "c", "--mask", "m", "--label", "0"], "argument --label"),
    (["stats", "roc", "--csv", "c", "--truth", "t", "--score", "s", "--n-resamples", "1e9"], "argument --n-resamples"),
    (["stats", "mrmc", "--csv", "c", "--alpha", "2"], "argument --alpha"),
    (["demo", "--out", "o", "--cases", "5"], r"argument --cases: must be a whole number in \[20,"),
])
def test_out_of_range_arguments_are_refused_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err


def test_sensible_values_still_parse():
    args = build_parser().parse_args(["train", *MANIFEST, "--lr", "3e-4", "--epochs", "1e2", "--windows",
                                      "bone,40:400", "--patience", "3"])
    assert args.lr == 3e-4 and args.epochs == 100 and args.windows == "bone,40:400" and args.patience == 3


def test_a_3d_view_of_1024_px_is_refused_before_sampling():
    from mvcf.errors import MVCFError
    from mvcf.views import ViewSpec

    with pytest.raises(MVCFError, match="MVCF_MAX_VIEW_ELEMENTS"):
        ViewSpec(mode="3d", size_px=1024)
    ViewSpec(mode="3d", size_px=64)


@pytest.mark.parametrize("argv, message", [
    (["screen", "--ct", "c", "--seg", "s", "--device", "foo"], "--device must be auto, cpu or cuda[:N], got 'foo'"),
    (["screen", "--ct", "c", "--seg", "s", "--device", "cuda:x"], "--device must be auto, cpu or cuda[:N], got 'cuda:x'"),
])
def test_a_core_check_used_as_an_argument_type_is_one_line_too(argv, message, capsys):
    """A type= that is one of the core's checks raises MVCFError, which argparse does not catch: main() must
    still give one error line and exit 2, not a traceback (`mvcf screen --device foo` gave one)."""
    from mvcf.cli.main import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""


@pytest.mark.parametrize("progress", ["none", "jsonl"])
def test_a_heatmap_method_nothing_uses_is_said_and_core_warnings_carry_the_prefix(progress, capsys):
    """`--heatmap-method occlusion` without --heatmap, --report or --dicom-out changes nothing: the run says
    so, as a `warning:` line (or a JSON-lines log event for the Slicer child), whatever --progress is; the
    core's logged warnings come the same way (before, Python printed them bare, and not with a prefix)."""
    import json
    import logging

    from mvcf.cli.main import main
    from mvcf.resources import sample_ct_paths

    ct = str(sample_ct_paths()["ct"])
    handlers = list(logging.getLogger("mvcf").handlers)
    assert main(["--progress", progress, "predict", "--ct", ct, "--point-lps", "5.7,-111.9,382.6",
                 "--heatmap-method", "occlusion"]) == 0
    captured = capsys.readouterr()
    said = "--heatmap-method occlusion has no effect: this run writes no heatmap"
    if progress == "none":
        assert f"warning: {said}" in captured.err
    else:
        events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
        assert any(e["event"] == "log" and e["level"] == "warning" and said in e["message"] for e in events)
        assert events[-1]["event"] == "result"
    assert logging.getLogger("mvcf").handlers == handlers   # main() leaves no handler behind
    assert main(["--progress", progress, "predict", "--ct", ct, "--point-lps", "5.7,-111.9,382.6",
                 "--heatmap-method", "gradcam"]) == 0
    assert "has no effect" not in "".join(capsys.readouterr())


def test_an_option_prefix_is_not_another_option(capsys):
    """`mvcf screen --heatmap X` (screen has no --heatmap) was read as `--heatmap-method X` by argparse's prefix
    matching and refused as an unknown heatmap method; prefixes are off."""
    from mvcf.cli.main import main

    assert main(["screen", "--ct", "c", "--seg", "s", "--heatmap", "h.nii.gz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --heatmap h.nii.gz") and "heatmap method" not in err


@pytest.mark.parametrize("json_flag", [False, True])
def test_jsonl_stdout_holds_only_events_and_one_result(json_flag, tmp_path, capsys):
    """With --progress jsonl stdout is the child-process protocol: every line one event, the result once, as
    the last event, with or without --json (pretty JSON and the text for people used to land there too);
    without jsonl the same runs still print their JSON or their text."""
    import json

    from mvcf.cli.main import main
    from mvcf.resources import sample_ct_paths

    ct = str(sample_ct_paths()["ct"])
    runs = {"predict": ["predict", "--ct", ct, "--point-lps", "5.7,-111.9,382.6", "--device", "cpu"],
            "views": ["views", "--ct", ct, "--point-ijk", "60,50,50", "--mode", "2d", "--size", "16",
                      "--out", str(tmp_path / "views")],
            "synth": ["synth", "--out", str(tmp_path / "cohort"), "--cases", "2", "--seed", "1"]}
    for name, argv in runs.items():
        argv = argv + (["--json"] if json_flag else [])
        assert main(["--progress", "jsonl", *argv]) == 0, name
        lines = capsys.readouterr().out.splitlines()
        events = [json.loads(line) for line in lines]
        assert all("event" in e for e in events), name
        assert [e["event"] for e in events].count("result") == 1 and events[-1]["event"] == "result", name
        argv = [a if a not in (str(tmp_path / "views"), str(tmp_path / "cohort")) else a + "_again" for a in argv]
        assert main(["--progress", "none", *argv]) == 0, name
        out = capsys.readouterr().out
        if json_flag:
            assert "event" not in json.loads(out), name
        else:
            assert out.strip() and not out.lstrip().startswith("{"), name


@pytest.mark.parametrize("argv, message", [
    (["--progress", "jsonl", "synth", "--out", "o", "--cases", "0"], "argument --cases"),
    (["--progress=jsonl", "stats"], "stats"),
    (["--progress", "jsonl", "--max-voxels", "0", "views", "--ct", "c", "--out", "o", "--point-ijk", "1,1,1"],
     "--max-voxels must be a positive number"),
    (["--progress", "jsonl"], "no command given"),
])
def test_a_usage_error_is_an_error_event_under_jsonl(argv, message, capsys):
    """argparse's refusals come before the command's reporter exists: under jsonl they are still the
    protocol's `error` event (the Slicer child showed nothing), and one line on stderr."""
    import json

    from mvcf.cli.main import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["event"] for e in events] == ["error"] and message in events[0]["message"]
    assert [line for line in captured.err.splitlines() if line.startswith("error:")], captured.err
    assert main([a for a in argv if "jsonl" not in a and a != "--progress"]) == 2
    assert capsys.readouterr().out == ""               # without jsonl stdout stays empty


def test_a_cancel_while_the_commands_load_is_one_line_and_130(monkeypatch, capsys):
    """Ctrl-C in the first half second (the command modules still importing) ended with a KeyboardInterrupt
    traceback and no event; the handlers are now installed first."""
    import json

    from mvcf.cli import main as cli_main

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    assert cli_main.main(["--progress", "jsonl", "views"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "error: interrupted\n"
    assert [json.loads(line)["event"] for line in captured.out.splitlines()] == ["error"]


def test_a_folder_without_dicom_is_one_line_without_itk_noise(tmp_path, capfd):
    """ITK printed its own four-line 'No Series were found' warning (C-level stderr) before mvcf's line."""
    from mvcf.cli.main import main

    (tmp_path / "notes.txt").write_text("not DICOM", encoding="utf-8")
    assert main(["--progress", "none", "predict", "--ct", str(tmp_path), "--point-lps", "1,2,3"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "DICOM" in err and "WARNING" not in err, err


def test_a_path_that_is_not_utf8_is_one_line_before_anything_runs(tmp_path, capsys):
    """A folder name in another encoding (bytes 0xff) reaches Python with surrogate escapes; ITK then aborted
    the process (SIGABRT, exit 134, `std::logic_error`) and left its temporary heatmap file (a hostile sweep)."""
    from mvcf.cli.main import main

    odd = os.fsdecode(b"bad\xff")
    code = main(["--progress", "none", "predict", "--ct", str(tmp_path / "ct.nii.gz"), "--point-ras", "0,0,0",
                 "--heatmap", str(tmp_path / odd / "h.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "bad\\xff/h.nii.gz' is not UTF-8 text" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, option", [
    (["synth", "--out", "", "--cases", "2"], "--out"),
    (["train", "--manifest", "m.csv", "--out="], "--out"),
    (["screen", "--ct", " ", "--seg", "s.nii.gz"], "--ct"),
    (["predict", "--ct", "c.nii.gz", "--point-ijk", "1,2,3", "--report", ""], "--report"),
    (["train", "--manifest", "m.csv", "--out", "o", "--cache", ""], "--cache"),
    (["reader-study", "collect", "plan", "--answers", ""], "--answers"),
])
def test_an_empty_path_is_named_as_such(argv, option, capsys, tmp_path, monkeypatch):
    """`--out ""` (a shell variable that was not set) became "." and was refused as ". exists and was not written
    by mvcf", or as a folder holding the manifest."""
    from mvcf.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["--progress", "none", *argv]) == 2
    assert capsys.readouterr().err == f"error: {option} is empty: give a path\n"
    assert list(tmp_path.iterdir()) == []


def test_every_path_option_is_checked_for_an_empty_value():
    """PATH_OPTIONS is kept by hand: an option added later that names a file or folder (typed Path, or shown as
    DIR / FILE / PATH / OUT.*) must be in it, or `--it ""` becomes "." again."""
    import argparse
    from pathlib import Path

    from mvcf.cli.main import PATH_OPTIONS, build_parser

    def options(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            elif action.option_strings and action.nargs != 0:
                yield action

    named = {a.option_strings[-1] for a in options(build_parser())
             if a.type is Path or str(a.metavar).split(".")[0] in ("DIR", "FILE", "PATH", "OUT")}
    assert named and named <= set(PATH_OPTIONS), sorted(named - set(PATH_OPTIONS))

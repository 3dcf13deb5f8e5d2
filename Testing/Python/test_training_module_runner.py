"""The shared child run (MVCFClassifierLib.process.ChildRun) as MVCFTraining uses it, with real child
processes: events routed to callbacks, ETA, cancel of the process tree, exit codes, metrics reaching the live
plot nodes, and the arguments of train / study built from the core's own TrainConfig."""
from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from mvcf.train import TrainConfig
from MVCFClassifierLib.process import ChildRun
from MVCFTrainingLib.runner import (EtaEstimator, EventRouter, RunSettings, describe_progress, format_eta,
                                    module_training, study_arguments, train_arguments, training_arguments)

CHILD = textwrap.dedent("""
    import os, subprocess, sys, time
    from mvcf.progress import JsonLinesReporter
    mode = sys.argv[1]
    r = JsonLinesReporter()
    if mode == "train":
        for epoch in range(1, 4):
            time.sleep(0.05)
            r.progress(epoch, 3, f"epoch {epoch}/3")
            r.metrics(epoch=epoch, train_loss=1.0 / epoch, val_auc=0.5 + 0.1 * epoch, view="2d")
        r.log("almost done", level="warning")
        r.result({"bundle": "out/model", "auc": 0.8})
    elif mode == "usererror":
        r.error("manifest row 3: label 'X' is not MVCF or OVCF")
        print("error: manifest row 3: label 'X' is not MVCF or OVCF", file=sys.stderr)
        sys.exit(2)
    elif mode == "crash":
        raise RuntimeError("a bug")
    elif mode == "hang":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(sys.argv[2], "w") as handle:
            handle.write(str(grandchild.pid))
        r.progress(0, 10, "epoch 0/10")
        time.sleep(120)
""")


@pytest.fixture
def child_script(tmp_path):
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as dead
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_events_reach_callbacks_in_order(child_script):
    seen: list = []
    router = EventRouter(on_progress=lambda d, t, m, eta: seen.append(("progress", d, t, eta)),
                         on_metrics=lambda m: seen.append(("metrics", m["epoch"], m["train_loss"])),
                         on_log=lambda msg, level: seen.append(("log", level, msg)),
                         on_result=lambda r: seen.append(("result", r["auc"])))
    run = ChildRun([sys.executable, str(child_script), "train"]).start()
    assert run.wait(on_event=router, timeout=60) == 0
    outcome = run.outcome()
    assert outcome.status == "succeeded" and outcome.returncode == 0
    assert outcome.result == {"bundle": "out/model", "auc": 0.8}
    kinds = [s[0] for s in seen]
    assert kinds == ["progress", "metrics"] * 3 + ["log", "result"]
    assert [s[1] for s in seen if s[0] == "progress"] == [1, 2, 3]
    assert seen[0][3] is None and seen[2][3] is not None and seen[4][3] == pytest.approx(0.0, abs=1e-9)
    assert ("log", "warning", "almost done") in seen
    assert run.poll() == []


def test_user_error_and_crash_outcomes(child_script):
    logs: list = []
    run = ChildRun([sys.executable, str(child_script), "usererror"]).start()
    run.wait(on_event=EventRouter(on_log=lambda msg, level: logs.append((level, msg))), timeout=60)
    outcome = run.outcome()
    assert outcome.status == "failed" and outcome.returncode == 2
    assert outcome.error == "manifest row 3: label 'X' is not MVCF or OVCF"
    assert logs == [("error", outcome.error)]

    crashed = ChildRun([sys.executable, str(child_script), "crash"]).start()
    crashed.wait(timeout=60)
    crash = crashed.outcome()
    assert crash.status == "failed" and crash.returncode == 1
    assert crash.error == "RuntimeError: a bug"


def test_cancel_kills_the_process_tree(child_script, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    progress: list = []
    router = EventRouter(on_progress=lambda *a: progress.append(a))
    run = ChildRun([sys.executable, str(child_script), "hang", str(pid_file)]).start()
    deadline = time.monotonic() + 30
    while not progress and time.monotonic() < deadline:
        for event in run.poll():
            router(event)
        time.sleep(0.05)
    assert progress and pid_file.exists()
    grandchild = int(pid_file.read_text(encoding="utf-8"))
    child = run.pid
    assert _alive(grandchild) and _alive(child)
    run.cancel(grace_s=2.0)
    run.wait(timeout=30)
    assert run.outcome().status == "cancelled"
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(grandchild)


def test_metrics_events_reach_the_live_plot(child_script):
    slicer = pytest.importorskip("slicer")
    from MVCFTrainingLib.plots import LiveCurves

    scene = slicer.vtkMRMLScene()
    curves = LiveCurves(scene, "run")
    ChildRun([sys.executable, str(child_script), "train"]).start().wait(EventRouter(on_metrics=curves.add), 60)
    assert list(curves.values("view 2d", "epoch")) == [1, 2, 3]
    assert curves.values("view 2d", "val_auc") == pytest.approx([0.6, 0.7, 0.8])
    assert curves.chart.GetNumberOfPlotSeriesNodes() == 2  # train_loss and val_auc
    names = sorted(curves.chart.GetNthPlotSeriesNode(i).GetName() for i in range(2))
    assert names == ["view 2d: train_loss", "view 2d: val_auc"]
    series = curves.series[("view 2d", "val_auc")]
    assert series.GetTableNode() is curves.tables["view 2d"] and series.GetYColumnName() == "val_auc"


def test_eta_is_linear_within_a_phase_and_resets_between_phases():
    now = [0.0]
    eta = EtaEstimator(clock=lambda: now[0])
    assert eta.update(0, 10, "epoch 0/10") is None
    now[0] = 4.0
    assert eta.update(2, 10, "epoch 2/10") == pytest.approx(16.0)
    now[0] = 5.0
    assert eta.update(0, 4, "fold 1") is None  # a new phase (another total) starts over
    now[0] = 7.0
    assert eta.update(1, 4, "fold 1") == pytest.approx(6.0)
    assert format_eta(125) == "about 2 min 05 s left" and format_eta(None) == ""
    assert describe_progress(2, 10, "epoch 2/10", 16) == "epoch 2/10 — 2/10 — about 16 s left"


def test_train_and_study_arguments():
    settings = RunSettings(view="3d", folds=3, external="B",
                           training=module_training(epochs=2, device="cpu", seed=7, lr=3e-4))
    args = train_arguments("m.csv", "out", settings, resume=True)
    assert args[:5] == ["train", "--manifest", "m.csv", "--out", "out"]
    assert args[args.index("--view") + 1] == "3d" and args[args.index("--folds") + 1] == "3"
    assert args[args.index("--external") + 1] == "B" and args[-1] == "--resume"
    assert args[args.index("--lr") + 1] == "0.0003" and args[args.index("--epochs") + 1] == "2"
    study = study_arguments("m.csv", "out", settings)
    assert "--view" not in study and study[0] == "study"
    with pytest.raises(ValueError):
        RunSettings(view="4d").arguments()


def test_the_stack_settings_reach_the_cores_view_spec_in_train_and_study():
    """RunSettings' slice count and gap parse back, through the core's own parsers, into the stacked mode's
    ViewSpec (train) and the StudyConfig (study); 0 leaves each mode's own stack."""
    from mvcf.cli.main import build_parser

    settings = RunSettings(view="2.5d-adjacent", n_slices=7, slice_gap_mm=2.5)
    args = build_parser().parse_args(train_arguments("m.csv", "o", settings))
    assert (args.n_slices, args.slice_gap) == (7, 2.5)
    study = build_parser().parse_args(study_arguments("m.csv", "o", settings))
    assert (study.n_slices, study.slice_gap) == (7, 2.5)
    default = build_parser().parse_args(train_arguments("m.csv", "o", RunSettings(view="2.5d-adjacent")))
    assert (default.n_slices, default.slice_gap) == (None, None)


def test_the_training_settings_are_the_cores_own_and_reach_mvcf_train_unchanged():
    """One TrainConfig (mvcf.train's): the options built from it parse back, through the core's own parser
    and train_config(), into an equal object."""
    from mvcf.cli.main import build_parser
    from mvcf.cli.train import train_config

    config = TrainConfig(arch="resnet10-tiny", epochs=4, batch_size=8, lr=2e-4, patience=3, seed=5,
                         device="cpu", mil_pooling="attention", augment=False)
    args = build_parser().parse_args(["train", "--manifest", "m.csv", "--out", "o", *training_arguments(config)])
    assert train_config(args) == config
    with pytest.raises(ValueError, match="dropout"):
        training_arguments(TrainConfig(dropout=0.5))  # no option carries it: refused, never dropped silently


def test_batch_script_command_lines(capsys):
    from MVCFTrainingLib.batch import main

    assert main(["--manifest", "m.csv", "--out", "o", "--view", "3d", "--external", "B", "--size", "32",
                 "--python", "py", "--print-command"], "train") == 0
    train = capsys.readouterr().out.split()
    assert train[:5] == ["py", "-m", "mvcf", "--progress", "jsonl"] and train[5] == "train"
    assert train[train.index("--view") + 1] == "3d" and train[train.index("--size") + 1] == "32"
    assert main(["--manifest", "m.csv", "--out", "o", "--view", "2.5d-mil", "--n-slices", "9", "--slice-gap", "3",
                 "--python", "py", "--print-command"], "train") == 0
    stacked = capsys.readouterr().out.split()
    assert stacked[stacked.index("--n-slices") + 1] == "9" and stacked[stacked.index("--slice-gap") + 1] == "3.0"
    for bad in (["--n-slices", "-3"], ["--slice-gap", "0"]):   # refused in one line, never taken as the default
        with pytest.raises(SystemExit) as refused:
            main(["--manifest", "m.csv", "--out", "o", "--view", "2.5d-mil", *bad, "--print-command"], "train")
        assert refused.value.code == 2 and bad[0] in capsys.readouterr().err
    assert main(["--manifest", "m.csv", "--out", "o", "--python", "py", "--print-command", "--",
                 "--modes", "2d,3d"], "study") == 0
    study = capsys.readouterr().out.split()
    assert study[5] == "study" and "--view" not in study and study[-2:] == ["--modes", "2d,3d"]


def test_a_child_that_reads_requests(tmp_path):
    """`requests=True`: the child's stdin is a pipe and send() writes one JSON line (a long-lived worker);
    without it stdin is empty and send() says so."""
    script = tmp_path / "echo.py"
    script.write_text("import json, sys\nfor line in sys.stdin:\n"
                      "    print(json.dumps({'event': 'result', 'echo': json.loads(line)['n']}), flush=True)\n")
    run = ChildRun([sys.executable, str(script)], requests=True).start()
    run.send({"n": 7})
    deadline = time.monotonic() + 30
    while run.result is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.result == {"echo": 7}
    run.cancel(grace_s=1)
    assert run.outcome().status == "cancelled"
    quiet = ChildRun([sys.executable, "-c", "import sys; sys.stdin.read()"]).start()
    with pytest.raises(RuntimeError, match="requests=True"):
        quiet.send({"n": 1})
    assert quiet.wait(timeout=30) == 0

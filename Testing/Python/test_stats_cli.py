"""`mvcf stats roc` / `mvcf stats mrmc`: JSON fields, plots, and one-line errors with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mvcf import stats
from mvcf.cli.main import main

from conftest import shared


@pytest.fixture
def roc_csv(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random(120) < 0.4
    frame = pd.DataFrame({"label": np.where(truth, "MVCF", "OVCF"), "y": truth.astype(int),
                          "m2d": rng.normal(size=120) + truth, "m3d": rng.normal(size=120) + 1.5 * truth,
                          "text": ["a"] * 120})
    path = tmp_path / "scores.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_roc_json_fields(roc_csv, capsys, tmp_path):
    path, frame = roc_csv
    plot = tmp_path / "roc.png"
    assert main(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "label", "--positive", "MVCF",
                 "--score", "m2d", "--score", "m3d", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    truth = frame.label == "MVCF"
    assert (out["n_pos"], out["n_neg"]) == (int(truth.sum()), int((~truth).sum()))
    assert [s["name"] for s in out["scores"]] == ["m2d", "m3d"]
    ref = stats.delong_ci(truth, frame.m2d)
    assert out["scores"][0]["auc"] == pytest.approx(ref["auc"])
    assert out["scores"][0]["ci"] == pytest.approx(list(ref["ci"]))
    assert out["scores"][0]["ci_method"] == "delong"
    (comparison,) = out["comparisons"]
    assert (comparison["a"], comparison["b"]) == ("m2d", "m3d")
    assert comparison["diff"] == pytest.approx(out["scores"][0]["auc"] - out["scores"][1]["auc"])
    assert set(comparison) >= {"a", "b", "diff", "z", "p"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_bootstrap_and_text_output(roc_csv, capsys):
    path, _ = roc_csv
    assert main(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "y", "--score", "m3d",
                 "--ci-method", "bootstrap", "--n-resamples", "300"]) == 0
    text = capsys.readouterr().out
    assert "m3d: AUC" in text and "bootstrap-percentile" in text


def test_mrmc_json_reproduces_vandyke(capsys):
    csv = shared("reader_study/vandyke_dataset02.csv")
    assert main(["--progress", "none", "stats", "mrmc", "--csv", str(csv), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reader_auc"]["0"]["0"] == pytest.approx(0.91964573, abs=5e-9)
    assert out["mean_auc"] == pytest.approx({"0": 0.89703704, "1": 0.94083736}, abs=5e-9)
    for key in ("F", "df1", "df2", "p", "diff", "ci"):
        assert key in out["rrrc"] and key in out["frrc"] and key in out["rrfc"]
    assert round(out["rrrc"]["p"], 4) == 0.0517
    assert out["cov2"] == pytest.approx(0.00034407, abs=5e-9)
    assert {"var_error", "cov1", "cov3"} <= set(out)


def test_mrmc_unaided_vs_aided(capsys):
    csv = shared("reader_study/vandyke_dataset02.csv")
    assert main(["--progress", "none", "stats", "mrmc", "--csv", str(csv), "--unaided", "0", "--aided", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rrrc"]["diff"] == pytest.approx(0.04380032, abs=5e-9)
    assert out["design"]["diff"] == "aided - unaided"
    assert main(["stats", "mrmc", "--csv", str(csv), "--aided", "1"]) == 2
    assert "both --unaided and --aided" in capsys.readouterr().err


def test_mrmc_with_model_csv(tmp_path, capsys):
    csv = shared("reader_study/vandyke_dataset02.csv")
    cases = pd.read_csv(csv).drop_duplicates("case")
    model = tmp_path / "model.csv"
    cases.assign(score=cases.truth + np.random.default_rng(0).normal(size=len(cases))).to_csv(model, index=False)
    assert main(["--progress", "none", "stats", "mrmc", "--csv", str(csv), "--model-csv", str(model),
                 "--model-modality", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_vs_readers"]["design"]["kind"] == "model_vs_readers"
    assert 0.5 < out["model_vs_readers"]["model_auc"] < 1.0


def _run(args, capsys):
    """The CLI in-process (the same code path as the console script, without a slow interpreter start)."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_jsonl_progress_emits_the_result_event(roc_csv, capsys):
    path, _ = roc_csv
    code, out, err = _run(["--progress", "jsonl", "stats", "roc", "--csv", str(path), "--truth", "y",
                           "--score", "m2d", "--json"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["scores"][0]["name"] == "m2d"


@pytest.mark.parametrize("extra, message", [
    (["--truth", "y", "--score", "text"], "must be finite numbers"),
    (["--truth", "y", "--score", "nope"], "not in the CSV"),
    (["--truth", "label", "--score", "m2d"], "must be 0/1"),
    (["--truth", "label", "--positive", "OVCF", "--score", "m2d", "--positive", "absent"], "no row has"),
])
def test_roc_bad_input_exit_2_one_line(roc_csv, extra, message, capsys, tmp_path):
    path, _ = roc_csv
    plot = tmp_path / "never.png"
    code, out, err = _run(["--progress", "none", "stats", "roc", "--csv", str(path), *extra, "--plot", str(plot)],
                          capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not plot.exists()


def test_roc_one_class_exit_2(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.DataFrame({"y": [1, 1, 1], "s": [0.1, 0.2, 0.3]}).to_csv(path, index=False)
    code, _, err = _run(["stats", "roc", "--csv", str(path), "--truth", "y", "--score", "s"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "truth column 'y' holds one class only (3 positive of 3 rows)" in err   # it named 'y_true'
    path.write_text("y,s\n")
    code, _, err = _run(["stats", "roc", "--csv", str(path), "--truth", "y", "--score", "s"], capsys)
    assert code == 2 and err == f"error: {path} has a header but no rows\n"   # it said "0 positive of 0"


def test_mrmc_bad_input_exit_2(tmp_path, capsys):
    csv = shared("reader_study/vandyke_dataset02.csv")
    broken = tmp_path / "broken.csv"
    pd.read_csv(csv).iloc[:-1].to_csv(broken, index=False)
    code, out, err = _run(["--progress", "none", "stats", "mrmc", "--csv", str(broken), "--json"], capsys)
    assert code == 2 and "unbalanced reader design" in err
    assert out == "" and err.count("\n") == 1
    missing = tmp_path / "missing.csv"
    pd.read_csv(csv).drop(columns="truth").to_csv(missing, index=False)
    code, _, err = _run(["stats", "mrmc", "--csv", str(missing)], capsys)
    assert code == 2 and "reader-study column 'truth' not in the CSV (columns: reader, modality, case, rating)" in err
    code, _, err = _run(["stats", "mrmc", "--csv", str(tmp_path / "absent.csv")], capsys)
    assert code == 2 and "not found" in err


def test_plots_write_png_atomically(tmp_path):
    from mvcf.stats import plots

    rng = np.random.default_rng(1)
    truth = rng.random(150) < 0.4
    prob = np.clip(0.3 + 0.4 * truth + rng.normal(0, 0.2, 150), 0, 1)
    paths = [plots.plot_roc(tmp_path / "r.png", truth, {"m": prob}, n_resamples=50, operating_points={"Youden": 0.5}),
             plots.plot_calibration(tmp_path / "c.png", truth, prob),
             plots.plot_decision_curve(tmp_path / "d.png", truth, {"m": prob})]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "d.png", "r.png"]


def test_mrmc_text_output_with_one_modality(tmp_path, capsys):
    csv = shared("reader_study/vandyke_dataset02.csv")
    one = tmp_path / "one.csv"
    pd.read_csv(csv).query("modality == 0").to_csv(one, index=False)
    code, out, err = _run(["--progress", "none", "stats", "mrmc", "--csv", str(one)], capsys)
    assert code == 0, err
    assert "Cov1 n/a" in out and "random readers, random cases:" in out
    assert "modality 0: 0.8970 (0.8252, 0.9689)" in out


def test_a_degenerate_roc_says_why_and_gives_newcombe(tmp_path, capsys):
    """A constant score and a perfectly separating one: DeLong's intervals collapse to a point, and the paired
    test has no variance. The output says so (Newcombe's score interval instead; p n/a, not p 0)."""
    path = tmp_path / "c.csv"
    path.write_text("y,s,u\n1,0.5,0.9\n1,0.5,0.8\n0,0.5,0.1\n0,0.5,0.2\n", encoding="utf-8")
    code, out, err = _run(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "y", "--score", "s",
                           "--score", "u", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    constant, perfect = payload["scores"]
    assert constant["ci"] == [0.5, 0.5] and "constant score" in constant["note"]
    assert constant["ci_newcombe"][0] < 0.5 < constant["ci_newcombe"][1]
    assert "perfect separation" in perfect["note"] and perfect["ci_newcombe"][0] < 1.0 == perfect["ci_newcombe"][1]
    (pair,) = payload["comparisons"]
    assert pair["p"] is None and pair["p_holm"] is None and "no test possible" in pair["note"]
    code, out, _ = _run(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "y", "--score", "s",
                         "--score", "u", "--plot", str(tmp_path / "roc.png")], capsys)
    assert "[newcombe]; zero variance" in out and "p n/a; the paired DeLong variance is zero" in out
    assert code == 0 and (tmp_path / "roc.png").stat().st_size > 5000   # its legend gives Newcombe's too


def test_the_roc_legend_never_shows_a_point_interval(monkeypatch, tmp_path):
    """Perfect separation: the legend says Newcombe's interval, not '1.000 (1.000-1.000)' (the demo's ROC
    plots showed that for a 3D model)."""
    from matplotlib.axes import Axes

    from mvcf.stats.plots import plot_roc

    labels: list = []
    plot = Axes.plot

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    plot_roc(tmp_path / "r.png", np.array([1, 1, 0, 0, 1, 0]), {"perfect": np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3]),
                                                                  "noisy": np.array([0.9, 0.2, 0.1, 0.8, 0.7, 0.3])})
    perfect = next(label for label in labels if label and label.startswith("perfect"))
    noisy = next(label for label in labels if label and label.startswith("noisy"))
    assert perfect.endswith(", Newcombe)") and "(1.000–1.000" not in perfect
    assert "Newcombe" not in noisy


def test_a_header_naming_a_column_twice_is_refused(tmp_path, capsys):
    """pandas renamed the second `s` to `s.1` and `--score s` took the first in silence (manifests:
    test_manifest.py::test_a_column_given_twice_is_refused_not_read_from_the_last)."""
    (tmp_path / "twice.csv").write_text("y,s,s\n1,0.9,0.1\n0,0.2,0.8\n1,0.7,0.3\n0,0.4,0.6\n")
    code = main(["--progress", "none", "stats", "roc", "--csv", str(tmp_path / "twice.csv"), "--truth", "y",
                 "--score", "s"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "names the column 's' twice" in err


@pytest.mark.parametrize("text, extra, message", [
    # --positive MVCF counted 'mvcf' (and '?' or a third code) as negative in silence
    ("y,s\nMVCF,0.9\nmvcf,0.8\nMVCF,0.7\nOVCF,0.3\nOVCF,0.5\nmvcf,0.85\nOVCF,0.2\nMVCF,0.6\n", ["--positive", "MVCF"],
     "the truth column holds more than two values: besides the positive 'MVCF', 'mvcf' (row 3) and 'OVCF' (row 5)"),
    ("y,s\n1,0.9\n1,0.8\n0,0.3\n0,0.5\n?,0.85\n", ["--positive", "1"], "'0' (row 4) and '?' (row 6)"),
    # one more cell on every row: pandas took the first column as the row index and shifted the rest
    ("y,p\n1,1,0\n1,1,1\n0,0,1\n0,1,0\n1,0,0\n0,0,1\n", [], "line 2 has 3 cells under a header of 2 columns"),
    # a blank first line hid the header from the duplicate-column check (pandas skips it)
    ("\ny,s,s\n1,0.9,0.1\n1,0.8,0.2\n0,0.3,0.7\n0,0.5,0.6\n", [], "names the column 's' twice"),
    ("  \ny,s,s\n1,0.9,0.1\n1,0.8,0.2\n0,0.3,0.7\n0,0.5,0.6\n", [], "names the column 's' twice"),
    # one positive: scipy's bootstrap raised a 31-line ValueError
    ("y,s\n1,0.9\n0,0.1\n0,0.95\n0,0.3\n", ["--ci-method", "bootstrap"],
     "a stratified bootstrap needs at least 2 positives and 2 negatives (got 1 and 3)"),
])
def test_roc_inputs_that_gave_silent_wrong_numbers_or_tracebacks(tmp_path, capsys, text, extra, message):
    path = tmp_path / "in.csv"
    path.write_text(text)
    code, out, err = _run(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "y", "--score",
                           text.split("\n")[1 if text.startswith(("\n", " ")) else 0].split(",")[1], *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_roc_reads_a_trailing_comma_and_na_as_text_and_names_a_folder(tmp_path, capsys):
    """A spreadsheet's trailing comma on every row shifted the columns (truth 'y' "must be 0/1"); an id 'NA'
    was a missing value; a folder or /dev/null was 'not found'."""
    from sklearn.metrics import roc_auc_score

    rows = [(1, 0.9), (1, 0.8), (0, 0.3), (0, 0.5), (1, 0.4), (0, 0.45)]
    (tmp_path / "trail.csv").write_text("y,s,\n" + "".join(f"{y},{s},\n" for y, s in rows))
    code, out, err = _run(["--progress", "none", "stats", "roc", "--csv", str(tmp_path / "trail.csv"), "--truth",
                           "y", "--score", "s", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["scores"][0]["auc"] == pytest.approx(roc_auc_score([y for y, _ in rows],
                                                                              [s for _, s in rows]))
    (tmp_path / "na.csv").write_text("id,y,s\nNA,1,0.9\nNB,1,0.8\nNC,0,0.3\nND,0,0.5\n")
    assert _run(["--progress", "none", "stats", "roc", "--csv", str(tmp_path / "na.csv"), "--truth", "y",
                 "--score", "s"], capsys)[0] == 0
    for target in (tmp_path, "/dev/null"):
        code, _, err = _run(["--progress", "none", "stats", "roc", "--csv", str(target), "--truth", "y", "--score",
                             "s"], capsys)
        assert code == 2 and "is not a regular file" in err


def test_mrmc_errors_name_the_missing_rating_the_near_column_and_one_modality_twice(tmp_path, capsys):
    """'unbalanced reader design' said not which rating was missing; a header 'Reader' or ' s' was 'missing'
    with no word of the near miss; --unaided and --aided naming one modality got 'modality order ... does not
    list the modalities'."""
    source = shared("reader_study/vandyke_dataset02.csv").read_text().splitlines()
    (tmp_path / "gap.csv").write_text("\n".join(line for line in source if not line.startswith("2,1,")) + "\n")
    (tmp_path / "upper.csv").write_text("\n".join(["R" + source[0][1:], *source[1:]]) + "\n")
    (tmp_path / "blank.csv").write_text("y, s\n1,0.9\n0,0.2\n1,0.8\n0,0.1\n")
    for args, message in (
            (["mrmc", "--csv", tmp_path / "gap.csv"], "needs 1140; e.g. reader 2 has no rating of case 1 in modality 1"),
            (["mrmc", "--csv", tmp_path / "upper.csv"],
             "'Reader' differs from 'reader' only by blanks or letter case"),
            (["mrmc", "--csv", shared("reader_study/vandyke_dataset02.csv"), "--unaided", "0", "--aided", "0"],
             "--unaided and --aided both name the modality '0'"),
            (["roc", "--csv", tmp_path / "blank.csv", "--truth", "y", "--score", "s"],
             "score column 's' not in the CSV (columns: y, ' s'); ' s' differs from 's' only by blanks")):
        code, _, err = _run(["--progress", "none", "stats", *map(str, args)], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_reader_that_closes_the_output_early_ends_the_command_quietly(roc_csv, capsys, monkeypatch):
    """`mvcf stats mrmc ... | head -3`: a write after the reader left read `error: cannot access: Broken pipe`,
    exit 2, as if the input were bad; now the command ends as a program killed by SIGPIPE does (141), with
    nothing on stderr."""
    import io
    import sys

    from mvcf.cli.main import SIGPIPE_EXIT

    class Closed(io.TextIOBase):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    path, _ = roc_csv
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", Closed())
    code = main(["--progress", "none", "stats", "roc", "--csv", str(path), "--truth", "y", "--score", "m2d"])
    assert code == SIGPIPE_EXIT and capsys.readouterr().err == ""

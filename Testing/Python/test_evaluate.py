"""`mvcf train` then `mvcf evaluate` on a tiny two-institution cohort: files, fields, per-institution results."""
import csv
import json

import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from tiny_cohort import make_tiny_cohort  # noqa: E402

TRAIN = ["--view", "2d", "--size", "24", "--arch", "resnet10-tiny", "--epochs", "2", "--batch-size", "4",
         "--folds", "2", "--external", "B", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    manifest = make_tiny_cohort(root / "cohort", n_per_site=16)
    out = root / "run"
    assert main(["--progress", "none", "train", "--manifest", str(manifest), "--out", str(out)] + TRAIN) == 0
    return manifest, out


def test_train_writes_bundle_logs_and_predictions(trained, capsys):
    manifest, out = trained
    card = json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    assert card["ensemble_size"] == 2 and card["view_spec"]["mode"] == "2d" and "mode" not in card["network"]
    assert card["training_data"]["per_institution"]["B"] == {"MVCF": 8, "OVCF": 8}
    assert card["training_data"]["external_institution"] == "B"
    assert 0.0 <= card["threshold"] <= 1.0 and "Youden" in card["threshold_method"]
    assert card["trained_on_synthetic_data"] is False
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["set"] for r in rows} == {"internal_test", "external_test"}
    assert sorted(r["case_id"] for r in rows if r["set"] == "internal_test") == [f"A_{i:03d}" for i in range(16)]
    assert (out / "log.csv").is_file() and (out / "folds" / "fold1" / "checkpoint.pt").is_file()


def test_train_refuses_a_used_folder_and_a_bad_manifest(trained, tmp_path, capsys):
    manifest, out = trained
    assert main(["--progress", "none", "train", "--manifest", str(manifest), "--out", str(out)] + TRAIN) == 2
    assert "--resume" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,patient_id,institution,label,ct,center_lps\nx,p,A,maybe,missing.nii.gz,1,2,3\n")
    assert main(["--progress", "none", "train", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "row 2" in err and not (tmp_path / "o" / "model").exists()


def test_evaluate_writes_metrics_plots_and_per_institution(trained, tmp_path, capsys):
    manifest, out = trained
    target = tmp_path / "eval"
    code = main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(manifest),
                 "--out", str(target), "--device", "cpu", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((target / "metrics.json").read_text(encoding="utf-8"))
    assert printed["overall"]["n"] == metrics["overall"]["n"] == 32
    for key in ("auc", "auc_ci_delong", "auc_ci_bootstrap", "sensitivity", "specificity", "ppv", "npv",
                "accuracy", "f1"):
        assert key in metrics["overall"]
    assert set(metrics["per_institution"]) == {"A", "B"}
    # the probabilities in predictions.csv and these metrics carried no research-use notice (predict's do)
    assert "Research use only" in metrics["disclaimer"] and isinstance(metrics["warnings"], list)
    assert metrics["model"]["sha256"] == json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))["weights"]["sha256"]
    for name in ("predictions.csv", "roc.png", "calibration.png", "decision_curve.png"):
        assert (target / name).stat().st_size > 0
    assert main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(manifest),
                 "--out", str(tmp_path / "text"), "--device", "cpu"]) == 0
    assert "Research use only" in capsys.readouterr().out
    assert main(["--progress", "none", "evaluate", "--model", str(tmp_path), "--manifest", str(manifest),
                 "--out", str(tmp_path / "e2")]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def _rows(manifest, keep, extra=()):
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if keep(r)] + list(extra)
    return reader.fieldnames, rows


def _write_rows(path, fields, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_evaluate_names_the_cases_the_model_was_trained_on(trained, tmp_path, capsys):
    """Evaluating on the training cohort's own CTs (the same files, or byte copies under new names) measured
    memory, not generalisation, and nothing said so: the card now keeps a digest of every CT its folds were
    fitted or tuned on, and evaluate names the cases that hit one."""
    import shutil

    manifest, out = trained
    card = json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    assert card["training_scans"]["count"] == len(card["training_scans"]["digests"]) == 16   # site A; B held out
    internal = [f"A_{i:03d}" for i in range(16)]

    code = main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(manifest),
                 "--out", str(tmp_path / "all"), "--device", "cpu"])
    assert code == 0
    metrics = json.loads((tmp_path / "all" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training_overlap"] == {"checked": True, "cases": internal}
    assert ("warning: 16 of 32 cases have a CT the model was trained on (A_000, A_001, A_002, A_003, A_004 ...): "
            "these metrics are not an independent test") in capsys.readouterr().err

    folder = manifest.parent
    shutil.copy(folder / "A_003.nii.gz", folder / "copy_of_A_003.nii.gz")
    fields, rows = _rows(manifest, lambda r: r["institution"] == "B")
    copied = dict(rows[0], case_id="C_000", patient_id="C-p0", ct="copy_of_A_003.nii.gz",
                  mask="A_003_mask.nii.gz")
    external = _write_rows(folder / "external.csv", fields, rows)
    with_copy = _write_rows(folder / "with_copy.csv", fields, rows + [copied])
    assert main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(external),
                 "--out", str(tmp_path / "ext"), "--device", "cpu"]) == 0
    assert "trained on" not in capsys.readouterr().err
    assert json.loads((tmp_path / "ext" / "metrics.json").read_text())["training_overlap"] == \
        {"checked": True, "cases": []}
    assert main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(with_copy),
                 "--out", str(tmp_path / "copy"), "--device", "cpu"]) == 0
    assert "1 of 17 cases have a CT the model was trained on (C_000)" in capsys.readouterr().err

    old = tmp_path / "old_bundle"
    shutil.copytree(out / "model", old)
    del card["training_scans"]
    (old / "model.json").write_text(json.dumps(card), encoding="utf-8")
    assert main(["--progress", "none", "evaluate", "--model", str(old), "--manifest", str(external),
                 "--out", str(tmp_path / "old"), "--device", "cpu"]) == 0
    found = json.loads((tmp_path / "old" / "metrics.json").read_text())["training_overlap"]
    assert found["checked"] is False and "does not list the scans it was trained on" in found["reason"]


@pytest.mark.parametrize("inside", [".", "cache"])
def test_evaluate_refuses_a_cache_inside_its_output_before_any_work(trained, tmp_path, capsys, inside):
    """--cache equal to or inside a new --out built every view, made --out, then refused its own --out
    ("already exists"), and the corrected rerun with --overwrite was refused too ("not written by mvcf"): the
    output folder is replaced as a whole, so a cache in it is refused first, with nothing written."""
    manifest, out = trained
    target = tmp_path / "eval"
    code = main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(manifest),
                 "--out", str(target), "--cache", str(target / inside), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "lies inside --out" in err and "\n" not in err
    assert not target.exists()


def test_evaluate_on_one_class_says_why_there_is_no_auc(trained, tmp_path, capsys):
    """On a cohort (or a site) of one class the AUC is undefined; the line said `AUC n/a` and no more, as for a
    failed computation. It gives the reason metrics.json already holds."""
    manifest, out = trained
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] == "OVCF"]
    one_class = manifest.parent / "ovcf_only.csv"
    with open(one_class, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = main(["--progress", "none", "evaluate", "--model", str(out / "model"), "--manifest", str(one_class),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("AUC n/a (one class only: AUC undefined) on 16 cases")
    assert "  B: AUC n/a (one class only: AUC undefined) (n=8)" in printed

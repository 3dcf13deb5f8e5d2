"""Every manifest row is checked before train / evaluate / study create anything; resume keys cover content."""
from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from mvcf.cli.main import main
from mvcf.errors import MVCFError
from tiny_cohort import make_tiny_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", n_per_site=6)


def _copy_with(cohort, tmp_path, change):
    """A copy of the tiny cohort whose first row is changed by change(row, folder)."""
    folder = tmp_path / "cohort"
    shutil.copytree(cohort.parent, folder)
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    change(rows[0], folder)
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def _junk_ct(row, folder):
    (folder / "junk.nii.gz").write_bytes(b"\x1f\x8b not an image at all")
    row["ct"] = "junk.nii.gz"


def _not_dicom(row, folder):
    (folder / "notdicom").mkdir()
    (folder / "notdicom" / "readme.txt").write_text("hello")
    row["ct"] = "notdicom"


def _outside(row, folder):
    shutil.copy(folder / row["ct"], folder.parent / "outside.nii.gz")
    row["ct"] = "../outside.nii.gz"


def _outside_absolute(row, folder):
    shutil.copy(folder / row["ct"], folder.parent / "outside.nii.gz")
    row["ct"] = str(folder.parent / "outside.nii.gz")  # was accepted: only relative paths were checked


CASES = {
    "traversal path": (_outside, "leads outside the manifest's folder"),
    "absolute path outside": (_outside_absolute, "leads outside the manifest's folder (an absolute path"),
    "junk ct": (_junk_ct, "not a readable image"),
    "label absent": (lambda row, folder: row.update(vertebra_label="7"), "vertebra_label 7 is absent from the mask"),
    "folder of non-DICOM files": (_not_dicom, "no DICOM series"),
    "NUL byte": (lambda row, folder: row.update(case_id="A\x00B"), "NUL byte"),
    "CT as mask": (lambda row, folder: row.update(mask=row["ct"]), "does not look like a label mask"),
    "infinite label": (lambda row, folder: row.update(vertebra_label="inf"), "is not an integer"),  # was a traceback
}


@pytest.mark.parametrize("command", ["train", "study", "evaluate"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_row_is_refused_before_anything_is_written(cohort, tmp_path, capsys, command, case):
    change, message = CASES[case]
    manifest = _copy_with(cohort, tmp_path, change)
    before = {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")}
    out, cache = tmp_path / "run", tmp_path / "cache"
    extra = ["--model", str(_demo_model())] if command == "evaluate" else []
    code = main(["--progress", "none", command, "--manifest", str(manifest), "--out", str(out), "--cache",
                 str(cache), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: manifest manifest.csv: 1 bad row (2)") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
    assert not out.exists() and not cache.exists()
    assert {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")} == before


def _demo_model():
    from mvcf.predict import default_model_path

    return default_model_path()


def test_outside_root_allowed_on_request(cohort, tmp_path):
    from mvcf.manifest import read_manifest

    manifest = _copy_with(cohort, tmp_path, _outside)
    with pytest.raises(MVCFError, match="allow it with --allow-outside-root"):
        read_manifest(manifest)
    assert read_manifest(manifest, allow_outside_root=True)[0].ct.name == "outside.nii.gz"


def test_absolute_paths_follow_the_root_rule(cohort, tmp_path):
    """An absolute path outside the root needs the allowance like a `../` one; one inside it does not, and
    write_manifest's output (absolute for files outside its folder) reads back only with the allowance."""
    from mvcf.manifest import read_manifest, write_manifest

    manifest = _copy_with(cohort, tmp_path, _outside_absolute)
    with pytest.raises(MVCFError, match="an absolute path; paths must stay inside it"):
        read_manifest(manifest)
    records = read_manifest(manifest, allow_outside_root=True)
    inside = _copy_with(cohort, tmp_path / "in", lambda row, folder: row.update(ct=str(folder / row["ct"])))
    assert read_manifest(inside)[0].ct.is_absolute()
    written = write_manifest(tmp_path / "elsewhere" / "manifest.csv", records)
    with pytest.raises(MVCFError, match="leads outside the manifest's folder"):
        read_manifest(written)
    assert len(read_manifest(written, allow_outside_root=True)) == len(records)


def test_out_naming_an_input_is_refused(cohort, tmp_path, capsys):
    code = main(["--progress", "none", "train", "--manifest", str(cohort), "--out", str(cohort)])
    assert code == 2 and "is an input of this run" in capsys.readouterr().err
    code = main(["--progress", "none", "evaluate", "--manifest", str(cohort), "--model", str(_demo_model()),
                 "--out", str(_demo_model()), "--overwrite"])
    assert code == 2 and "is an input of this run" in capsys.readouterr().err
    assert (_demo_model() / "weights.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    code = main(["--progress", "none", "train", "--manifest", str(cohort), "--out", str(tmp_path / "run"),
                 "--cache", str(tmp_path / "file")])
    assert code == 2 and "--cache" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_study_resume_key_covers_the_files(cohort, tmp_path):
    from mvcf.manifest import read_manifest
    from mvcf.study import StudyConfig, _check_or_write_run_config

    folder = tmp_path / "c"
    shutil.copytree(cohort.parent, folder)
    records = read_manifest(folder / "manifest.csv")
    config = StudyConfig(modes=("2d",))
    path = tmp_path / "study_config.json"
    _check_or_write_run_config(path, config, records, resume=False)
    _check_or_write_run_config(path, config, records, resume=True)
    a, b = records[0].ct, records[1].ct                          # swap two CTs under the same case ids
    os.rename(a, tmp_path / "tmp.nii.gz")
    os.rename(b, a)
    os.rename(tmp_path / "tmp.nii.gz", b)
    with pytest.raises(MVCFError, match="another cohort .*CT/mask files changed"):
        _check_or_write_run_config(path, config, read_manifest(folder / "manifest.csv"), resume=True)
    path.write_text('{"config": ')
    with pytest.raises(MVCFError, match="study_config.json is corrupt"):
        _check_or_write_run_config(path, config, records, resume=True)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(MVCFError, match="study_config.json is corrupt"):
        _check_or_write_run_config(path, config, records, resume=True)


def test_study_resume_names_the_training_setting_and_lets_the_device_change(cohort, tmp_path):
    """`study --resume --lr 0.01` was refused as `its settings differ (train)`, naming no setting, and
    `--device cpu` after `auto` was refused too, though `train --resume` may change where it runs
    (mvcf.train.RESUMABLE_CHANGES): the same settings are resumable in both now."""
    from dataclasses import replace

    from mvcf.manifest import read_manifest
    from mvcf.study import StudyConfig, _check_or_write_run_config
    from mvcf.train import TrainConfig

    records = read_manifest(cohort)
    path = tmp_path / "study_config.json"
    _check_or_write_run_config(path, StudyConfig(modes=("2d",), train=TrainConfig()), records, resume=False)
    with pytest.raises(MVCFError, match=r"its settings differ \(lr, seed\)"):
        _check_or_write_run_config(path, StudyConfig(modes=("2d",), train=TrainConfig(lr=0.01, seed=3)), records,
                                   resume=True)
    moved = replace(TrainConfig(), device="cpu", num_workers=2)
    _check_or_write_run_config(path, StudyConfig(modes=("2d",), train=moved), records, resume=True)


def test_reference_must_be_among_the_modes(tmp_path, capsys):
    code = main(["--progress", "none", "study", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s"),
                 "--modes", "2d,3d", "--reference", "2.5d-mil"])
    assert code == 2 and "--reference 2.5d-mil is not among --modes" in capsys.readouterr().err
    from mvcf.study import StudyConfig

    assert StudyConfig(modes=("2d", "3d")).reference == "2d"
    with pytest.raises(MVCFError, match="not among the studied modes"):
        StudyConfig(modes=("2d", "3d"), reference="2.5d-mil")


def test_train_resume_refuses_other_view_or_split_settings(cohort, tmp_path, capsys, monkeypatch):
    """`train --resume` with another --spacing, --windows, --external or --folds went on from checkpoints
    trained on the earlier views or split and wrote a card claiming the new ones (with --external added, the
    held-out site's cases had been trained on). The run's cohort.json keeps these settings; a change is
    refused before training, as one of the training settings is by the checkpoint."""
    import mvcf.train

    def stop(*args, **kwargs):
        raise MVCFError("training reached")

    monkeypatch.setattr(mvcf.train, "train_cohort", stop)
    out = tmp_path / "run"
    base = ["--progress", "none", "train", "--manifest", str(cohort), "--out", str(out), "--folds", "2",
            "--size", "16"]
    assert main(base) == 2 and "training reached" in capsys.readouterr().err
    for change, name in ((["--spacing", "2"], "spacing_mm"), (["--windows", "bone,wide"], "windows"),
                         (["--external", "B"], "external"), (["--folds", "3"], "n_folds, train_folds")):
        assert main(base + change + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert f"other view or split settings ({name})" in err and "training reached" not in err, err
    assert main(base + ["--resume"]) == 2 and "training reached" in capsys.readouterr().err


def test_train_resume_refuses_swapped_files(cohort, tmp_path, capsys, monkeypatch):
    """The same resume record as the study's: `train --resume` after the CTs changed is refused before
    training (training itself is not reached here)."""
    import mvcf.train

    folder = tmp_path / "c"
    shutil.copytree(cohort.parent, folder)
    out = tmp_path / "run"
    out.mkdir()
    from mvcf.cohort_checks import resume_record
    from mvcf.manifest import read_manifest

    resume_record(out / "cohort.json", read_manifest(folder / "manifest.csv"), False, "run")
    a, b = sorted(folder.glob("A_00[01].nii.gz"))
    os.rename(a, tmp_path / "t.nii.gz")
    os.rename(b, a)
    os.rename(tmp_path / "t.nii.gz", b)
    monkeypatch.setattr(mvcf.train, "train_cohort", lambda *a, **k: pytest.fail("training started"))
    code = main(["--progress", "none", "train", "--manifest", str(folder / "manifest.csv"), "--out", str(out),
                 "--resume"])
    assert code == 2 and "it was run on another cohort" in capsys.readouterr().err
    (out / "cohort.json").write_text("{")
    code = main(["--progress", "none", "train", "--manifest", str(folder / "manifest.csv"), "--out", str(out),
                 "--resume"])
    assert code == 2 and "cohort.json is corrupt" in capsys.readouterr().err


def test_a_ct_copied_under_another_patient_is_refused(cohort, tmp_path, capsys):
    """A scan copied under another file name for another patient leaks across the patient-level folds just
    as one file given to two patients does; files of one size are compared by their bytes."""
    def copy_of_the_last(row, folder):
        with open(folder / "manifest.csv", newline="") as handle:
            last = list(csv.DictReader(handle))[-1]
        shutil.copy(folder / last["ct"], folder / "copy.nii.gz")
        row["ct"] = "copy.nii.gz"

    manifest = _copy_with(cohort, tmp_path, copy_of_the_last)
    code = main(["--progress", "none", "train", "--manifest", str(manifest), "--out", str(tmp_path / "run"),
                 "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 bad row (13)" in err
    assert "has the same bytes as row 2's (copy.nii.gz, patient 'A-p0'): one scan is one patient's" in err
    assert not (tmp_path / "run").exists()


def test_files_of_one_size_with_other_bytes_are_not_copies(tmp_path):
    """Uncompressed scans of one grid all have one size; a sample from the middle tells them apart."""
    from mvcf.cohort_checks import check_copied_scans
    from mvcf.manifest import CaseRecord

    from collections import defaultdict

    records = []
    for n in range(3):
        path = tmp_path / f"ct{n}.raw"
        path.write_bytes(bytes(100) + bytes([n]) * 3_000_000)
        records.append(CaseRecord(f"c{n}", f"p{n}", "A", n % 2, path, row=n + 2))
    problems: dict = defaultdict(list)
    check_copied_scans(records, problems)
    assert dict(problems) == {}
    (tmp_path / "ct2.raw").write_bytes((tmp_path / "ct0.raw").read_bytes())
    check_copied_scans(records, problems)
    assert list(problems) == [4] and "same bytes as row 2's (ct0.raw, patient 'p0')" in problems[4][0]

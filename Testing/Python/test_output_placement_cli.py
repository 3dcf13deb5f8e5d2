"""Every command's outputs: never an input, never a foreign file, OS errors and a full disk as one line."""
from __future__ import annotations

import hashlib
from pathlib import Path
import json
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from mvcf.cli.main import main
from mvcf.resources import sample_ct_paths

SAMPLE = sample_ct_paths()
L1 = "31"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path):
    ct, mask = tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"
    shutil.copy(SAMPLE["ct"], ct)
    shutil.copy(SAMPLE["mask"], mask)
    return ct, mask


def _run(capsys, *argv):
    code = main(["--progress", "none", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err):
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_heatmap_never_replaces_the_ct_or_the_mask(inputs, capsys):
    ct, mask = inputs
    before = (_sha(ct), _sha(mask))
    for target in (ct, mask):
        code, _, err = _run(capsys, "predict", "--ct", ct, "--mask", mask, "--label", L1, "--heatmap", target)
        assert code == 2 and _one_line(err) and "is an input of this run" in err
    assert (_sha(ct), _sha(mask)) == before


def test_views_out_never_replaces_an_input(inputs, capsys, tmp_path, monkeypatch):
    ct, mask = inputs
    for out in (ct, tmp_path):
        code, _, err = _run(capsys, "views", "--ct", ct, "--mask", mask, "--label", L1, "--out", out, "--overwrite")
        assert code == 2 and _one_line(err) and ("is an input" in err or "holds the input" in err)
    assert ct.is_file() and mask.is_file() and not list(tmp_path.glob(".*"))
    # "..": a folder of someone else's files that holds no input (wherever the checkout itself lies)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "cwd").mkdir(parents=True)
    (elsewhere / "notes.txt").write_text("not mvcf's\n")
    monkeypatch.chdir(elsewhere / "cwd")
    code, _, err = _run(capsys, "views", "--ct", ct, "--point-ijk", "50,50,50", "--out", "..", "--overwrite")
    assert code == 2 and _one_line(err) and "not written by mvcf" in err


def test_locations_heatmaps_stay_inside_and_never_hit_a_mask(inputs, capsys, tmp_path):
    ct, mask = inputs
    locations = tmp_path / "where.json"
    for entries, message in [
        ([{"name": "L1", "mask": "seg.nii.gz", "label": 31},
          {"name": "L2", "mask": "seg.nii.gz", "label": 30, "heatmap": "seg.nii.gz"}], "is an input of this run"),
        ([{"name": "L1", "point_ijk": [50, 50, 50], "heatmap": "../escape.nii.gz"}], "points outside the folder"),
        ([{"name": "L1", "point_ijk": [50, 50, 50], "heatmap": "ct.nii.gz"}], "is an input of this run"),
    ]:
        locations.write_text(json.dumps(entries))
        code, _, err = _run(capsys, "predict", "--ct", ct, "--locations", locations)
        assert code == 2 and _one_line(err) and message in err, err
    assert not (tmp_path.parent / "escape.nii.gz").exists()
    assert _sha(mask) == _sha(SAMPLE["mask"]) and _sha(ct) == _sha(SAMPLE["ct"])


def test_existing_foreign_heatmap_and_plot_are_kept(inputs, capsys, tmp_path):
    ct, mask = inputs
    mine = tmp_path / "mine.nii.gz"
    shutil.copy(SAMPLE["mask"], mine)
    code, _, err = _run(capsys, "predict", "--ct", ct, "--mask", mask, "--label", L1, "--heatmap", mine)
    assert code == 2 and _one_line(err) and "not written by mvcf" in err
    heat = tmp_path / "heat.nii.gz"
    for _ in range(2):                                           # an earlier heatmap of mvcf is replaced
        code, _, err = _run(capsys, "predict", "--ct", ct, "--mask", mask, "--label", L1, "--heatmap", heat)
        assert code == 0, err
    csv = tmp_path / "s.csv"
    csv.write_text("truth,score\n" + "".join(f"{i % 2},{(i % 2) + i / 100}\n" for i in range(20)))
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not mine to replace")
    code, _, err = _run(capsys, "stats", "roc", "--csv", csv, "--truth", "truth", "--score", "score", "--plot", photo)
    assert code == 2 and _one_line(err) and "not written by mvcf" in err
    for _ in range(2):
        code, _, err = _run(capsys, "stats", "roc", "--csv", csv, "--truth", "truth", "--score", "score", "--plot",
                            tmp_path / "roc.png")
        assert code == 0, err


def test_os_errors_are_one_line(inputs, capsys, tmp_path):
    ct, _ = inputs
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        code, _, err = _run(capsys, "views", "--ct", ct, "--point-ijk", "50,50,50", "--out", out)
        assert code == 2 and _one_line(err) and "afile" in err


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))


def test_full_disk_gives_exit_2_and_no_truncated_heatmap(inputs, tmp_path):
    """The file-size limit makes every write past 6 KB fail as on a full disk; ITK's gzip writer does not
    notice, the read-back before the rename does."""
    ct, mask = inputs
    heat = tmp_path / "out" / "heat.nii.gz"
    heat.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "predict", "--ct", str(ct),
                           "--mask", str(mask), "--label", L1, "--heatmap", str(heat), "--json"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert _one_line(proc.stderr) and "heat.nii.gz" in proc.stderr and "incomplete" in proc.stderr
    assert list(heat.parent.iterdir()) == []


def test_full_disk_synth_is_one_line_without_the_nifti_librarys_notes(tmp_path):
    """The NIfTI library printed `** ERROR: NWAD: wrote only 0 of 1864728 bytes to file` straight to stderr
    before mvcf's own error (found by a hostile sweep); the read-back's one line is all that is left."""
    out = tmp_path / "cohort"
    proc = subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "synth", "--out", str(out),
                           "--cases", "2", "--seed", "1"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert proc.returncode == 2 and "NWAD" not in proc.stderr, proc.stderr
    assert _one_line(proc.stderr) and "case0001_ct.nii.gz" in proc.stderr and "incomplete" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_locations_views_folders_are_guarded_too(inputs, capsys, tmp_path):
    """A locations entry's `views` folder (the model input, for Slicer): never the mask's folder or a folder
    of the user's; an earlier views folder of mvcf is replaced."""
    ct, mask = inputs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    locations = tmp_path / "where.json"
    for views, message in [("mine", "not written by mvcf"), (".", "holds the input"), ("../up", "outside the folder")]:
        locations.write_text(json.dumps([{"name": "L1", "mask": "seg.nii.gz", "label": 31, "views": views}]))
        code, _, err = _run(capsys, "predict", "--ct", ct, "--locations", locations)
        assert code == 2 and _one_line(err) and message in err, err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "mine"
    locations.write_text(json.dumps([{"name": "L1", "mask": "seg.nii.gz", "label": 31, "views": "v1"}]))
    for _ in range(2):
        code, out, err = _run(capsys, "predict", "--ct", ct, "--locations", locations, "--json")
        assert code == 0, err
    written = json.loads(out)["results"][0]["views"]
    assert written and all((tmp_path / "v1" / Path(p).name).is_file() for p in written)


def test_screen_out_is_never_an_input(inputs, capsys, tmp_path):
    ct, mask = inputs
    for out in (ct, tmp_path):
        code, _, err = _run(capsys, "screen", "--ct", ct, "--seg", mask, "--out", out)
        assert code == 2 and _one_line(err) and ("is an input" in err or "holds the input" in err), err
    assert _sha(ct) == _sha(SAMPLE["ct"]) and _sha(mask) == _sha(SAMPLE["mask"])


def test_a_heatmap_inside_the_report_folder_is_refused(tmp_path, capsys):
    """The report folder is written as a whole (replaced with --overwrite): a heatmap put inside it first
    would be lost while the run reports it (found by a hostile-input sweep)."""
    from mvcf.cli.main import main
    from mvcf.resources import sample_ct_paths

    sample = sample_ct_paths()
    report = tmp_path / "report"
    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--report", str(report), "--heatmap", str(report / "heat.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "lies inside --report" in err and err.count("\n") == 1
    assert not report.exists()

"""`mvcf views` end to end on the shipped sample CT: outputs, JSON, geometry of the NIfTI files, errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from mvcf.cli.main import main
from mvcf.ctimage import lps_to_ras
from mvcf.read_ct import read_ct, read_mask
from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths
from mvcf.locate import from_mask

SAMPLE = sample_ct_paths()


@pytest.fixture(scope="module")
def l1_centre():
    return from_mask(read_ct(SAMPLE["ct"]), read_mask(SAMPLE["mask"]), SAMPLE_VERTEBRA_LABELS["L1"]).center_lps


def _run(capsys, *args):
    code = main(["--progress", "none", "views", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_resources_are_shipped():
    for key in ("ct", "mask", "license", "attribution"):
        assert SAMPLE[key].is_file()
    assert "Apache License" in SAMPLE["license"].read_text(encoding="utf-8")
    assert "TotalSegmentator" in SAMPLE["attribution"].read_text(encoding="utf-8")


def test_mask_label_json_and_files(tmp_path, capsys, l1_centre):
    out = tmp_path / "l1"
    code, stdout, _ = _run(capsys, "--ct", SAMPLE["ct"], "--mask", SAMPLE["mask"], "--label", 31, "--out", out,
                           "--json", "--windows", "bone,40:400", "--size", 64)
    assert code == 0
    payload = json.loads(stdout)
    assert payload["mode"] == "2.5d-orthogonal" and payload["shape"] == [6, 64, 64]
    assert payload["spacing_mm"] == 1.0
    np.testing.assert_allclose(payload["center_lps"], l1_centre)
    assert json.loads((out / "views.json").read_text(encoding="utf-8"))["shape"] == [6, 64, 64]
    array = np.load(out / "views.npy")
    assert array.shape == (6, 64, 64) and array.dtype == np.float32
    expected = {"views.npy", "views.json", "preview.png"} | {f"{p}_{w}.nii.gz" for p in ("axial", "coronal",
                                                                                       "sagittal")
                                                            for w in ("bone", "soft")}
    assert {p.name for p in out.iterdir()} == expected | {".mvcf-output"}  # + the output marker
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nifti_outputs_sit_on_the_sampled_grid(tmp_path, capsys):
    out = tmp_path / "v"
    code, stdout, _ = _run(capsys, "--ct", SAMPLE["ct"], "--mask", SAMPLE["mask"], "--label", 29, "--out", out,
                           "--json", "--mode", "2.5d-orthogonal", "--size", 48)
    assert code == 0
    payload = json.loads(stdout)
    array = np.load(out / "views.npy")
    for n, grid in enumerate(payload["grids"]):
        image = sitk.ReadImage(str(out / f"{grid['name']}_bone.nii.gz"))
        np.testing.assert_allclose(image.GetOrigin(), grid["origin"], atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), grid["direction"], atol=1e-6)
        np.testing.assert_allclose(image.GetSpacing(), grid["spacing"], atol=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], array[n])
        # resampling the CT itself onto the file's geometry reproduces it (it overlays the CT)
        hu = sitk.Resample(sitk.ReadImage(str(SAMPLE["ct"]), sitk.sitkFloat32), image, sitk.Transform(),
                           sitk.sitkLinear, -1024.0)
        bone = np.clip((sitk.GetArrayFromImage(hu)[0] + 500) / 1800, 0, 1)
        np.testing.assert_allclose(bone, array[n], atol=1e-4)


def test_ras_lps_ijk_points_give_identical_views(tmp_path, capsys, l1_centre):
    ct = read_ct(SAMPLE["ct"])
    ras = lps_to_ras(l1_centre)
    ijk = ct.lps_to_index(l1_centre)
    fmt = lambda p: ",".join(f"{v:.6f}" for v in p)  # noqa: E731
    arrays = []
    for flag, point in (("--point-ras", ras), ("--point-lps", l1_centre), ("--point-ijk", ijk)):
        out = tmp_path / flag.strip("-")
        code, _, err = _run(capsys, f"{flag}={fmt(point)}", "--ct", SAMPLE["ct"], "--out", out, "--mode", "2d")
        assert code == 0, err
        arrays.append(np.load(out / "views.npy"))
    np.testing.assert_allclose(arrays[0], arrays[1], atol=1e-5)
    np.testing.assert_allclose(arrays[2], arrays[1], atol=1e-5)


@pytest.mark.parametrize("mode,shape", [("2.5d-adjacent", [5, 32, 32]), ("2.5d-mil", [4, 1, 32, 32]),
                                        ("3d", [1, 32, 32, 32])])
def test_stack_modes(tmp_path, capsys, mode, shape):
    out = tmp_path / "m"
    args = ["--ct", SAMPLE["ct"], "--mask", SAMPLE["mask"], "--label", 30, "--out", out, "--mode", mode,
            "--size", 32, "--spacing", 1.5, "--json"]
    if mode != "3d":
        args += ["--n-slices", shape[0], "--slice-gap", 3]
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["shape"] == shape and payload["spacing_mm"] == 1.5
    image = sitk.ReadImage(str(next(out.glob("*_bone.nii.gz"))))
    assert image.GetSize() == ((32, 32, shape[0]) if mode != "3d" else (32, 32, 32))


def test_negative_coordinates_need_no_equals_sign(tmp_path, capsys, l1_centre):
    right_of_l1 = l1_centre - [10, 0, 0]
    for flag, point, lps in (("--point-ras", lps_to_ras(l1_centre), l1_centre),
                             ("--point-lps", right_of_l1, right_of_l1)):
        assert point[0] < 0
        value = ",".join(f"{v:.4f}" for v in point)
        code, stdout, err = _run(capsys, "--ct", SAMPLE["ct"], flag, value, "--out", tmp_path / flag, "--json",
                                 "--mode", "2d")
        assert code == 0, err
        np.testing.assert_allclose(json.loads(stdout)["center_lps"], lps, atol=1e-3)


def test_partly_outside_warns_but_succeeds(tmp_path, capsys):
    code, stdout, err = _run(capsys, "--ct", SAMPLE["ct"], "--point-ijk", "2,3,2", "--out", tmp_path / "o",
                             "--json")
    assert code == 0
    assert any("padded with air" in w for w in json.loads(stdout)["warnings"])


@pytest.mark.parametrize("args,pattern", [
    (["--ct", "MISSING.nii.gz", "--point-lps", "0,0,0"], "file not found"),
    (["--ct", "{ct}", "--mask", "{mask}", "--label", "5"], "label 5 is absent"),
    (["--ct", "{ct}", "--point-lps=0,0,5000"], "outside the CT"),
    (["--ct", "{ct}", "--point-ras", "1,2"], "three finite numbers"),
    (["--ct", "{ct}", "--mask", "{mask}"], "--mask needs --label"),
    (["--ct", "{ct}", "--point-ijk", "60,50,50", "--label", "3"], "--label applies only with --mask"),
    (["--ct", "{ct}", "--point-ijk", "60,50,50", "--windows", "lung?"], "unknown window"),
    (["--ct", "{ct}", "--point-ijk", "60,50,50", "--windows", "bone,400:1800"], "window bone is given more than once"),
    (["--ct", "{ct}", "--point-ijk", "60,50,50", "--mode", "2d", "--n-slices", "3"], "n_slices"),
    (["--ct", "{corrupt}", "--point-ijk", "1,1,1"], "corrupt"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, args, pattern):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage" * 10)
    out = tmp_path / "out"
    args = [a.format(ct=SAMPLE["ct"], mask=SAMPLE["mask"], corrupt=corrupt) for a in args]
    code, stdout, err = _run(capsys, *args, "--out", out)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and pattern in err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.nii.gz"]


def test_existing_output_needs_overwrite(tmp_path, capsys):
    """--overwrite replaces an earlier output of mvcf, never a folder of the user's."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(capsys, "--ct", SAMPLE["ct"], "--point-ijk", "60,50,50", "--out", out)
    assert code == 2 and "already exists" in err and (out / "keep.txt").exists()
    code, _, err = _run(capsys, "--ct", SAMPLE["ct"], "--point-ijk", "60,50,50", "--out", out, "--overwrite")
    assert code == 2 and "not written by mvcf" in err and (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    ours = tmp_path / "ours"
    for _ in range(2):
        code, _, _ = _run(capsys, "--ct", SAMPLE["ct"], "--point-ijk", "60,50,50", "--out", ours, "--overwrite")
        assert code == 0 and (ours / "views.npy").exists()


def test_jsonl_progress_emits_a_result_event(tmp_path, capsys):
    code = main(["--progress", "jsonl", "views", "--ct", str(SAMPLE["ct"]), "--point-ijk", "60,50,50",
                 "--out", str(tmp_path / "o"), "--json", "--mode", "2d", "--size", "16"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert any(line.get("event") == "result" and line["shape"] == [1, 16, 16] for line in lines)


def test_console_script_in_a_child_process(tmp_path):
    """The real entry point: exit codes and stderr as a user sees them."""
    ok = subprocess.run([sys.executable, "-m", "mvcf", "views", "--ct", str(SAMPLE["ct"]), "--point-ijk",
                         "60,50,50", "--out", str(tmp_path / "o"), "--json", "--mode", "2d"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mode"] == "2d"
    bad = subprocess.run([sys.executable, "-m", "mvcf", "views", "--ct", str(tmp_path / "none.nii"),
                          "--point-ijk", "1,1,1", "--out", str(tmp_path / "p")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: file not found") and "Traceback" not in bad.stderr


def test_progress_none_still_shows_the_views_warnings(tmp_path, capsys):
    """`--progress none` hides progress, not warnings: a view padded with air says so on stderr (it was
    dropped; tqdm, jsonl and --json showed it)."""
    code = main(["--progress", "none", "views", "--ct", str(SAMPLE["ct"]), "--mask", str(SAMPLE["mask"]),
                 "--label", "31", "--mode", "2d", "--size", "512", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0
    assert any(line.startswith("warning: the view region extends") for line in captured.err.splitlines()), captured.err

"""The synthetic cohort generator: plan, reproducibility, geometry/orientation, signs, CLI contract."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvcf.errors import MVCFError
from mvcf.manifest import read_manifest
from mvcf.synth import generate_case, generate_cohort, plan_cohort
from mvcf.synth.anatomy import level_label


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    return generate_cohort(out, n_cases=8, seed=5, external_fraction=0.25)


def test_plan_has_sites_patients_and_exact_counts():
    plans = plan_cohort(60, seed=1, external_fraction=0.3)
    assert len(plans) == 60
    assert sum(p.institution == "external" for p in plans) == 18
    by_patient: dict = {}
    for p in plans:
        by_patient.setdefault(p.patient_id, set()).add((p.institution, p.label))
    assert all(len(v) == 1 for v in by_patient.values()), "a patient spans two sites or classes"
    assert any(sum(q.patient_id == p.patient_id for q in plans) == 2 for p in plans), "no multi-level patient"
    assert {p.label for p in plans} == {0, 1}
    assert len({(p.patient_id, p.level) for p in plans}) == 60, "one patient fractured twice at one level"
    assert plan_cohort(60, seed=1) == plans and plan_cohort(60, seed=2) != plans


def test_bad_plan_arguments_are_user_errors():
    for kwargs in ({"n_cases": 0}, {"n_cases": 5, "external_fraction": 1.0}, {"n_cases": 5, "prevalence": 0},
                   {"n_cases": 5, "seed": -1}):
        with pytest.raises(MVCFError):
            plan_cohort(**kwargs)


def test_cohort_files_manifest_and_bitwise_reproducibility(cohort, tmp_path):
    records = read_manifest(cohort)
    assert len(records) == 8 and {r.institution for r in records} == {"internal", "external"}
    assert all(r.mask is not None and r.vertebra_label is not None and r.center_lps is not None for r in records)
    again = generate_cohort(tmp_path / "again", n_cases=8, seed=5, external_fraction=0.25)
    for a, b in zip(records, read_manifest(again)):
        assert _digest(a.ct) == _digest(b.ct) and _digest(a.mask) == _digest(b.mask)
    assert (cohort.parent / "manifest.csv").read_text(encoding="utf-8") == again.read_text(encoding="utf-8")


def test_case_geometry_orientation_and_centre(cohort):
    import SimpleITK as sitk

    record = read_manifest(cohort)[0]
    ct = sitk.ReadImage(str(record.ct))
    mask = sitk.ReadImage(str(record.mask))
    assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(ct.GetDirection(), np.eye(3).ravel())   # i = L, j = P, k = S (LPS)
    assert ct.GetSize() == mask.GetSize() and ct.GetOrigin() == mask.GetOrigin()
    spacing = np.array(ct.GetSpacing())
    assert 0.8 <= spacing[0] <= 1.5 and spacing[0] == spacing[1] and 1.0 <= spacing[2] <= 3.0
    extent = spacing * np.array(ct.GetSize())
    assert 80 <= extent[0] <= 100 and 85 <= extent[1] <= 100
    labels = sitk.GetArrayFromImage(mask)
    values = set(np.unique(labels)) - {0}
    assert record.vertebra_label in values and len(values) >= 3
    kji = np.argwhere(labels == record.vertebra_label).mean(axis=0)
    centroid = np.array(ct.GetOrigin()) + spacing * kji[::-1]
    np.testing.assert_allclose(centroid, record.center_lps, atol=1e-3)
    # anatomy orientation: the body (anterior, low P) is in front of the spinous process; superior
    # vertebrae (larger TotalSegmentator values: T12 = 32 above L1 = 31) sit at larger S.
    hu = sitk.GetArrayFromImage(ct)
    zs = {v: np.argwhere(labels == v)[:, 0].mean() for v in values}
    ordered = sorted(values)
    assert all(zs[a] < zs[b] for a, b in zip(ordered[:-1], ordered[1:]))
    body_center = np.array([float(v) for v in record.extra["body_center_lps"].split(",")])
    ijk = np.rint((body_center - np.array(ct.GetOrigin())) / spacing).astype(int)
    assert labels[ijk[2], ijk[1], ijk[0]] == record.vertebra_label
    assert body_center[1] < record.center_lps[1] - 4   # body anterior of the whole-vertebra centroid
    assert hu.min() >= -1024 and hu.max() > 500
    nib = pytest.importorskip("nibabel")
    header = nib.load(str(record.ct))
    assert nib.aff2axcodes(header.affine) == ("L", "P", "S")   # what any NIfTI viewer reads: S up, A front
    assert header.header["qform_code"] > 0 and header.header["sform_code"] > 0


def test_case_independent_of_cohort_size_and_difficulty_changes_signs():
    small = plan_cohort(4, seed=9)
    large = plan_cohort(4, seed=9)
    a = generate_case(small[0], seed=9)
    b = generate_case(large[0], seed=9)
    assert np.array_equal(a.image.hu, b.image.hu)
    with pytest.raises(MVCFError):
        generate_case(small[0], seed=9, difficulty="impossible")


def test_signs_follow_the_class():
    malignant = {"lytic", "blastic", "cortical_breach", "pedicle", "convex_wall", "epidural_mass",
                 "paraspinal_mass"}
    osteoporotic = {"sclerotic_band", "fracture_lines", "vacuum_cleft", "retropulsion"}
    from mvcf.synth.signs import sample_signs

    rng = np.random.default_rng(0)
    for label in (0, 1):
        names = [set(sample_signs(rng, label, "standard").names()) for _ in range(300)]
        own, other = (malignant, osteoporotic) if label else (osteoporotic, malignant)
        assert np.mean([bool(n & own) for n in names]) > 0.7
        assert not any(n & other for n in names)
    assert level_label("L1") == 31 and level_label("T12") == 32 and level_label("L5") == 27


def test_cli_contract(tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "mvcf", "--progress", "none", "synth", "--out", str(out), "--cases", "3",
           "--seed", "2", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert payload["cases"] == 3 and Path(payload["manifest"]).is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    bad = subprocess.run(cmd[:-1] + ["--difficulty", "extreme"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"], "temporary folders left behind"


def test_parallel_workers_give_the_same_files(cohort, tmp_path):
    parallel = generate_cohort(tmp_path / "p", n_cases=8, seed=5, external_fraction=0.25, workers=2)
    serial, again = read_manifest(cohort), read_manifest(parallel)
    assert len(serial) == len(again)
    for a, b in zip(serial, again):
        assert a.case_id == b.case_id and _digest(a.ct) == _digest(b.ct)


def test_cancel_leaves_no_output(tmp_path):
    from mvcf.errors import Cancelled

    calls = []
    with pytest.raises(Cancelled):
        generate_cohort(tmp_path / "x", n_cases=5, seed=1, on_progress=lambda d, t, m: calls.append(d),
                        should_cancel=lambda: len(calls) >= 2)
    assert calls == [1, 2] and list(tmp_path.iterdir()) == []


def test_an_external_fraction_that_leaves_no_internal_case_is_refused():
    """--cases 6 --external-fraction 0.99 gave 6 external cases and no internal one: the cohort that an
    external fraction of 1 is refused for."""
    from mvcf.errors import MVCFError
    from mvcf.synth.cohort import plan_cohort

    with pytest.raises(MVCFError, match="an external fraction of 0.99 of 6 case"):
        plan_cohort(6, external_fraction=0.99)
    assert sum(p.institution == "internal" for p in plan_cohort(6, external_fraction=0.5)) == 3


def test_synth_out_an_empty_folder_a_users_folder_and_its_own_cohort(tmp_path, capsys):
    """An empty folder and a user's file were both 'already exists (... or pass --overwrite)', and --overwrite
    was then refused: an empty folder is now taken, a user's file or folder is never replaced, and only an
    earlier cohort of mvcf asks for --overwrite."""
    from mvcf.cli.main import main

    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--progress", "none", "synth", "--cases", "2", "--seed", "1", "--out"]
    # a refused request leaves the empty folder as it was (it was removed before the request was checked)
    assert main(args + [str(empty), "--external-fraction", "0.99"]) == 2 and empty.is_dir()
    capsys.readouterr()
    assert main(args + [str(empty)]) == 0 and (empty / "manifest.csv").is_file()
    capsys.readouterr()
    assert main(args + [str(empty)]) == 2 and "holds an earlier cohort of mvcf (pass --overwrite" in \
        capsys.readouterr().err
    (tmp_path / "mine.txt").write_text("keep")
    for target in (tmp_path / "mine.txt", tmp_path):
        assert main(args + [str(target), "--overwrite"]) == 2
        assert "exists and was not written by mvcf; it is never replaced" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"

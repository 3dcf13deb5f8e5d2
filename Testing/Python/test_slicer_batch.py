"""scripts/slicer_batch_classify.py: a folder of CTs with point lists or masks -> one TSV."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import slicer_batch_classify as batch  # noqa: E402
from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths  # noqa: E402


def test_cases_pair_each_ct_with_its_points_or_mask(tmp_path):
    for name in ("a.nii.gz", "a.mrk.json", "b.nrrd", "b_seg.nii.gz", "c.mha", "notes.txt", "d.seg.nrrd"):
        (tmp_path / name).write_bytes(b"")
    cases = {c.name: c for c in batch.find_cases(tmp_path)}
    assert sorted(cases) == ["a", "b", "c"]
    assert cases["a"].points == tmp_path / "a.mrk.json" and cases["a"].mask is None
    assert cases["b"].mask == tmp_path / "b_seg.nii.gz" and cases["b"].points is None
    assert cases["c"].points is None and cases["c"].mask is None
    assert batch.parse_labels("L1=31, L2=30,29") == {"L1": 31, "L2": 30, "label 29": 29}
    with pytest.raises(SystemExit):
        batch.parse_labels("L1=first")


def write_point_list(path: Path, label: str, ras) -> None:
    scene = slicer.vtkMRMLScene()
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "vertebrae")
    points.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in ras]), label)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(points)


def test_batch_writes_one_tsv_row_per_vertebra_and_case(tmp_path):
    from mvcf.read_ct import read_mask

    paths = sample_ct_paths()
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(paths["ct"], cases / "pointcase.nii.gz")
    shutil.copy(paths["ct"], cases / "maskcase.nii.gz")
    shutil.copy(paths["mask"], cases / "maskcase_seg.nii.gz")
    shutil.copy(paths["ct"], cases / "unmarked.nii.gz")
    mask = read_mask(paths["mask"])
    l1 = mask.index_to_lps(np.argwhere(mask.voxels == SAMPLE_VERTEBRA_LABELS["L1"])[:, ::-1].mean(axis=0))
    write_point_list(cases / "pointcase.mrk.json", "L1", l1 * [-1, -1, 1])
    not_a_bundle = tmp_path / "not_a_bundle"
    not_a_bundle.mkdir()
    out = tmp_path / "out" / "results.tsv"
    assert batch.main(["--cases", str(cases), "--out", str(out), "--labels", "L2=30",
                       "--model", str(not_a_bundle), "--device", "cpu"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["case", "vertebra", "probability_malignant"]
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    assert [(r["case"], r["vertebra"]) for r in rows] == [("maskcase", "L2"), ("pointcase", "L1"), ("unmarked", "")]
    assert all("bundle" in r["status"] for r in rows[:2]), rows
    assert "no unmarked.mrk.json" in rows[2]["status"]
    assert (out.parent / "results.schema.tsv").is_file()

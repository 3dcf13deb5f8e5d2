"""Property test over every reader: a damaged NIfTI, NRRD, MHA, DICOM series, manifest, locations file or model
card gives exit code 0, or 2 with one `error:` line; never a traceback, never a file left, inputs unchanged.

Each example damages one small valid input (bytes overwritten, truncated or inserted; header values, CSV cells,
JSON fields replaced by hostile ones) and runs the command that reads it in-process. Bounded (a few dozen
examples per reader, derandomized) so it runs in well under a minute; the size limits are lowered so a damaged
header that claims a large image is refused instead of allocated.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvcf.cli.main import main

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=10)  # a DICOM series: six files read per example
HOSTILE_TEXT = ["", "nan", "-1", "0", "1e12", "inf", "-inf", "2000 2000 2000", "../../../etc/passwd", "/dev/zero",
                "a\x00b", "é", "\\", "1,2", "NaN,NaN,NaN", "-5.7,10,3", "31", "999999999999999999999", "[1,2,3]"]
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(HOSTILE_TEXT),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                               ["a", "mode", "size_px", "sha256", "file", "layers"]), inner, max_size=3),
                           max_leaves=8)


def _volume() -> np.ndarray:
    ct = np.full((20, 24, 24), -1000, np.int16)
    ct[:, 4:20, 4:20] = 40
    ct[:, 8:16, 8:16] = 700
    return ct


def _write(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))
    return path


def _dicom_series(folder: Path) -> Path:
    folder.mkdir()
    image = sitk.GetImageFromArray(_volume()[:6])
    image.SetSpacing((2.0, 2.0, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.424242"
    for i in range(6):
        plane = image[:, :, i]
        for tag, value in [("0008|0060", "CT"), ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, i))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(i)), ("0008|0018", f"{uid}.3.{i}"),
                           ("0008|0016", "1.2.840.10008.5.1.4.1.1.2")]:
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{i}.dcm"))
        writer.Execute(plane)
    return folder


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Valid inputs of every kind, written once."""
    root = tmp_path_factory.mktemp("originals")
    ct = _volume()
    mask = np.zeros(ct.shape, np.uint8)
    mask[8:12, 8:16, 8:16] = 1
    files = {"nii": _write(root / "ct.nii", ct), "niigz": _write(root / "ct.nii.gz", ct),
             "nrrd": _write(root / "ct.nrrd", ct),
             "mha": _write(root / "ct.mha", ct), "mask": _write(root / "seg.nii.gz", mask),
             "dicom": _dicom_series(root / "dicom")}
    files["manifest"] = root / "manifest.csv"
    files["manifest"].write_text("case_id,patient_id,institution,label,ct,mask,vertebra_label,center_lps\n"
                                 "c1,p1,A,MVCF,ct.nii.gz,seg.nii.gz,1,\nc2,p2,A,OVCF,ct.nrrd,,,\"20,20,20\"\n")
    files["locations"] = root / "where.json"
    files["locations"].write_text(json.dumps([{"name": "L1", "mask": "seg.nii.gz", "label": 1,
                                               "heatmap": "h1.nii.gz"},
                                              {"name": "L2", "point_ijk": [12, 12, 10]}]))
    from mvcf.inference import default_model_path

    files["model"] = default_model_path()
    return files


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    monkeypatch.setenv("MVCF_MAX_VOXELS", str(10**7))
    monkeypatch.setenv("MVCF_MAX_IMAGE_BYTES", str(10**8))


def _damage(data: bytes, draw) -> bytes:
    """One of: overwrite a few bytes (mostly in the header), truncate, insert, replace a header value, or
    nothing (the valid input must still be accepted, with nothing but its output written)."""
    kind = draw(st.sampled_from(["overwrite", "truncate", "insert", "header-value", "none"]))
    if kind == "none":
        return data
    head = min(len(data), 700)
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, head))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "header-value":
        text = data[:head].decode("latin-1")
        lines = text.split("\n")
        candidates = [i for i, line in enumerate(lines[:-1]) if (":" in line or "=" in line) and line.isascii()]
        if candidates:
            i = draw(st.sampled_from(candidates))
            sep = ":" if ":" in lines[i] else "="
            lines[i] = lines[i].split(sep, 1)[0] + sep + " " + draw(st.sampled_from(HOSTILE_TEXT))
            return "\n".join(lines).encode("latin-1") + data[head:]
    at = draw(st.integers(0, max(0, head - 1)))
    patch = draw(st.binary(min_size=1, max_size=8))
    return data[:at] + patch + data[at + len(patch):]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


OUTCOMES: list[int] = []


def _check(capsys, workdir: Path, argv: list, outputs=()) -> int:
    """Run the command; assert the contract; return the exit code (also kept in OUTCOMES)."""
    before = _snapshot(workdir)
    code = main(["--progress", "none", *map(str, argv)])
    err = capsys.readouterr().err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    after = _snapshot(workdir)
    written = {k for k in after if not any(k == o or k.startswith(o + "/") for o in outputs)}
    assert {k: after[k] for k in written} == before, "an input changed or a file was left behind"
    if code == 2:
        assert set(after) == set(before), "a failed run left files"
    OUTCOMES.append(code)
    return code


@pytest.fixture(autouse=True)
def both_outcomes():
    """Each reader's examples must include accepted and refused inputs, or the test proves nothing."""
    OUTCOMES.clear()
    yield
    assert set(OUTCOMES) == {0, 2}, f"outcomes {sorted(set(OUTCOMES))} of {len(OUTCOMES)} examples"


def _workdir(tmp_path_factory, originals, names) -> Path:
    work = tmp_path_factory.mktemp("case")
    for name in names:
        source = originals[name]
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / source.name)
    return work


@pytest.mark.parametrize("kind", ["nii", "niigz", "nrrd", "mha", "mask"])
def test_damaged_images(kind, originals, tmp_path_factory, capsys):
    @FUZZ
    @given(st.data())
    def run(data):
        work = _workdir(tmp_path_factory, originals, ["nii", "mask"] if kind == "mask" else [kind])
        target = work / originals[kind].name
        target.write_bytes(_damage(target.read_bytes(), data.draw))
        where = ["--mask", target, "--label", "1"] if kind == "mask" else ["--point-ijk", "12,12,10"]
        ct = work / originals["nii"].name if kind == "mask" else target
        _check(capsys, work, ["views", "--ct", ct, *where, "--mode", "2d", "--size", "16", "--out", work / "out"],
               outputs=["out"])
    run()


def test_damaged_dicom_series(originals, tmp_path_factory, capsys):
    @FUZZ_SLOW
    @given(st.data())
    def run(data):
        work = _workdir(tmp_path_factory, originals, ["dicom"])
        files = sorted((work / "dicom").iterdir())
        target = files[data.draw(st.integers(0, len(files) - 1))]
        target.write_bytes(_damage(target.read_bytes(), data.draw))
        _check(capsys, work, ["views", "--ct", work / "dicom", "--point-ijk", "12,12,3", "--mode", "2d", "--size",
                              "16", "--out", work / "out"], outputs=["out"])
    run()


class Reached(Exception):
    """Training would start: every check of the manifest passed."""


def test_damaged_manifests(originals, tmp_path_factory, capsys, monkeypatch):
    import mvcf.splits

    def reached(*args, **kwargs):
        raise Reached

    # the patient-level splits are the last check before the first write (two cases never split into folds)
    monkeypatch.setattr(mvcf.splits, "make_splits", reached)
    columns = ["case_id", "patient_id", "institution", "label", "ct", "mask", "vertebra_label", "center_lps"]

    @FUZZ
    @given(st.data())
    def run(data):
        work = _workdir(tmp_path_factory, originals, ["niigz", "nrrd", "mask", "manifest"])
        manifest = work / "manifest.csv"
        lines = manifest.read_text(encoding="utf-8").splitlines()
        if data.draw(st.booleans()):
            row = data.draw(st.integers(1, len(lines) - 1))
            cells = lines[row].split(",", len(columns) - 1)
            column = data.draw(st.integers(0, len(cells) - 1))
            cells[column] = data.draw(st.sampled_from(HOSTILE_TEXT + ["seg.nii.gz", "ct.nii.gz", "MVCF"]))
            lines[row] = ",".join(cells)
            manifest.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
        else:
            manifest.write_bytes(_damage(manifest.read_bytes(), data.draw))
        try:
            _check(capsys, work, ["train", "--manifest", manifest, "--out", work / "run", "--view", "2d",
                                  "--size", "16"])
        except Reached:  # all checks of the rows passed: nothing is written before the splits are made
            assert not (work / "run").exists() or not any((work / "run").iterdir())
            OUTCOMES.append(0)
    run()


def test_damaged_locations_files(originals, tmp_path_factory, capsys):
    @FUZZ
    @given(st.data())
    def run(data):
        work = _workdir(tmp_path_factory, originals, ["niigz", "mask", "locations"])
        where = work / "where.json"
        if data.draw(st.booleans()):
            entries = json.loads(where.read_text(encoding="utf-8"))
            entry = entries[data.draw(st.integers(0, 1))]
            entry[data.draw(st.sampled_from(["name", "mask", "label", "heatmap", "point_ijk", "point_lps", "box"]))] \
                = data.draw(JSON_VALUES)
            where.write_text(json.dumps(entries))
        else:
            where.write_bytes(_damage(where.read_bytes(), data.draw))
        _check(capsys, work, ["predict", "--ct", work / "ct.nii.gz", "--locations", where, "--device", "cpu",
                              "--json"], outputs=["h1.nii.gz"])
        capsys.readouterr()
    run()


def test_damaged_model_cards(originals, tmp_path_factory, capsys):
    fields = ["threshold", "ensemble_size", "network", "view_spec", "weights", "format_version", "name",
              "network.input_shape", "network.block_inplanes", "network.layers", "network.family",
              "network.conv1_t_size", "network.dropout", "network.mil_pooling", "view_spec.mode",
              "view_spec.size_px", "view_spec.windows", "view_spec.spacing_mm", "weights.sha256"]

    @FUZZ
    @given(st.data())
    def run(data):
        work = _workdir(tmp_path_factory, originals, ["niigz", "model"])
        card_path = work / "demo_model" / "model.json"
        if data.draw(st.booleans()):
            card = json.loads(card_path.read_text(encoding="utf-8"))
            path = data.draw(st.sampled_from(fields)).split(".")
            holder = card if len(path) == 1 else card[path[0]]
            holder[path[-1]] = data.draw(JSON_VALUES)
            card_path.write_text(json.dumps(card))
        else:
            card_path.write_bytes(_damage(card_path.read_bytes(), data.draw))
        _check(capsys, work, ["predict", "--ct", work / "ct.nii.gz", "--point-ijk", "12,12,10", "--model",
                              work / "demo_model", "--device", "cpu", "--json"])
        capsys.readouterr()
    run()

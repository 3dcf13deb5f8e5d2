"""read_ct / read_mask on the real fixtures (NIfTI RAS and PIR, JPEG2000 DICOM series) and on bad inputs."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, shared
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError
from mvcf.read_ct import read_ct, read_mask, validate_ct

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _nibabel_ijk_to_lps(path) -> np.ndarray:
    """Independent reference: nibabel's RAS affine turned into LPS."""
    affine = nib.load(str(path)).affine
    m = np.eye(4)
    m[:3, :] = RAS_TO_LPS @ affine[:3, :]
    return m


@pytest.mark.parametrize("relative,shape,orientation", [
    ("totalsegmentator/example_ct.nii.gz", (112, 101, 122), "RAS"),
    ("tptbox_sample_ct/sub-ct_label-22_ct.nii.gz", (73, 47, 73), "PIR"),
])
def test_nifti_geometry_matches_nibabel(relative, shape, orientation):
    path = shared(relative)
    ct = read_ct(path)
    assert ct.voxels.shape == shape
    np.testing.assert_allclose(ct.ijk_to_lps_matrix(), _nibabel_ijk_to_lps(path), atol=1e-4)
    assert "".join(nib.aff2axcodes(nib.load(str(path)).affine)) == orientation
    assert np.issubdtype(ct.voxels.dtype, np.integer)
    assert ct.voxels.min() < -900 and ct.voxels.max() > 1000


def _dicom_tags(path) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def test_dicom_series_geometry_from_its_tags():
    folder = shared("totalsegmentator/example_ct_dicom")
    ct = read_ct(folder)
    assert ct.size_ijk == (512, 512, 20)
    files = sorted(folder.iterdir())
    tags = [_dicom_tags(f) for f in files]
    assert b"1.2.840.10008.1.2.4.90" in files[0].read_bytes()[:4096]  # transfer syntax: JPEG2000 lossless
    positions = np.array([[float(v) for v in t["0020|0032"].split("\\")] for t in tags])
    row, col = np.array([float(v) for v in tags[0]["0020|0037"].split("\\")]).reshape(2, 3)
    normal = np.cross(row, col)
    order = np.argsort(positions @ normal)
    pixel = [float(v) for v in tags[0]["0028|0030"].split("\\")]
    np.testing.assert_allclose(ct.origin, positions[order[0]], atol=1e-3)
    np.testing.assert_allclose(ct.direction[:, 0], row, atol=1e-6)
    np.testing.assert_allclose(ct.direction[:, 1], col, atol=1e-6)
    np.testing.assert_allclose(ct.direction[:, 2], normal, atol=1e-6)
    np.testing.assert_allclose(ct.spacing[:2], pixel[::-1], atol=1e-6)
    steps = np.diff(np.sort(positions @ normal))
    np.testing.assert_allclose(ct.spacing[2], steps.mean(), atol=1e-3)
    for k, index in enumerate(order):  # every slice at its own ImagePositionPatient, pixels decoded with HU
        np.testing.assert_allclose(ct.index_to_lps([0, 0, k]), positions[index], atol=1e-3)
    single = sitk.GetArrayFromImage(sitk.ReadImage(str(files[order[7]])))[0]
    np.testing.assert_array_equal(ct.voxels[7], single)
    assert ct.voxels.min() == -1024 and ct.voxels.max() > 1000


def test_read_mask_integer_labels_and_float_file(tmp_path):
    mask = read_mask(shared("totalsegmentator/spine_report/totalseg.nii.gz"))
    assert set(np.unique(mask.voxels)) >= {0, 26, 27, 28, 29, 30, 31, 32, 33}
    verse = read_mask(shared("verse_sample/sub-verse004_seg-vert_msk.nii.gz"))  # stored as float64
    assert np.issubdtype(verse.voxels.dtype, np.integer)
    assert set(np.unique(verse.voxels)) >= set(range(16, 25))
    bad = tmp_path / "soft.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), 0.5, np.float32)), str(bad))
    with pytest.raises(MVCFError, match="non-integer"):
        read_mask(bad)


# ---------------------------------------------------------------------------------------------- bad inputs
def _ct_array(shape=(12, 10, 8), dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 1500, shape).astype(dtype)


def _write(tmp_path, name, array, spacing=None):
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def _expect(path, pattern):
    with pytest.raises(MVCFError, match=pattern) as info:
        read_ct(path)
    assert "\n" not in str(info.value)


def test_2d_image_is_rejected(tmp_path):
    _expect(_write(tmp_path, "slice.nii.gz", _ct_array((10, 8))), "2D image")


def test_4d_image_is_rejected(tmp_path):
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(_ct_array((8, 8, 8, 3)), np.eye(4)), str(path))
    _expect(path, "4D image")


def test_single_slice_dicom_file_is_rejected():
    _expect(shared("pydicom_ct_small/CT_small.dcm"), "single slice")


def test_rgb_picture_is_rejected():
    _expect(shared("totalsegmentator/spine_report/spine_report.nii.gz"), "not a scalar")


@pytest.mark.parametrize("ext", ["nii", "nii.gz", "mha", "nrrd"])
def test_nan_is_rejected_in_every_format(tmp_path, ext):
    # ITK's NIfTI reader silently turns NaN into 0; read_ct must still refuse it.
    array = _ct_array().astype(np.float32)
    array[3, 4, 5] = np.nan
    _expect(_write(tmp_path, f"nan.{ext}", array), "NaN")


def test_nan_in_a_ctimage_is_rejected():
    array = _ct_array().astype(np.float32)
    array[0, 0, 0] = np.inf
    with pytest.raises(MVCFError, match="NaN or infinite"):
        validate_ct(CTImage(array, spacing=(1, 1, 1), origin=(0, 0, 0)))


def test_a_ctimage_with_a_bad_spacing_names_it_in_plain_numbers(tmp_path):
    with pytest.raises(MVCFError, match=r"^the CT has voxel spacing \(1, 0\.001, 1\) mm; each must lie in") as info:
        validate_ct(CTImage(_ct_array(), spacing=(1, 0.001, 1), origin=(0, 0, 0)))
    assert "np.float64" not in str(info.value)
    with pytest.raises(MVCFError, match=r"has voxel spacing \(3, 3, 1e\+06\) mm; each must lie in") as info:
        read_ct(_write(tmp_path, "huge.mha", _ct_array(), spacing=(3.0, 3.0, 1e6)))   # a file's header too
    assert "np.float64" not in str(info.value)


def test_zero_spacing_in_nifti_header_is_rejected(tmp_path):
    # ITK reads pixdim 0 as 1 mm without a word; read_ct must refuse it.
    path = _write(tmp_path, "zero.nii", _ct_array())
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", 0.0)  # pixdim[1]
    path.write_bytes(bytes(data))
    _expect(path, "spacing")
    gz = tmp_path / "zero.nii.gz"
    gz.write_bytes(gzip.compress(bytes(data)))
    _expect(gz, "spacing")


@pytest.mark.parametrize("pixdim, message", [(0.0, "zero or undefined spacing"), (-1.0, "a negative voxel spacing")])
def test_a_bad_nifti_spacing_is_one_line_on_stderr(tmp_path, pixdim, message):
    """A NIfTI with pixdim 0 or negative printed ITK's WARNING blocks and the NIfTI library's own "pixdim[1,2,3]
    should be non-zero" (4-11 lines in all) before the one error line; a negative pixdim was read, with the
    axis turned around against the file's sform."""
    import subprocess
    import sys

    sample = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct" / "example_ct.nii.gz"  # sform only
    data = bytearray(gzip.decompress(sample.read_bytes()))
    data[88:92] = struct.pack("<f", pixdim)  # pixdim[3]
    path = tmp_path / "bad.nii"
    path.write_bytes(bytes(data))
    script = "import sys; from mvcf.read_ct import read_ct; from mvcf.errors import MVCFError\n" \
             "try:\n    read_ct(sys.argv[1])\nexcept MVCFError as exc:\n    print('error:', exc, file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_ct_stored_in_thousands_of_hu_is_named_as_such(tmp_path):
    """HU / 1000 (air -1, bone 1-3) read only "nearly constant; not a CT", where the units are the problem."""
    _expect(_write(tmp_path, "scaled.nii.gz", _ct_array().astype(np.float32) / 1000.0),
            r"nearly constant \(values .*\); not a CT in Hounsfield units \(a CT stored as HU / 1000")


def test_slices_coarser_than_5_mm_are_said(tmp_path):
    """A CT resampled to 10 mm slices was classified without a note (20 mm: only 'the view extends beyond the
    CT'); 5 mm, a common routine reconstruction, is not doubted."""
    said: list[str] = []
    read_ct(_write(tmp_path, "thick.nii.gz", _ct_array(), spacing=(0.8, 0.8, 10.0)), warnings=said)
    assert len(said) == 1 and "voxels 10 mm apart along one axis (spacing (0.8, 0.8, 10) mm)" in said[0]
    said.clear()
    read_ct(_write(tmp_path, "routine.nii.gz", _ct_array(), spacing=(0.8, 0.8, 5.0)), warnings=said)
    assert said == []


def test_zero_spacing_in_metaimage_is_rejected(tmp_path):
    path = _write(tmp_path, "ok.mha", _ct_array())
    path.write_bytes(path.read_bytes().replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 1 1"))
    _expect(path, "[Zz]ero")
    path.write_bytes(path.read_bytes().replace(b"ElementSpacing = 0 1 1", b"ElementSpacing = 1 1 nan"))
    _expect(path, r"has a non-finite voxel spacing in its header \(ElementSpacing =1 1 nan\)")   # ITK: "Zero-valued"


def test_absurd_spacing_is_rejected(tmp_path):
    _expect(_write(tmp_path, "big.nrrd", _ct_array(), spacing=(1.0, 1.0, 50.0)), r"spacing .* mm")


def test_missing_file(tmp_path):
    _expect(tmp_path / "nothing.nii.gz", "file not found")


def test_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image at all" * 50)
    _expect(garbage, "corrupt")
    garbage_mha = tmp_path / "garbage.mha"
    garbage_mha.write_bytes(b"\x00\x01binary junk" * 50)
    _expect(garbage_mha, "corrupt")
    full = shared("totalsegmentator/example_ct.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(full[: len(full) // 2])  # ITK would read it with zeros in place of the rest
    _expect(truncated, "truncated")
    raw = _write(tmp_path, "short.nii", _ct_array())
    raw.write_bytes(raw.read_bytes()[:-100])
    _expect(raw, "truncated")
    short_mha = _write(tmp_path, "short.mha", _ct_array())
    short_mha.write_bytes(short_mha.read_bytes()[:-100])
    _expect(short_mha, "corrupt")


def test_folder_without_dicom(tmp_path):
    _expect(tmp_path, "no DICOM series")


def test_not_hounsfield_values(tmp_path):
    _expect(_write(tmp_path, "flat.nii.gz", np.full((8, 8, 8), 40, np.int16)), "constant")
    _expect(_write(tmp_path, "huge.nii.gz", _ct_array(dtype=np.float32) * 1000), "Hounsfield")


def test_no_air_gives_a_warning_not_an_error(tmp_path):
    path = _write(tmp_path, "unsigned.nii.gz", (_ct_array() + 1024).astype(np.uint16))
    warnings: list[str] = []
    ct = read_ct(path, warnings=warnings)
    assert ct.voxels.dtype == np.uint16
    assert len(warnings) == 1 and "Hounsfield" in warnings[0]


def test_hu_cutout_without_air_gives_no_warning(tmp_path):
    """A region cut out around the spine (no air, values in HU) is a normal input, e.g. the TPTBox cutout or a
    synthetic case; only values that look unscaled deserve the warning."""
    real = read_ct(shared("totalsegmentator/example_ct.nii.gz")).voxels
    cutout = np.ascontiguousarray(np.clip(real[20:90, 20:80, 20:100], -150, None)).astype(np.int16)
    warnings: list[str] = []
    read_ct(_write(tmp_path, "cutout.nii.gz", cutout), warnings=warnings)
    assert warnings == []
    read_ct(_write(tmp_path, "unscaled.nii.gz", (cutout + 1024).astype(np.uint16)), warnings=warnings)
    assert len(warnings) == 1 and "Hounsfield" in warnings[0]


def test_dicom_series_with_a_missing_slice_is_rejected(tmp_path):
    """ITK only warns and averages the spacing; the geometry would be wrong, so read_ct refuses."""
    import shutil

    folder = shared("totalsegmentator/example_ct_dicom")
    files = sorted(folder.iterdir(), key=lambda f: float(_dicom_tags(f)["0020|0032"].split("\\")[2]))
    for f in files[:9] + files[10:]:
        shutil.copy(f, tmp_path / f.name)
    _expect(tmp_path, "missing or unevenly spaced")
    kept = tmp_path / "complete"
    kept.mkdir()
    for f in files[5:12]:
        shutil.copy(f, kept / f.name)
    assert read_ct(kept).size_ijk == (512, 512, 7)


def _rewritten_series(tmp_path, edit) -> Path:
    """The TotalSegmentator DICOM series (20 slices, 2 mm apart) with edit(ds, k) applied to slice k, k from
    the bottom, each file given a SOP Instance UID."""
    import pydicom

    folder = shared("totalsegmentator/example_ct_dicom")
    files = sorted(folder.iterdir(), key=lambda f: float(_dicom_tags(f)["0020|0032"].split("\\")[2]))
    out = tmp_path / "series"
    out.mkdir(parents=True)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        edit(ds, k)
        ds.save_as(out / f.name)
    return out


def test_a_small_gantry_tilt_or_a_slow_drift_of_the_slices_is_refused(tmp_path):
    """Each step was compared with the mean step alone (10 % of it allowed), so a 5 degree gantry tilt (0.17 mm
    sideways per 2 mm step) or steps of 1.85 mm below and 2.15 mm above passed every comparison while ITK put
    the outer slices 3-7 mm from where their headers say, and the SR and heatmap with them (28 mm on a
    112-slice series)."""
    import math

    def tilt(ds, k):
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + k * 2.0 * math.tan(math.radians(5))
    tilted = _rewritten_series(tmp_path / "tilt", tilt)

    def drift(ds, k):
        z0 = -804.5
        ds.ImagePositionPatient[2] = z0 + (1.85 * k if k < 10 else 18.5 + 2.15 * (k - 10))
    drifted = _rewritten_series(tmp_path / "drift", drift)
    for folder in (tilted, drifted):
        _expect(folder, r"gantry tilt \(slice positions deviate up to [1-9]\.\d\d mm from a regular grid\)")
    same = _rewritten_series(tmp_path / "same", lambda ds, k: None)
    assert read_ct(same).size_ijk == (512, 512, 20)


def test_a_slice_without_position_or_a_file_copied_under_two_names_is_refused_for_what_it_is(tmp_path):
    """A slice without ImagePositionPatient skipped the position check: GDCM put it first, the origin became
    (0, 0, 0) and the spacing 4.17 mm (P 0.85 where the series gives 0.76); the same file under two names was
    called "two stacks"."""
    import shutil

    def unplaced(ds, k):
        if k == 7:
            del ds.ImagePositionPatient
    _expect(_rewritten_series(tmp_path / "a", unplaced), "1 of its 20 slices has no ImagePositionPatient")
    copied = _rewritten_series(tmp_path / "b", lambda ds, k: None)
    first = sorted(copied.iterdir())[0]
    shutil.copy(first, copied / "copy.dcm")
    _expect(copied, "repeat a slice another file holds")


def test_a_dicom_series_of_two_stacks_is_named_so_without_itks_warning(tmp_path, capfd):
    """Two stacks under one series UID (every slice twice, other instance numbers) were 'missing or unevenly
    spaced slices, or a gantry tilt', after ITK's three-line WARNING on stderr."""
    import pydicom

    folder = shared("totalsegmentator/example_ct_dicom")
    for n, f in enumerate(sorted(folder.iterdir())):
        for copy in range(2):
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = int(ds.get("InstanceNumber", n)) + 1000 * copy
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(tmp_path / f"{copy}_{f.name}")
    _expect(tmp_path, r"slices lie where another one does, so it holds two stacks")
    assert "WARNING" not in capfd.readouterr().err


def test_a_one_file_ct_beside_a_series_is_no_candidate_and_the_choice_is_recorded(tmp_path):
    """The TotalSegmentator series (blank UIDs) beside pydicom's one-slice CT was 'pick one with --series-uid:
    (blank UID) ...', though '(blank UID)' could not be given and a one-file series can never be read as a
    volume; the series taken is now a warning of the read (so predict's --json records it)."""
    import shutil

    folder = shared("totalsegmentator/example_ct_dicom")
    for f in folder.iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(shared("pydicom_ct_small/CT_small.dcm"), tmp_path / "CT_small.dcm")
    warnings: list[str] = []
    ct = read_ct(tmp_path, warnings=warnings)
    assert ct.size_ijk[2] == len(list(folder.iterdir()))
    assert any('(blank UID: --series-uid "")' in w and "the only CT series of 2" in w for w in warnings), warnings

"""Non-CT input and inconsistent geometry: each is refused or warned about, saying what was found."""
from __future__ import annotations

import gzip
import os
import shutil
import struct

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared
from mvcf.ctimage import CTImage
from mvcf.errors import MVCFError
from mvcf.read_ct import read_ct, read_mask


def _body(dtype=np.int16) -> np.ndarray:
    """A body-like CT in HU: air around, soft tissue, a bone cylinder."""
    z, y, x = np.mgrid[:24, :40, :40]
    ct = np.full((24, 40, 40), -1000, np.int16)
    ct[(y - 20) ** 2 + (x - 20) ** 2 < 18 ** 2] = 40
    ct[(y - 20) ** 2 + (x - 20) ** 2 < 6 ** 2] = 700
    return ct.astype(dtype)


def test_mr_like_volume_gets_a_warning_that_says_what_to_do(tmp_path):
    mr = np.clip((_body().astype(float) + 1000) * 2, 0, 4000).astype(np.uint16)  # 0..4000, no air
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(tmp_path / "mr.nii.gz"))
    warnings: list[str] = []
    read_ct(tmp_path / "mr.nii.gz", warnings=warnings)
    assert len(warnings) == 1 and "no value below 0" in warnings[0] and "MR" in warnings[0]
    assert "convert it to HU" in warnings[0]
    sitk.WriteImage(sitk.GetImageFromArray(_body()), str(tmp_path / "ct.nii.gz"))
    warnings.clear()
    read_ct(tmp_path / "ct.nii.gz", warnings=warnings)
    assert warnings == []


def test_ct_given_as_mask_and_label_zero_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    ct = (_body() + rng.integers(-30, 30, (24, 40, 40))).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(tmp_path / "ct.nii.gz"))
    with pytest.raises(MVCFError, match="does not look like a label mask.*was the CT given as the mask"):
        read_mask(tmp_path / "ct.nii.gz")
    from mvcf import locate

    image = CTImage(_body(), spacing=[1, 1, 1], origin=[0, 0, 0])
    mask = CTImage((_body() > 500).astype(np.int16), spacing=[1, 1, 1], origin=[0, 0, 0])
    with pytest.raises(MVCFError, match="label 0 is not a vertebra: 0 is a mask's background"):
        locate.from_mask(image, mask, 0)


def test_sheared_direction_is_refused(tmp_path):
    image = sitk.GetImageFromArray(_body())
    image.SetDirection((1, 0, 0, 0.5, 1, 0, 0, 0, 1))        # det 1: the old check let it through
    sitk.WriteImage(image, str(tmp_path / "shear.mha"))
    with pytest.raises(MVCFError, match=r"sheared \(non-orthogonal\).*63.4 degrees"):
        read_ct(tmp_path / "shear.mha")
    from mvcf.read_ct import validate_ct

    with pytest.raises(MVCFError, match="sheared"):
        validate_ct(CTImage(_body(), [1, 1, 1], [0, 0, 0], direction=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]))


def test_nan_origin_is_refused_not_read_as_zero(tmp_path):
    image = sitk.GetImageFromArray(_body())
    image.SetOrigin((float("nan"), 0.0, 0.0))
    sitk.WriteImage(image, str(tmp_path / "nan.mha"))
    assert sitk.ReadImage(str(tmp_path / "nan.mha")).GetOrigin()[0] == 0.0   # what ITK does
    with pytest.raises(MVCFError, match="non-finite origin"):
        read_ct(tmp_path / "nan.mha")
    nib.save(nib.Nifti1Image(_body().T, np.eye(4)), str(tmp_path / "nan.nii"))
    raw = bytearray((tmp_path / "nan.nii").read_bytes())
    struct.pack_into("<hh", raw, 252, 1, 0)                   # qform_code 1, sform_code 0
    struct.pack_into("<f", raw, 268, float("nan"))            # qoffset_x
    (tmp_path / "nan.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    assert sitk.ReadImage(str(tmp_path / "nan.nii.gz")).GetOrigin()[0] == 0.0
    with pytest.raises(MVCFError, match="NaN or infinite values in its qform"):
        read_ct(tmp_path / "nan.nii.gz")


def test_qform_and_sform_that_disagree_are_refused(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 60.0
    nifti = nib.Nifti1Image(_body().T, np.eye(4))
    nifti.set_qform(np.eye(4), code=1)
    nifti.set_sform(shifted, code=1)
    nib.save(nifti, str(tmp_path / "qs.nii.gz"))
    with pytest.raises(MVCFError, match="qform and sform disagree by up to 60.0 mm"):
        read_ct(tmp_path / "qs.nii.gz")
    nifti.set_sform(np.eye(4), code=1)
    nib.save(nifti, str(tmp_path / "same.nii.gz"))
    read_ct(tmp_path / "same.nii.gz")


def _dicom_copy(tmp_path):
    folder = shared("totalsegmentator/example_ct_dicom")
    target = tmp_path / "series"
    shutil.copytree(folder, target)
    return target


def test_garbled_jpeg2000_slice_gets_a_warning(tmp_path):
    series = _dicom_copy(tmp_path)
    clean: list[str] = []
    read_ct(series, warnings=clean)
    assert not any("corrupt" in w for w in clean)
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    data = bytearray(open(files[10], "rb").read())
    start = int(len(data) * 0.3)
    data[start:start + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    open(files[10], "wb").write(bytes(data))                   # decodes without an error, to wrong values
    warnings: list[str] = []
    read_ct(series, warnings=warnings)
    assert any("slice 10" in w and "may be corrupt" in w for w in warnings), warnings


def test_dicom_folder_with_symlink_loops_is_read(tmp_path):
    series = _dicom_copy(tmp_path)
    os.symlink("a", series / "b")
    os.symlink("b", series / "a")
    os.symlink(".", series / "self")
    assert sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(series)) == ()   # GDCM alone finds nothing
    warnings: list[str] = []
    ct = read_ct(series, warnings=warnings)
    assert ct.size_ijk[2] == 20
    assert any("skipped 3 symbolic link" in w for w in warnings)


def test_an_impossible_qform_quaternion_is_one_line(tmp_path):
    """b^2 + c^2 + d^2 > 1 has no rotation: nibabel raised ValueError ('w2 should be positive') through to a
    traceback (found by the damaged-file fuzz in one test order)."""
    nifti = nib.Nifti1Image(_body().T, np.eye(4))
    nifti.set_qform(np.eye(4), code=1)
    nifti.set_sform(np.eye(4), code=1)
    nib.save(nifti, str(tmp_path / "q.nii"))
    raw = bytearray((tmp_path / "q.nii").read_bytes())
    struct.pack_into("<fff", raw, 256, 0.8, 0.8, 0.8)       # quatern_b, c, d
    (tmp_path / "bad.nii").write_bytes(bytes(raw))
    with pytest.raises(MVCFError, match="qform quaternion is invalid"):
        read_ct(tmp_path / "bad.nii")

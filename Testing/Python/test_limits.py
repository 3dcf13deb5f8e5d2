"""Size limits: headers checked before reading, bounded decompression, streaming hashes, card requests capped."""
from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bombs import nifti_gzip_bomb, nrrd_header_bomb
from mvcf import limits
from mvcf.errors import MVCFError


def test_header_bomb_is_refused_from_its_header(tmp_path):
    bomb = nrrd_header_bomb(tmp_path / "bomb.nrrd")
    assert bomb.stat().st_size < 2000
    with pytest.raises(MVCFError, match=r"2000 x 2000 x 2000 voxels.*MVCF_MAX_VOXELS"):
        limits.check_image_header(bomb)
    from mvcf.read_ct import read_ct

    with pytest.raises(MVCFError, match="over the limit"):
        read_ct(bomb)


def test_limit_override_from_the_environment(tmp_path, monkeypatch):
    import SimpleITK as sitk

    path = tmp_path / "small.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 10, 10), np.int16)), str(path))
    limits.check_image_header(path)
    monkeypatch.setenv("MVCF_MAX_VOXELS", "999")
    with pytest.raises(MVCFError, match="1,000, over the limit of 999"):
        limits.check_image_header(path)
    monkeypatch.setenv("MVCF_MAX_VOXELS", "lots")
    with pytest.raises(MVCFError, match="must be a positive whole number"):
        limits.limit("MAX_VOXELS")


def test_gunzip_bounded_stops_early(tmp_path):
    bomb = nifti_gzip_bomb(tmp_path / "bomb.nii.gz", members=8)   # 128 MiB of zeros
    with pytest.raises(MVCFError, match="expands to more than"):
        limits.gunzip_bounded(bomb, 20 << 20)
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 24))
    assert limits.gunzip_bounded(ok, 1 << 20) == 1024
    ok.write_bytes(ok.read_bytes()[:-30])
    with pytest.raises(MVCFError, match="truncated|corrupt"):
        limits.gunzip_bounded(ok, 1 << 20)


def test_streamed_sha256_and_sparse_weights(tmp_path, monkeypatch):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"x" * 3000)
    assert limits.sha256_stream(path) == hashlib.sha256(b"x" * 3000).hexdigest()
    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as handle:
        handle.truncate(8 << 30)                                 # 8 GB, no blocks on disk
    with pytest.raises(MVCFError, match="over the limit"):
        limits.sha256_stream(sparse)


def test_view_and_network_requests_are_capped():
    limits.check_view_shape((2, 64, 64, 64))
    with pytest.raises(MVCFError, match="MVCF_MAX_VIEW_ELEMENTS"):
        limits.check_view_shape((1, 1024, 1024, 1024))
    small = {"layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128], "in_channels": 2, "spatial_dims": 2}
    limits.check_network_request(small, 5)
    with pytest.raises(MVCFError, match="MVCF_MAX_ENSEMBLE"):
        limits.check_network_request(small, 200_000)
    with pytest.raises(MVCFError, match="MVCF_MAX_PARAMETERS"):
        limits.check_network_request({**small, "block_inplanes": [1024, 2048, 4096, 8192], "spatial_dims": 3}, 1)


def test_parameter_estimate_matches_monai():
    from monai.networks.nets import ResNet

    net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=2,
                 n_input_channels=2, conv1_t_size=7, conv1_t_stride=2, num_classes=1, feed_forward=False)
    actual = sum(p.numel() for p in net.parameters())
    estimate = limits.estimate_resnet_parameters([1, 1, 1, 1], [16, 32, 64, 128], 2, 2, 7)
    assert abs(estimate - actual) / actual < 0.1
    from monai.networks.nets import DenseNet

    dense = DenseNet(spatial_dims=3, in_channels=2, out_channels=1, init_features=8, growth_rate=8,
                     block_config=(2, 2, 2), bn_size=2)
    actual = sum(p.numel() for p in dense.parameters())
    estimate = limits.estimate_densenet_parameters(8, 8, [2, 2, 2], 2, 2, 3)
    assert abs(estimate - actual) / actual < 0.15


RUN_AND_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(proc.returncode, peak_kib, repr(proc.stderr))
""")


@pytest.mark.parametrize("kind", ["header-bomb", "gzip-bomb"])
def test_refusing_a_bomb_takes_under_1_gb(tmp_path, kind):
    bomb = nrrd_header_bomb(tmp_path / "bomb.nrrd") if kind == "header-bomb" \
        else nifti_gzip_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 5 << 20
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "-c", RUN_AND_MEASURE, sys.executable, "-m", "mvcf", "views",
                           "--ct", str(bomb), "--point-ijk", "1,1,1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    code, peak_kib, stderr = proc.stdout.split(" ", 2)
    stderr = eval(stderr)
    assert code == "2", stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "over the limit" in stderr
    assert int(peak_kib) < 1024 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"
    assert sorted(os.listdir(tmp_path)) == before


def test_max_voxels_option(tmp_path, capsys, monkeypatch):
    import SimpleITK as sitk

    from mvcf.cli.main import main

    monkeypatch.delenv("MVCF_MAX_VOXELS", raising=False)
    ct = np.full((10, 10, 10), -1000, np.int16)
    ct[3:7, 3:7, 3:7] = 700
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(tmp_path / "ct.nrrd"))
    code = main(["--progress", "none", "--max-voxels", "999", "views", "--ct", str(tmp_path / "ct.nrrd"),
                 "--point-ijk", "5,5,5", "--out", str(tmp_path / "out")])
    assert code == 2 and "over the limit of 999" in capsys.readouterr().err
    assert "MVCF_MAX_VOXELS" not in os.environ and not (tmp_path / "out").exists()

"""Model card schema: a malformed or greedy card is one clear error before anything is built."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from mvcf.errors import MVCFError
from mvcf.models.bundle import load_bundle, read_card, sha256_file
from mvcf.predict import default_model_path


@pytest.fixture
def bundle(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(default_model_path(), target)
    return target


def _edit(bundle, change):
    card = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    change(card)
    (bundle / "model.json").write_text(json.dumps(card))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(threshold="high"), r"threshold must be a finite number in \[0, 1\], got 'high'"),
    (lambda c: c.update(threshold=None), "threshold must be a finite number"),
    (lambda c: c.update(threshold=2.0), "threshold must be a finite number"),
    (lambda c: c.update(threshold=True), "threshold must be a finite number"),
    (lambda c: c.update(weights="abc"), "weights must be an object"),
    (lambda c: c.update(view_spec=[1, 2]), "view_spec must be an object"),
    (lambda c: c["network"].update(conv1_t_size=-3), r"network.conv1_t_size must be an integer in \[1, 15\]"),
    (lambda c: c["network"].update(layers="1111"), "network.layers must be a list"),
    (lambda c: c.update(ensemble_size=200_000), "MVCF_MAX_ENSEMBLE"),
    (lambda c: c["network"].update(block_inplanes=[8000, 16000, 16000, 16000]), "MVCF_MAX_PARAMETERS"),
    (lambda c: c["view_spec"].update(size_px=32), "view_spec gives views of shape"),
    (lambda c: c["view_spec"].update(mode="3d"), "input_shape has 3 dimensions; mode 3d needs 4"),
    (lambda c: c["training_scans"].update(digests=["A_000"]), r"training_scans.digests\[0\] must be a text of at "
                                                              r"most 16 characters matching \[0-9a-f\]\{16\}"),
    (lambda c: c["training_scans"].pop("count"), "training_scans lacks 'count'"),
    (lambda c: c["view_spec"].update(mode="4d"), "view_spec.mode '4d' is not a view mode"),
    (lambda c: c["network"].update(family="os.system"), "network.family must be one of"),
])
def test_malformed_card_fields_are_refused(bundle, change, message):
    _edit(bundle, change)
    with pytest.raises(MVCFError, match=message):
        read_card(bundle)


def test_nan_and_deep_nesting_are_refused(bundle):
    text = (bundle / "model.json").read_text(encoding="utf-8")
    card = json.loads(text)
    (bundle / "model.json").write_text(text.replace(f'"threshold": {card["threshold"]}', '"threshold": NaN'))
    with pytest.raises(MVCFError, match="NaN, which is not a number JSON allows"):
        read_card(bundle)
    (bundle / "model.json").write_text(text[:-2] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(MVCFError, match="nested too deeply"):
        read_card(bundle)
    (bundle / "model.json").write_text(text[:-2] + ', "huge": ' + "7" * 5000 + "}")   # was a raw ValueError
    with pytest.raises(MVCFError, match=r"not valid JSON: it exceeds the limit \(4300 digits\)"):
        read_card(bundle)


def _rewrite_weights(bundle, transform):
    from safetensors.torch import load_file, save_file

    state = {k: transform(k, v) for k, v in load_file(str(bundle / "weights.safetensors")).items()}
    save_file(state, str(bundle / "weights.safetensors"))
    _edit(bundle, lambda c: c["weights"].update(sha256=sha256_file(bundle / "weights.safetensors")))


def test_integer_weights_are_not_cast_silently(bundle):
    import torch

    _rewrite_weights(bundle, lambda k, v: v.to(torch.int64) if v.is_floating_point() else v)
    with pytest.raises(MVCFError, match="as int64; the network needs floating-point weights"):
        load_bundle(bundle)


def test_nan_weights_never_give_a_call(bundle):
    import torch

    _rewrite_weights(bundle, lambda k, v: torch.full_like(v, float("nan")) if k.endswith("head.weight") else v)
    with pytest.raises(MVCFError, match="NaN or infinite values in"):
        load_bundle(bundle)
    from mvcf.models.card_schema import check_probability

    with pytest.raises(MVCFError, match="not a probability"):
        check_probability(float("nan"))


def test_cli_bad_card_is_one_line(bundle, tmp_path):
    from mvcf.predict import default_model_path as demo

    _edit(bundle, lambda c: c.update(threshold="high"))
    ct = demo().parent / "sample_ct" / "example_ct.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", "predict", "--ct", str(ct), "--point-ijk", "10,10,10",
                           "--model", str(bundle), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: invalid model card") and proc.stderr.count("\n") == 1

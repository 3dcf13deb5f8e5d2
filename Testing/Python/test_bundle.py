"""Model bundles: round trip, and every way of being wrong is refused with one clear MVCFError."""
import hashlib
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.models.bundle import (CARD_FILE, FORMAT_VERSION, WEIGHTS_FILE, export_onnx, load_bundle,  # noqa: E402
                                read_card, save_bundle)
from mvcf.models.networks import build_ensemble, network_config  # noqa: E402


@pytest.fixture
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    config = network_config("2.5d-orthogonal", (3, 32, 32), "resnet10-tiny")
    model = build_ensemble(config, 2).eval()
    card = {"name": "test", "version": "1", "network": config, "ensemble_size": 2,
            "view_spec": {"mode": "2.5d-orthogonal", "size_px": 32}, "threshold": 0.42}
    path = save_bundle(tmp_path / "bundle", model, card)
    return path, model


def test_round_trip_gives_identical_outputs_and_a_complete_card(bundle_dir):
    path, model = bundle_dir
    bundle = load_bundle(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), bundle.model(x))
    card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
    assert card["format_version"] == FORMAT_VERSION
    assert card["weights"]["sha256"] == hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert "research use only" in card["intended_use"].lower()
    assert set(card["software"]) >= {"mvcf", "torch", "monai"}
    assert bundle.threshold == 0.42 and bundle.identity()["sha256"] == card["weights"]["sha256"]


def test_tampered_weights_are_refused(bundle_dir):
    path, _ = bundle_dir
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(MVCFError, match="sha256"):
        load_bundle(path)


def test_wrong_format_version_is_refused(bundle_dir):
    path, _ = bundle_dir
    card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
    card["format_version"] = FORMAT_VERSION + 1
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match="format version"):
        read_card(path)


def test_pickle_disguised_as_weights_is_refused_without_unpickling(bundle_dir, tmp_path):
    path, model = bundle_dir
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps({"state": model.state_dict(), "payload": Payload()})
    (path / WEIGHTS_FILE).write_bytes(blob)
    card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
    card["weights"]["sha256"] = hashlib.sha256(blob).hexdigest()  # even with a matching checksum
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match="not a safetensors file"):
        load_bundle(path)
    assert not marker.exists()


def test_pickle_as_card_or_as_the_bundle_itself_is_refused(bundle_dir, tmp_path):
    path, model = bundle_dir
    (path / CARD_FILE).write_bytes(pickle.dumps({"format": "mvcf-model-bundle"}))
    with pytest.raises(MVCFError, match="not valid JSON"):
        load_bundle(path)
    pt = tmp_path / "model.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(MVCFError, match="is a file"):
        load_bundle(pt)
    with pytest.raises(MVCFError, match="not found"):
        load_bundle(tmp_path / "missing")


def test_weights_that_do_not_fit_the_network_are_refused(bundle_dir):
    path, _ = bundle_dir
    card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
    card["ensemble_size"] = 3
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match="do not fit") as info:
        load_bundle(path)
    assert "Missing key(s) in state_dict: " in str(info.value) and len(str(info.value)) < 500


def test_weights_of_another_network_name_the_tensor_that_does_not_fit(bundle_dir, tmp_path):
    """Another bundle's weights (with the card's sha256 updated) were refused as `weights do not fit the card's
    network (Error(s) in loading state_dict for Ensemble:)`: torch's heading, naming nothing."""
    path, _ = bundle_dir
    config = network_config("2.5d-orthogonal", (2, 32, 32), "resnet10-tiny")
    other = save_bundle(tmp_path / "other", build_ensemble(config, 2).eval(),
                        {"name": "o", "version": "1", "network": config, "ensemble_size": 2,
                         "view_spec": {"mode": "2.5d-orthogonal", "size_px": 32, "windows": [[400, 1800], [40, 400]]},
                         "threshold": 0.5})
    (path / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
    card["weights"]["sha256"] = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match=r"do not fit the card's network \(size mismatch for members\.0\.") as info:
        load_bundle(path)
    assert "\n" not in str(info.value) and "more)" in str(info.value)


def test_a_saved_bundle_honours_the_umask(tmp_path):
    """safetensors creates its file 0600: a bundle written under umask 022 had every file 0644 but its
    weights, which another user (a shared model folder, a server) could not read."""
    import os

    config = network_config("2d", (2, 16, 16), "resnet10-tiny")
    old = os.umask(0o022)
    try:
        path = save_bundle(tmp_path / "b", build_ensemble(config, 1).eval(),
                           {"name": "u", "version": "1", "network": config, "ensemble_size": 1,
                            "view_spec": {"mode": "2d", "size_px": 16}, "threshold": 0.5}, onnx_graph=False)
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in path.iterdir()} == \
        {name: "0o644" for name in (".mvcf-output", CARD_FILE, WEIGHTS_FILE)}


def test_a_run_folder_given_as_the_bundle_names_its_bundle(bundle_dir, tmp_path):
    """`evaluate --model RUN` (a train or study --out, not its `model/`) said only `RUN/model.json is missing`."""
    import shutil

    path, _ = bundle_dir
    run = tmp_path / "run"
    shutil.copytree(path, run / "2d" / "model")
    with pytest.raises(MVCFError, match=r"model\.json is missing \(.*training or study run; give its model "
                       r"bundle: .*2d/model\)"):
        read_card(run)
    with pytest.raises(MVCFError, match=r"give its model bundle: .*2d/model\)"):
        read_card(run / "2d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MVCFError, match=r"model\.json is missing$"):
        read_card(tmp_path / "empty")


def test_onnx_export_matches_torch(bundle_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, _ = bundle_dir
    bundle = load_bundle(path)
    onnx_path = export_onnx(bundle, tmp_path / "model.onnx")
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"view": x})[0]
    np.testing.assert_allclose(got, bundle.model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)

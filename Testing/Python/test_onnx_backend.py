"""The torch-free prediction path: a bundle's ONNX graph run by ONNX Runtime gives the torch path's
probabilities, a graph that does not match its weights is refused, `mvcf predict` without --heatmap never
imports torch, and CUDA running out of memory falls back to the CPU with a warning."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.models.bundle import CARD_FILE, load_bundle, save_bundle  # noqa: E402
from mvcf.models.networks import build_ensemble, network_config  # noqa: E402
from mvcf.models.bundle import add_graph
from mvcf.models.onnx_graph import GRAPH_FILE  # noqa: E402
from mvcf.models.ort_backend import choose, load_ort_bundle  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLE = REPO / "MVCFClassifier" / "mvcf" / "resources" / "sample_ct"
DEMO = REPO / "MVCFClassifier" / "mvcf" / "resources" / "demo_model"
TOLERANCE = 1e-5


def _spec(mode: str, size: int = 24, windows=("bone", "soft")):
    from mvcf.views import ViewSpec

    return ViewSpec(mode=mode, size_px=size, windows=windows)


def _bundle(path: Path, spec, seed: int = 0, ensemble: int = 1, onnx_graph: bool = True,
            mil_pooling: str = "mean") -> Path:
    torch.manual_seed(seed)
    mode, shape = spec.mode, tuple(spec.output_shape())
    config = network_config(mode, shape, "resnet10-tiny", mil_pooling=mil_pooling)
    model = build_ensemble(config, ensemble).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, so their folding into Conv is tested
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    card = {"name": f"test-{mode}", "version": "1", "network": config, "ensemble_size": ensemble,
            "view_spec": spec.to_dict(), "threshold": 0.5}
    return save_bundle(path, model, card, onnx_graph=onnx_graph)


def _torch_probabilities(bundle_dir: Path, batch: np.ndarray) -> np.ndarray:
    bundle = load_bundle(bundle_dir)
    with torch.no_grad():
        return bundle.model(torch.from_numpy(batch)).numpy().astype(np.float64)


def test_onnx_and_torch_agree_on_l1_to_l5_of_the_real_ct():
    from mvcf.locations_file import VertebraQuery
    from mvcf.predict import predict_many
    from mvcf.read_ct import read_ct

    ct = read_ct(SAMPLE / "example_ct.nii.gz")
    queries = [VertebraQuery(name=f"L{n}", mask=SAMPLE / "totalseg.nii.gz", label=32 - n) for n in range(1, 6)]
    by_engine = {engine: predict_many(ct, queries, DEMO, "cpu", backend=engine) for engine in ("onnxruntime", "torch")}
    assert [r["backend"] for r in by_engine["onnxruntime"]] == ["onnxruntime"] * 5
    assert [r["backend"] for r in by_engine["torch"]] == ["torch"] * 5
    onnx = np.array([r["probability_malignant"] for r in by_engine["onnxruntime"]])
    eager = np.array([r["probability_malignant"] for r in by_engine["torch"]])
    assert np.abs(onnx - eager).max() <= TOLERANCE
    assert len(set(np.round(onnx, 4))) == 5  # five different vertebrae, not one value repeated


@pytest.mark.parametrize("mode,pooling", [("2d", "mean"), ("2.5d-adjacent", "mean"), ("2.5d-orthogonal", "mean"),
                                          ("2.5d-mil", "mean"), ("2.5d-mil", "attention"), ("3d", "mean")])
def test_onnx_and_torch_agree_on_synthetic_cases_of_every_mode(tmp_path, mode, pooling):
    from tiny_cohort import make_tiny_cohort

    from mvcf.locate import from_mask
    from mvcf.manifest import read_manifest
    from mvcf.read_ct import read_ct, read_mask
    from mvcf.views import build_views

    manifest = make_tiny_cohort(tmp_path / "cohort", n_per_site=3, sites=("A",))
    spec = _spec(mode, 16 if mode == "3d" else 24)
    views = []
    for record in read_manifest(manifest):
        ct = read_ct(record.ct)
        views.append(build_views(ct, from_mask(ct, read_mask(record.mask), record.vertebra_label), spec).array)
    batch = np.stack(views).astype(np.float32)
    assert batch.shape[1:] == tuple(spec.output_shape())
    bundle_dir = _bundle(tmp_path / "bundle", spec, ensemble=2 if mode == "2d" else 1, mil_pooling=pooling)
    onnx = load_ort_bundle(bundle_dir).probabilities(batch)
    single = np.concatenate([load_ort_bundle(bundle_dir).probabilities(v[None]) for v in batch])
    eager = _torch_probabilities(bundle_dir, batch)
    assert np.abs(onnx - eager).max() <= TOLERANCE
    assert np.abs(single - eager).max() <= TOLERANCE


def test_a_graph_that_does_not_match_its_weights_is_refused(tmp_path):
    a = _bundle(tmp_path / "a", _spec("2d"), seed=1)
    b = _bundle(tmp_path / "b", _spec("2d"), seed=2)
    load_ort_bundle(a)  # intact: accepted

    shutil.copy(b / GRAPH_FILE, a / GRAPH_FILE)  # another bundle's graph
    with pytest.raises(MVCFError, match="does not match the card's sha256"):
        load_ort_bundle(a)

    card = json.loads((a / CARD_FILE).read_text(encoding="utf-8"))  # ... and the card's graph hash edited to fit it
    card["onnx"]["sha256"] = hashlib.sha256((a / GRAPH_FILE).read_bytes()).hexdigest()
    (a / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match="does not reproduce its weights' outputs"):
        load_ort_bundle(a)

    shutil.copy(b / "weights.safetensors", a / "weights.safetensors")  # retrained weights, stale graph
    card["weights"]["sha256"] = hashlib.sha256((a / "weights.safetensors").read_bytes()).hexdigest()
    (a / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(MVCFError, match="exported from other weights"):
        load_ort_bundle(a)
    load_bundle(a)  # the torch path still loads those (consistent) weights


def test_add_graph_to_an_old_bundle_and_the_demo_graph_is_reproducible(tmp_path):
    old = _bundle(tmp_path / "old", _spec("2.5d-orthogonal", windows=("bone",)), onnx_graph=False)
    assert not (old / GRAPH_FILE).exists() and choose("cpu", json.loads((old / CARD_FILE).read_text(encoding="utf-8"))) == ("torch", "cpu")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "add_onnx_graph.py"), str(old)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert load_ort_bundle(old).backend == "onnxruntime"
    # the shipped graph is what exporting the shipped weights gives: byte for byte on the CPU kind it was
    # exported on; elsewhere the same graph, with the batch-norms folded into the convolutions by this CPU's
    # kernels (AVX-512 against AVX2: 22 of 26 constants 1 float32 ulp apart, 2.4e-7)
    copy = shutil.copytree(DEMO, tmp_path / "demo")
    entry = add_graph(copy)
    if (copy / GRAPH_FILE).read_bytes() == (DEMO / GRAPH_FILE).read_bytes():
        assert entry["sha256"] == json.loads((DEMO / CARD_FILE).read_text(encoding="utf-8"))["onnx"]["sha256"]
    else:
        import numpy as np
        import onnx
        from onnx import numpy_helper

        shipped, exported = onnx.load(str(DEMO / GRAPH_FILE)), onnx.load(str(copy / GRAPH_FILE))
        assert shipped.graph.node == exported.graph.node and shipped.opset_import == exported.opset_import
        constants = [{c.name: numpy_helper.to_array(c) for c in g.graph.initializer} for g in (shipped, exported)]
        assert constants[0].keys() == constants[1].keys()
        for name, value in constants[0].items():
            np.testing.assert_allclose(constants[1][name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_backend_choice():
    card = json.loads((DEMO / CARD_FILE).read_text(encoding="utf-8"))
    assert choose("cpu", card) == ("onnxruntime", "cpu")
    assert choose("cpu", card, "torch") == ("torch", "cpu")
    assert choose("cpu", {k: v for k, v in card.items() if k != "onnx"}) == ("torch", "cpu")
    with pytest.raises(MVCFError, match="no ONNX graph"):
        choose("cpu", {k: v for k, v in card.items() if k != "onnx"}, "onnxruntime")
    with pytest.raises(MVCFError, match="--backend"):
        choose("cpu", card, "tensorrt")


def test_onnxruntime_on_cuda_without_a_gpu_names_the_missing_gpu_not_a_package(monkeypatch):
    """With no CUDA device at all, advising onnxruntime-gpu or --backend torch sends the user the wrong way."""
    from mvcf.models import ort_backend

    card = json.loads((DEMO / CARD_FILE).read_text(encoding="utf-8"))
    monkeypatch.setattr(ort_backend, "ort_has_cuda", lambda: False)
    monkeypatch.setattr(ort_backend, "cuda_devices_by_driver", lambda: 0)
    with pytest.raises(MVCFError, match="no CUDA device is available"):
        choose("cuda", card, "onnxruntime")
    monkeypatch.setattr(ort_backend, "cuda_devices_by_driver", lambda: 1)
    with pytest.raises(MVCFError, match="no CUDA provider .*onnxruntime-gpu"):
        choose("cuda", card, "onnxruntime")


PROBE = """
import sys
from mvcf.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = lambda names: ",".join(sorted(m for m in names if m in sys.modules))
print("IO=" + loaded(("SimpleITK", "onnxruntime", "scipy", "nibabel")))
print("HEAVY=" + loaded(("torch", "monai")), "CODE=%s" % code)
"""


def _modules_after(*argv: str, lines: str = "HEAVY=") -> str:
    """The `lines` line the probe prints after running `mvcf <argv>` in a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "MVCFClassifier"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, "--progress", "none", *argv], capture_output=True,
                          text=True, env=env)
    line = [x for x in proc.stdout.splitlines() if x.startswith(lines)]
    assert line, proc.stderr
    return line[-1]


def test_predict_without_heatmap_does_not_import_torch(tmp_path):
    where = ["--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask", str(SAMPLE / "totalseg.nii.gz")]
    assert _modules_after("predict", *where, "--label", "31", "--json") == "HEAVY= CODE=0"
    assert _modules_after("predict", *where, "--label", "31", "--label", "30", "--json") == "HEAVY= CODE=0"
    assert _modules_after("predict", *where, "--label", "99", "--json") == "HEAVY= CODE=2"
    # the probe can see torch: Grad-CAM and --backend torch do import it
    assert _modules_after("predict", *where, "--label", "31", "--backend", "torch") == "HEAVY=monai,torch CODE=0"
    assert _modules_after("predict", *where, "--label", "31", "--heatmap",
                          str(tmp_path / "h.nii.gz")).startswith("HEAVY=monai,torch")


class _OutOfMemoryOnce:
    """Wraps a forward callable: the first call raises `error` (a simulated CUDA failure), later calls
    run the real forward pass."""

    def __init__(self, error: Exception, forward) -> None:
        self.error, self.forward, self.calls = error, forward, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return self.forward(*args, **kwargs)


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_cuda_out_of_memory_falls_back_to_the_cpu_with_a_warning(tmp_path, engine, monkeypatch, caplog):
    from mvcf.inference import OOM_WARNING, forward_checked

    bundle_dir = _bundle(tmp_path / "b", _spec("2d"))
    batch = np.random.default_rng(0).random((5, 2, 24, 24), dtype=np.float32)
    expected = _torch_probabilities(bundle_dir, batch)
    if engine == "onnxruntime":
        bundle = load_ort_bundle(bundle_dir)
        error = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory")
    else:
        bundle = load_bundle(bundle_dir)
        error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    bundle.device = "cuda"  # as if it ran there; the simulated OOM is raised by its forward pass
    failing = _OutOfMemoryOnce(error, bundle.probabilities)
    monkeypatch.setattr(bundle, "probabilities", failing)
    done = forward_checked(bundle, batch)
    finished, probabilities, warnings = done.bundle, done.probabilities, done.warnings
    assert failing.calls == (1 if engine == "onnxruntime" else 2) and finished.device == "cpu" and warnings == [OOM_WARNING]
    assert np.abs(probabilities - expected).max() <= TOLERANCE
    assert "ran out of memory" in caplog.text


def test_other_errors_on_cuda_are_not_swallowed(tmp_path, monkeypatch):
    from mvcf.inference import forward_checked

    bundle = load_ort_bundle(_bundle(tmp_path / "b", _spec("2d")))
    bundle.device = "cuda"
    monkeypatch.setattr(bundle, "probabilities", _OutOfMemoryOnce(RuntimeError("illegal memory access"),
                                                                   bundle.probabilities))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        forward_checked(bundle, np.zeros((1, 2, 24, 24), np.float32))


def test_help_and_argument_errors_import_nothing_heavy():
    for argv in (["--help"], ["predict", "--ct"], ["predict", "--help"], ["worker", "--idle-exit", "x"]):
        assert _modules_after(*argv) in ("HEAVY= CODE=0", "HEAVY= CODE=2"), argv
        assert _modules_after(*argv, lines="IO=") == "IO=", argv


def test_an_occlusion_heatmap_needs_no_torch(tmp_path):
    """3D occlusion runs on the bundle's own engine: with an ONNX graph, a heatmap without torch."""
    import SimpleITK as sitk

    where = ["--ct", str(SAMPLE / "example_ct.nii.gz"), "--mask", str(SAMPLE / "totalseg.nii.gz"), "--label", "31"]
    heat = tmp_path / "h.nii.gz"
    assert _modules_after("predict", *where, "--heatmap", str(heat), "--heatmap-method", "occlusion") == \
        "HEAVY= CODE=0"
    image = sitk.ReadImage(str(heat))
    ct = sitk.ReadImage(str(SAMPLE / "example_ct.nii.gz"))
    np.testing.assert_allclose(image.GetSpacing(), ct.GetSpacing())
    assert float(sitk.GetArrayViewFromImage(image).max()) == pytest.approx(1.0)
    bad = tmp_path / "bad.nii.gz"
    assert _modules_after("predict", *where, "--heatmap", str(bad), "--heatmap-method", "lime") == "HEAVY= CODE=2"
    assert not bad.exists()

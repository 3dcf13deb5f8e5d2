"""The model bundle: a directory with `weights.safetensors` and a JSON model card `model.json`.

Loading never unpickles anything: the card is JSON, the weights are safetensors, the network is rebuilt
from the card's config. Before building the network the loader checks the format name and version and
the sha256 of the weights file; any mismatch is an MVCFError with one clear line.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from mvcf.errors import MVCFError
from mvcf.fileio import apply_umask, atomic_dir
from mvcf.limits import read_bytes_bounded, sha256_stream
from mvcf.models.card_schema import check_weights, parse_card_json, validate_card
from mvcf.progress import dumps

FORMAT_NAME = "mvcf-model-bundle"
FORMAT_VERSION = 1
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
CLASSES = ["OVCF", "MVCF"]
INTENDED_USE = ("Research use only. Not a medical device; not for diagnosis or treatment decisions. "
                "Classifies one vertebral compression fracture on CT as malignant (MVCF) or "
                "osteoporotic (OVCF).")


def sha256_file(path: Union[str, Path]) -> str:
    return sha256_stream(path)


def software_versions() -> dict[str, str]:
    import monai
    import numpy
    import torch

    import mvcf

    return {"mvcf": mvcf.__version__, "torch": torch.__version__, "monai": monai.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


@dataclass
class Bundle:
    """A loaded bundle: the card (dict) and the network (an Ensemble returning probabilities)."""

    path: Path
    card: dict[str, Any]
    model: Any
    device: str = "cpu"
    backend: str = "torch"

    def probabilities(self, batch) -> Any:
        """Probability of MVCF per case of `batch` (N, *input_shape), one float32 pass on `device`."""
        from mvcf.models.forward import forward_arrays

        return forward_arrays(self.model, list(batch), self.device, batch_size=max(1, len(batch)), logits=False,
                              amp=False)

    def on_cpu(self) -> "Bundle":
        """This bundle with its network moved to the CPU (the fallback after CUDA ran out of memory)."""
        import torch

        self.model.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.device = "cpu"
        return self

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.path.name))

    @property
    def version(self) -> str:
        return str(self.card.get("version", ""))

    @property
    def sha256(self) -> str:
        return str(self.card["weights"]["sha256"])

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def mode(self) -> str:
        return str(self.card["view_spec"]["mode"])

    @property
    def view_spec(self) -> dict[str, Any]:
        return dict(self.card["view_spec"])

    def identity(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def save_bundle(out_dir: Union[str, Path], model, card: dict[str, Any], overwrite: bool = True,
                onnx_graph: bool = True) -> Path:
    """Write `model` (an Ensemble) and `card` as a bundle directory, atomically. The card gets the format
    fields, the software versions and the weights' sha256 filled in; required: name, version, network,
    ensemble_size, view_spec, threshold. With `onnx_graph` the bundle also gets its ONNX graph
    (mvcf.models.onnx_graph), so that prediction can run without torch."""
    from safetensors.torch import save_file

    missing = [k for k in ("name", "version", "network", "ensemble_size", "view_spec", "threshold") if k not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}")
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        apply_umask(tmp / WEIGHTS_FILE)   # safetensors creates it 0600, whatever the umask
        full = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **card,
            "classes": CLASSES,
            "positive_class": "MVCF",
            "output": "probability of MVCF (mean over ensemble members)",
            "intended_use": card.get("intended_use", INTENDED_USE),
            "software": {**software_versions(), **card.get("software", {})},
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE),
                        "tensors": len(state)},
        }
        if onnx_graph:
            from mvcf.models.onnx_graph import GRAPH_FILE, write_graph

            full["onnx"] = write_graph(model, card["network"]["input_shape"], full["weights"]["sha256"],
                                       tmp / GRAPH_FILE)
        (tmp / CARD_FILE).write_text(dumps(full, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


def read_card(path: Union[str, Path]) -> dict[str, Any]:
    """Read and check a bundle's card (format name and version) without touching the weights."""
    bundle_dir = Path(path)
    if not bundle_dir.exists():
        raise MVCFError(f"model bundle not found: {bundle_dir}")
    if not bundle_dir.is_dir():
        raise MVCFError(f"not a model bundle: {bundle_dir} is a file; a bundle is a directory with "
                        f"{CARD_FILE} and {WEIGHTS_FILE}")
    card_path = bundle_dir / CARD_FILE
    if not card_path.is_file():
        raise MVCFError(f"not a model bundle: {card_path} is missing{_bundles_below(bundle_dir)}")
    card = parse_card_json(read_bytes_bounded(card_path, "MAX_CARD_BYTES", "model card"), str(card_path))
    if not isinstance(card, dict) or card.get("format") != FORMAT_NAME:
        raise MVCFError(f"not a model bundle: {card_path} does not declare format {FORMAT_NAME!r}")
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise MVCFError(f"unsupported model bundle format version {version!r} in {card_path} "
                        f"(this mvcf reads version {FORMAT_VERSION})")
    for key in ("network", "ensemble_size", "view_spec", "threshold", "weights"):
        if key not in card:
            raise MVCFError(f"invalid model bundle: {card_path} lacks {key!r}")
    _upgrade_network(card)
    return validate_card(card, str(card_path))


def _bundles_below(folder: Path) -> str:
    """For a training or study run folder given as the bundle: where its bundles are ('' if none)."""
    try:
        found = sorted({p.parent for pattern in (f"model/{CARD_FILE}", f"*/model/{CARD_FILE}")
                        for p in folder.glob(pattern)})
    except OSError:
        return ""
    if not found:
        return ""
    shown = ", ".join(str(p) for p in found[:4]) + (", ..." if len(found) > 4 else "")
    return f" ({folder} looks like the folder of a training or study run; give its model bundle: {shown})"


def check_weights_sha256(bundle_dir: Path, card: dict[str, Any]) -> Path:
    """The bundle's weights file, after checking it against the card's sha256 (streamed)."""
    weights_path = Path(bundle_dir) / WEIGHTS_FILE
    if not weights_path.is_file():
        found = "is not a file" if weights_path.exists() else "is missing"
        raise MVCFError(f"invalid model bundle: {weights_path} {found}")
    actual = sha256_stream(weights_path)
    expected = str(card["weights"].get("sha256", ""))
    if actual != expected:
        raise MVCFError(f"model weights do not match the card's sha256 (expected {expected[:12]}..., got "
                        f"{actual[:12]}...): {weights_path} was modified or corrupted")
    return weights_path


def _upgrade_network(card: dict[str, Any]) -> None:
    """Cards written before the mode registry stored the mode a second time in `network` and no Grad-CAM
    layer (always ResNet layer3): read them as the current schema, in memory only."""
    network = card["network"]
    if isinstance(network, dict) and isinstance(card["view_spec"], dict):
        network.pop("mode", None)
        if network.get("family") == "monai.networks.nets.ResNet":
            network.setdefault("gradcam_layer", "layer3")


def _first_reason(exc: RuntimeError) -> str:
    """The first of load_state_dict's reasons (its first line is only a heading), and how many more."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    if not lines:
        return "mismatch"
    first = lines[0].rstrip(".")
    first = first if len(first) <= 300 else first[:300] + "..."
    more = f"; and {len(lines) - 1} more" if len(lines) > 1 else ""
    return f"{first}{more}"


def load_bundle(path: Union[str, Path], device: Optional[str] = None) -> Bundle:
    """Verify and load a bundle. Order: card format -> weights sha256 -> safetensors parse -> network."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mvcf.models.networks import build_ensemble

    bundle_dir = Path(path)
    card = read_card(bundle_dir)
    weights_path = check_weights_sha256(bundle_dir, card)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MVCFError(f"invalid model bundle: {weights_path} is not a safetensors file ({first})") from None
    model = build_ensemble(card["network"], card["ensemble_size"])
    check_weights(state, model.state_dict(), str(weights_path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MVCFError(f"invalid model bundle: weights do not fit the card's network ({_first_reason(exc)})") \
            from None
    model.eval()
    if device is not None:
        model.to(device)
    return Bundle(path=bundle_dir, card=card, model=model, device=str(device or "cpu"))


def export_onnx(bundle: Bundle, out_path: Union[str, Path]) -> Path:
    """Export the bundle's network (probability output, dynamic batch) to ONNX, atomically."""
    from mvcf.models.onnx_graph import write_graph

    write_graph(bundle.model, bundle.card["network"]["input_shape"], bundle.sha256, out_path)
    return Path(out_path)


def add_graph(bundle_dir: Union[str, Path]) -> dict[str, Any]:
    """Export the graph of an existing bundle (verified as usual) into it and record it in the card.
    Replaces an older graph; the weights are not touched. Returns the card's new `onnx` entry."""
    from mvcf.fileio import write_text
    from mvcf.models.onnx_graph import GRAPH_FILE, write_graph

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir, device="cpu")
    entry = write_graph(bundle.model, bundle.card["network"]["input_shape"], bundle.sha256, bundle_dir / GRAPH_FILE)
    card = json.loads((bundle_dir / CARD_FILE).read_text(encoding="utf-8"))  # as stored, not as upgraded on load
    card.pop("onnx", None)
    card["onnx"] = entry
    write_text(bundle_dir / CARD_FILE, json.dumps(card, indent=2) + "\n")
    return entry

"""What a model card (model.json) may say, checked before anything is built from it.

A card is data from outside: a threshold of "high", null or NaN, weights of the wrong type, negative kernel
sizes, 200,000-deep nesting or a network of billions of weights must each be one clear MVCFError naming the
field, never a traceback, a silently wrong call or gigabytes of memory. The schema is plain Python (a few
combinators below); the checks that need the view code (the view spec's output shape against the network's
input shape) and the size limits (mvcf.limits) run after the types are known to be right.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Optional

from mvcf.errors import MVCFError
from mvcf.models.architectures import DENSENET, RESNET
from mvcf.training_scans import DIGEST_HEX, MAX_LISTED

#: Deeper than this is not a card mvcf wrote (its deepest part, validation_metrics, is 4 levels down).
MAX_DEPTH = 32

Check = Callable[[Any, str], None]


class CardError(MVCFError):
    pass


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, expected: str, value: Any) -> CardError:
    return CardError(f"{where} must be {expected}, got {_shown(value)}")


def integer(lo: int, hi: int) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _fail(where, f"an integer in [{lo}, {hi}]", value)
    return check


def number(lo: float, hi: float, hi_open: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and lo <= value and (value < hi if hi_open else value <= hi)
        if not ok:
            raise _fail(where, f"a finite number in [{lo:g}, {hi:g}{')' if hi_open else ']'}", value)
    return check


def text(max_len: int = 500, pattern: Optional[str] = None) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str) or len(value) > max_len or (pattern and not re.fullmatch(pattern, value)):
            raise _fail(where, f"a text of at most {max_len} characters" + (f" matching {pattern}" if pattern
                                                                               else ""), value)
    return check


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)


def one_of(*choices: Any) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or value not in choices or type(value) not in {type(c) for c in choices}:
            raise _fail(where, "one of " + ", ".join(json.dumps(c) for c in choices), value)
    return check


def list_of(item: Check, min_len: int = 0, max_len: int = 64) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            raise _fail(where, f"a list of {min_len} to {max_len} items", value)
        for i, element in enumerate(value):
            item(element, f"{where}[{i}]")
    return check


def any_of(*checks: Check, expected: str) -> Check:
    def check(value: Any, where: str) -> None:
        for candidate in checks:
            try:
                candidate(value, where)
                return
            except CardError:
                continue
        raise _fail(where, expected, value)
    return check


def optional(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if value is not None:
            inner(value, where)
    return check


def record(required: dict[str, Check], optional_fields: Optional[dict[str, Check]] = None) -> Check:
    """A JSON object with these fields (more are allowed: cards carry free-form metadata)."""
    optional_fields = optional_fields or {}

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        for key, inner in required.items():
            if key not in value:
                raise CardError(f"{where} lacks {key!r}")
            inner(value[key], f"{where}.{key}")
        for key, inner in optional_fields.items():
            if key in value:
                inner(value[key], f"{where}.{key}")
    return check


WINDOW = any_of(text(32), list_of(number(-1e5, 1e5), 2, 2), expected="a window name or [center, width]")

NETWORK = record({
    "family": one_of(RESNET, DENSENET),
    "input_shape": list_of(integer(1, 1 << 16), 3, 4),
    "spatial_dims": one_of(2, 3),
    "in_channels": integer(1, 256),
    "num_outputs": one_of(1),
}, {
    "arch": text(100),
    "gradcam_layer": text(200, r"[A-Za-z_][A-Za-z0-9_.]*"),
    "dropout": number(0, 1, hi_open=True),
    "mil_pooling": optional(one_of("mean", "attention")),
})

#: The size fields each family needs (all required for that family).
FAMILY_FIELDS: dict[str, Check] = {
    RESNET: record({
        "layers": list_of(integer(0, 64), 1, 8),
        "block_inplanes": list_of(integer(1, 1 << 14), 1, 8),
        "conv1_t_size": integer(1, 15),
        "conv1_t_stride": integer(1, 8),
    }),
    DENSENET: record({
        "init_features": integer(1, 1 << 12),
        "growth_rate": integer(1, 1 << 10),
        "block_config": list_of(integer(1, 256), 1, 8),
        "bn_size": integer(1, 64),
    }),
}

VIEW_SPEC = record({
    "mode": text(100),
}, {
    "size_px": integer(8, 1024),
    "spacing_mm": number(0.05, 20),
    "windows": list_of(WINDOW, 0, 16),
    "n_slices": optional(integer(1, 512)),
    "slice_gap_mm": optional(number(0.05, 50)),
    "antialias": boolean,
})

CARD = record({
    "name": text(200),
    "version": text(100),
    "network": NETWORK,
    "ensemble_size": integer(1, 1 << 31),
    "view_spec": VIEW_SPEC,
    "threshold": number(0, 1),
    "weights": record({"file": one_of("weights.safetensors"), "sha256": text(64, "[0-9a-f]{64}")},
                      {"tensors": integer(0, 1 << 20)}),
}, {
    "classes": list_of(text(32), 2, 2),
    "trained_on_synthetic_data": boolean,
    "description": text(20000),
    "intended_use": text(20000),
    "training_scans": record({"method": text(200), "count": integer(0, 1 << 40)},
                             {"digests": list_of(text(DIGEST_HEX, f"[0-9a-f]{{{DIGEST_HEX}}}"), 0, MAX_LISTED)}),
})


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse_card_json(data: bytes, where: str) -> Any:
    """JSON text -> object; refuses what mvcf.json_input refuses (NaN/Infinity, bad UTF-8, ...) and nesting
    deeper than MAX_DEPTH."""
    from mvcf.json_input import JSONInputError, loads

    try:
        card = loads(data)
    except JSONInputError as exc:
        raise MVCFError(f"invalid model card {where}: not valid JSON: {exc.reason}") from None
    if depth(card) > MAX_DEPTH:
        raise MVCFError(f"invalid model card {where}: nested deeper than {MAX_DEPTH} levels")
    return card


def _check_consistency(card: dict) -> None:
    from mvcf import modes
    from mvcf.limits import check_network_request, check_view_shape
    from mvcf.views import ViewSpec

    net = card["network"]
    FAMILY_FIELDS[net["family"]](net, "network")
    name = card["view_spec"]["mode"]
    if name not in modes.names():
        raise CardError(f"view_spec.mode {name!r} is not a view mode of this mvcf ({', '.join(modes.names())})")
    mode = modes.get(name)
    shape = net["input_shape"]
    if len(shape) != mode.input_rank:
        raise CardError(f"network.input_shape has {len(shape)} dimensions; mode {name} needs {mode.input_rank}")
    if net["spatial_dims"] != mode.spatial_dims:
        raise CardError(f"network.spatial_dims {net['spatial_dims']} does not fit mode {name}")
    if net["in_channels"] != mode.in_channels(shape):
        raise CardError(f"network.in_channels {net['in_channels']} differs from input_shape's "
                        f"{mode.in_channels(shape)}")
    check_view_shape(shape, "the card's network.input_shape")
    try:
        spec = ViewSpec.from_dict(card["view_spec"])
    except (MVCFError, TypeError, ValueError) as exc:
        raise CardError(f"view_spec: {exc}") from None
    if list(spec.output_shape()) != list(shape):
        raise CardError(f"view_spec gives views of shape {list(spec.output_shape())}, the network takes "
                        f"{list(shape)}")
    check_network_request(net, card["ensemble_size"])


def validate_card(card: Any, where: str) -> dict:
    """Raise one MVCFError line ('invalid model card PATH: FIELD must be ..., got ...') unless `card` is
    a card mvcf can build a network from within the limits; return it."""
    try:
        CARD(card, "card")
        _check_consistency(card)
    except CardError as exc:
        message = str(exc)
        message = message[len("card."):] if message.startswith("card.") else message
        raise MVCFError(f"invalid model card {where}: {message}") from None
    return card


def check_weights(state: dict, reference: dict, where: str) -> None:
    """The loaded tensors against the network's own: floating-point weights stored as integers would be cast
    silently (to a constant network), non-finite weights give NaN probabilities; both are refused."""
    import torch

    for key, expected in reference.items():
        tensor = state.get(key)
        if tensor is None:
            continue  # missing/unexpected keys: load_state_dict(strict=True) names them
        if expected.is_floating_point():
            if not tensor.is_floating_point():
                raise MVCFError(f"invalid model bundle: {where} stores {key} as {str(tensor.dtype)[6:]}; the "
                                "network needs floating-point weights (the file is damaged or not mvcf's)")
            if tensor.numel() and not bool(torch.isfinite(tensor).all()):
                raise MVCFError(f"invalid model bundle: {where} has NaN or infinite values in {key}")


def check_probabilities(values, what: str = "the model"):
    """Every probability a model returns is finite and in [0, 1], or no call is made from any of them."""
    import numpy as np

    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    if np.any(bad):
        check_probability(float(np.asarray(values)[bad].ravel()[0]), what)
    return values


def check_probability(value: float, what: str = "the model") -> float:
    """A probability must be a finite number in [0, 1]; anything else is a broken model, never a call."""
    if not (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise MVCFError(f"{what} returned {value!r}, not a probability; no call is made (the weights or the "
                        "input are broken)")
    return value


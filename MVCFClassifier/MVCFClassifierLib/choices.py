"""The option lists the Slicer panels offer (view modes, network sizes, devices), each read from the core so
that a mode or a network added there appears in both modules without an edit here. torch-free."""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")


def view_modes() -> tuple[str, ...]:
    """The registered view modes, in the core's order."""
    from mvcf.views import MODES

    return tuple(MODES)


def architectures() -> tuple[str, ...]:
    """The network presets `mvcf train --arch` accepts."""
    from mvcf.models.architectures import ARCHITECTURES

    return tuple(ARCHITECTURES)

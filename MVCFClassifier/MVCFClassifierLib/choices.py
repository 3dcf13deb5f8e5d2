"""The option lists the Slicer panels offer (view modes, network presets, devices, heatmap methods), each read
from the core so that a mode or a network registered there appears in both modules without an edit here.
torch-free."""
from __future__ import annotations

from mvcf.explain import METHODS as HEATMAP_METHODS  # noqa: F401  (re-exported: gradcam, occlusion)
from mvcf.inference import DEVICES  # noqa: F401  (re-exported: the devices the core accepts)


def view_modes() -> tuple[str, ...]:
    """The registered view modes, in the registry's order (mvcf.modes)."""
    from mvcf import modes

    return tuple(modes.names())


def stacked_view_modes() -> tuple[str, ...]:
    """The view modes built from an axial stack, the ones a slice count and gap apply to (mvcf.modes)."""
    from mvcf import modes

    return tuple(modes.stacked_names())


def architectures() -> tuple[str, ...]:
    """The network presets `mvcf train --arch` accepts."""
    from mvcf.models.architectures import ARCHITECTURES

    return tuple(ARCHITECTURES)

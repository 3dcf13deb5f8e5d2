"""Install the Python packages the core needs inside Slicer: on first use (the Classifier's Apply, the
Training module's Train / Run study / MRMC), never at import, and only after asking.

torch comes through the PyTorch extension's installer (PyTorchUtils picks the CUDA or CPU build for this
machine); the rest comes from Resources/requirements.txt through `slicer.packaging.pip_ensure` (Slicer >= 5.12)
or, on Slicer 5.4-5.10, `slicer.util.pip_install`. Our own question comes first in both cases, so the user
sees one list of everything that will be installed.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

from mvcf.errors import MVCFError

REQUIREMENTS = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
#: The one place of the torch bound. Lower: the oldest torch the core is tested with. Upper: a fresh torch
#: 2.13 install is broken inside Slicer 5.12.x (Slicer/light-the-torch issue 176: torch 2.13's PEP 639
#: license-files packaging change); users there recovered with `<2.13`. Lift it once that issue is closed.
TORCH_REQUIREMENT = ">=2.1,<2.13"
REQUESTER = "MVCFClassifier"
#: What classifying through the bundle's ONNX graph needs from requirements.txt (numpy and SimpleITK come with
#: Slicer): no torch, no MONAI. torch and the rest are installed when a heatmap, a bundle without a graph, a
#: GPU that only torch can drive, or training first needs them.
TORCH_FREE_PACKAGES = ("onnxruntime", "scipy")
# Slicer's own copies must never be replaced by pip; torch is PyTorchUtils' business.
NEVER_PIP = ("torch", "SimpleITK", "numpy")

Confirm = Callable[[str], bool]


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement strings of a requirements file (comments and blank lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", requirement)
    if not match:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return match.group(1), match.group(3).split(";", 1)[0].strip()


def _satisfied(requirement: str) -> bool:
    name, spec = _name_and_spec(requirement)
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # no way to compare versions: presence has to do
        return True
    return SpecifierSet(spec).contains(installed, prereleases=True)


def unmet_requirements(requirements: Optional[Sequence[str]] = None) -> list[str]:
    """The requirements (default: Resources/requirements.txt) that are missing or too old."""
    requirements = read_requirements() if requirements is None else list(requirements)
    return [r for r in requirements if not _satisfied(r)]


def torch_free_requirements(requirements: Optional[Sequence[str]] = None) -> list[str]:
    """The requirements (default: Resources/requirements.txt) an ONNX Runtime classification needs."""
    requirements = read_requirements() if requirements is None else list(requirements)
    return [r for r in requirements if _name_and_spec(r)[0].lower() in TORCH_FREE_PACKAGES]


def classification_needs_torch(heatmap: bool, model_dir: Optional[str] = None, device: str = "auto",
                               heatmap_method: str = "gradcam") -> bool:
    """Whether an Apply must have torch: a Grad-CAM heatmap (an occlusion heatmap runs on the bundle's own
    engine), a bundle without an ONNX graph (or one whose card cannot be read: the run will say why), or a
    GPU that the installed ONNX Runtime cannot use (the pip build is CPU-only; mvcf.models.ort_backend.choose
    then picks torch on CUDA). Decided without torch."""
    if heatmap and heatmap_method == "gradcam":
        return True
    from mvcf.inference import default_model_path
    from mvcf.models import ort_backend
    from mvcf.models.bundle import read_card

    try:
        card = read_card(Path(model_dir) if model_dir else default_model_path())
    except MVCFError:
        return True
    if not ort_backend.has_graph(card):
        return True
    if device == "cpu":
        return False
    if not (device.startswith("cuda") or ort_backend.cuda_devices_by_driver() > 0):
        return False
    try:
        return not ort_backend.ort_has_cuda()
    except ImportError:  # not installed yet: the build pip installs has no CUDA provider
        return True


def torch_installed() -> bool:
    """True when torch is installed, found without importing it (importing is slow and locks its files)."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("torch") is not None


def torch_requirement_allows(version: str) -> bool:
    """Whether a torch version satisfies TORCH_REQUIREMENT (local suffixes such as '+cpu' ignored)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version).public in SpecifierSet(TORCH_REQUIREMENT)


def _slicer_confirm(message: str, requester: str = REQUESTER) -> bool:
    import slicer

    return bool(slicer.util.confirmOkCancelDisplay(message, windowTitle=f"{requester}: install packages"))


def _install_torch() -> None:
    try:
        import PyTorchUtils  # the PyTorch extension's module; EXTENSION_DEPENDS makes it available
    except ImportError:
        raise MVCFError("PyTorch is needed: install the 'PyTorch' extension from the Extensions Manager, "
                        "restart Slicer and try again") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                          torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise MVCFError("PyTorch was not installed; open the 'PyTorch Utils' module to install it by hand")


def pip_route(import_module: Callable[[str], object] = importlib.import_module) -> str:
    """'pip_ensure' on Slicer >= 5.12 (the slicer.packaging module), 'pip_install' on 5.4-5.10 (slicer.util)."""
    try:
        packaging = import_module("slicer.packaging")
    except ImportError:
        return "pip_install"
    return "pip_ensure" if callable(getattr(packaging, "pip_ensure", None)) else "pip_install"


def _pip_ensure(requirements: list[str], requester: str = REQUESTER) -> None:
    """Install the unmet requirements. We asked already, so Slicer's own prompt is off; Slicer's numpy and
    SimpleITK are never in the list (NEVER_PIP), so no `skip_packages` workaround is needed."""
    if pip_route() == "pip_ensure":
        import slicer.packaging

        slicer.packaging.pip_ensure(requirements, requester=requester, prompt_install=False)
    else:
        import slicer.util

        slicer.util.pip_install(requirements)
    importlib.invalidate_caches()


def ensure_dependencies(confirm: Optional[Confirm] = None,
                        install_torch: Optional[Callable[[], None]] = None,
                        pip_ensure: Optional[Callable[[list[str]], None]] = None,
                        requirements: Optional[Sequence[str]] = None, requester: str = REQUESTER,
                        torch: bool = True) -> bool:
    """Make torch (unless `torch` is False) and the requirements (default: Resources/requirements.txt)
    importable, asking once before installing anything.

    Returns True when everything is in place, False when the user declined (nothing is installed then).
    The callables default to Slicer's dialog, PyTorchUtils and slicer.packaging.pip_ensure.
    """
    requirements = read_requirements() if requirements is None else list(requirements)
    need_torch = torch and not torch_installed()
    unmet = [r for r in unmet_requirements(requirements) if _name_and_spec(r)[0] not in NEVER_PIP]
    if not need_torch and not unmet:
        return True
    items = ([f"torch{TORCH_REQUIREMENT} (through the PyTorch extension; the download can be large)"]
             if need_torch else []) + unmet
    message = (f"{requester} needs these Python packages, which will be downloaded and installed into "
               "Slicer's Python now:\n\n  " + "\n  ".join(items) + "\n\nThis can take several minutes. Continue?")
    if not (confirm or (lambda text: _slicer_confirm(text, requester)))(message):
        return False
    if need_torch:
        (install_torch or _install_torch)()
    if unmet:
        (pip_ensure or (lambda items: _pip_ensure(items, requester)))(unmet)
    still = [r for r in unmet_requirements(requirements) if _name_and_spec(r)[0] not in NEVER_PIP]
    if still or (torch and not torch_installed()):
        raise MVCFError("package installation did not complete (" + ", ".join(still or ["torch"]) +
                        "); restart Slicer and try again")
    return True

"""Install the Python packages the core needs inside Slicer: on the first Apply, never at import, after asking.

torch comes through the PyTorch extension's installer (PyTorchUtils picks the CUDA or CPU build for this
machine); the rest comes from Resources/requirements.txt through `slicer.packaging.pip_ensure` (Slicer >= 5.11,
which asks the user itself) or, on older Slicer, `slicer.util.pip_install` after our own question.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

from mvcf.errors import MVCFError

REQUIREMENTS = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = ">=2.1"
REQUESTER = "MVCFClassifier"
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


def torch_installed() -> bool:
    """True when torch is installed, found without importing it (importing is slow and locks its files)."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("torch") is not None


def missing_summary() -> list[str]:
    """What the first Apply would install: 'torch (via the PyTorch extension)' and unmet requirements."""
    missing = [] if torch_installed() else [f"torch{TORCH_REQUIREMENT} (via the PyTorch extension)"]
    return missing + unmet_requirements()


def _slicer_confirm(message: str) -> bool:
    import slicer

    return bool(slicer.util.confirmOkCancelDisplay(message, windowTitle="MVCFClassifier: install packages"))


def _install_torch() -> None:
    try:
        import PyTorchUtils  # the PyTorch extension's module; EXTENSION_DEPENDS makes it available
    except ImportError:
        raise MVCFError("PyTorch is needed: install the 'PyTorch' extension from the Extensions Manager, "
                        "restart Slicer and press Apply again") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                          torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise MVCFError("PyTorch was not installed; open the 'PyTorch Utils' module to install it by hand")


def _pip_ensure(requirements: list[str]) -> None:
    import slicer

    packaging = getattr(slicer, "packaging", None) or getattr(slicer, "pydeps", None)
    if packaging is None:
        for name in ("slicer.packaging", "slicer.pydeps"):
            try:
                packaging = importlib.import_module(name)
                break
            except ImportError:
                continue
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        try:
            packaging.pip_ensure(requirements, requester=REQUESTER, prompt_install=False,
                                 skip_packages=list(NEVER_PIP))
        except TypeError:  # an early 5.11 without these keywords
            packaging.pip_ensure(requirements, requester=REQUESTER)
    else:
        slicer.util.pip_install(" ".join(f'"{r}"' if " " in r else r for r in requirements))
    importlib.invalidate_caches()


def ensure_dependencies(confirm: Optional[Confirm] = None,
                        install_torch: Optional[Callable[[], None]] = None,
                        pip_ensure: Optional[Callable[[list[str]], None]] = None,
                        requirements: Optional[Sequence[str]] = None) -> bool:
    """Make torch and the requirements (default: Resources/requirements.txt) importable, asking once
    before installing anything.

    Returns True when everything is in place, False when the user declined (nothing is installed then).
    The callables default to Slicer's dialog, PyTorchUtils and slicer.packaging.pip_ensure.
    """
    requirements = read_requirements() if requirements is None else list(requirements)
    need_torch = not torch_installed()
    unmet = [r for r in unmet_requirements(requirements) if _name_and_spec(r)[0] not in NEVER_PIP]
    if not need_torch and not unmet:
        return True
    items = ([f"torch{TORCH_REQUIREMENT} (through the PyTorch extension; the download can be large)"]
             if need_torch else []) + unmet
    message = ("MVCFClassifier needs these Python packages, which will be downloaded and installed into "
               "Slicer's Python now:\n\n  " + "\n  ".join(items) + "\n\nThis can take several minutes. Continue?")
    if not (confirm or _slicer_confirm)(message):
        return False
    if need_torch:
        (install_torch or _install_torch)()
    if unmet:
        (pip_ensure or _pip_ensure)(unmet)
    still = [r for r in unmet_requirements(requirements) if _name_and_spec(r)[0] not in NEVER_PIP]
    if still or not torch_installed():
        raise MVCFError("package installation did not complete (" + ", ".join(still or ["torch"]) +
                        "); restart Slicer and try again")
    return True

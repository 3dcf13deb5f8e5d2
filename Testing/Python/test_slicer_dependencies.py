"""MVCFClassifierLib.dependencies: what the first Apply installs, and that it asks first."""
from __future__ import annotations

import pytest

from mvcf.errors import MVCFError
from MVCFClassifierLib import dependencies


def test_requirements_file_parses_and_is_met_in_the_test_environment():
    requirements = dependencies.read_requirements()
    assert "monai>=1.3" in requirements and not any(r.startswith("torch") for r in requirements)
    assert dependencies.unmet_requirements(requirements) == []
    assert dependencies.torch_installed()


def test_unmet_detects_missing_and_too_old_packages(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\nnumpy>=1.0  # fine\nnumpy>=999\nmvcf-no-such-package>=1.0\n")
    assert dependencies.read_requirements(path) == ["numpy>=1.0", "numpy>=999", "mvcf-no-such-package>=1.0"]
    assert dependencies.unmet_requirements(dependencies.read_requirements(path)) == [
        "numpy>=999", "mvcf-no-such-package>=1.0"]


def test_nothing_is_asked_or_installed_when_everything_is_there():
    def never(*_):
        raise AssertionError("must not be called")

    assert dependencies.ensure_dependencies(confirm=never, install_torch=never, pip_ensure=never)


def test_declining_installs_nothing_and_a_failed_install_is_a_user_error():
    asked, installed = [], []
    missing = ["mvcf-no-such-package>=1.0", "numpy>=999"]
    assert not dependencies.ensure_dependencies(confirm=lambda m: asked.append(m) or False,
                                                pip_ensure=installed.append, requirements=missing)
    assert "mvcf-no-such-package>=1.0" in asked[0] and installed == []
    assert "numpy" not in asked[0], "Slicer's own numpy is never replaced through pip"
    with pytest.raises(MVCFError, match="did not complete"):
        dependencies.ensure_dependencies(confirm=lambda m: True, pip_ensure=installed.append,
                                         requirements=missing)
    assert installed == [["mvcf-no-such-package>=1.0"]]
